"""The milter-protocol client against a real pymilter process (echo_milter.py)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.milter_client import (
    ALL_ACTIONS,
    CONTINUE,
    MAX_DATA_SIZE,
    SMFIM_ENVFROM,
    SMFIP_NODATA,
    SMFIP_NOUNKNOWN,
    SMFIP_NR_HDR,
    SMFIP_NR_HELO,
    SMFIP_SKIP,
    MilterClient,
    MilterConnectFailed,
    MilterConnectionClosed,
    MilterProtocolError,
    MilterTimeout,
    Reply,
    Result,
    split_message,
)

pytestmark = pytest.mark.protocol

ECHO_MILTER = Path(__file__).parents[1] / "support" / "echo_milter.py"
SENDER = "<sender@test.invalid>"
RCPT = "<rcpt@test.invalid>"


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes], logs: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"echo milter exited with {proc.returncode}: {logs.read_text()}")
        with socket.socket(socket.AF_UNIX) as probe, contextlib.suppress(OSError):
            probe.connect(str(path))
            return
        time.sleep(0.05)
    pytest.fail(f"echo milter did not listen on {path} within 10 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # libmilter needs about 5 s to exit after SIGTERM; nothing here needs a clean exit.
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=1)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def milter_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("echo-milter")
    sock = workdir / "echo.sock"
    stderr_log = workdir / "stderr.log"
    with (workdir / "stdout.log").open("wb") as out, stderr_log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(ECHO_MILTER), f"unix:{sock}"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=workdir,
        )
    try:
        _wait_for_socket(sock, proc, stderr_log)
        yield str(sock)
    finally:
        _stop(proc)


def message(*headers: str, body: bytes = b"Hello.\r\n") -> bytes:
    head = "".join(f"{h}\r\n" for h in ("From: <sender@test.invalid>", "Subject: test", *headers))
    return head.encode() + b"\r\n" + body


def send(sock: str, raw: bytes, rcpts: list[str] | None = None, **kwargs: Any) -> Result:
    with MilterClient(sock, timeout=10) as client:
        return client.send_message(raw, sender=SENDER, rcpts=rcpts or [RCPT], **kwargs)


def echoed(result: Result, name: str) -> Any:
    """The JSON value of an X-Echo-<name> header the echo milter added."""
    values = [value for header, value in result.added_headers if header == f"X-Echo-{name}"]
    assert len(values) == 1, f"X-Echo-{name} in {result.added_headers}"
    return json.loads(values[0])


# Negotiation and normal flow ------------------------------------------------


def test_negotiation_reports_what_pymilter_requests(milter_socket: str) -> None:
    with MilterClient(milter_socket) as client:
        actions, protocol = client.negotiate()
    assert client.version == 6
    assert actions == ALL_ACTIONS
    # @noreply hello/header, no data/unknown callbacks, SKIP offered and kept.
    assert protocol == SMFIP_NR_HELO | SMFIP_NR_HDR | SMFIP_NODATA | SMFIP_NOUNKNOWN | SMFIP_SKIP
    assert client.symlists == {SMFIM_ENVFROM: ["{auth_authen}", "{auth_type}", "{mail_addr}"]}


def test_normal_message_continues_and_shows_added_header(milter_socket: str) -> None:
    raw = message("X-Test-Action: addheader", "X-Folded: one\r\n\ttwo", body=b"line 1\nline 2\n")
    result = send(milter_socket, raw, client_name="client.test.invalid", client_port=4321)

    assert (result.stage, result.reply) == ("eom", Reply("continue"))
    assert result.rcpt_replies == [(RCPT, Reply("continue"))]
    assert ("X-Added", "yes") in result.added_headers
    assert echoed(result, "Connect") == ["client.test.invalid", socket.AF_INET, ["127.0.0.1", 4321]]
    assert echoed(result, "Helo") == "client.test.invalid"
    assert echoed(result, "Mail") == [SENDER]
    assert echoed(result, "Rcpts") == [RCPT]
    assert echoed(result, "Headers") == [
        ["From", "<sender@test.invalid>"],
        ["Subject", "test"],
        ["X-Test-Action", "addheader"],
        ["X-Folded", "one\n\ttwo"],
    ]
    body = b"line 1\r\nline 2\r\n"
    assert echoed(result, "Body") == [len(body), 1, hashlib.sha256(body).hexdigest()]


def test_macros_reach_the_milter_at_each_stage(milter_socket: str) -> None:
    macros = {
        "connect": {"j": "relay.test.invalid", "{client_addr}": "127.0.0.1"},
        "helo": {"_": "client [127.0.0.1]"},
        "mail": {
            "{auth_authen}": "alice",
            "{auth_type}": "PLAIN",
            "{mail_addr}": "sender@test.invalid",
        },
        "rcpt": {"{rcpt_addr}": "rcpt@test.invalid"},
        "data": {"{test_data}": "sent although DATA itself is not"},
        "eoh": {"{test_eoh}": "eoh"},
        "eom": {"i": "4ABCDEF", "{test_eom}": "eom"},
    }
    result = send(milter_socket, message(), macros=macros)
    expected = {name: value for stage in macros.values() for name, value in stage.items()}
    assert echoed(result, "Macros") == expected


def test_ipv6_and_unix_clients_get_their_family(milter_socket: str) -> None:
    six = send(milter_socket, message(), client_address="::1", client_port=25)
    assert echoed(six, "Connect")[:2] == ["[::1]", socket.AF_INET6]
    local = send(
        milter_socket, message(), client_address="/run/client.sock", client_name="localhost"
    )
    assert echoed(local, "Connect") == ["localhost", socket.AF_UNIX, "/run/client.sock"]


# Envelope decisions -------------------------------------------------------------


def test_mail_from_reject_carries_the_custom_reply(milter_socket: str) -> None:
    with MilterClient(milter_socket) as client:
        result = client.send_message(message(), sender="<reject@test.invalid>", rcpts=[RCPT])
    assert result.stage == "mail"
    assert result.reply == Reply("replycode", "550", "550 5.7.1 nope")
    assert result.rcpt_replies == []
    assert not client.connected


def test_rcpt_tempfail_refuses_only_that_recipient(milter_socket: str) -> None:
    tempfail = "<tempfail@test.invalid>"
    result = send(milter_socket, message(), rcpts=[tempfail, RCPT])
    assert result.rcpt_replies == [(tempfail, Reply("tempfail")), (RCPT, Reply("continue"))]
    assert result.stage == "eom"
    assert echoed(result, "Rcpts") == [RCPT]


def test_transaction_ends_when_every_recipient_is_refused(milter_socket: str) -> None:
    result = send(milter_socket, message(), rcpts=["<tempfail@test.invalid>"])
    assert (result.stage, result.reply) == ("rcpt", Reply("tempfail"))
    assert result.added_headers == []


# End-of-message decisions and modifications ---------------------------------------


@pytest.mark.parametrize("verdict", ["accept", "reject", "tempfail", "discard"])
def test_eom_verdicts(milter_socket: str, verdict: str) -> None:
    result = send(milter_socket, message(f"X-Test-Action: {verdict}"))
    assert (result.stage, result.reply) == ("eom", Reply(verdict))


def test_quarantine_reason_is_captured(milter_socket: str) -> None:
    result = send(milter_socket, message("X-Test-Action: quarantine, accept"))
    assert result.reply == Reply("accept")
    assert result.quarantine_reason == "echo quarantine"


def test_chgheader_changes_and_deletes(milter_socket: str) -> None:
    result = send(milter_socket, message("X-Test-Action: chgheader", "X-Delete-Me: please"))
    assert result.changed_headers == [(1, "Subject", "changed subject"), (1, "X-Delete-Me", "")]


def test_every_modification_is_kept_raw_in_order(milter_socket: str) -> None:
    actions = "insheader, replbody, addrcpt, delrcpt, chgfrom, progress"
    result = send(milter_socket, message(f"X-Test-Action: {actions}"))
    mine = [m for m in result.modifications if not m[1].startswith(b"X-Echo-")]
    assert mine == [
        ("insheader", struct.pack("!I", 0) + b"X-Inserted\0first\0"),
        ("replbody", b"replaced body\r\n"),
        ("addrcpt", b"<added@test.invalid>\0"),
        ("delrcpt", b"<deleted@test.invalid>\0"),
        ("chgfrom", b"<new-sender@test.invalid>\0"),
    ]
    assert ("X-Inserted", "first") in result.added_headers
    assert result.new_body == b"replaced body\r\n"


# Size limits, failures and concurrency -------------------------------------------------


def test_large_body_is_split_into_packets(milter_socket: str) -> None:
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\n"
    raw_body = line * (3 * 1024 * 1024 // len(line))
    result = send(milter_socket, message(body=raw_body))
    body = raw_body.replace(b"\n", b"\r\n")
    size, chunks, digest = echoed(result, "Body")
    assert (size, digest) == (len(body), hashlib.sha256(body).hexdigest())
    assert chunks == math.ceil(len(body) / MAX_DATA_SIZE)
    assert result.reply == Reply("continue")


# A header packet carries "name\0value\0": 65,535 data bytes is libmilter's limit.
LARGEST_VALUE = MAX_DATA_SIZE - len("X-Huge") - 2


def test_header_at_the_packet_limit_passes(milter_socket: str) -> None:
    result = send(milter_socket, message("X-Huge: " + "a" * LARGEST_VALUE))
    assert result.reply == CONTINUE
    assert ["X-Huge", f"{'a' * 200}...[{LARGEST_VALUE} chars]"] in echoed(result, "Headers")


@pytest.mark.parametrize("size", [LARGEST_VALUE + 1, 70_000])
def test_header_over_the_limit_drops_the_connection_and_the_next_one_works(
    milter_socket: str, size: int
) -> None:
    with MilterClient(milter_socket) as client, pytest.raises(MilterConnectionClosed):
        client.send_message(message("X-Huge: " + "a" * size), sender=SENDER, rcpts=[RCPT])
    assert not client.connected
    assert send(milter_socket, message()).reply == CONTINUE


def test_two_concurrent_clients_both_get_answers(milter_socket: str) -> None:
    nap = 0.6
    results: dict[str, Result] = {}

    def run(name: str) -> None:
        raw = message("X-Test-Action: sleep", f"X-Test-Sleep: {nap}", f"X-Client: {name}")
        results[name] = send(milter_socket, raw)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("one", "two")]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    elapsed = time.monotonic() - started
    assert {name: r.reply for name, r in results.items()} == {"one": CONTINUE, "two": CONTINUE}
    assert ["X-Client", "two"] in echoed(results["two"], "Headers")
    assert elapsed < 2 * nap, "the milter served the two connections one after the other"


def test_slow_milter_raises_timeout(milter_socket: str) -> None:
    with MilterClient(milter_socket, timeout=0.3) as client, pytest.raises(MilterTimeout):
        client.send_message(
            message("X-Test-Action: sleep", "X-Test-Sleep: 2"), sender=SENDER, rcpts=[RCPT]
        )
    assert not client.connected


def test_low_level_steps_and_two_transactions_on_one_connection(milter_socket: str) -> None:
    with MilterClient(milter_socket) as client:
        client.negotiate()
        assert client.connect("[127.0.0.1]", "127.0.0.1", 25, {"j": "relay"}) == CONTINUE
        assert client.helo("client") == CONTINUE  # no reply expected: SMFIP_NR_HELO
        assert client.mail("<reject@test.invalid>").action == "replycode"
        client.abort()
        assert client.mail(SENDER) == CONTINUE
        assert client.rcpt(RCPT) == CONTINUE
        assert client.data() == CONTINUE  # not sent: SMFIP_NODATA
        assert client.header("Subject", b"low level") == CONTINUE
        assert client.eoh() == CONTINUE
        assert client.body(b"x" * (MAX_DATA_SIZE + 1)) == CONTINUE
        reply, modifications = client.eom()
        assert reply == CONTINUE
        added = dict(m[1].rstrip(b"\0").split(b"\0") for m in modifications if m[0] == "addheader")
        assert json.loads(added[b"X-Echo-Body"])[:2] == [MAX_DATA_SIZE + 1, 2]
        client.quit()
        assert not client.connected


def test_missing_socket_raises_connect_failed(tmp_path: Path) -> None:
    with pytest.raises(MilterConnectFailed):
        MilterClient(str(tmp_path / "nothing.sock"), timeout=1).open()


# Broken milters, scripted ---------------------------------------------------------------


def packet(code: str, payload: bytes = b"") -> bytes:
    return struct.pack("!I", len(payload) + 1) + code.encode() + payload


OPTNEG_REPLY = packet("O", struct.pack("!III", 6, ALL_ACTIONS, 0))


@contextlib.contextmanager
def scripted_milter(path: Path, script: bytes, *, hang_up: bool = False) -> Iterator[str]:
    """A fake milter: answers OPTNEG with `script` (all at once), then listens or hangs up."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(5)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                conn.recv(65536)
                conn.sendall(script)
                while not hang_up and conn.recv(65536):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield str(path)
    finally:
        server.close()
        thread.join(timeout=6)


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (packet("X"), MilterProtocolError),
        (packet("O", b"\0\0\0\6"), MilterProtocolError),
        (packet("O", struct.pack("!III", 6, ALL_ACTIONS, 1 << 30)), MilterProtocolError),
        (OPTNEG_REPLY + packet("c", b"junk"), MilterProtocolError),
        (OPTNEG_REPLY + packet("y", b"250 2.0.0 fine\0"), MilterProtocolError),
        (OPTNEG_REPLY + packet("h", b"X-Early\0outside eom\0"), MilterProtocolError),
        (OPTNEG_REPLY + b"\xff\xff\xff\xffc", MilterProtocolError),
        (OPTNEG_REPLY + b"\0\0", MilterTimeout),
        (OPTNEG_REPLY, MilterTimeout),
    ],
    ids=[
        "not-optneg",
        "short-optneg",
        "unoffered-flag",
        "payload-on-continue",
        "non-error-replycode",
        "modification-outside-eom",
        "absurd-length",
        "truncated-packet",
        "silent",
    ],
)
def test_broken_milter_raises_clear_errors(
    tmp_path: Path, script: bytes, error: type[Exception]
) -> None:
    with scripted_milter(tmp_path / "fake.sock", script) as path:
        client = MilterClient(path, timeout=0.3)
        with pytest.raises(error):
            client.negotiate()
            client.connect("[127.0.0.1]", "127.0.0.1", 25)
        assert not client.connected


def test_milter_hanging_up_raises_connection_closed(tmp_path: Path) -> None:
    with scripted_milter(tmp_path / "fake.sock", b"", hang_up=True) as path:
        client = MilterClient(path, timeout=2)
        with pytest.raises(MilterConnectionClosed):
            client.negotiate()


# Header splitting like Postfix ---------------------------------------------------------


def test_split_message_like_postfix() -> None:
    raw = b"A: one\r\nB:\ttab\nC :  two spaces\r\nD: x\r\n  folded\r\n\r\nbody\nlast"
    fields, body = split_message(raw)
    assert fields == [
        (b"A", b"one"),
        (b"B", b"\ttab"),
        (b"C", b" two spaces"),
        (b"D", b"x\n  folded"),
    ]
    assert body == b"body\r\nlast\r\n"
    fields, _ = split_message(raw, leading_space=True)
    assert fields[0] == (b"A", b" one")


def test_split_message_non_header_line_starts_the_body() -> None:
    fields, body = split_message(b"A: 1\nnot a header\nB: 2\n")
    assert fields == [(b"A", b"1")]
    assert body == b"not a header\r\nB: 2\r\n"
    assert split_message(b"A: 1\n") == ([(b"A", b"1")], b"")
