"""The audit log: one JSON line per decision, survives rotation, fails closed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from relayguard.config import load_config
from relayguard.core.audit_record import AdminRecord
from relayguard.core.message import Client, message_from_bytes
from relayguard.core.verdict import Action
from relayguard.engine.audit import AuditLog
from relayguard.engine.runtime import Runtime
from relayguard.engine.transaction import Transaction

pytestmark = pytest.mark.unit

SCANNER = Client(address="198.51.100.7", sasl_user="scanner-hq")


def deliver(config_path: Path, eml: Path, client: Client = SCANNER) -> Action:
    config = load_config(config_path)
    tx = Transaction(Runtime.build(config), client)
    tx.queue_id = "4XQID"
    if tx.mail("<scanner@example.com>").action >= Action.TEMPFAIL:
        return Action.REJECT
    tx.rcpt("<alice@example.com>")
    message = message_from_bytes(eml.read_bytes(), tx.envelope)
    return tx.end(message.headers, message.body, message.size).action


def test_one_line_per_decision_with_the_documented_fields(
    write_config: Callable[..., Path], tmp_path: Path, data: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    config = write_config(audit=audit)
    deliver(config, data / "good.eml")
    deliver(config, data / "spoofed_from.eml")
    deliver(config, data / "good.eml", Client(address="203.0.113.9"))
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["stage"], r["action"]) for r in lines] == [
        ("end", "accept"),
        ("end", "reject"),
        ("mail", "reject"),
    ]
    first = lines[0]
    for key in (
        "time", "queue_id", "mode", "source", "client_address", "sasl_user", "mail_from",
        "recipients", "from", "message_id", "size", "checks", "action", "outcome", "reply",
    ):  # fmt: skip
        assert key in first, key
    assert first["source"] == "scanner-hq"
    assert first["from"] == "Scanner HQ <scanner@example.com>"
    assert first["message_id"].startswith("<test-")
    assert {c["name"] for c in first["checks"]} == {
        "source",
        "envelope_sender",
        "header_identities",
    }
    assert all(isinstance(c["ms"], float) for c in first["checks"])
    assert lines[1]["reply"] == (
        "550 5.7.1 From <admin@example.com> is not allowed for source scanner-hq"
    )
    assert "Your scan is attached" not in audit.read_text()  # never body content


def test_reopens_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.write(AdminRecord("2026-11-23T10:00:00.000Z", "source_disabled", "alice", "erp", "1"))
    os.rename(path, tmp_path / "audit.jsonl.1")
    log.write(AdminRecord("2026-11-23T10:00:01.000Z", "source_enabled", "alice", "erp", "2"))
    assert [json.loads(line)["reason"] for line in (tmp_path / "audit.jsonl.1").open()] == ["1"]
    assert [json.loads(line)["reason"] for line in path.open()] == ["2"]


def test_unwritable_audit_log_is_a_temporary_failure(
    write_config: Callable[..., Path], tmp_path: Path, data: Path
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where a directory should be")
    config = write_config(audit=blocked / "audit.jsonl")
    assert deliver(config, data / "good.eml") is Action.TEMPFAIL
