"""A small, typed client for clamd's INSTREAM command, over a unix socket or TCP, with a timeout.

Protocol (clamd(8)): send ``zINSTREAM\\0``, then chunks each prefixed with their length as a 4-byte
big-endian integer, then a zero-length chunk; clamd answers one NUL-terminated line:
``stream: OK``, ``stream: NAME FOUND`` or ``... ERROR`` (e.g. ``INSTREAM size limit exceeded.
ERROR`` when the stream passes clamd's StreamMaxLength, after which clamd closes the connection).
Anything but OK or FOUND is an error the caller must not treat as clean.

Not every FOUND is malware: with ``AlertExceedsMax`` and ``AlertEncrypted`` set, clamd reports
what it could not look inside as ``Heuristics.Limits.Exceeded.*`` (MaxFileSize, MaxScanSize,
MaxRecursion, MaxFiles, MaxScanTime, Email*) and ``Heuristics.Encrypted.*`` (Zip, 7Zip, RAR, EGG,
PDF) — the names in libclamav 1.4. `ScanResult.detection` tells these apart.
"""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass
from enum import StrEnum

from relayguard.core.errors import RelayguardError

CHUNK = 64 * 1024
MAX_REPLY = 4096
SPEC = re.compile(r"^(?:unix|local):(/.+)$|^inet:(\d{1,5})@(.+)$")
LIMIT_PREFIX = "Heuristics.Limits.Exceeded"
ENCRYPTED_PREFIX = "Heuristics.Encrypted."


class ScannerUnavailable(RelayguardError):
    """clamd was unreachable, timed out or answered with an error: the message is unscanned."""


class Detection(StrEnum):
    """What a FOUND means: a signature matched, or clamd could not scan all of the content."""

    MALWARE = "malware"
    LIMIT_EXCEEDED = "limit_exceeded"
    ENCRYPTED = "encrypted"


@dataclass(frozen=True, slots=True)
class ScanResult:
    """`signature` is set when clamd found something; otherwise the stream is clean."""

    signature: str | None = None

    @property
    def detection(self) -> Detection | None:
        if self.signature is None:
            return None
        if self.signature.startswith(LIMIT_PREFIX):
            return Detection.LIMIT_EXCEEDED
        if self.signature.startswith(ENCRYPTED_PREFIX):
            return Detection.ENCRYPTED
        return Detection.MALWARE


def parse_spec(spec: str) -> tuple[int, str | tuple[str, int]]:
    """'unix:/run/clamav/clamd.ctl' or 'inet:3310@127.0.0.1' -> (family, address)."""
    match = SPEC.match(spec)
    if not match:
        raise ValueError(f"{spec!r} is not 'unix:/absolute/path' or 'inet:PORT@HOST'")
    if match.group(1):
        return socket.AF_UNIX, match.group(1)
    port, host = int(match.group(2)), match.group(3).strip("[]")
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, port)


class ClamdClient:
    def __init__(self, spec: str, timeout: float) -> None:
        self.spec = spec
        self.family, self.address = parse_spec(spec)
        self.timeout = timeout

    def instream(self, data: bytes) -> ScanResult:
        """Scan `data`; raise ScannerUnavailable for anything that is not a clear answer."""
        try:
            with socket.socket(self.family, socket.SOCK_STREAM) as conn:
                conn.settimeout(self.timeout)
                conn.connect(self.address)
                reply = self._exchange(conn, data)
        except TimeoutError:
            raise ScannerUnavailable(
                f"clamd at {self.spec} timed out after {self.timeout}s"
            ) from None
        except OSError as exc:
            raise ScannerUnavailable(
                f"clamd at {self.spec} unreachable: {exc.strerror or exc}"
            ) from None
        return parse_reply(reply)

    def ping(self) -> bool:
        try:
            with socket.socket(self.family, socket.SOCK_STREAM) as conn:
                conn.settimeout(self.timeout)
                conn.connect(self.address)
                conn.sendall(b"zPING\0")
                return _read_reply(conn) == "PONG"
        except OSError:
            return False

    @staticmethod
    def _exchange(conn: socket.socket, data: bytes) -> str:
        view = memoryview(data)
        try:
            # Each chunk goes out with its length prefix in one sendmsg: slices of the caller's
            # buffer, never a new copy of it, and one system call per chunk instead of two.
            _send_buffers(conn, [b"zINSTREAM\0"])
            for offset in range(0, len(view), CHUNK):
                chunk = view[offset : offset + CHUNK]
                _send_buffers(conn, [struct.pack("!L", len(chunk)), chunk])
            _send_buffers(conn, [struct.pack("!L", 0)])
        except (BrokenPipeError, ConnectionResetError):
            pass  # clamd stops reading when a limit is hit; its reply says why
        return _read_reply(conn)


def _send_buffers(conn: socket.socket, buffers: list[bytes | memoryview]) -> None:
    """sendall for several buffers (scatter/gather): a short send continues where it stopped."""
    pending = [memoryview(buffer) for buffer in buffers]
    while pending:
        sent = conn.sendmsg(pending)
        while pending and sent >= len(pending[0]):
            sent -= len(pending.pop(0))
        if pending:
            pending[0] = pending[0][sent:]


def _read_reply(conn: socket.socket) -> str:
    buffer = bytearray()
    while b"\0" not in buffer and len(buffer) < MAX_REPLY:
        try:
            chunk = conn.recv(MAX_REPLY)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buffer += chunk
    return bytes(buffer).split(b"\0", 1)[0].decode("utf-8", "replace").strip()


def parse_reply(reply: str) -> ScanResult:
    if not reply:
        raise ScannerUnavailable("clamd closed the connection without an answer")
    if reply.endswith("ERROR"):
        raise ScannerUnavailable(f"clamd error: {reply[:200]}")
    _, _, verdict = reply.partition(": ")
    if verdict == "OK":
        return ScanResult()
    if verdict.endswith(" FOUND"):
        return ScanResult(signature=verdict[: -len(" FOUND")].strip() or "unnamed")
    raise ScannerUnavailable(f"unexpected clamd answer: {reply[:200]}")
