"""The helper itself: root, no network, one unix socket that only the console's group reaches.

Postfix's postsuper refuses every user but root and postcat must read the queue, so the console
(its own unprivileged, sandboxed user) asks this process instead of running them. It answers
the four requests of protocol.py through engine/quarantine.py (a fixed argv, no shell), one
connection at a time, and logs each request with the peer's uid (never a message's content).
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import signal
import socket
import stat
import struct
from pathlib import Path
from types import FrameType

from relayguard.engine import quarantine
from relayguard.services.quarantine_helper.protocol import (
    MAX_REQUEST,
    ProtocolError,
    Request,
    error,
    held_to_json,
    ok,
    parse_request,
)

log = logging.getLogger(__name__)
CLIENT_SECONDS = 10  # a client that sends nothing is dropped: the helper serves one at a time
SOCKET_MODE = 0o660
DIRECTORY_MODE = 0o750


class Helper:
    """Answers one request on `queue` (Postfix's own: engine.quarantine.HoldQueue)."""

    def __init__(self, queue: quarantine.Hold) -> None:
        self.queue = queue

    def answer(self, data: bytes) -> tuple[Request | None, bytes]:
        try:
            request = parse_request(data)
        except ProtocolError as exc:
            return None, error(str(exc))
        try:
            return request, ok(self._run(request))
        except quarantine.QuarantineError as exc:
            return request, error(str(exc))

    def _run(self, request: Request) -> bytes:
        if request.verb == "list":
            return held_to_json(self.queue.held())
        if request.verb == "show":
            return self.queue.message(request.queue_id)
        if request.verb == "release":
            self.queue.release(request.queue_id)
        else:
            self.queue.delete(request.queue_id)
        return b""


def listen(path: Path, group: str) -> socket.socket:
    """The socket, 0660 owner:GROUP from its creation (umask), in a directory 0750 owner:GROUP
    that this process owns (a directory someone else may write would let them swap the path)."""
    gid = grp.getgrnam(group).gr_gid
    path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    directory = path.parent.lstat()
    if not stat.S_ISDIR(directory.st_mode) or directory.st_uid != os.geteuid():
        raise OSError(f"{path.parent} must be a directory owned by the helper's user")
    os.chown(path.parent, -1, gid)
    os.chmod(path.parent, DIRECTORY_MODE)
    if path.is_socket():
        path.unlink()  # left by a helper that was killed
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o777 & ~SOCKET_MODE)
    try:
        server.bind(str(path))
    finally:
        os.umask(previous)
    os.chown(path, -1, gid)
    server.listen(8)
    return server


def serve(path: Path, group: str, postfix_config: Path) -> None:
    """Answer requests until SIGTERM or SIGINT; the socket path is removed on the way out."""
    server = listen(path, group)
    signal.signal(signal.SIGTERM, _stop)
    log.info("quarantine helper on %s (group %s) for %s", path, group, postfix_config)
    try:
        answer_forever(server, Helper(quarantine.HoldQueue(postfix_config)))
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        path.unlink(missing_ok=True)


def answer_forever(server: socket.socket, helper: Helper) -> None:
    while True:
        connection, _ = server.accept()
        with connection:
            _serve_one(helper, connection)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _serve_one(helper: Helper, connection: socket.socket) -> None:
    connection.settimeout(CLIENT_SECONDS)
    try:
        data = _read_request(connection)
        request, reply = helper.answer(data)
        connection.sendall(reply)
    except OSError as exc:
        log.warning("client dropped: %s", exc)
        return
    what = f"{request.verb} {request.queue_id}".strip() if request else "refused request"
    outcome = "ok" if reply.startswith(b"ok ") else "error"
    log.info("%s from uid %s: %s", what, _peer_uid(connection), outcome)
    with contextlib.suppress(OSError):  # the client went away: the reply is out either way
        _drain(connection)


def _read_request(connection: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) <= MAX_REQUEST:
        chunk = connection.recv(MAX_REQUEST + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _drain(connection: socket.socket) -> None:
    """Read what a refused client sent beyond its line (a bounded amount): closing a unix
    socket with unread input resets it, and the client would lose the reply saying why."""
    connection.shutdown(socket.SHUT_WR)
    for _ in range(16):
        if not connection.recv(4096):
            return


def _peer_uid(connection: socket.socket) -> int:
    credentials = connection.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
    )
    return int(struct.unpack("3i", credentials)[1])
