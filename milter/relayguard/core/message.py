"""What the adapter (or test-message) collected about one SMTP transaction.

Plain data with no knowledge of pymilter, so every check can be tested on a parsed .eml file.
"""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class Message:
    """A whole transaction at end of data. Header values are the raw bytes the MTA passed."""

    envelope: Envelope
    headers: tuple[tuple[str, bytes], ...]
    body: bytes = b""
    size: int = 0
    refused_recipients: tuple[str, ...] = field(default=())
    # The raw message, built on first use and shared by every scanner (clamd, YARA, spam): one
    # copy of a 30 MB message instead of one per scanner. A list, so a frozen message can fill it.
    _raw: list[bytes] = field(default_factory=list, init=False, repr=False, compare=False)

    def raw(self) -> bytes:
        """The message as Postfix passed it: header fields as passed, a blank line, the body."""
        if not self._raw:
            fields = [
                name.encode("utf-8", "surrogateescape") + b": " + value + b"\r\n"
                for name, value in self.headers
            ]
            # One join: one allocation of the exact size, one copy of the body.
            self._raw.append(b"".join((*fields, b"\r\n", self.body)))
        return self._raw[0]

    def release_raw(self) -> None:
        """Free the raw buffer once the scanners are done (signing reads `body`)."""
        self._raw.clear()

    def header_values(self, name: str) -> list[bytes]:
        """Values of every field whose name matches (case-insensitive, RFC 5322 §1.2.2)."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.strip().lower() == wanted]

    def first_header(self, name: str) -> str:
        """The first value as text, for audit lines; '' when absent."""
        values = self.header_values(name)
        return values[0].decode("utf-8", "replace") if values else ""


def message_from_bytes(raw: bytes, envelope: Envelope) -> Message:
    """Parse a raw RFC 5322 message the way Postfix hands it to a milter."""
    headers, body_offset = split_header_block(raw)
    body = raw[body_offset:]
    return Message(envelope=envelope, headers=tuple(headers), body=body, size=len(raw))
