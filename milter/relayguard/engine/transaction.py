"""One SMTP transaction from MAIL FROM to end of data, independent of the MTA.

The pymilter adapter and `relayguard test-message` both drive this class, so a dry run exercises the
very code the milter runs. It keeps the envelope, asks the pipeline at each stage and writes exactly
one audit line per decision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from relayguard.checks.source import Identification
from relayguard.config import Source
from relayguard.core.audit_record import CheckEntry, DecisionRecord, RecipientRefusal
from relayguard.core.errors import AuditError
from relayguard.core.message import Client, Envelope, Message
from relayguard.core.verdict import Action, Decision, Mode, Reply, Verdict
from relayguard.engine.audit import (
    ADDRESS_LIMIT,
    HEADER_LIMIT,
    IDENTITY_LIMIT,
    REASON_LIMIT,
    bounded_facts,
    clip,
    now,
)
from relayguard.engine.runtime import Runtime
from relayguard.parsing.rfc5322 import HeaderViolation, parse_envelope_address

log = logging.getLogger(__name__)

AUDIT_FAILURE = Reply("451", "4.3.0", "temporary failure: the relay cannot record this message")


@dataclass
class Transaction:
    runtime: Runtime
    client: Client
    mail_from: str = ""
    queue_id: str = ""
    audit_enabled: bool = True
    identification: Identification | None = None
    recipients: list[str] = field(default_factory=list)
    recipient_refusals: list[tuple[str, Verdict, bool]] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    audited: bool = False

    @property
    def envelope(self) -> Envelope:
        return Envelope(self.client, self.mail_from, tuple(self.recipients), self.queue_id)

    @property
    def mode(self) -> Mode:
        source = self.identification.source if self.identification else None
        return self.runtime.config.mode_for(source)

    def mail(self, mail_from: str) -> Decision:
        """MAIL FROM: identify the source and check the envelope sender."""
        self.mail_from = envelope_path(mail_from)
        pipeline = self.runtime.pipeline
        self.identification = pipeline.identify(self.client)
        decision = pipeline.at_mail(self.identification, self.envelope)
        self.verdicts.extend(decision.verdicts)
        if decision.action >= Action.TEMPFAIL:
            self._audit("mail", decision)
        return decision

    def rcpt(self, recipient: str) -> Decision:
        """RCPT TO: one decision per recipient; a refusal applies to that recipient only."""
        recipient = envelope_path(recipient)
        decision = self.runtime.pipeline.at_rcpt(self.source, self.envelope, recipient)
        refusing = max(decision.verdicts, key=lambda v: v.action, default=None)
        if decision.action >= Action.TEMPFAIL:
            assert refusing is not None
            self.recipient_refusals.append((recipient, refusing, True))
        else:
            self.recipients.append(recipient)
            if refusing is not None and decision.policy_action >= Action.TEMPFAIL:
                self.recipient_refusals.append((recipient, refusing, False))
        return decision

    def end(
        self, headers: tuple[tuple[str, bytes], ...], body: bytes, size: int, queue_id: str = ""
    ) -> Decision:
        """End of data: header and content checks; then the one audit line for the message."""
        self.queue_id = queue_id or self.queue_id
        return self._end(Message(self.envelope, headers, body, size))

    def end_received(
        self,
        headers: tuple[tuple[str, bytes], ...],
        raw: bytes,
        body_start: int,
        queue_id: str = "",
    ) -> Decision:
        """End of data for a message received as one buffer (the adapter's): the scanners read
        the buffer itself, and no second copy of the body is held beside it (Message.received)."""
        self.queue_id = queue_id or self.queue_id
        message = Message.received(self.envelope, headers, raw, body_start)
        del raw  # the message is the buffer's only holder: cutting the body out lets it go
        return self._end(message)

    def _end(self, message: Message) -> Decision:
        # Monitor mode: refusals seen at RCPT count towards what the message "would" have met.
        earlier = list(self.verdicts)
        if self.mode is Mode.MONITOR:
            earlier += [verdict for _, verdict, applied in self.recipient_refusals if not applied]
        decision = self.runtime.pipeline.at_end(self.source, message, earlier)
        return self._audit("end", decision, message)

    def abort(self) -> None:
        """The client gave up (RSET, QUIT, every recipient refused): audit what was refused."""
        if not self.audited and any(applied for _, _, applied in self.recipient_refusals):
            refused = Decision(Action.REJECT, Action.REJECT, self.mode, tuple(self.verdicts))
            self._audit("rcpt", refused)

    @property
    def source(self) -> Source | None:
        return self.identification.source if self.identification else None

    def _audit(self, stage: str, decision: Decision, message: Message | None = None) -> Decision:
        self.audited = True
        if not self.audit_enabled:
            return decision
        record = self._record(stage, decision, message)
        try:
            self._write(record)
        except AuditError as exc:
            log.error("%s: %s", self.queue_id or "NOQUEUE", exc)
            if decision.action < Action.TEMPFAIL:
                return Decision(
                    Action.TEMPFAIL,
                    max(decision.policy_action, Action.TEMPFAIL),
                    decision.mode,
                    decision.verdicts,
                    AUDIT_FAILURE,
                )
        for observe in self.runtime.observers:
            try:
                observe(record)
            except Exception:  # an observer (metrics) must never change what happens to mail
                log.exception("observer %r failed", observe)
        return decision

    def _write(self, record: DecisionRecord) -> None:
        """Refusals of unregistered clients at MAIL FROM are what the internet can repeat at
        will: they are counted per client address and interval instead of written one by one."""
        audit = self.runtime.audit
        if record.stage == "mail" and self.source is None:
            interval = self.runtime.config.relay.unregistered_audit_interval
            audit.refusals.add(record.client_address or "", record, interval)
        else:
            audit.write(record)

    def _record(self, stage: str, decision: Decision, message: Message | None) -> DecisionRecord:
        """Every client-controlled value is clipped: the client must not choose a line's size."""
        source = self.source
        return DecisionRecord(
            time=now(),
            queue_id=self.queue_id or None,
            stage=stage,
            mode=decision.mode,
            source=source.name if source else None,
            client_address=clip(self.client.address, IDENTITY_LIMIT) or None,
            sasl_user=clip(self.client.sasl_user, IDENTITY_LIMIT) or None,
            cert_subject=clip(self.client.cert_subject, IDENTITY_LIMIT) or None,
            cert_issuer=clip(self.client.cert_issuer, IDENTITY_LIMIT) or None,
            listener=clip(self.client.daemon_name, IDENTITY_LIMIT) or None,
            mail_from=clip(self.mail_from, ADDRESS_LIMIT),
            recipients=tuple(clip(r, ADDRESS_LIMIT) for r in self.recipients),
            recipient_refusals=tuple(
                RecipientRefusal(
                    clip(r, ADDRESS_LIMIT),
                    v.check,
                    clip(v.reason, REASON_LIMIT),
                    applied,
                    bounded_facts(v.facts),
                )
                for r, v, applied in self.recipient_refusals
            ),
            from_header=clip(message.first_header("From"), HEADER_LIMIT) if message else None,
            message_id=clip(message.first_header("Message-ID"), HEADER_LIMIT) if message else None,
            size=message.size if message else None,
            checks=tuple(
                CheckEntry(
                    v.check,
                    v.action,
                    clip(v.reason, REASON_LIMIT),
                    v.elapsed_ms,
                    v.error,
                    bounded_facts(v.facts),
                )
                for v in decision.verdicts
            ),
            action=decision.action,
            outcome=decision.outcome,
            reply=clip(str(decision.reply), REASON_LIMIT) if decision.reply else None,
        )


def envelope_path(value: str) -> str:
    """The bare address of an SMTP path: '<a@b>' -> 'a@b', '<>' -> ''. Malformed paths are kept
    as given so that the checks refuse them with a reason."""
    try:
        mailbox = parse_envelope_address(value)
    except HeaderViolation:
        return value
    return "" if mailbox is None else mailbox.address
