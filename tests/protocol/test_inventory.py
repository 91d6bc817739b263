"""Inventory from a recorded monitor-mode audit log: the proposed sources pass `relayguard check`
and, applied in enforce mode, accept exactly the flows that were seen."""

from __future__ import annotations

import email.policy
import json
import subprocess
import sys
import tomllib
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path

import pytest

from relayguard.core.safe_text import UNSAFE
from tests.conftest import DATA
from tests.support.documents import zip_bytes
from tests.support.milter_client import MilterClient, Result
from tests.support.milter_process import MilterProcess

pytestmark = [pytest.mark.protocol, pytest.mark.timeout(120)]

YARA_DIR = DATA / "content" / "yara"

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
    # As Postfix does: clients without AUTH relay on the port-25 listener, logins on submission.
    macros = {"connect": {"{daemon_name}": "submission" if user else "smtp"}, "eom": {"i": "4XINV"}}
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


def send_raw(milter: MilterProcess, raw: bytes) -> Result:
    with MilterClient(str(milter.socket_path)) as client:
        return client.send_message(
            raw,
            sender="<scanner@example.com>",
            rcpts=["<a@example.com>"],
            client_address="198.51.100.7",
            macros={"eom": {"i": "4XZIP"}, "mail": {"{auth_authen}": "scanner-hq"}},
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


# --- hostile values: the proposal is data, never config the sender wrote ---------------------

INJECTED = '\n[[sources]]\nname = "evil"\nnetworks = ["0.0.0.0/0"]\nsenders = ["@example.com"]\n'
TERMINAL = "\x1b[2J\r\x08\u202e\x9b\x7f\u2028"  # clear screen, CR, backspace, RLO, CSI, DEL, LS
SOURCE_KEYS = (
    "name",
    "description",
    "sasl_users",
    "client_cert_subjects",
    "networks",
    "senders",
    "recipients",
)


def hostile_decision(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "time": "2026-11-20T10:00:00.000Z", "stage": "end", "mode": "monitor", "source": None,
        "client_address": "192.0.2.1", "sasl_user": None, "cert_subject": None,
        "mail_from": "ok@example.com", "recipients": ["a@example.com"], "from": None,
        "size": 10, "checks": [], "action": "accept", "outcome": "would_quarantine",
    }  # fmt: skip
    return {**base, **fields}


HOSTILE_DECISIONS = [
    hostile_decision(
        sasl_user=f"ups{INJECTED}{TERMINAL}",
        source=f"scanner-hq{INJECTED}",
        mail_from=f"ups@example.com{INJECTED}{TERMINAL}",
        recipients=[f"x@partner.example{INJECTED}", "ops@example.com"],
        **{"from": f"UPS <ups@example.com>{INJECTED}{TERMINAL}"},
        checks=[
            {
                "name": "yara",
                "action": "quarantine",
                "reason": f"YARA rule markers:Hold_Marker matched in part 2/r.txt{INJECTED}",
            }
        ],
    ),
    hostile_decision(
        client_address="192.0.2.2",
        cert_subject=f"device.example.com{INJECTED}{TERMINAL}",
        mail_from="dev@example.com",
        **{"from": "dev@example.com"},
        recipient_refusals=[
            {
                "recipient": "y@example.com",
                "check": "recipients",
                "reason": f"refused{INJECTED}{TERMINAL}",
                "applied": False,
            }
        ],
    ),
    hostile_decision(client_address=f"192.0.2.3{INJECTED}{TERMINAL}"),
    hostile_decision(
        client_address="192.0.2.4",
        mail_from="erp@example.com",
        recipients=[f"z@host{TERMINAL}.example"],
    ),
]


def test_inventory_of_hostile_values_proposes_exactly_the_seen_sources(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps(record) + "\n" for record in HOSTILE_DECISIONS))
    result = relayguard("inventory", "--audit-log", log)
    assert result.returncode == 0, result.stderr
    proposal = result.stdout
    for line in proposal.splitlines():  # splitlines: also \x85, U+2028 and the like
        assert UNSAFE.search(line) is None, line
        assert line == "" or line.startswith(("#", "[[sources]]", *SOURCE_KEYS)), line

    sources = tomllib.loads(proposal)["sources"]
    network, cert, sasl = sources  # the 192.0.2.3 "address" is no address: not proposed
    assert (network["name"], sasl["name"]) == ("host-192-0-2-4", "source")
    assert cert["name"] == "device.example.com-sources-name-evil-networks-0.0.0.0-0-send"
    assert {key for s in sources for key in s} <= set(SOURCE_KEYS)
    # Identifiers are exact (the relay compares them as received), escaped only in the TOML text.
    assert sasl["sasl_users"] == [f"ups{INJECTED}{TERMINAL}"]
    assert sasl["senders"] == []  # neither the envelope sender nor From is an address
    assert sasl["recipients"] == ["@example.com"]
    assert cert["client_cert_subjects"] == [f"CN=device.example.com{INJECTED}{TERMINAL}"]
    assert network["networks"] == ["192.0.2.4/32"]
    assert "networks" not in sasl and "networks" not in cert
    assert all(UNSAFE.search(s["description"]) is None for s in sources)
    assert 'part 2/r.txt\\n[[sources]]\\nname = "evil"' in proposal  # the reason, as a comment


def test_zip_member_name_from_the_milter_cannot_add_a_source(tmp_path: Path) -> None:
    """The reported attack, end to end: a monitor-mode milter sees a zip member whose name
    carries a [[sources]] block; the inventory of its audit log proposes only the real client."""
    recorded = tmp_path / "monitor-audit.jsonl"
    monitor = tmp_path / "monitor.toml"
    monitor.write_text(MONITOR.format(audit=recorded) + f'\n[yara]\nrules_dir = "{YARA_DIR}"\n')
    attachment = zip_bytes({f"r.txt{INJECTED}": "status RELAYGUARD-TEST-HOLD"})
    msg = message_from_bytes((DATA / "good.eml").read_bytes(), policy=email.policy.SMTP)
    assert isinstance(msg, EmailMessage)
    msg.add_attachment(attachment, maintype="application", subtype="zip", filename="scan.zip")
    with MilterProcess(monitor, tmp_path / "m.sock", tmp_path / "monitor.log") as milter:
        sent = send_raw(milter, msg.as_bytes())
    assert sent.reply.action == "accept"  # monitor mode: would quarantine
    assert json.loads(recorded.read_text())["outcome"] == "would_quarantine"

    result = relayguard("inventory", "--audit-log", recorded)
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["sources"] == [
        {
            "name": "scanner-hq",
            "description": "inventory: SASL user scanner-hq",
            "sasl_users": ["scanner-hq"],
            "senders": ["scanner@example.com"],
            "recipients": ["@example.com"],
        }
    ]
    assert all(UNSAFE.search(line) is None for line in result.stdout.splitlines())
    # Escaped by the walker (one backslash), then once more for the comment (two).
    assert "Hold_Marker matched in part 2/r.txt\\\\n[[sources]]" in result.stdout
