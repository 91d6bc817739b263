"""Recipient policy at RCPT TO: where a source may send, and how many recipients per message."""

from __future__ import annotations

from relayguard.checks import Check, Stage, Subject
from relayguard.config import Config
from relayguard.core.verdict import Action, Reply, Verdict
from relayguard.parsing.rfc5322 import HeaderViolation, parse_envelope_address

NAME = "recipients"


def check_recipient(subject: Subject) -> Verdict:
    source = subject.source
    if source is None:
        return Verdict(NAME, Action.ACCEPT, "no source: refused at MAIL in enforce mode")
    try:
        mailbox = parse_envelope_address(subject.recipient)
    except HeaderViolation as exc:
        return Verdict(NAME, Action.REJECT, f"recipient refused: {exc.reason}")
    if mailbox is None:
        return Verdict(NAME, Action.REJECT, "null recipient <> is not a valid RCPT TO")
    if not source.recipients.is_empty and not source.recipients.allows(mailbox.address):
        return Verdict(
            NAME,
            Action.REJECT,
            f"Recipient <{mailbox.address}> is not allowed for source {source.name}",
        )
    accepted = len(subject.envelope.recipients)
    if source.max_recipients is not None and accepted >= source.max_recipients:
        # RFC 5321 §4.5.3.1.10: 452 makes the client send the rest in another transaction,
        # where a 5xx would bounce those recipients for good.
        reason = f"too many recipients for source {source.name} (at most {source.max_recipients})"
        return Verdict(NAME, Action.TEMPFAIL, reason, reply=Reply("452", "4.5.3", reason))
    return Verdict(NAME, Action.ACCEPT, f"<{mailbox.address}>")


def checks(config: Config) -> tuple[Check, ...]:
    return (Check(NAME, Stage.RCPT, check_recipient),)
