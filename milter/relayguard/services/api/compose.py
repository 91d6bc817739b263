"""The RFC 5322 message of `POST /v1/messages`, built from its JSON (the MIME text: mime.py).

Every problem names the JSON field (`to[1]`, `attachments[0].content`) so that a developer fixes a
request without reading our logs. Header values never carry CR or LF (no header injection), only
allow-listed custom headers are copied, and Bcc never becomes a header: it is envelope only.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.utils
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from relayguard.parsing.rfc5322 import HeaderViolation, Mailbox, parse_mailbox_field
from relayguard.services.api import mime
from relayguard.services.api.errors import ApiError, bad_field

MAX_RECIPIENTS = 100
CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # TAB is the only control allowed in a value
FIELDS = frozenset(
    {"from", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "attachments", "headers"}
)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What is handed to Postfix: the envelope and the message bytes."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str


def compose(body: object, allowed_headers: frozenset[str], now: float) -> Outgoing:
    """The message a JSON request describes, or ApiError(400) naming the field at fault."""
    if not isinstance(body, Mapping):
        raise bad_field("", "the body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise bad_field(unknown[0], "unknown field")
    sender = _mailbox(body.get("from"), "from")
    to, cc, bcc = (_mailboxes(body, name) for name in ("to", "cc", "bcc"))
    recipients = [*to, *cc, *bcc]
    if not recipients:
        raise bad_field("to", "at least one recipient in to, cc or bcc")
    if len(recipients) > MAX_RECIPIENTS:
        raise bad_field("to", f"at most {MAX_RECIPIENTS} recipients in to, cc and bcc together")
    text, html = _text(body, "text"), _text(body, "html")
    if text is None and html is None:
        raise bad_field("text", "give text, html or both")

    reply_to = _mailboxes(body, "reply_to")
    subject = _header_text(body.get("subject", ""), "subject")
    custom = _custom_headers(body.get("headers"), allowed_headers)
    attachments = [
        _attachment(item, f"attachments[{index}]")
        for index, item in enumerate(_list(body.get("attachments"), "attachments"))
    ]
    message_id = new_message_id(sender.domain, now)
    header = [mime.field("From", mime.mailbox(sender))]
    for name, group in (("To", to), ("Cc", cc), ("Reply-To", reply_to)):
        if group:
            header.append(mime.field(name, mime.mailbox_list(group)))
    header += [
        mime.field("Subject", mime.unstructured(subject)),
        f"Date: {email.utils.formatdate(now, localtime=False)}\r\n",
        f"Message-ID: {message_id}\r\n",
        *(mime.field(name, mime.unstructured(value)) for name, value in custom),
    ]
    content = _content(text, html, attachments)
    return Outgoing(
        mail_from=sender.address,
        recipients=tuple(box.address for box in recipients),
        data=mime.message("".join(header), content),
        message_id=message_id,
    )


def new_message_id(domain: str, now: float) -> str:
    """RFC 5322 §3.6.4: unique by the time and 96 random bits, on the sender's domain."""
    return f"<{int(now * 1000):x}.{secrets.token_hex(12)}@{domain}>"


def _list(value: object, field: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise bad_field(field, "must be an array")
    return value


def _mailbox(value: object, field: str) -> Mailbox:
    """One mailbox: 'addr@example.com' or 'Name <addr@example.com>', by the same strict parser
    the milter applies to From (parsing/rfc5322.py). ASCII addresses only: the hand-off does not
    ask Postfix for SMTPUTF8 (RFC 6531)."""
    if not isinstance(value, str) or not value.strip():
        raise bad_field(field, "must be a mailbox such as 'Name <user@example.com>'")
    if CONTROL.search(value):
        raise bad_field(field, "control characters (CR, LF …) are not allowed")
    _check_unicode(value, field)
    try:
        mailbox = parse_mailbox_field(value.encode("utf-8"), field)
    except HeaderViolation as exc:
        raise bad_field(
            field, f"{exc.reason} (one mailbox such as 'Name <user@example.com>')"
        ) from None
    if not mailbox.address.isascii():
        raise bad_field(field, "non-ASCII addresses (SMTPUTF8) are not supported")
    return mailbox


def _mailboxes(body: Mapping[str, Any], field: str) -> list[Mailbox]:
    value = body.get(field)
    if isinstance(value, str):
        return [_mailbox(value, field)]
    return [_mailbox(item, f"{field}[{i}]") for i, item in enumerate(_list(value, field))]


def _text(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise bad_field(field, "must be a string")
    if value is not None:
        _check_unicode(value, field)
    return value


def _check_unicode(value: str, field: str) -> None:
    """JSON can carry lone surrogates ("\\ud800"), which no charset can write."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_field(field, "not valid Unicode (a lone surrogate)") from None


def _header_text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise bad_field(field, "must be a string")
    if CONTROL.search(value):
        raise bad_field(field, "control characters (CR, LF …) are not allowed")
    _check_unicode(value, field)
    return value


def _custom_headers(value: object, allowed: frozenset[str]) -> list[tuple[str, str]]:
    """The allow-listed custom headers; a name is an RFC 5322 field name because [api] headers
    only lists such names (config/api.py)."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise bad_field("headers", "must be an object of header name to value")
    headers = []
    for name, text in value.items():
        field = f"headers.{name}"
        if name.lower() not in allowed:
            raise bad_field(field, "not an allowed custom header ([api] headers)")
        headers.append((name, _header_text(text, field)))
    return headers


def _content(text: str | None, html: str | None, attachments: list[mime.Attachment]) -> mime.Part:
    """text, html or both (multipart/alternative, RFC 2046 §5.1.4), then the attachments
    (multipart/mixed)."""
    parts = [
        mime.text_part(t, kind) for t, kind in ((text, "plain"), (html, "html")) if t is not None
    ]
    content = parts[0] if len(parts) == 1 else mime.multipart("alternative", parts)
    if not attachments:
        return content
    return mime.multipart("mixed", [content, *map(mime.attachment_part, attachments)])


def _attachment(item: object, field: str) -> mime.Attachment:
    if not isinstance(item, Mapping):
        raise bad_field(field, "must be an object with filename, content_type and content")
    # Readers strip the ends of a file name (Python's get_filename does): so do we.
    filename = _header_text(item.get("filename"), f"{field}.filename").strip()
    if not filename:
        raise bad_field(f"{field}.filename", "must not be empty")
    content_type = item.get("content_type", "application/octet-stream")
    if not isinstance(content_type, str) or not CONTENT_TYPE.fullmatch(content_type):
        raise bad_field(f"{field}.content_type", "must be a MIME type such as 'application/pdf'")
    encoded = item.get("content")
    if not isinstance(encoded, str):
        raise bad_field(f"{field}.content", "must be base64 text")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise bad_field(f"{field}.content", "is not valid base64") from None
    maintype, subtype = content_type.lower().split("/", 1)
    if maintype in ("multipart", "message"):
        raise bad_field(f"{field}.content_type", "multipart and message types are not attachments")
    return mime.Attachment(filename, f"{maintype}/{subtype}", data)


def parse_raw(data: bytes, mail_from: str, recipients: Sequence[str], now: float) -> Outgoing:
    """`POST /v1/messages/raw`: the client's RFC 5322 bytes. The envelope comes from the query, or
    from From and To/Cc; a Message-ID is added when missing so that the answer can name it."""
    head_end = _header_end(data)
    if head_end < 0:
        raise bad_field("body", "not an RFC 5322 message: no empty line after the header")
    parsed = email.message_from_bytes(data[:head_end], policy=email.policy.SMTP)
    sender = _mailbox(mail_from, "mail_from") if mail_from else _raw_from(parsed)
    if recipients:
        targets = [_mailbox(r, f"rcpt[{i}]") for i, r in enumerate(recipients)]
    else:
        targets = [_mailbox(a, "To") for a in _raw_addresses(parsed)]
    if not targets:
        raise bad_field("rcpt", "no recipient: give rcpt in the query, or To/Cc in the message")
    if len(targets) > MAX_RECIPIENTS:
        raise bad_field("rcpt", f"at most {MAX_RECIPIENTS} recipients")
    message_id = str(parsed.get("Message-ID", "")).strip()
    if not message_id:
        message_id = new_message_id(sender.domain, now)
        data = f"Message-ID: {message_id}\r\n".encode() + data
    return Outgoing(sender.address, tuple(t.address for t in targets), data, message_id)


def _header_end(data: bytes) -> int:
    found = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    return min(found) if found else -1


def _raw_from(parsed: EmailMessage) -> Mailbox:
    values = parsed.get_all("From") or []
    if len(values) != 1:
        raise bad_field("From", "the message needs exactly one From field (or give mail_from)")
    return _mailbox(str(values[0]), "From")


def _raw_addresses(parsed: EmailMessage) -> list[str]:
    found = []
    for name in ("To", "Cc"):
        for value in parsed.get_all(name) or []:
            found += [f"<{addr}>" for _, addr in email.utils.getaddresses([str(value)]) if addr]
    return found


__all__ = ["ApiError", "Outgoing", "compose", "parse_raw"]
