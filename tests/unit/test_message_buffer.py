"""A message received as one buffer: the scanners' raw message and the signer's body, one copy."""

from __future__ import annotations

import os
import tracemalloc
from email.message import EmailMessage

import pytest

from relayguard.core.message import Client, Envelope, Message, header_block, message_from_bytes
from relayguard.parsing.mime import WalkLimits, release_walk, walk_message

pytestmark = pytest.mark.unit

ENVELOPE = Envelope(Client(address="192.0.2.3"), "ups@example.com", ("it@example.com",))


def with_attachment() -> bytes:
    """A text part and a base64 attachment long enough for the walker's blob path."""
    message = EmailMessage()
    message["From"] = "UPS <ups@example.com>"
    message["Subject"] = "scan"
    message.set_content("See the scan.\n")
    message.add_attachment(
        os.urandom(300_000), maintype="application", subtype="pdf", filename="scan.pdf"
    )
    return message.as_bytes().replace(b"\n", b"\r\n")


def pair(raw: bytes) -> tuple[Message, Message]:
    """The same message as test-message builds it (a body of its own) and as the adapter does."""
    legacy = message_from_bytes(raw, ENVELOPE)
    buffer = header_block(legacy.headers) + legacy.body
    start = len(buffer) - len(legacy.body)
    return legacy, Message.received(ENVELOPE, legacy.headers, buffer, start)


def test_the_received_buffer_is_the_raw_message_every_scanner_reads() -> None:
    legacy, received = pair(with_attachment())
    buffer = received.received_buffer()
    assert buffer is not None
    assert received.raw() is buffer  # no second copy for clamd, YARA or the spam scanner
    assert received.raw() == legacy.raw()
    assert received.size == legacy.size == len(buffer)


def test_body_is_cut_from_the_buffer_once_and_the_buffer_let_go() -> None:
    legacy, received = pair(with_attachment())
    assert received.body == legacy.body
    assert received.received_buffer() is None
    assert received.body is received.body
    assert received.raw() == legacy.raw()  # rebuilt if a scanner still asked for it


def test_cutting_the_body_out_lets_the_buffer_go() -> None:
    """The body and the buffer are held together only while the body is copied, not after."""
    tracemalloc.start()
    try:
        received = Message.received(
            ENVELOPE, (("Subject", b"x"),), b"Subject: x\r\n\r\n" + b"a" * 8_000_000, 14
        )
        held = tracemalloc.get_traced_memory()[0]
        assert len(received.body) == 8_000_000
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after < held + 1_000_000


def test_releasing_the_scanners_buffer_keeps_the_body_for_signing() -> None:
    legacy, received = pair(with_attachment())
    release_walk(received)
    assert received.body == legacy.body


def test_walk_of_the_buffer_equals_the_walk_of_headers_and_body() -> None:
    legacy, received = pair(with_attachment())
    limits = WalkLimits()
    from_buffer = walk_message(received, limits)
    release_walk(received)
    from_parts = walk_message(legacy, limits)
    release_walk(legacy)
    assert [(p.path, p.content_type, p.filename, p.data) for p in from_buffer.parts] == [
        (p.path, p.content_type, p.filename, p.data) for p in from_parts.parts
    ]
    assert (from_buffer.defects, from_buffer.decoded_bytes) == (
        from_parts.defects,
        from_parts.decoded_bytes,
    )
    assert any(p.filename == "scan.pdf" and len(p.data) == 300_000 for p in from_buffer.parts)


def test_empty_body_and_folded_header() -> None:
    raw = b"From: a@example.com\r\nSubject: one\r\n two\r\n\r\n"
    legacy, received = pair(raw)
    assert received.raw() == legacy.raw()
    assert received.body == b""
