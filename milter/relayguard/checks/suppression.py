"""The suppression list at RCPT TO (and at end of data for per-list suppressions).

A recipient who unsubscribed (RFC 8058, transforms/unsubscribe.py) from a source is refused with
`550 5.7.1` for that source, so the sending application learns it at once instead of from a bounce.
A suppression for one list of the source ("source/list", the message's List-Id) can only be seen
once the header is there: it refuses the message at end of data. For bulk sources the check also
keeps one recipient per message (the unsubscribe token names one): further RCPT TO get `452 4.5.3`,
so the client sends them in separate transactions (RFC 5321 §4.5.3.1.10).
"""

from __future__ import annotations

from relayguard.checks import Check, Stage, Subject
from relayguard.checks.killswitch import unavailable
from relayguard.config import Config
from relayguard.core.verdict import Action, Reply, Verdict
from relayguard.parsing.rfc5322 import HeaderViolation, parse_envelope_address
from relayguard.state import StateStore, StateUnavailable
from relayguard.state.factory import store_for
from relayguard.transforms.unsubscribe import list_id

NAME = "suppression"


class Suppression:
    def __init__(
        self,
        store: StateStore,
        bulk_sources: frozenset[str],
        failure_action: Action = Action.TEMPFAIL,
    ) -> None:
        self.store = store
        self.bulk_sources = bulk_sources
        self.failure_action = failure_action

    def at_rcpt(self, subject: Subject) -> Verdict:
        source = subject.source
        if source is None:
            return Verdict(NAME, Action.ACCEPT, "no source")
        if source.name in self.bulk_sources and subject.envelope.recipients:
            reason = f"one recipient per message for bulk source {source.name} (unsubscribe link)"
            return Verdict(NAME, Action.TEMPFAIL, reason, reply=Reply("452", "4.5.3", reason))
        try:
            mailbox = parse_envelope_address(subject.recipient)
        except HeaderViolation:
            return Verdict(NAME, Action.ACCEPT, "malformed recipient: refused by recipients")
        if mailbox is None:
            return Verdict(NAME, Action.ACCEPT, "null recipient: refused by recipients")
        try:
            suppressed = self.store.is_suppressed(source.name, mailbox.address)
        except StateUnavailable as exc:
            return unavailable(NAME, exc, self.failure_action)
        if suppressed:
            return Verdict(
                NAME,
                Action.REJECT,
                f"<{mailbox.address}> unsubscribed from source {source.name}",
            )
        return Verdict(NAME, Action.ACCEPT, "not suppressed")

    def at_end(self, subject: Subject) -> Verdict:
        source = subject.source
        identifier = list_id(subject)
        if source is None or not identifier:
            return Verdict(NAME, Action.ACCEPT, "no list")
        scope = f"{source.name}/{identifier}"
        try:
            refused = [r for r in subject.envelope.recipients if self.store.is_suppressed(scope, r)]
        except StateUnavailable as exc:
            return unavailable(NAME, exc, self.failure_action)
        if refused:
            return Verdict(NAME, Action.REJECT, f"<{refused[0]}> unsubscribed from list {scope}")
        return Verdict(NAME, Action.ACCEPT, f"not suppressed for {scope}")


def checks(config: Config) -> tuple[Check, ...]:
    store = store_for(config)
    if store is None or config.state is None:
        return ()
    bulk = config.unsubscribe.sources if config.unsubscribe else frozenset()
    check = Suppression(store, bulk, config.state.failure_action)
    return (
        Check(NAME, Stage.RCPT, check.at_rcpt),
        Check(f"{NAME}_list", Stage.END, check.at_end),
    )
