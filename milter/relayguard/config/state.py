"""[state]: where runtime state lives (kill switch, rate-limit counters, suppression list).

StateSettings satisfies state.factory.StoreSettings: state/ is below config/ and does not import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relayguard.config.declare import ERROR_ACTIONS, absolute, actions, choice, number, text
from relayguard.core.verdict import Action


def redis_url(url: str) -> str:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{url!r} is not a redis://, rediss:// or unix:// URL")
    return url


def redis_prefix(prefix: str) -> str:
    if not prefix:
        raise ValueError("must not be empty")
    return prefix


@dataclass(frozen=True, slots=True)
class StateSettings:
    backend: str = choice("sqlite", {"sqlite": "sqlite", "redis": "redis"})
    path: Path = text("/var/lib/relayguard/state.sqlite3", parse=absolute)
    redis_url: str = text("redis://127.0.0.1:6379/0", parse=redis_url)
    redis_prefix: str = text("relayguard:", parse=redis_prefix)
    timeout_ms: int = number(1000, 10, 60_000)
    failure_action: Action = actions("tempfail", ERROR_ACTIONS)
