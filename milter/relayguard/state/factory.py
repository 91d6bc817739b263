"""Opening the configured state backend, and the one store each milter process shares."""

from __future__ import annotations

import os
import threading

from relayguard.config import Config, StateSettings
from relayguard.state import StateStore
from relayguard.state.redis import RedisStore
from relayguard.state.sqlite import SqliteStore

_lock = threading.Lock()
_stores: dict[tuple[int, StateSettings], StateStore] = {}


def open_store(settings: StateSettings) -> StateStore:
    """A new store for these settings (connections are opened lazily, on first use)."""
    if settings.backend == "redis":
        return RedisStore(settings.redis_url, settings.redis_prefix, settings.timeout_ms)
    return SqliteStore(settings.path, settings.timeout_ms)


def store_for(config: Config) -> StateStore | None:
    """This process's store for the config's [state] (None without one), shared by every check and
    reused across reloads while [state] is unchanged. A forked process gets its own."""
    if config.state is None:
        return None
    key = (os.getpid(), config.state)
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = open_store(config.state)
        return store
