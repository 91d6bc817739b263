"""Inventory from a recorded monitor-mode audit log: the proposed sources pass `relayguard check`
and, applied in enforce mode, accept exactly the flows that were seen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.support.milter_client import MilterClient, Result
from tests.support.milter_process import MilterProcess

pytestmark = [pytest.mark.protocol, pytest.mark.timeout(120)]

MONITOR = """
[relay]
mode = "monitor"
internal_domains = ["example.com"]
audit_log = "{audit}"

[milter]
workers = 1
socket_group = "root"

[[sources]]
name = "scanner-hq"
sasl_users = ["scanner-hq"]
senders = ["scanner@example.com"]
"""

ENFORCE_HEAD = """
[relay]
mode = "enforce"
internal_domains = ["example.com"]
audit_log = "{audit}"

[milter]
workers = 1
socket_group = "root"
"""

# (SASL user or "", client address, envelope sender, From address, recipients)
SEEN = [
    ("scanner-hq", "198.51.100.7", "scanner@example.com", "scanner@example.com", ["a@example.com"]),
    ("ups-7", "198.51.100.8", "ups@example.com", "ups@example.com", ["ops@example.com"]),
    ("ups-7", "198.51.100.8", "", "ups@example.com", ["oncall@partner.example"]),
    ("", "192.0.2.77", "erp@example.com", "invoices@example.com", ["x@customer.example"]),
    ("", "2001:db8::25", "app@example.org", "app@example.org", ["b@example.com"]),
]
NOT_SEEN = [
    ("ups-7", "198.51.100.8", "ups@example.com", "ups@example.com", ["y@other.example"]),
    ("ups-7", "198.51.100.8", "boss@example.com", "boss@example.com", ["ops@example.com"]),
    ("", "192.0.2.77", "erp@example.com", "ceo@example.com", ["x@customer.example"]),
    ("", "192.0.2.78", "erp@example.com", "invoices@example.com", ["x@customer.example"]),
    ("mallory", "198.51.100.9", "ups@example.com", "ups@example.com", ["ops@example.com"]),
]


def send(milter: MilterProcess, flow: tuple[str, str, str, str, list[str]]) -> Result:
    user, address, sender, from_address, rcpts = flow
    raw = (DATA / "good.eml").read_bytes().replace(b"scanner@example.com", from_address.encode())
    macros = {"eom": {"i": "4XINV"}}
    if user:
        macros["mail"] = {"{auth_authen}": user}
    with MilterClient(str(milter.socket_path)) as client:
        return client.send_message(
            raw,
            sender=f"<{sender}>",
            rcpts=[f"<{r}>" for r in rcpts],
            client_address=address,
            macros=macros,
        )


def relayguard(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relayguard.cli", *map(str, args)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_inventory_of_monitor_mode_accepts_exactly_what_was_seen(tmp_path: Path) -> None:
    recorded = tmp_path / "monitor-audit.jsonl"
    monitor = tmp_path / "monitor.toml"
    monitor.write_text(MONITOR.format(audit=recorded))
    with MilterProcess(monitor, tmp_path / "m.sock", tmp_path / "monitor.log") as milter:
        assert [send(milter, flow).reply.action for flow in SEEN] == ["accept"] * len(SEEN)
    outcomes = [json.loads(line)["outcome"] for line in recorded.read_text().splitlines()]
    assert outcomes == ["accept"] + ["would_reject"] * 4

    result = relayguard("inventory", "--audit-log", recorded)
    assert result.returncode == 0, result.stderr
    proposal = result.stdout
    assert "would have been refused" in proposal
    assert 'networks = ["2001:db8::25/128"]' in proposal

    enforce = tmp_path / "enforce.toml"
    enforce.write_text(ENFORCE_HEAD.format(audit=tmp_path / "enforce-audit.jsonl") + proposal)
    checked = relayguard("check", "--config", enforce)
    assert checked.returncode == 0, checked.stderr + proposal
    assert "OK (4 source(s), mode enforce)" in checked.stdout

    with MilterProcess(enforce, tmp_path / "e.sock", tmp_path / "enforce.log") as milter:
        assert [send(milter, flow).reply.action for flow in SEEN] == ["accept"] * len(SEEN)
        refused = [send(milter, flow) for flow in NOT_SEEN]
    assert [(r.stage, r.reply.text) for r in refused] == [
        ("rcpt", "550 5.7.1 Recipient <y@other.example> is not allowed for source ups-7"),
        ("mail", "550 5.7.1 Envelope sender <boss@example.com> is not allowed for source ups-7"),
        ("eom", "550 5.7.1 From <ceo@example.com> is not allowed for source host-192-0-2-77"),
        ("mail", "550 5.7.1 client 192.0.2.78 is not a registered source (not authenticated)"),
        ("mail", "550 5.7.1 SASL user 'mallory' is not registered to any source"),
    ]


def test_inventory_since_skips_older_decisions(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    old = {"time": "2026-01-01T00:00:00.000Z", "stage": "end", "mode": "monitor",
           "source": None, "client_address": "192.0.2.1", "sasl_user": None, "cert_subject": None,
           "mail_from": "old@example.com", "recipients": ["a@example.com"], "from": None,
           "size": 10, "checks": [], "action": "accept", "outcome": "accept"}  # fmt: skip
    new = {**old, "time": "2026-11-20T10:00:00.000Z", "client_address": "192.0.2.2",
           "mail_from": "new@example.com"}  # fmt: skip
    log.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\nnot json\n")
    result = relayguard("inventory", "--audit-log", log, "--since", "2026-11-01")
    assert result.returncode == 0, result.stderr
    assert 'senders = ["new@example.com"]' in result.stdout
    assert "old@example.com" not in result.stdout
    assert "1 unreadable line(s) skipped" in result.stdout
