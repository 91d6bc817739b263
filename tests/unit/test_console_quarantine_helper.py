"""The quarantine helper's protocol: strict queue ids, one request line, replies framed; the
server and the console's client over a real unix socket (the hold queue itself in memory)."""

from __future__ import annotations

import contextlib
import grp
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.test_console import FakeHold

from relayguard.engine.quarantine import QuarantineError, checked_queue_id
from relayguard.services.quarantine_helper.client import HelperHoldQueue
from relayguard.services.quarantine_helper.protocol import (
    ProtocolError,
    Request,
    error,
    parse_request,
)
from relayguard.services.quarantine_helper.server import Helper, answer_forever, listen

pytestmark = pytest.mark.unit

HOSTILE_IDS = [
    "../../etc/shadow",
    "4QTEST 0001",
    "4QTEST0001\n",
    "4QTEST0001\nshow 4QTEST0002",
    "4QTEST0001\r",
    "A" * 33,
    "-d ALL",
    "ALL",
    "-d",
    "",
    "4QTE",
    "4QTEST\x00001",
    "4QTÉST0001",
    "\uff14QTEST0001",  # a fullwidth 4: \w would take it, Postfix never writes one
]


@pytest.mark.parametrize("text", HOSTILE_IDS)
def test_hostile_queue_ids_are_refused(text: str) -> None:
    with pytest.raises(QuarantineError):
        checked_queue_id(text)


@pytest.mark.parametrize("text", ["4QTEST0001", "3F1A2B4C5D", "4Qz9Lk1sPTz3ZbW", "A" * 32])
def test_postfix_queue_ids_pass(text: str) -> None:
    assert checked_queue_id(text) == text


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"list\n", Request("list")),
        (b"show 4QTEST0001\n", Request("show", "4QTEST0001")),
        (b"release 4QTEST0001\n", Request("release", "4QTEST0001")),
        (b"delete 4QTEST0001\n", Request("delete", "4QTEST0001")),
    ],
)
def test_requests_are_parsed(data: bytes, expected: Request) -> None:
    assert parse_request(data) == expected
    assert expected.encode() == data


HOSTILE_REQUESTS = [
    b"show ../../etc/shadow\n",
    b"delete -d ALL\n",
    b"delete ALL\n",
    b"show 4QTEST0001 hold\n",
    b"show  4QTEST0001\n",
    b"show 4QTEST0001\n\n",
    b"show 4QTEST0001\nshow 4QTEST0002\n",
    b"show 4QTEST0001\r\n",
    b"show 4QTEST0001",
    b"show\n",
    b"list 4QTEST0001\n",
    b"SHOW 4QTEST0001\n",
    b"requeue 4QTEST0001\n",
    b"show 4QT\xc3\x89ST0001\n",
    b"show " + b"A" * 80 + b"\n",
    b"\n",
    b"",
]


@pytest.mark.parametrize("data", HOSTILE_REQUESTS)
def test_hostile_requests_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_request(data)


def test_an_error_reply_is_one_escaped_line() -> None:
    reply = error("postsuper: fatal\nok 5\nhello\x1b[2J" + "x" * 1000)
    assert reply.count(b"\n") == 1 and reply.startswith(b"error ") and b"\x1b" not in reply
    assert len(reply) < 400


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[tuple[HelperHoldQueue, FakeHold, Path]]:
    """The helper's accept loop on a socket in tmp_path, in a thread, over messages in memory."""
    hold = FakeHold({"4QPLAIN01": b"Subject: hi\r\n\r\nhello\r\n", "4QOTHER02": b"x\r\n"})
    path = tmp_path / "helper" / "helper.sock"
    group = grp.getgrgid(os.getegid()).gr_name
    server = listen(path, group)
    thread = threading.Thread(target=_answer, args=(server, Helper(hold)), daemon=True)
    thread.start()
    yield HelperHoldQueue(path, timeout=10), hold, path
    server.close()


def _answer(server: socket.socket, helper: Helper) -> None:
    with contextlib.suppress(OSError):  # the test closed the socket
        answer_forever(server, helper)


def test_socket_and_directory_modes(helper: tuple[HelperHoldQueue, FakeHold, Path]) -> None:
    _, _, path = helper
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750


def test_the_client_lists_shows_releases_and_deletes(
    helper: tuple[HelperHoldQueue, FakeHold, Path],
) -> None:
    client, hold, _ = helper
    assert sorted(m.queue_id for m in client.held()) == ["4QOTHER02", "4QPLAIN01"]
    assert client.message("4QPLAIN01") == b"Subject: hi\r\n\r\nhello\r\n"
    client.release("4QPLAIN01")
    client.delete("4QOTHER02")
    assert hold.released == ["Subject: h"] and hold.messages == {}
    with pytest.raises(QuarantineError, match="not in the hold queue"):
        client.message("4QPLAIN01")


def raw_request(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(10)
        connection.connect(str(path))
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := connection.recv(4096):
            reply += chunk
    return reply


@pytest.mark.parametrize("data", HOSTILE_REQUESTS)
def test_the_server_refuses_hostile_requests_and_keeps_serving(
    helper: tuple[HelperHoldQueue, FakeHold, Path], data: bytes
) -> None:
    client, hold, path = helper
    reply = raw_request(path, data)
    assert reply.startswith(b"error ") and reply.count(b"\n") == 1
    assert sorted(hold.messages) == ["4QOTHER02", "4QPLAIN01"] and hold.released == []
    assert len(client.held()) == 2  # the next client is served


def test_the_client_never_sends_a_hostile_id(
    helper: tuple[HelperHoldQueue, FakeHold, Path],
) -> None:
    client, hold, _ = helper
    for text in HOSTILE_IDS:
        with pytest.raises(QuarantineError, match="not a Postfix queue id"):
            client.delete(text)
    assert len(hold.messages) == 2


def test_an_unreachable_helper_is_a_quarantine_error(tmp_path: Path) -> None:
    with pytest.raises(QuarantineError, match="cannot be reached"):
        HelperHoldQueue(tmp_path / "none.sock").held()
