"""The console's side of the helper: the hold queue's interface (engine.quarantine.Hold), each
call one request over the helper's socket. An id is checked here too, before it is sent."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import BinaryIO

from relayguard.engine.quarantine import Held, QuarantineError, checked_queue_id
from relayguard.services.quarantine_helper.protocol import (
    MAX_ERROR,
    ProtocolError,
    Request,
    held_from_json,
)

# The helper runs up to three Postfix tools of 60 s each (engine/quarantine.py) for a release.
REPLY_SECONDS = 200


class HelperHoldQueue:
    def __init__(self, socket_path: Path, timeout: float = REPLY_SECONDS) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def held(self) -> list[Held]:
        try:
            return held_from_json(self._ask(Request("list")))
        except ProtocolError as exc:
            raise QuarantineError(str(exc)) from exc

    def message(self, queue_id: str) -> bytes:
        return self._ask(Request("show", checked_queue_id(queue_id)))

    def release(self, queue_id: str) -> None:
        self._ask(Request("release", checked_queue_id(queue_id)))

    def delete(self, queue_id: str) -> None:
        self._ask(Request("delete", checked_queue_id(queue_id)))

    def _ask(self, request: Request) -> bytes:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(self.timeout)
                connection.connect(str(self.socket_path))
                connection.sendall(request.encode())
                with connection.makefile("rb") as reply:
                    return _payload(reply.readline(MAX_ERROR + 16), reply)
        except OSError as exc:
            raise QuarantineError(
                f"the quarantine helper at {self.socket_path} cannot be reached:"
                f" {exc.strerror or exc}"
            ) from exc


def _payload(head: bytes, rest: BinaryIO) -> bytes:
    if head.startswith(b"error "):
        raise QuarantineError(head[6:].decode("utf-8", "replace").rstrip("\n"))
    words = head.split()
    if len(words) != 2 or words[0] != b"ok" or not words[1].isdigit():
        raise QuarantineError("the quarantine helper's reply is not in its format")
    size = int(words[1])
    payload = rest.read(size)
    if len(payload) != size:
        raise QuarantineError("the quarantine helper's reply was cut short")
    return payload
