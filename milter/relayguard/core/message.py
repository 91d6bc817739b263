"""What the adapter (or test-message) collected about one SMTP transaction.

Plain data with no knowledge of pymilter, so every check can be tested on a parsed .eml file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from relayguard.parsing.rfc5322 import split_header_block


@dataclass(frozen=True, slots=True)
class Client:
    """Who is connected, as Postfix told the milter in its macros."""

    address: str = ""
    hostname: str = ""
    sasl_user: str = ""
    cert_subject: str = ""
    cert_issuer: str = ""  # the CN of the CA that issued the verified certificate
    daemon_name: str = ""  # the Postfix listener (master.cf milter_macro_daemon_name)
    # MAIL FROM's AUTH= parameter: believed only from the send API's login on its listener.
    auth_author: str = ""


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP envelope so far. `mail_from` is the bare path ('' for the null sender '<>')."""

    client: Client
    mail_from: str
    recipients: tuple[str, ...] = ()
    queue_id: str = ""


class _RawStore:
    """The mutable part of a frozen Message: its raw buffer, and the body once cut out of it."""

    __slots__ = ("body", "body_start", "raw")

    def __init__(self) -> None:
        self.raw: bytes | None = None
        self.body_start = -1  # >= 0: `raw` is the buffer the message was received as
        self.body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A whole transaction at end of data. Header values are the raw bytes the MTA passed."""

    envelope: Envelope
    headers: tuple[tuple[str, bytes], ...]
    _body: bytes = b""  # the body when it was passed on its own (see `received` and `body`)
    size: int = 0
    refused_recipients: tuple[str, ...] = field(default=())
    # The raw message, shared by every scanner (clamd, YARA, spam): one copy of a 30 MB message
    # instead of one per scanner. A mutable store, so a frozen message can fill it.
    _store: _RawStore = field(default_factory=_RawStore, init=False, repr=False, compare=False)

    @classmethod
    def received(
        cls,
        envelope: Envelope,
        headers: tuple[tuple[str, bytes], ...],
        raw: bytes,
        body_start: int,
    ) -> Message:
        """A message received as one buffer (header block, blank line, body): the buffer is the
        raw message, and the body is not held a second time beside it."""
        message = cls(envelope, headers, b"", len(raw))
        message._store.raw = raw
        message._store.body_start = body_start
        return message

    @property
    def body(self) -> bytes:
        """The body. A received message's is cut out of its buffer on first use (the DKIM signer,
        after the scanners) and the buffer is let go: both are held only while it is copied."""
        store = self._store
        if store.body is not None:
            return store.body
        if store.body_start < 0 or store.raw is None:
            return self._body
        store.body = store.raw[store.body_start :]
        store.raw, store.body_start = None, -1
        return store.body

    def received_buffer(self) -> bytes | None:
        """The buffer the message was received as, while it still holds the body; else None."""
        store = self._store
        return store.raw if store.body_start >= 0 else None

    def raw(self) -> bytes:
        """The message as Postfix passed it: header fields as passed, a blank line, the body."""
        store = self._store
        if store.raw is None:
            # One join: one allocation of the exact size, one copy of the body.
            store.raw = b"".join((header_block(self.headers), self.body))
        return store.raw

    def release_raw(self) -> None:
        """Free the raw buffer once the scanners are done (signing reads `body`). A received
        buffer holds the body: it goes when the body is cut out of it, or with the message."""
        store = self._store
        if store.body_start < 0:
            store.raw = None

    def header_values(self, name: str) -> list[bytes]:
        """Values of every field whose name matches (case-insensitive, RFC 5322 §1.2.2)."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.strip().lower() == wanted]

    def first_header(self, name: str) -> str:
        """The first value as text, for audit lines; '' when absent."""
        values = self.header_values(name)
        return values[0].decode("utf-8", "replace") if values else ""


def header_block(headers: Iterable[tuple[str, bytes]]) -> bytes:
    """The header fields as Postfix passed them to the milter, and the blank line after them."""
    fields = [
        name.encode("utf-8", "surrogateescape") + b": " + value + b"\r\n" for name, value in headers
    ]
    return b"".join((*fields, b"\r\n"))


def message_from_bytes(raw: bytes, envelope: Envelope) -> Message:
    """Parse a raw RFC 5322 message the way Postfix hands it to a milter."""
    headers, body_offset = split_header_block(raw)
    body = raw[body_offset:]
    return Message(envelope, tuple(headers), body, len(raw))
