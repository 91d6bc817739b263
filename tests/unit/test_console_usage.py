"""Rate-limit usage on the Sources pages: the state store's read-only peek, in both backends
(SQLite, and a real redis-server), is what a message would be counted against, and looking at it
never counts (the next message is still admitted exactly up to the limit)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from tests.support.redis_server import RedisServer
from tests.unit.test_console import Site, site  # noqa: F401  (the fixture)

from relayguard.config import load_config
from relayguard.state import StateStore
from relayguard.state.factory import open_store

pytestmark = pytest.mark.unit

SOURCE = '[[sources]]\nname = "printer"\nsasl_users = ["p"]\nsenders = ["p@example.com"]\n'
MINUTE = [("printer:messages:minute", 3, 60.0)]
NOW = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        state = f'path = "{tmp_path}/state.sqlite3"'
        (tmp_path / "relayguard.toml").write_text(f"[state]\n{state}\n{SOURCE}")
        config = load_config(tmp_path / "relayguard.toml")
        assert config.state is not None
        opened = open_store(config.state)
        yield opened
        opened.close()
        return
    directory = tmp_path / "redis"
    directory.mkdir()
    with RedisServer(directory) as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        (tmp_path / "relayguard.toml").write_text(
            f'[state]\nbackend = "redis"\nredis_url = "{url}"\n{SOURCE}'
        )
        config = load_config(tmp_path / "relayguard.toml")
        assert config.state is not None
        opened = open_store(config.state)
        yield opened
        opened.close()


def test_peek_shows_what_was_counted_and_counts_nothing(store: StateStore) -> None:
    assert [u.used for u in store.peek_usage(MINUTE, NOW)] == [0]
    store.consume_many(MINUTE, 1, NOW)
    store.consume_many(MINUTE, 1, NOW + 1)
    for _ in range(5):
        assert [(u.used, u.limit, u.exceeded) for u in store.peek_usage(MINUTE, NOW + 2)] == [
            (2, 3, False)
        ]
    assert not store.consume_many(MINUTE, 1, NOW + 2)[0].exceeded  # the third still fits
    assert store.consume_many(MINUTE, 1, NOW + 2)[0].exceeded  # and only the third
    assert [u.used for u in store.peek_usage(MINUTE, NOW + 2)] == [3]
    assert [u.used for u in store.peek_usage(MINUTE, NOW + 200)] == [0]  # the window moved on


def test_the_sources_pages_show_current_usage(site: Site) -> None:  # noqa: F811
    config = site.console.config
    printer = config.source("printer")
    assert printer is not None and config.state is not None
    limits = replace(printer.rate_limits, messages_per_minute=10, recipients_per_hour=50)
    sources = tuple(
        replace(s, rate_limits=limits) if s.name == "printer" else s for s in config.sources
    )
    site.console.config = replace(config, sources=sources)
    store = open_store(config.state)
    store.consume_many([("printer:messages:minute", 10, 60.0)], 1, site.console.clock())
    store.consume_many([("printer:recipients:hour", 50, 3600.0)], 7, site.console.clock())
    store.close()
    site.login()
    for _ in range(3):
        listing = site.client.get("/sources").text
        assert re.search(r"1/10 messages/minute</span>, <span[^>]*>7/50 recipients/hour", listing)
    page = site.client.get("/sources/printer").text
    assert "1 of 10 messages this minute" in page and "7 of 50 recipients this hour" in page
