"""Runtime state shared by every milter process (and node): one interface, two backends.

SQLite (WAL) is the embedded default for one node; Redis lets several nodes share state. Policy
(sources, rules, keys) is configuration; *state* is what changes while mail flows: rate-limit
counters, the kill switch, the suppression list. Every operation that must be atomic is atomic in
both backends. A backend that cannot be reached raises StateUnavailable; the checks turn that into
their configured failure action (tempfail by default), never into an accept.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
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
    expires: float | None = None  # Unix time an automatic lock lifts itself; None: until enabled

    def in_force(self, now: float) -> bool:
        return self.expires is None or now < self.expires


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


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A send-API token without its secret: `digest` is the SHA-256 (hex) of the secret, which is
    shown once at creation and never stored. `token_id` is public: it finds the record."""

    token_id: str
    source: str
    digest: str
    actor: str
    created: float
    expires: float | None = None  # Unix time; None: never
    revoked: float | None = None  # Unix time of the revocation; None: valid


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What the first request with an Idempotency-Key left: a fingerprint of its body and, once it
    finished, its answer (`result`, opaque to the store; '' while the first request still runs)."""

    fingerprint: str
    result: str


@dataclass(frozen=True, slots=True)
class StoredBaseline:
    """A source's behaviour baseline (anomaly/baseline.py), opaque to the store, and the version
    a compare-and-set must name to replace it."""

    version: int
    data: str


class StateStore(Protocol):
    # --- rate limits: atomic "add and tell me where I stand" --------------------------------
    def consume(self, key: str, amount: int, limit: int, window: float, now: float) -> Usage: ...
    def consume_many(
        self, counters: Sequence[tuple[str, int, float]], amount: int, now: float
    ) -> list[Usage]:
        """`consume` on several (key, limit, window) counters at once, all or nothing: when one
        would exceed its limit, nothing is recorded in any (minute, hour and day windows)."""
        ...

    def peek_usage(self, counters: Sequence[tuple[str, int, float]], now: float) -> list[Usage]:
        """Where each (key, limit, window) counter stands now, read only: nothing is counted or
        expired (the console shows it; a look must not use up a source's allowance)."""
        ...

    # --- kill switch ------------------------------------------------------------------------
    def disable(
        self, source: str, reason: str, actor: str, now: float, expires: float | None = None
    ) -> None: ...
    def auto_disable(
        self, source: str, reason: str, actor: str, now: float, expires: float | None = None
    ) -> bool:
        """`disable` unless the source is disabled already (a lock in force is never replaced:
        an operator's reason stays); True when this call disabled it."""
        ...

    def enable(self, source: str, actor: str) -> bool: ...
    def disabled(self, source: str) -> Disabled | None: ...
    def all_disabled(self) -> list[Disabled]: ...

    # --- suppression list (unsubscribed recipients) ------------------------------------------
    def suppress(self, scope: str, recipient: str, reason: str, now: float) -> bool: ...
    def unsuppress(self, scope: str, recipient: str) -> bool: ...
    def is_suppressed(self, scope: str, recipient: str) -> bool: ...
    def suppressions(self, scope: str | None = None) -> Iterable[Suppression]: ...

    # --- send-API tokens (services/api) --------------------------------------------------------
    def add_api_token(self, token: ApiToken) -> None: ...
    def api_token(self, token_id: str) -> ApiToken | None: ...
    def api_tokens(self, source: str | None = None) -> list[ApiToken]: ...
    def revoke_api_token(self, token_id: str, now: float) -> bool:
        """True when this call revoked it; False when unknown or already revoked."""
        ...

    # --- idempotency keys (services/api): first request wins, retries get its answer ------------
    def claim_idempotency(
        self, key: str, fingerprint: str, now: float, ttl: float
    ) -> IdempotencyRecord | None:
        """Atomically: None when KEY was free (now held, pending, for `ttl` seconds); otherwise
        the record an earlier request left. An expired record counts as free."""
        ...

    def finish_idempotency(self, key: str, result: str, now: float, ttl: float) -> None: ...
    def release_idempotency(self, key: str) -> None:
        """Forget KEY: the first request failed in a way a retry should really retry."""
        ...

    # --- anomaly baselines (anomaly/): per-source history, shared by every node ---------------
    def baseline(self, source: str) -> StoredBaseline | None: ...
    def replace_baseline(self, source: str, data: str, version: int) -> bool:
        """Compare-and-set: store `data` when the stored version is still `version` (0: none
        stored yet); False when another process replaced it first (read again and retry)."""
        ...

    def learn_domains(
        self, source: str, domains: Collection[str], now: float, forget_before: float
    ) -> set[str]:
        """Remember that `source` sent to `domains` (seen at `now`); the ones it had not sent to
        since `forget_before` come back as new. Older domains are forgotten."""
        ...

    def learn_domains_and_baseline(
        self, source: str, domains: Collection[str], now: float, forget_before: float
    ) -> tuple[set[str], StoredBaseline | None]:
        """learn_domains, then baseline: one round trip on Redis (the detector's first two calls
        for every message, before the milter replies)."""
        ...

    def close(self) -> None: ...
