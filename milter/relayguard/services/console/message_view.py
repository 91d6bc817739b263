"""A held message made safe to show: header fields and decoded text parts as plain text, the
attachments only listed.

The message is hostile until a person has decided otherwise: every value is text the template
escapes, HTML parts are shown as their source (never rendered, so no script runs and nothing
remote is fetched), attachments are named but not opened, and everything is bounded (header
count and length, text per part) so a huge header cannot make a huge page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relayguard.core.safe_text import printable
from relayguard.parsing.mime import WalkLimits, walk

MAX_HEADERS = 200
MAX_HEADER_CHARS = 2000
MAX_TEXT_CHARS = 100_000
# Enough to list what was sent; a held message is shown, not scanned again.
VIEW_LIMITS = WalkLimits(max_depth=8, max_parts=200, max_decoded_bytes=16 << 20)
_FIELD = re.compile(rb"^([!-9;-~]+):[ \t]?(.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class TextPart:
    path: str
    content_type: str
    text: str
    clipped: bool


@dataclass(frozen=True, slots=True)
class Attachment:
    path: str
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class MessageView:
    headers: list[tuple[str, str]]
    more_headers: int
    parts: list[TextPart]
    attachments: list[Attachment]


def _clip(text: str, limit: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit], True)


def header_fields(raw: bytes) -> list[tuple[str, str]]:
    """(name, value) of the header section, unfolded, undecodable bytes replaced."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    fields: list[tuple[str, str]] = []
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.strip().decode("utf-8", "replace"))
            continue
        match = _FIELD.match(line)
        if match:
            fields.append((match[1].decode("ascii"), match[2].decode("utf-8", "replace")))
    return fields


def view(raw: bytes) -> MessageView:
    fields = header_fields(raw)
    headers = [
        (printable(name), printable(_clip(value, MAX_HEADER_CHARS)[0]))
        for name, value in fields[:MAX_HEADERS]
    ]
    parts: list[TextPart] = []
    attachments: list[Attachment] = []
    for part in walk(raw, VIEW_LIMITS).parts:
        if part.in_archive or part.in_document:
            continue  # an archive's members: listing them would mean opening it
        if part.is_attachment or not part.content_type.startswith("text/"):
            attachments.append(
                Attachment(part.path, printable(part.filename), part.content_type, part.size)
            )
            continue
        text, clipped = _clip(part.text(), MAX_TEXT_CHARS)
        # Lines stay lines; every other unsafe character (ESC, bidi overrides) is made visible.
        shown = "\n".join(printable(line) for line in text.replace("\r\n", "\n").split("\n"))
        parts.append(TextPart(part.path, part.content_type, shown, clipped))
    return MessageView(headers, max(0, len(fields) - MAX_HEADERS), parts, attachments)
