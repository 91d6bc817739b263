"""Issue 12 item 2: the audit log cannot be flooded from the internet.

Client-controlled values are clipped in audit lines, and repeated refusals of an unregistered client
become one counted line per interval that the log's readers (report, inventory) honour.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relayguard.cli.inventory import collect
from relayguard.cli.report import build
from relayguard.config import load_config
from relayguard.core.audit_record import AdminRecord, AuditRecord
from relayguard.core.message import Client, message_from_bytes
from relayguard.core.verdict import Action
from relayguard.engine.audit import ADDRESS_LIMIT, HEADER_LIMIT, REASON_LIMIT, AuditLog, clip
from relayguard.engine.audit_reader import read_audit
from relayguard.engine.runtime import Runtime
from relayguard.engine.transaction import Transaction

pytestmark = pytest.mark.unit

ATTACKER = Client(address="203.0.113.66")
LONG_ADDRESS = "<" + "a" * 3000 + "@x.example>"
# A refused MAIL FROM must never cost more than this many bytes of audit log.
MAX_REFUSAL_LINE = 2048


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def runtime_with(config_path: Path, audit: AuditLog) -> Runtime:
    return Runtime.build(load_config(config_path), audit)


def attempt(runtime: Runtime, client: Client = ATTACKER, sender: str = "<x@evil.example>") -> None:
    tx = Transaction(runtime, client)
    assert tx.mail(sender).action is Action.REJECT


def test_clip_marks_how_much_was_cut() -> None:
    assert clip("abc", 5) == "abc"
    assert clip("a" * 300, ADDRESS_LIMIT) == "a" * ADDRESS_LIMIT + "…[clipped 44 chars]"


def test_a_refused_long_mail_from_writes_a_short_line(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    attempt(Runtime.build(load_config(write_config(audit=path))), sender=LONG_ADDRESS)
    assert len(path.read_bytes()) < MAX_REFUSAL_LINE
    (line,) = lines_of(path)
    # Too long to parse as a path, so kept as given (with its brackets) and clipped.
    assert line["mail_from"] == clip("<" + "a" * 3000 + "@x.example>", ADDRESS_LIMIT)
    assert line["mail_from"].endswith("…[clipped 2756 chars]")


def test_every_client_controlled_field_is_clipped(
    write_config: Callable[..., Path], tmp_path: Path, data: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    runtime = Runtime.build(load_config(write_config(audit=path)))
    long_user = "u" * 3000
    # An unregistered SASL login: the refusal's reason quotes it.
    tx = Transaction(runtime, Client(address="198.51.100.7", sasl_user=long_user))
    tx.mail(LONG_ADDRESS)
    # A registered source: long recipient refused, long From and Message-ID delivered to the end.
    tx = Transaction(runtime, Client(address="198.51.100.7", sasl_user="scanner-hq"))
    tx.mail("<scanner@example.com>")
    tx.rcpt("<" + "r" * 3000 + "@elsewhere.example>")
    tx.rcpt("<alice@example.com>")
    raw = (data / "good.eml").read_bytes()
    raw = raw.replace(b"Message-ID: <", b"Message-ID: <" + b"m" * 3000, 1)
    message = message_from_bytes(raw, tx.envelope)
    tx.end(message.headers, message.body, message.size)
    mail, end = lines_of(path)
    assert len(json.dumps(mail["sasl_user"])) < ADDRESS_LIMIT + 40
    assert len(mail["mail_from"]) < ADDRESS_LIMIT + 40
    for check in mail["checks"]:
        assert len(check["reason"]) < REASON_LIMIT + 40
    assert len(mail["reply"]) < REASON_LIMIT + 40
    refusal = end["recipient_refusals"][0]
    assert len(refusal["recipient"]) < ADDRESS_LIMIT + 40
    assert len(refusal["reason"]) < REASON_LIMIT + 40
    assert len(end["message_id"]) < HEADER_LIMIT + 40
    assert "…[clipped " in end["message_id"]


def test_repeated_refusals_of_one_client_are_one_counted_line_per_interval(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    clock = FakeClock()
    audit = AuditLog(path, clock=clock)
    runtime = runtime_with(write_config(audit=path), audit)
    for _ in range(500):
        attempt(runtime)
    attempt(runtime, Client(address="203.0.113.67"))  # another client has its own window
    first, other = lines_of(path)
    assert "count" not in first and first["client_address"] == "203.0.113.66"
    assert other["client_address"] == "203.0.113.67"
    clock.now += 60
    attempt(runtime)  # the interval has passed: the count is written with this attempt
    counted = lines_of(path)[2]
    assert counted["count"] == 500  # 499 held back plus this one
    assert counted["client_address"] == "203.0.113.66"
    assert counted["mail_from"] == "x@evil.example"  # the first counted attempt's details
    assert counted["last_time"] >= counted["time"]
    assert counted["stage"] == "mail" and counted["outcome"] == "reject"


def test_nothing_is_lost_at_the_timer_or_at_shutdown(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    clock = FakeClock()
    audit = AuditLog(path, clock=clock)
    runtime = runtime_with(write_config(audit=path), audit)
    for _ in range(10):
        attempt(runtime)
    audit.flush_due()
    assert len(lines_of(path)) == 1  # the interval is not over yet
    clock.now += 61
    audit.flush_due()  # the timer: the window is over, its count is written without new traffic
    assert lines_of(path)[1]["count"] == 9
    for _ in range(3):
        attempt(runtime)
    audit.flush_all()  # shutdown: whatever is held back is written
    assert [line.get("count", 1) for line in lines_of(path)] == [1, 9, 3]
    assert sum(line.get("count", 1) for line in lines_of(path)) == 13


def test_interval_zero_writes_every_attempt(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    config = write_config(audit=path)
    config.write_text(
        config.read_text().replace("[relay]\n", "[relay]\nunregistered_audit_interval = 0\n")
    )
    runtime = Runtime.build(load_config(config))
    for _ in range(3):
        attempt(runtime)
    assert len(lines_of(path)) == 3


def test_registered_sources_are_never_aggregated(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    runtime = Runtime.build(load_config(write_config(audit=path)))
    for _ in range(3):
        tx = Transaction(runtime, Client(address="198.51.100.7", sasl_user="scanner-hq"))
        assert tx.mail("<boss@example.com>").action is Action.REJECT
    assert len(lines_of(path)) == 3


def test_readers_and_metrics_count_every_attempt(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    clock = FakeClock()
    audit = AuditLog(path, clock=clock)
    seen: list[AuditRecord] = []
    runtime = runtime_with(write_config(audit=path), audit)
    runtime = Runtime(runtime.config, runtime.pipeline, audit, (seen.append,))
    for _ in range(7):
        attempt(runtime)
    audit.flush_all()
    assert len(lines_of(path)) == 2
    assert len(seen) == 7  # observers (metrics) see each attempt when it happens
    report = build(path)
    assert report.decisions == 7
    assert report.outcomes["reject"] == 7
    assert report.sources["(no source)"].refused == 7
    assert sum(report.refusals.values()) == 7
    (flow,) = collect(read_audit(path).decisions)
    assert flow.identity == "203.0.113.66"
    assert flow.decisions == 7
    assert sum(flow.refusals.values()) == 7
    assert flow.envelope_senders["x@evil.example"] == 2  # once per line: details of 2 attempts


def test_no_line_is_lost_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    rotated = tmp_path / "audit.jsonl.1"
    log = AuditLog(path)
    writers, per_writer = 4, 500
    started = threading.Barrier(writers + 1)

    def line(writer: int | str, n: int) -> AdminRecord:
        return AdminRecord("2026-11-23T10:00:00.000Z", "test", str(writer), reason=str(n))

    def write(writer: int) -> None:
        started.wait()
        for n in range(per_writer):
            log.write(line(writer, n))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    started.wait()
    while not path.exists() or path.stat().st_size == 0:
        pass
    os.rename(path, rotated)  # logrotate's default: rename, then `create` a new file
    for thread in threads:
        thread.join()
    log.write(line("last", 0))
    rows = [(r["actor"], r["reason"]) for r in lines_of(rotated) + lines_of(path)]
    assert len(rows) == writers * per_writer + 1
    assert set(rows) >= {("0", "0"), (str(writers - 1), str(per_writer - 1))}
    assert rows[-1] == ("last", "0")
