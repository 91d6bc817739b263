"""[state]: where runtime state lives (kill switch, rate-limit counters, suppression list).

StateSettings satisfies state.factory.StoreSettings: state/ is below config/ and does not import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from relayguard.config.declare import (
    ERROR_ACTIONS,
    Place,
    absolute,
    actions,
    choice,
    number,
    text,
)
from relayguard.core.verdict import Action


def redis_url(url: str) -> str:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{url!r} is not a redis://, rediss:// or unix:// URL")
    return url


def has_password(url: str) -> bool:
    """A password in a Redis URL: `redis://:secret@host` or `?password=secret` (redis-py)."""
    parts = urlsplit(url)
    return bool(parts.password) or "password" in parse_qs(parts.query)


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
    redis_password_file: Path | None = text(None, parse=absolute)
    # Read from redis_password_file by config/resolve.py (not a TOML key); never in a repr.
    redis_password: str = field(default="", repr=False)

    def verify(self, given: Mapping[str, Any], at: Place) -> None:
        """The password file is Redis's, and replaces a password in the URL."""
        if self.redis_password_file is None:
            return
        if self.backend != "redis":
            at.key("redis_password_file").problem('only used with backend = "redis"')
        elif has_password(self.redis_url):
            at.key("redis_password_file").problem(
                "the password is given twice (in state.redis_url too): keep only the file"
            )
