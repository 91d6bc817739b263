"""Rate limits and quotas per source: messages at MAIL FROM, recipients at RCPT TO, bytes at end.

Each limit is a sliding window over the shared state store (state/window.py: exact to 1/60 of the
window, never lenient), so it counts across every milter process and node sharing the backend.
What is counted is what was attempted: a message counts at MAIL FROM even if a later check refuses
it; an amount that would go over the limit is refused and not counted. Over a limit: `451 4.7.1`
with the number of seconds after which the window admits it again. A message larger than a bytes
limit can never fit and gets `552 5.3.4` (RFC 3463: message too big for policy).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from relayguard.checks import Check, Stage, Subject
from relayguard.checks.killswitch import unavailable
from relayguard.config import Config
from relayguard.core.verdict import Action, FactValue, Reply, Verdict
from relayguard.state import StateStore, StateUnavailable
from relayguard.state.factory import store_for

NAME = "rate_limit"


def rate_counters(
    source: str, kind: str, limits: tuple[tuple[str, int, int], ...]
) -> list[tuple[str, int, float]]:
    """The state store's (key, limit, window) counters of a source's `kind` limits (the console
    reads the same counters)."""
    return [(f"{source}:{kind}:{unit}", limit, window) for unit, window, limit in limits]


class RateLimit:
    def __init__(
        self,
        store: StateStore,
        failure_action: Action = Action.TEMPFAIL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.failure_action = failure_action
        self.clock = clock

    def at_mail(self, subject: Subject) -> Verdict:
        return self._consume(subject, "messages", 1)

    def at_rcpt(self, subject: Subject) -> Verdict:
        return self._consume(subject, "recipients", 1)

    def at_end(self, subject: Subject) -> Verdict:
        assert subject.message is not None, "bytes are counted at end of data"
        return self._consume(subject, "bytes", subject.message.size)

    def _consume(self, subject: Subject, kind: str, amount: int) -> Verdict:
        source = subject.source
        if source is None:
            return Verdict(NAME, Action.ACCEPT, "no source")
        limits = source.rate_limits.of(kind)
        if not limits:
            return Verdict(NAME, Action.ACCEPT, f"no {kind} limit")
        if subject.dry_run:
            return Verdict(NAME, Action.ACCEPT, f"dry run: {kind} not counted against the limit")
        counters = rate_counters(source.name, kind, limits)
        try:
            usages = self.store.consume_many(counters, amount, self.clock())
        except StateUnavailable as exc:
            return unavailable(NAME, exc, self.failure_action)
        over = [
            (usage, unit, limit)
            for (unit, _, limit), usage in zip(limits, usages, strict=True)
            if usage.exceeded
        ]
        if not over:
            used = ", ".join(
                f"{usage.used}/{limit} per {unit}"
                for (unit, _, limit), usage in zip(limits, usages, strict=True)
            )
            return Verdict(NAME, Action.ACCEPT, f"{kind} {used}")
        usage, unit, limit = max(over, key=lambda item: item[0].retry_after)
        facts: dict[str, FactValue] = {"kind": kind, "window": unit, "limit": limit}
        if amount > limit:
            reason = (
                f"message of {amount} bytes exceeds source {source.name}'s limit of"
                f" {limit} {kind} per {unit}"
            )
            facts["size"] = amount
            reply = Reply("552", "5.3.4", reason)
            return Verdict(NAME, Action.REJECT, reason, reply=reply, facts=facts)
        retry = max(1, math.ceil(usage.retry_after))
        reason = (
            f"source {source.name} is over its limit of {limit} {kind} per {unit};"
            f" retry in {retry} s"
        )
        facts["retry_after"] = retry
        reply = Reply("451", "4.7.1", reason)
        return Verdict(NAME, Action.TEMPFAIL, reason, reply=reply, facts=facts)


def checks(config: Config) -> tuple[Check, ...]:
    store = store_for(config)
    if store is None or config.state is None:
        return ()
    if not any(source.rate_limits.limits for source in config.sources):
        return ()
    limiter = RateLimit(store, config.state.failure_action)
    return (
        Check(NAME, Stage.MAIL, limiter.at_mail),
        Check(NAME, Stage.RCPT, limiter.at_rcpt),
        Check(NAME, Stage.END, limiter.at_end),
    )
