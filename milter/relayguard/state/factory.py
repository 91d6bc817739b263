"""Opening the configured state backend, and the one store each milter process shares."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol

from relayguard.state import StateStore
from relayguard.state.sqlite import SqliteStore


class StoreSettings(Protocol):
    """What opening a store needs: config's [state] (state/ is below config/, it does not import
    it). Hashable: a process keeps one store per settings."""

    @property
    def backend(self) -> str: ...
    @property
    def path(self) -> Path: ...
    @property
    def redis_url(self) -> str: ...
    @property
    def redis_password(self) -> str: ...
    @property
    def redis_prefix(self) -> str: ...
    @property
    def timeout_ms(self) -> int: ...


class WithState(Protocol):
    """A configuration snapshot, as far as the store is concerned."""

    @property
    def state(self) -> StoreSettings | None: ...


_lock = threading.Lock()
_stores: dict[tuple[int, StoreSettings], StateStore] = {}


def open_store(settings: StoreSettings) -> StateStore:
    """A new store for these settings (connections are opened lazily, on first use)."""
    if settings.backend == "redis":
        # Imported only for this backend: redis-py takes ~60 ms to import, which every process
        # with the SQLite default (and every `relayguard` command) would otherwise pay.
        from relayguard.state.redis import RedisStore  # noqa: PLC0415

        return RedisStore(
            settings.redis_url,
            settings.redis_prefix,
            settings.timeout_ms,
            password=settings.redis_password,
        )
    return SqliteStore(settings.path, settings.timeout_ms)


def store_for(config: WithState) -> StateStore | None:
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
