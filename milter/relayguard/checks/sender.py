"""Sender authorization and strict identity headers: the heart of anti-spoofing.

The envelope sender and every identity a recipient's client may display (From, Sender, Resent-From,
Resent-Sender) must be one the source may use. The fields are parsed from the raw bytes the MTA
passed under a strict RFC 5322 reading (rfc5322.py); anything ambiguous is refused rather than
guessed, because attackers exploit differences between the parser that checks and the one that
displays.
"""

from __future__ import annotations

import re

from relayguard.checks import Check, Stage, Subject
from relayguard.config import Config
from relayguard.core.verdict import Action, Verdict
from relayguard.parsing.rfc5322 import (
    HeaderViolation,
    Mailbox,
    is_valid_field_name,
    parse_envelope_address,
    parse_mailbox_field,
)

ENVELOPE = "envelope_sender"
HEADERS = "header_identities"

# RFC 5322 §3.6: From and Sender occur at most once (From exactly once); Resent-* may repeat.
SINGLE_FIELDS = ("From", "Sender")
RESENT_FIELDS = ("Resent-From", "Resent-Sender")
IDENTITY_FIELDS = {name.lower(): name for name in SINGLE_FIELDS + RESENT_FIELDS}
# A continuation line that reads like one of these fields: to the MTA and to us it is part of the
# field above (RFC 5322 §2.2.3), but a lenient client may show it as a field of its own (a bare CR
# too: some clients break lines there). Reply-To is included although sources may set it freely:
# a hidden one is still two readings of one header.
_FOLDED_FIELD = re.compile(
    rb"[\r\n][ \t]*(resent-from|resent-sender|from|sender|reply-to)[ \t]*:", re.IGNORECASE
)
_FOLDED_NAMES = {name.lower(): name for name in (*IDENTITY_FIELDS.values(), "Reply-To")}


def _refuse(check: str, reason: str) -> Verdict:
    return Verdict(check, Action.REJECT, reason)


def _authorize(check: str, subject: Subject, label: str, mailbox: Mailbox) -> Verdict | None:
    """None when the source may use the address; otherwise a refusal naming identity and source."""
    source = subject.source
    if source is not None:
        if source.senders.allows(mailbox.address):
            return None
        return _refuse(
            check, f"{label} <{mailbox.address}> is not allowed for source {source.name}"
        )
    internal = subject.config.relay.internal_domain_of(mailbox.normalized.rpartition("@")[2])
    if internal is not None:
        return _refuse(
            check,
            f"{label} <{mailbox.address}> uses internal domain {internal}"
            " but the client is not a registered source",
        )
    return None


def check_envelope_sender(subject: Subject) -> Verdict:
    mail_from = subject.envelope.mail_from
    if not mail_from:
        # RFC 5321 §4.5.5 null path: allowed here, its From header is still checked at end of data.
        return Verdict(ENVELOPE, Action.ACCEPT, "null sender; From checked at end of data")
    try:
        mailbox = parse_envelope_address(mail_from)
    except HeaderViolation as exc:
        return _refuse(ENVELOPE, f"envelope sender refused: {exc.reason}")
    if mailbox is None:
        return Verdict(ENVELOPE, Action.ACCEPT, "null sender; From checked at end of data")
    refusal = _authorize(ENVELOPE, subject, "Envelope sender", mailbox)
    return refusal or Verdict(ENVELOPE, Action.ACCEPT, f"<{mailbox.address}>")


def check_header_identities(subject: Subject) -> Verdict:
    message = subject.message
    assert message is not None, "header identities run at end of data"
    fields: dict[str, list[bytes]] = {}
    for name, value in message.headers:
        if not is_valid_field_name(name):
            shown = name.encode("ascii", "backslashreplace").decode()[:40]
            return _refuse(HEADERS, f"malformed header field name {shown!r} (RFC 5322 section 2.2)")
        hidden = _FOLDED_FIELD.search(value)
        if hidden is not None:
            field = _FOLDED_NAMES[hidden.group(1).decode("ascii").lower()]
            return _refuse(
                HEADERS,
                f"{name[:64]} header refused: a folded line reads like a {field} field"
                " (ambiguous: some mail clients would show it as one)",
            )
        canonical = IDENTITY_FIELDS.get(name.lower())
        if canonical is not None:
            fields.setdefault(canonical, []).append(value)
    if "From" not in fields:
        return _refuse(HEADERS, "no From header (RFC 5322 section 3.6: exactly one From field)")
    for name in SINGLE_FIELDS:
        if len(fields.get(name, ())) > 1:
            return _refuse(HEADERS, f"duplicate {name} header (RFC 5322 section 3.6 allows one)")
    checked = []
    for name in SINGLE_FIELDS + RESENT_FIELDS:
        for value in fields.get(name, ()):
            try:
                mailbox = parse_mailbox_field(value, name)
            except HeaderViolation as exc:
                return _refuse(HEADERS, f"{name} header refused: {exc.reason}")
            refusal = _authorize(HEADERS, subject, name, mailbox)
            if refusal is not None:
                return refusal
            checked.append(f"{name} <{mailbox.address}>")
    return Verdict(HEADERS, Action.ACCEPT, ", ".join(checked))


def checks(config: Config) -> tuple[Check, ...]:
    return (
        Check(ENVELOPE, Stage.MAIL, check_envelope_sender),
        Check(HEADERS, Stage.END, check_header_identities),
    )
