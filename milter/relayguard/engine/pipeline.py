"""Runs the checks of a stage and combines their verdicts into one decision.

The result is the most severe verdict. A check that raises becomes an *error* verdict with the
configured failure action (tempfail by default): mail that was not checked must not pass silently.
Monitor mode relaxes policy verdicts (they are audited as would_*) but never errors. At end of
data, the transforms (headers, signature) then run on what will be delivered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from relayguard.checks import Check, Stage, Subject
from relayguard.checks import source as source_check
from relayguard.config import Config, Source
from relayguard.core.message import Client, Envelope, Message
from relayguard.core.verdict import Action, Decision, Mode, Verdict
from relayguard.engine import registry
from relayguard.parsing.mime import release_walk
from relayguard.transforms import Transform, authority_withheld

log = logging.getLogger(__name__)


class Pipeline:
    """The ordered checks and transforms for one configuration snapshot."""

    def __init__(
        self,
        config: Config,
        checks: Sequence[Check],
        transforms: Sequence[Transform] = (),
        *,
        dry_run: bool = False,
    ) -> None:
        self.config = config
        self.dry_run = dry_run
        self.checks = {stage: tuple(c for c in checks if c.stage is stage) for stage in Stage}
        self.transforms = tuple(transforms)

    @classmethod
    def for_config(cls, config: Config, *, dry_run: bool = False) -> Pipeline:
        """The pipeline registry.py describes, built for this snapshot."""
        checks = registry.build_checks(config)
        return cls(config, checks, registry.build_transforms(config), dry_run=dry_run)

    def identify(self, client: Client) -> source_check.Identification:
        return source_check.identify(self.config, client)

    def at_mail(self, identification: source_check.Identification, envelope: Envelope) -> Decision:
        subject = Subject(self.config, identification.source, envelope, dry_run=self.dry_run)
        first = _timed(lambda: source_check.verdict(identification))
        return self._run(Stage.MAIL, subject, (first,))

    def at_rcpt(self, source: Source | None, envelope: Envelope, recipient: str) -> Decision:
        subject = Subject(self.config, source, envelope, recipient=recipient, dry_run=self.dry_run)
        return self._run(Stage.RCPT, subject)

    def at_end(
        self, source: Source | None, message: Message, earlier: Iterable[Verdict] = ()
    ) -> Decision:
        """End of data. `earlier` verdicts (from MAIL/RCPT) shape the final outcome and trace."""
        subject = Subject(
            self.config, source, message.envelope, message=message, dry_run=self.dry_run
        )
        decision = self._run(Stage.END, subject, earlier)
        release_walk(message)  # the content checks are done: free the decoded parts before signing
        withheld = authority_withheld(decision)
        for transform in self.transforms:
            if decision.action >= Action.TEMPFAIL:
                break  # nothing more to change on a message that will not be delivered
            if transform.when_withheld and withheld is not None:
                note = Verdict(
                    transform.name, Action.ACCEPT, f"{transform.when_withheld}: {withheld}"
                )
                decision = replace(decision, verdicts=(*decision.verdicts, note))
                continue
            decision = self._transformed(transform, subject, decision)
        return decision

    def _run(self, stage: Stage, subject: Subject, done: Iterable[Verdict] = ()) -> Decision:
        mode = self.config.mode_for(subject.source)
        verdicts = list(done)
        for check in self.checks[stage]:
            if mode is Mode.ENFORCE and any(v.action is Action.REJECT for v in verdicts):
                break  # nothing can make a rejection more severe; skip the remaining work
            verdicts.append(self._guarded(check, subject))
        return combine(verdicts, mode)

    def _guarded(self, check: Check, subject: Subject) -> Verdict:
        start = time.perf_counter()
        try:
            verdict = check.run(subject)
        except Exception:
            log.exception("check %s failed; applying error action", check.name)
            verdict = Verdict(
                check.name,
                self.config.relay.error_action,
                f"internal error in check {check.name}; see the milter log",
                error=True,
            )
        elapsed = (time.perf_counter() - start) * 1000
        return _with_elapsed(verdict, elapsed)

    def _transformed(self, transform: Transform, subject: Subject, decision: Decision) -> Decision:
        try:
            return transform.run(subject, decision)
        except Exception:
            log.exception("transform %s failed; applying error action", transform.name)
            error = Verdict(
                transform.name,
                self.config.relay.error_action,
                f"internal error in {transform.name}; see the milter log",
                error=True,
            )
            return combine([*decision.verdicts, error], decision.mode)


def combine(verdicts: Sequence[Verdict], mode: Mode) -> Decision:
    """The most severe verdict wins; monitor mode lets policy refusals pass, never errors or
    binding verdicts."""
    policy_action = max((v.action for v in verdicts), default=Action.ACCEPT)
    if mode is Mode.MONITOR:
        action = max(
            (v.action for v in verdicts if v.error or v.binding or v.action is Action.TAG),
            default=Action.ACCEPT,
        )
    else:
        action = policy_action
    reply = None
    if action >= Action.TEMPFAIL:
        deciding = max(
            (v for v in verdicts if v.action is action), key=lambda v: v.error, default=None
        )
        reply = deciding.smtp_reply if deciding else None
    headers = tuple(h for v in verdicts for h in v.headers) if action < Action.TEMPFAIL else ()
    return Decision(action, policy_action, mode, tuple(verdicts), reply, headers)


def _timed(produce: Callable[[], Verdict]) -> Verdict:
    start = time.perf_counter()
    verdict = produce()
    return _with_elapsed(verdict, (time.perf_counter() - start) * 1000)


def _with_elapsed(verdict: Verdict, elapsed_ms: float) -> Verdict:
    return replace(verdict, elapsed_ms=round(elapsed_ms, 3))
