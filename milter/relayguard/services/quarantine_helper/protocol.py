"""The helper's wire format: one request line, one reply; nothing else crosses the socket.

A request is `list`, or `show|release|delete QUEUE_ID`, in ASCII, ending in one newline, at most
MAX_REQUEST bytes. The queue id is checked whole (engine.quarantine.checked_queue_id), so no
option (`-d ALL`), path, space or second line can reach a Postfix command. A reply is
`ok LENGTH\\n` followed by LENGTH bytes (the list as JSON, the held message), or `error TEXT\\n`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from relayguard.core.errors import RelayguardError
from relayguard.core.safe_text import printable
from relayguard.engine.quarantine import Held, QuarantineError, checked_queue_id

MAX_REQUEST = 64  # "release " + the longest queue id + "\n" fits with room to spare
MAX_ERROR = 300
VERBS_WITH_ID = frozenset({"show", "release", "delete"})


class ProtocolError(RelayguardError):
    """A request or a reply that is not in the helper's format."""


@dataclass(frozen=True, slots=True)
class Request:
    verb: str
    queue_id: str = ""

    def encode(self) -> bytes:
        return (f"{self.verb} {self.queue_id}" if self.queue_id else self.verb).encode() + b"\n"


def parse_request(data: bytes) -> Request:
    """The request in `data`, or ProtocolError: anything unexpected is refused, never repaired."""
    if len(data) > MAX_REQUEST or not data.endswith(b"\n") or data.count(b"\n") != 1:
        raise ProtocolError("a request is one line of at most 64 bytes")
    try:
        words = data[:-1].decode("ascii").split(" ")
    except UnicodeDecodeError as exc:
        raise ProtocolError("a request is ASCII") from exc
    if words == ["list"]:
        return Request("list")
    if len(words) != 2 or words[0] not in VERBS_WITH_ID:
        raise ProtocolError("expected: list, or show|release|delete QUEUE_ID")
    try:
        return Request(words[0], checked_queue_id(words[1]))
    except QuarantineError as exc:
        raise ProtocolError("not a Postfix queue id") from exc


def ok(payload: bytes = b"") -> bytes:
    return b"ok %d\n" % len(payload) + payload


def error(text: str) -> bytes:
    """One line: a Postfix tool's message may hold a newline or a control character."""
    return b"error " + printable(text)[:MAX_ERROR].encode("utf-8", "replace") + b"\n"


def held_to_json(messages: list[Held]) -> bytes:
    return json.dumps([asdict(m) for m in messages]).encode()


def held_from_json(payload: bytes) -> list[Held]:
    try:
        items: Any = json.loads(payload)
        return [
            Held(
                queue_id=checked_queue_id(str(item["queue_id"])),
                arrival_time=int(item["arrival_time"]),
                size=int(item["size"]),
                sender=str(item["sender"]),
                recipients=tuple(str(r) for r in item["recipients"]),
            )
            for item in items
        ]
    except (ValueError, TypeError, KeyError, QuarantineError) as exc:
        raise ProtocolError("the helper's list is not what it should be") from exc
