"""The real `relayguard milter` process on a unix socket, driven over the milter protocol."""

from __future__ import annotations

import grp
import json
import os
import signal
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import BASE_CONFIG, DATA
from tests.support.milter_client import (
    SMFIP_NOCONNECT,
    MilterClient,
    MilterConnectionClosed,
    Result,
)
from tests.support.milter_process import MilterProcess

pytestmark = pytest.mark.protocol

SCANNER_MACROS = {"mail": {"{auth_authen}": "scanner-hq"}, "eom": {"i": "4XPROTOQID"}}


def config_text(mode: str = "enforce", audit: Path | None = None, workers: int = 2) -> str:
    text = BASE_CONFIG.format(mode=mode, audit=f'audit_log = "{audit}"' if audit else "")
    return text.replace("workers = 1", f'workers = {workers}\nsocket_group = "root"')


@pytest.fixture
def milter(tmp_path: Path) -> Iterator[MilterProcess]:
    config = tmp_path / "relayguard.toml"
    config.write_text(config_text(audit=tmp_path / "audit.jsonl"))
    with MilterProcess(config, tmp_path / "milter.sock", tmp_path / "milter.log") as process:
        yield process


def send(
    milter: MilterProcess,
    eml: str | bytes = "good.eml",
    *,
    sender: str = "<scanner@example.com>",
    rcpts: tuple[str, ...] = ("<alice@example.com>",),
    macros: dict[str, dict[str, str]] | None = None,
    client_address: str = "198.51.100.7",
) -> Result:
    raw = eml if isinstance(eml, bytes) else (DATA / eml).read_bytes()
    with MilterClient(str(milter.socket_path)) as client:
        return client.send_message(
            raw,
            sender=sender,
            rcpts=list(rcpts),
            client_address=client_address,
            macros=SCANNER_MACROS if macros is None else macros,
        )


def audit_lines(milter: MilterProcess) -> list[dict[str, object]]:
    path = milter.config.parent / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_socket_is_group_accessible_only(milter: MilterProcess) -> None:
    mode = milter.socket_path.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o660
    assert mode.st_gid == grp.getgrnam("root").gr_gid


def test_good_message_accepted_with_trace_header(milter: MilterProcess) -> None:
    result = send(milter)
    assert (result.stage, result.reply.action) == ("eom", "accept")
    assert result.added_headers == [
        ("X-Relayguard", "source=scanner-hq; mode=enforce; verdict=accept")
    ]
    line = audit_lines(milter)[-1]
    assert (line["queue_id"], line["outcome"], line["source"]) == (
        "4XPROTOQID",
        "accept",
        "scanner-hq",
    )
    # The size the size limits see: every header line, the empty line and the body, in CRLF.
    crlf = (DATA / "good.eml").read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert line["size"] == len(crlf)


@pytest.mark.parametrize(
    ("eml", "text"),
    [
        ("spoofed_from.eml", "550 5.7.1 From <admin@example.com> is not allowed for source S"),
        ("duplicate_from.eml", "550 5.7.1 duplicate From header (RFC 5322 section 3.6 allows one)"),
        ("spoofed_sender.eml", "550 5.7.1 Sender <admin@example.com> is not allowed for source S"),
        (
            "folded_from_in_subject.eml",
            "550 5.7.1 Subject header refused: a folded line reads like a From field"
            " (ambiguous: some mail clients would show it as one)",
        ),
    ],
)
def test_spoofing_refused_at_end_of_data(milter: MilterProcess, eml: str, text: str) -> None:
    result = send(milter, eml)
    assert (result.stage, result.reply.action) == ("eom", "replycode")
    assert result.reply.text == text.replace("source S", "source scanner-hq")
    assert result.added_headers == []


def test_unregistered_client_refused_at_mail(milter: MilterProcess) -> None:
    result = send(milter, macros={}, client_address="203.0.113.9")
    assert result.stage == "mail"
    assert result.reply.text == (
        "550 5.7.1 client 203.0.113.9 is not a registered source (not authenticated)"
    )
    assert audit_lines(milter)[-1]["stage"] == "mail"


UPS = b"From: UPS <ups@example.com>\r\nTo: it@example.com\r\n\r\nOn battery\r\n"
ON_PORT_25 = {"connect": {"{daemon_name}": "smtp"}, "eom": {"i": "4XUPSQID"}}


def test_connect_event_negotiated_away(milter: MilterProcess) -> None:
    with MilterClient(str(milter.socket_path)) as client:
        _, protocol = client.negotiate()
    assert protocol & SMFIP_NOCONNECT


def test_network_source_identified_by_the_client_addr_macro(milter: MilterProcess) -> None:
    """Without the connect event the source is still found by address, from Postfix's macros."""
    result = send(milter, UPS, sender="<ups@example.com>", macros=ON_PORT_25,
                  client_address="192.0.2.3")  # fmt: skip
    assert (result.stage, result.reply.action) == ("eom", "accept")
    line = audit_lines(milter)[-1]
    assert (line["source"], line["client_address"], line["outcome"]) == (
        "legacy-ups",
        "192.0.2.3",
        "accept",
    )


def test_client_addr_macro_decides_not_the_connect_event(milter: MilterProcess) -> None:
    """The connect event names a registered network; Postfix's {client_addr} at MAIL does not."""
    macros = {**ON_PORT_25, "mail": {"{client_addr}": "203.0.113.9"}}
    result = send(milter, UPS, sender="<ups@example.com>", macros=macros,
                  client_address="192.0.2.3")  # fmt: skip
    assert result.stage == "mail"
    assert result.reply.text == (
        "550 5.7.1 client 203.0.113.9 is not a registered source (not authenticated)"
    )


def test_recipients_refused_one_by_one(milter: MilterProcess) -> None:
    result = send(milter, rcpts=("<x@elsewhere.test>", "<alice@example.com>"))
    assert [(r, reply.action) for r, reply in result.rcpt_replies] == [
        ("<x@elsewhere.test>", "replycode"),
        ("<alice@example.com>", "continue"),
    ]
    assert result.rcpt_replies[0][1].text == (
        "550 5.7.1 Recipient <x@elsewhere.test> is not allowed for source scanner-hq"
    )
    assert result.reply.action == "accept"


def test_concurrent_connections_all_answered(milter: MilterProcess) -> None:
    emls = ["good.eml", "spoofed_from.eml"] * 20
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda eml: send(milter, eml), emls))
    actions = [r.reply.action for r in results]
    assert actions == ["accept", "replycode"] * 20


def test_oversized_header_drops_connection_and_milter_keeps_serving(
    milter: MilterProcess,
) -> None:
    """libmilter refuses packets over 64 KB: Postfix applies default_action=tempfail."""
    huge = b"From: Scanner <scanner@example.com>\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\nbody\r\n"
    with pytest.raises(MilterConnectionClosed):
        send(milter, huge)
    assert send(milter).reply.action == "accept"


def test_sighup_applies_a_good_config_and_keeps_the_old_one_on_error(
    milter: MilterProcess,
) -> None:
    good = milter.config.read_text()
    milter.config.write_text(good + "\nnot_a_key = 1\n")
    milter.signal(signal.SIGHUP)
    wait_for(lambda: "configuration refused, keeping the running one" in milter.log.read_text())
    assert send(milter, "spoofed_from.eml").reply.action == "replycode"

    allowed = good.replace('senders = ["scanner@example.com"]', 'senders = ["@example.com"]')
    milter.config.write_text(allowed)
    milter.signal(signal.SIGHUP)
    wait_for(lambda: send(milter, "spoofed_from.eml").reply.action == "accept")


def test_killed_worker_is_replaced(milter: MilterProcess) -> None:
    before = milter.workers()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    wait_for(lambda: len(milter.workers()) == 2 and before[0] not in milter.workers())
    assert all(send(milter).reply.action == "accept" for _ in range(6))


def test_unwritable_audit_log_is_a_temporary_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the audit directory should be")
    config = tmp_path / "relayguard.toml"
    config.write_text(config_text(audit=blocker / "audit.jsonl", workers=1))
    with MilterProcess(config, tmp_path / "m.sock", tmp_path / "m.log") as process:
        result = send(process)
    assert result.reply.text == "451 4.3.0 temporary failure: the relay cannot record this message"


def test_monitor_mode_accepts_and_audits_would_reject(tmp_path: Path) -> None:
    config = tmp_path / "relayguard.toml"
    audit = tmp_path / "audit.jsonl"
    config.write_text(config_text(mode="monitor", audit=audit, workers=1))
    with MilterProcess(config, tmp_path / "m.sock", tmp_path / "m.log") as process:
        result = send(process, "spoofed_from.eml", macros={}, client_address="203.0.113.9")
    assert result.reply.action == "accept"
    assert "verdict=would_reject" in result.added_headers[-1][1]
    line = json.loads(audit.read_text().splitlines()[-1])
    assert (line["action"], line["outcome"], line["source"]) == ("accept", "would_reject", None)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_full_disk_for_the_audit_log_is_a_temporary_failure(tmp_path: Path) -> None:
    """/dev/full answers every write with ENOSPC, like a full disk."""
    config = tmp_path / "relayguard.toml"
    config.write_text(config_text(audit=Path("/dev/full"), workers=1))
    with MilterProcess(config, tmp_path / "m.sock", tmp_path / "m.log") as process:
        result = send(process)
        assert result.reply.text == (
            "451 4.3.0 temporary failure: the relay cannot record this message"
        )
        assert "No space left on device" in process.log.read_text()
