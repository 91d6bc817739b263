"""Login rate limit and lock-out: password guessing gets a few tries, then a long wait.

Failures are counted per account name and per client address over `window` seconds; at
`attempts` failures that name (or address) is locked for `lockout` seconds, and a right password
does not open a locked account either. The console is one process, so the counts live in memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_TRACKED = 10_000  # keys counted at once; beyond that the oldest are forgotten


@dataclass
class _Failures:
    times: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class LoginGuard:
    def __init__(
        self,
        attempts: int,
        window: float,
        lockout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configure(attempts, window, lockout)
        self._clock = clock
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def configure(self, attempts: int, window: float, lockout: float) -> None:
        """New limits (SIGHUP); the failures counted and the lock-outs running are kept."""
        self.attempts = attempts
        self.window = window
        self.lockout = lockout

    def locked(self, *keys: str) -> bool:
        now = self._clock()
        with self._lock:
            return any(self._failures.get(k, _Failures()).locked_until > now for k in keys)

    def failed(self, *keys: str) -> bool:
        """Count a failure for each key; True when this failure locked one of them."""
        now = self._clock()
        newly_locked = False
        with self._lock:
            for key in keys:
                entry = self._failures.pop(key, None) or _Failures()
                entry.times = [t for t in entry.times if now - t < self.window] + [now]
                if len(entry.times) >= self.attempts and entry.locked_until <= now:
                    entry.locked_until = now + self.lockout
                    entry.times = []
                    newly_locked = True
                self._failures[key] = entry  # re-inserted: the dict is oldest first
            while len(self._failures) > MAX_TRACKED:
                del self._failures[next(iter(self._failures))]
        return newly_locked

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
