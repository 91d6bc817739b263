"""Fixtures the state-store protocol tests share: one real redis-server per module, and each
test's store on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relayguard.state import StateStore
from relayguard.state.redis import RedisStore
from relayguard.state.sqlite import SqliteStore
from tests.support.redis_server import RedisServer
from tests.support.stack import make_dir


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(make_dir("relayguard-redis-")) as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> Iterator[StateStore]:
    if request.param == "sqlite":
        opened: StateStore = SqliteStore(tmp_path / "state" / "state.sqlite3")
    else:
        opened = RedisStore(redis_server.url, prefix=f"test-{tmp_path.name}:")
    yield opened
    opened.close()
