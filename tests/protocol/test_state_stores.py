"""The two state backends hold the same contract: SQLite on a file, Redis on a real redis-server."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest

from relayguard.state import ApiToken, IdempotencyRecord, StateStore, StateUnavailable
from relayguard.state.redis import RedisStore
from relayguard.state.sqlite import SqliteStore
from tests.support.redis_server import RedisServer
from tests.support.stack import make_dir

pytestmark = pytest.mark.protocol

T0 = 1_800_000_000.0  # a fixed clock: bucket arithmetic is deterministic


def test_consume_counts_until_the_limit_and_refuses_without_recording(store: StateStore) -> None:
    usages = [store.consume("s:messages:minute", 1, 3, 60, T0 + i) for i in range(3)]
    assert [(u.used, u.exceeded, u.retry_after) for u in usages] == [
        (1, False, 0.0),
        (2, False, 0.0),
        (3, False, 0.0),
    ]
    over = store.consume("s:messages:minute", 1, 3, 60, T0 + 10)
    assert (over.used, over.limit, over.exceeded) == (4, 3, True)
    # The first event (bucket of T0) leaves the window 61 s after its bucket started.
    assert over.retry_after == pytest.approx(T0 + 61 - (T0 + 10))
    again = store.consume("s:messages:minute", 1, 3, 60, T0 + 11)
    assert again.used == 4  # the refused attempt was not recorded
    later = store.consume("s:messages:minute", 1, 3, 60, T0 + 61)
    assert (later.used, later.exceeded) == (3, False)


def test_consume_many_is_all_or_nothing(store: StateStore) -> None:
    counters = [("s:bytes:minute", 1000, 60.0), ("s:bytes:hour", 1500, 3600.0)]
    first = store.consume_many(counters, 900, T0)
    assert [u.used for u in first] == [900, 900]
    second = store.consume_many(counters, 700, T0 + 120)  # minute window empty again, hour not
    assert [(u.used, u.exceeded) for u in second] == [(700, False), (1600, True)]
    third = store.consume_many(counters, 600, T0 + 121)
    assert [u.used for u in third] == [600, 1500]  # the refused 700 was recorded nowhere


def test_amount_larger_than_the_limit_never_fits(store: StateStore) -> None:
    usage = store.consume("s:bytes:day", 5000, 4000, 86400, T0)
    assert usage.exceeded and usage.retry_after == 86400


def test_kill_switch(store: StateStore) -> None:
    assert store.disabled("printer") is None
    store.disable("printer", "compromised", "alice", T0)
    entry = store.disabled("printer")
    assert entry is not None
    assert (entry.reason, entry.actor, entry.since) == ("compromised", "alice", T0)
    assert [d.source for d in store.all_disabled()] == ["printer"]
    assert store.enable("printer", "bob") is True
    assert store.enable("printer", "bob") is False
    assert store.disabled("printer") is None and store.all_disabled() == []


def test_suppression_list(store: StateStore) -> None:
    assert store.suppress("newsletter", "Alice@Example.com", "one-click", T0) is True
    assert store.suppress("newsletter", "alice@example.com", "again", T0 + 1) is False
    assert store.is_suppressed("newsletter", "ALICE@example.com")
    assert not store.is_suppressed("other", "alice@example.com")
    listed = list(store.suppressions("newsletter"))
    assert [(s.recipient, s.reason) for s in listed] == [("alice@example.com", "one-click")]
    assert [s.scope for s in store.suppressions()] == ["newsletter"]
    assert store.unsuppress("newsletter", "alice@example.com") is True
    assert not store.is_suppressed("newsletter", "alice@example.com")


def _hammer(path: str, count: int) -> None:
    store = SqliteStore(Path(path))
    for _ in range(count):
        store.consume("shared:messages:hour", 1, 10_000, 3600, T0)


def test_sqlite_counts_exactly_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    SqliteStore(path).consume("shared:messages:hour", 0, 10_000, 3600, T0)  # create the schema
    workers = [
        multiprocessing.get_context("fork").Process(target=_hammer, args=(str(path), 200))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert SqliteStore(path).consume("shared:messages:hour", 0, 10_000, 3600, T0).used == 800


def test_sqlite_locked_beyond_the_busy_timeout_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SqliteStore(path, timeout_ms=100)
    store.consume("k", 1, 10, 60, T0)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StateUnavailable, match="database is locked"):
            store.consume("k", 1, 10, 60, T0)
        assert store.disabled("x") is None  # WAL: readers are not blocked by a writer
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.consume("k", 1, 10, 60, T0).used == 2  # and it recovers by itself


def test_redis_down_is_unavailable_and_recovers(tmp_path: Path) -> None:
    directory = make_dir("relayguard-redis-")
    server = RedisServer(directory).start()
    store = RedisStore(server.url, timeout_ms=200)
    try:
        store.disable("printer", "test", "alice", T0)
        server.stop()
        with pytest.raises(StateUnavailable, match=r"Redis state redis://127\.0\.0\.1"):
            store.disabled("printer")
        server.start()  # empty again: --save '' keeps nothing, and the script cache is gone
        assert store.disabled("printer") is None
        assert store.consume("k", 1, 5, 60, T0).used == 1  # EVALSHA falls back to EVAL
    finally:
        server.stop()


def test_api_tokens_are_listed_found_and_revoked_once(store: StateStore) -> None:
    first = ApiToken("a1", "erp", "d" * 64, "alice", T0, expires=T0 + 3600)
    second = ApiToken("b2", "printer", "e" * 64, "bob", T0 + 1)
    store.add_api_token(first)
    store.add_api_token(second)
    assert store.api_token("a1") == first
    assert store.api_token("zz") is None
    assert [t.token_id for t in store.api_tokens()] == ["a1", "b2"]
    assert store.api_tokens("printer") == [second]
    assert store.revoke_api_token("b2", T0 + 5) is True
    assert store.revoke_api_token("b2", T0 + 6) is False  # the first revocation time stays
    assert store.revoke_api_token("zz", T0) is False
    revoked = store.api_token("b2")
    assert revoked is not None and revoked.revoked == T0 + 5
    assert store.api_token("a1") == first  # the other token is untouched


def test_idempotency_first_claim_wins_until_released_or_expired(store: StateStore) -> None:
    assert store.claim_idempotency("erp:k1", "fp1", T0, 60) is None
    assert store.claim_idempotency("erp:k1", "fp2", T0 + 1, 60) == IdempotencyRecord("fp1", "")
    store.finish_idempotency("erp:k1", '{"status": 202}', T0 + 2, 86400)
    done = store.claim_idempotency("erp:k1", "fp1", T0 + 3, 60)
    assert done == IdempotencyRecord("fp1", '{"status": 202}')
    store.release_idempotency("erp:k1")
    assert store.claim_idempotency("erp:k1", "fp3", T0 + 4, 60) is None


def test_sqlite_idempotency_record_expires(tmp_path: Path) -> None:
    """Redis expires keys on its own clock (PX), tested with a short real TTL below."""
    store = SqliteStore(tmp_path / "state.sqlite3")
    assert store.claim_idempotency("k", "fp1", T0, 10) is None
    assert store.claim_idempotency("k", "fp2", T0 + 9, 10) is not None
    assert store.claim_idempotency("k", "fp2", T0 + 10, 10) is None


def test_redis_idempotency_record_expires(redis_server: RedisServer, tmp_path: Path) -> None:
    store = RedisStore(redis_server.url, prefix=f"test-{tmp_path.name}:")
    assert store.claim_idempotency("k", "fp1", T0, 2) is None
    assert store.claim_idempotency("k", "fp2", T0, 2) is not None  # well inside the 2 s
    deadline = time.monotonic() + 10
    while store.claim_idempotency("k", "fp2", T0, 2) is not None:  # until Redis expires it
        assert time.monotonic() < deadline, "the idempotency record never expired"
        time.sleep(0.1)


def test_lock_with_expiry_lifts_itself_and_auto_disable_keeps_a_lock_in_force(
    store: StateStore,
) -> None:
    assert store.auto_disable("erp", "auto-lock: volume burst", "anomaly", T0, T0 + 600) is True
    entry = store.disabled("erp")
    assert entry is not None and entry.expires == T0 + 600
    assert entry.in_force(T0 + 599) and not entry.in_force(T0 + 600)
    # In force: neither a second automatic lock nor its reason replaces it.
    assert store.auto_disable("erp", "auto-lock: other", "anomaly", T0 + 10) is False
    assert store.disabled("erp") == entry
    # Expired: an automatic lock may take its place.
    assert store.auto_disable("erp", "auto-lock: again", "anomaly", T0 + 600) is True
    again = store.disabled("erp")
    assert again is not None and (again.reason, again.expires) == ("auto-lock: again", None)
    # An operator's lock (no expiry) is never replaced by an automatic one.
    store.disable("printer", "ticket 4711", "alice", T0)
    assert store.auto_disable("printer", "auto-lock: x", "anomaly", T0 + 1) is False
    manual = store.disabled("printer")
    assert manual is not None and (manual.reason, manual.expires) == ("ticket 4711", None)
    assert [d.source for d in store.all_disabled()] == ["erp", "printer"]


def test_baseline_compare_and_set(store: StateStore) -> None:
    assert store.baseline("erp") is None
    assert store.replace_baseline("erp", '{"n": 1}', 0) is True
    assert store.replace_baseline("erp", '{"n": 9}', 0) is False  # someone created it first
    first = store.baseline("erp")
    assert first is not None and first.data == '{"n": 1}'
    assert store.replace_baseline("erp", '{"n": 2}', first.version) is True
    assert store.replace_baseline("erp", '{"n": 3}', first.version) is False  # stale version
    second = store.baseline("erp")
    assert second is not None and (second.data, second.version) == ('{"n": 2}', first.version + 1)
    assert store.baseline("printer") is None


def test_learn_domains_reports_new_ones_and_forgets_old_ones(store: StateStore) -> None:
    assert store.learn_domains("erp", ["a.example", "b.example"], T0, 0) == {
        "a.example",
        "b.example",
    }
    assert store.learn_domains("erp", ["a.example", "c.example"], T0 + 10, 0) == {"c.example"}
    assert store.learn_domains("printer", ["a.example"], T0 + 10, 0) == {"a.example"}
    assert store.learn_domains("erp", [], T0 + 20, 0) == set()
    # b.example was last seen at T0, a.example at T0 + 10: forgetting before T0 + 5 drops b only.
    assert store.learn_domains("erp", ["a.example", "b.example"], T0 + 30, T0 + 5) == {"b.example"}


def test_sqlite_adds_the_expiry_column_to_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE disabled (source TEXT PRIMARY KEY, reason TEXT NOT NULL,"
            " actor TEXT NOT NULL, since REAL NOT NULL)"
        )
        conn.execute("INSERT INTO disabled VALUES ('printer', 'old', 'alice', 1.0)")
    store = SqliteStore(path)
    try:
        old = store.disabled("printer")
        assert old is not None and (old.reason, old.expires) == ("old", None)
        store.disable("erp", "auto-lock: x", "anomaly", T0, T0 + 60)
        new = store.disabled("erp")
        assert new is not None and new.expires == T0 + 60
    finally:
        store.close()
