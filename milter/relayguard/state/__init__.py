"""Runtime state shared by every milter process (and node): one interface, two backends.

SQLite (WAL) is the embedded default for one node; Redis lets several nodes share state. Policy
(sources, rules, keys) is configuration; *state* is what changes while mail flows: rate-limit
counters, the kill switch, the suppression list. Every operation that must be atomic is atomic in
both backends. A backend that cannot be reached raises StateUnavailable; the checks turn that into
their configured failure action (tempfail by default), never into an accept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from relayguard.core.errors import RelayguardError


class StateUnavailable(RelayguardError):
    """The state backend cannot be reached or answered with an error."""


@dataclass(frozen=True, slots=True)
class Disabled:
    """A source the kill switch stopped: why, by whom, since when (Unix time)."""

    source: str
    reason: str
    actor: str
    since: float


@dataclass(frozen=True, slots=True)
class Suppression:
    """A recipient who must not get mail from `scope` (a source name, or 'source/list')."""

    scope: str
    recipient: str  # normalised with rfc5322.ascii_lower
    reason: str
    since: float


@dataclass(frozen=True, slots=True)
class Usage:
    """A rate-limit counter after an increment: what was used in the window and when it frees."""

    used: int
    limit: int
    retry_after: float  # seconds until the window admits the amount again; 0 when within limit

    @property
    def exceeded(self) -> bool:
        return self.used > self.limit


class StateStore(Protocol):
    # --- rate limits: atomic "add and tell me where I stand" --------------------------------
    def consume(self, key: str, amount: int, limit: int, window: float, now: float) -> Usage: ...
    def consume_many(
        self, counters: Sequence[tuple[str, int, float]], amount: int, now: float
    ) -> list[Usage]:
        """`consume` on several (key, limit, window) counters at once, all or nothing: when one
        would exceed its limit, nothing is recorded in any (minute, hour and day windows)."""
        ...

    # --- kill switch ------------------------------------------------------------------------
    def disable(self, source: str, reason: str, actor: str, now: float) -> None: ...
    def enable(self, source: str, actor: str) -> bool: ...
    def disabled(self, source: str) -> Disabled | None: ...
    def all_disabled(self) -> list[Disabled]: ...

    # --- suppression list (unsubscribed recipients) ------------------------------------------
    def suppress(self, scope: str, recipient: str, reason: str, now: float) -> bool: ...
    def unsuppress(self, scope: str, recipient: str) -> bool: ...
    def is_suppressed(self, scope: str, recipient: str) -> bool: ...
    def suppressions(self, scope: str | None = None) -> Iterable[Suppression]: ...

    def close(self) -> None: ...
