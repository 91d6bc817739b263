"""The kill switch: a source an administrator disabled is refused at MAIL FROM.

The state store is read on every transaction (no cache), so `relayguard sources disable NAME` takes
effect for the next MAIL FROM on every process and node sharing the backend: one primary-key read,
tens of microseconds on SQLite, one round trip on Redis (bench/state_bench.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from relayguard.checks import Check, Stage, Subject
from relayguard.config import Config
from relayguard.core.verdict import Action, Reply, Verdict
from relayguard.state import StateStore, StateUnavailable
from relayguard.state.factory import store_for

NAME = "kill_switch"


def unavailable(check: str, exc: StateUnavailable, action: Action) -> Verdict:
    """The backend could not answer: the configured failure action as an explicit error verdict
    (never an accept). The reason (audit line) says why; the SMTP reply gives nothing away."""
    text = "temporary failure: the relay's state backend is unavailable"
    reply = Reply("451", "4.7.0", text) if action is Action.TEMPFAIL else None
    return Verdict(check, action, f"state backend unavailable: {exc}", reply=reply, error=True)


class KillSwitch:
    def __init__(
        self,
        store: StateStore,
        failure_action: Action = Action.TEMPFAIL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.failure_action = failure_action
        self.clock = clock

    def __call__(self, subject: Subject) -> Verdict:
        source = subject.source
        if source is None:
            return Verdict(NAME, Action.ACCEPT, "no source: refused by the source check")
        try:
            disabled = self.store.disabled(source.name)
        except StateUnavailable as exc:
            return unavailable(NAME, exc, self.failure_action)
        # An automatic lock (anomaly/) may carry an expiry: past it, the source sends again.
        if disabled is not None and disabled.in_force(self.clock()):
            # Binding: a sysadmin who pulls the switch on a compromised device in monitor mode
            # means it.
            reason = f"source {source.name} is disabled: {disabled.reason}"
            return Verdict(NAME, Action.REJECT, reason, binding=True)
        return Verdict(NAME, Action.ACCEPT, "enabled")


def checks(config: Config) -> tuple[Check, ...]:
    store = store_for(config)
    if store is None or config.state is None:
        return ()
    return (Check(NAME, Stage.MAIL, KillSwitch(store, config.state.failure_action)),)
