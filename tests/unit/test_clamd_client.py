"""The INSTREAM client against a scripted clamd on a unix socket: framing, answers, failures."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from relayguard.scanners.clamd import (
    ClamdClient,
    Detection,
    ScannerUnavailable,
    ScanResult,
    parse_reply,
    parse_spec,
)

pytestmark = pytest.mark.unit

FakeClamd = Callable[[Callable[[socket.socket], None]], str]


def read_stream(conn: socket.socket) -> bytes:
    """What clamd does: the command, then length-prefixed chunks up to a zero length."""
    command = b""
    while not command.endswith(b"\0"):
        command += conn.recv(1)
    assert command == b"zINSTREAM\0"
    data = b""
    while True:
        size = struct.unpack("!L", _exact(conn, 4))[0]
        if size == 0:
            return data
        data += _exact(conn, size)


def _exact(conn: socket.socket, count: int) -> bytes:
    out = b""
    while len(out) < count:
        chunk = conn.recv(count - len(out))
        assert chunk
        out += chunk
    return out


@pytest.fixture
def fake_clamd(tmp_path: Path) -> Iterator[FakeClamd]:
    threads: list[threading.Thread] = []
    servers: list[socket.socket] = []

    def start(behaviour: Callable[[socket.socket], None]) -> str:
        path = tmp_path / f"clamd{len(servers)}.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen(1)
        servers.append(server)

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                behaviour(conn)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return f"unix:{path}"

    yield start
    for server in servers:
        server.close()
    for thread in threads:
        thread.join(timeout=5)


def test_stream_is_framed_in_chunks_and_found_is_parsed(fake_clamd: FakeClamd) -> None:
    received: list[bytes] = []

    def behaviour(conn: socket.socket) -> None:
        received.append(read_stream(conn))
        conn.sendall(b"stream: Eicar-Test-Signature FOUND\0")

    spec = fake_clamd(behaviour)
    data = bytes(range(256)) * 1000  # several 64 KB chunks
    result = ClamdClient(spec, 5).instream(data)
    assert result.signature == "Eicar-Test-Signature"
    assert received == [data]


def test_size_limit_error_is_unavailable_not_clean(fake_clamd: FakeClamd) -> None:
    def behaviour(conn: socket.socket) -> None:
        conn.recv(100)
        conn.sendall(b"INSTREAM size limit exceeded. ERROR\0")

    spec = fake_clamd(behaviour)
    with pytest.raises(ScannerUnavailable, match="size limit exceeded"):
        ClamdClient(spec, 5).instream(b"x" * 2_000_000)


def test_timeout(fake_clamd: FakeClamd) -> None:
    done = threading.Event()

    def behaviour(conn: socket.socket) -> None:
        read_stream(conn)
        done.wait(5)  # never answers

    spec = fake_clamd(behaviour)
    with pytest.raises(ScannerUnavailable, match=r"timed out after 0\.3s"):
        ClamdClient(spec, 0.3).instream(b"data")
    done.set()


def test_unreachable(tmp_path: Path) -> None:
    with pytest.raises(ScannerUnavailable, match="unreachable"):
        ClamdClient(f"unix:{tmp_path}/none.sock", 1).instream(b"x")


@pytest.mark.parametrize(
    ("reply", "signature"),
    [("stream: OK", None), ("stream: Win.Test.EICAR_HDB-1 FOUND", "Win.Test.EICAR_HDB-1")],
)
def test_parse_reply(reply: str, signature: str | None) -> None:
    assert parse_reply(reply).signature == signature


@pytest.mark.parametrize(
    ("signature", "detection"),
    [
        # clamd 1.x names (strings in libclamav 1.4): AlertExceedsMax and AlertEncrypted.
        ("Heuristics.Limits.Exceeded.MaxFileSize", Detection.LIMIT_EXCEEDED),
        ("Heuristics.Limits.Exceeded.MaxRecursion", Detection.LIMIT_EXCEEDED),
        ("Heuristics.Limits.Exceeded.MaxScanTime", Detection.LIMIT_EXCEEDED),
        ("Heuristics.Encrypted.7Zip", Detection.ENCRYPTED),
        ("Heuristics.Encrypted.RAR", Detection.ENCRYPTED),
        ("Heuristics.Encrypted.Zip", Detection.ENCRYPTED),
        ("Heuristics.Encrypted.PDF", Detection.ENCRYPTED),
        ("Eicar-Test-Signature", Detection.MALWARE),
        ("Heuristics.Phishing.Email.SpoofedDomain", Detection.MALWARE),
        # A signature merely named like a heuristic elsewhere in its name is still malware.
        ("Win.Trojan.Heuristics.Encrypted.Zip", Detection.MALWARE),
    ],
)
def test_found_names_tell_malware_from_content_clamd_could_not_scan(
    signature: str, detection: Detection
) -> None:
    assert ScanResult(signature).detection is detection


def test_clean_result_has_no_detection() -> None:
    assert ScanResult().detection is None


@pytest.mark.parametrize("reply", ["", "stream: Can't allocate memory ERROR", "UNKNOWN COMMAND"])
def test_unclear_replies_raise(reply: str) -> None:
    with pytest.raises(ScannerUnavailable):
        parse_reply(reply)


def test_parse_spec() -> None:
    assert parse_spec("unix:/run/clamav/clamd.ctl") == (socket.AF_UNIX, "/run/clamav/clamd.ctl")
    assert parse_spec("inet:3310@127.0.0.1") == (socket.AF_INET, ("127.0.0.1", 3310))
    assert parse_spec("inet:3310@[::1]") == (socket.AF_INET6, ("::1", 3310))
    with pytest.raises(ValueError, match="not 'unix"):
        parse_spec("tcp:127.0.0.1:3310")
