"""Which failed logins become audit lines: an operator must see who guesses, from where and at
which name, but a client without an account must not be able to fill the audit log.

Each failed login is its own line until the lock-out starts, which is one `console_lockout` line;
an attempt refused while locked out is only counted. Across all clients and names at most
`budget` lines are written per window (a client may rotate names and loopback addresses);
whatever was not written one by one is counted, and one `console_login_refused` line per window
says how many attempts, from which clients, at which names. The tally is bounded too.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_LINES = 100  # failure and lock-out lines per window, all clients and names together
MAX_NAMED = 10  # clients (and names) a summary line lists; the rest are counted


@dataclass(frozen=True, slots=True)
class Line:
    """An admin line to write (actor "console"): what the audit log gets, never a password."""

    event: str
    reason: str
    details: dict[str, str]


@dataclass
class _Tally:
    """What happened in this window without a line of its own, and who did it (the first
    MAX_NAMED clients and names by count; the rest only counted)."""

    refused: int = 0  # attempts while locked out
    failed: int = 0  # wrong name or password, past the budget
    lockouts: int = 0  # lock-outs past the budget
    clients: Counter[str] = field(default_factory=Counter)
    users: Counter[str] = field(default_factory=Counter)
    other_clients: int = 0  # events from clients beyond the first MAX_NAMED
    other_users: int = 0

    def count(self, user: str, client: str) -> None:
        self.other_clients += _add(self.clients, client)
        self.other_users += _add(self.users, user)

    def summary(self, window: float, budget: int) -> Line | None:
        if not (self.refused or self.failed or self.lockouts):
            return None
        reason = (
            f"{self.refused} attempts refused while locked out; {self.failed} failed logins and"
            f" {self.lockouts} lock-outs past the limit of {budget} lines per {window:g} s"
        )
        return Line(
            "console_login_refused",
            reason,
            {
                "refused_while_locked": str(self.refused),
                "failed_unaudited": str(self.failed),
                "lockouts_unaudited": str(self.lockouts),
                "clients": _listing(self.clients, self.other_clients),
                "users": _listing(self.users, self.other_users),
            },
        )


def _add(counts: Counter[str], key: str) -> int:
    """Count `key`; 1 when it went uncounted by name because the list is full."""
    if key in counts or len(counts) < MAX_NAMED:
        counts[key] += 1
        return 0
    return 1


def _listing(counts: Counter[str], others: int) -> str:
    """`a x3, b x1 (+5 from others)`: how many unwritten events each; bounded, whatever the
    attack."""
    text = ", ".join(f"{key} x{n}" for key, n in counts.most_common())
    return f"{text} (+{others} from others)" if others else text


class LoginAudit:
    def __init__(
        self, window: float, budget: int = MAX_LINES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self.budget = budget
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._written = 0
        self._tally = _Tally()

    def failed(self, user: str, client: str, locked_now: bool, attempts: int) -> list[Line]:
        """A wrong name or password; `locked_now`: this failure started a lock-out."""
        who = {"user": user, "client": client}
        with self._lock:
            lines = self._roll()
            if self._within_budget():
                lines.append(Line("console_login_failed", "wrong name or password", who))
            else:
                self._tally.failed += 1
                self._tally.count(user, client)
            if not locked_now:
                return lines
            reason = f"locked out after {attempts} failed logins"
            if self._within_budget():
                lines.append(Line("console_lockout", reason, {**who, "attempts": str(attempts)}))
            else:
                self._tally.lockouts += 1
                self._tally.count(user, client)
            return lines

    def refused(self, user: str, client: str) -> list[Line]:
        """An attempt while the name or the client is locked out: counted, not written."""
        with self._lock:
            lines = self._roll()
            self._tally.refused += 1
            self._tally.count(user, client)
            return lines

    def due(self) -> list[Line]:
        """The summary of a window that is over (called now and then, and before each line)."""
        with self._lock:
            return self._roll()

    def flush(self) -> list[Line]:
        """The summary so far, now (at shutdown: nothing counted is lost)."""
        with self._lock:
            return self._close(self._clock())

    def _within_budget(self) -> bool:
        """True (and counted) while this window may still have a line of its own."""
        if self._written >= self.budget:
            return False
        self._written += 1
        return True

    def _roll(self) -> list[Line]:
        now = self._clock()
        return self._close(now) if now - self._start >= self.window else []

    def _close(self, now: float) -> list[Line]:
        summary = self._tally.summary(self.window, self.budget)
        self._start, self._written, self._tally = now, 0, _Tally()
        return [summary] if summary else []
