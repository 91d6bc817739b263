"""The SQLite backend: the embedded default, shared by every milter process of one node.

WAL lets readers (the kill switch, read on every transaction) run while one process writes, and the
busy timeout makes a writer wait for another instead of failing at once. A rate-limit update is a
read-modify-write, so it runs in a `BEGIN IMMEDIATE` transaction: the write lock is taken before
the read, and two processes can never both admit the last message of a window. A connection is
never used across fork(): each process (worker) opens its own on first use, and every open
connection is closed *before* any fork() (os.register_at_fork). SQLite keeps its POSIX-lock
bookkeeping per process: a child forked while its parent had the file open inherits a copy that
claims locks the child does not hold, skips real locking and silently loses updates (seen here
with the supervisor forking workers; "How To Corrupt An SQLite Database File", section 2.6).

synchronous=NORMAL: in WAL mode a crash of a process loses nothing; a power failure may lose the
last transactions (counters restart slightly low). The database file, its -wal and -shm files must
be writable by the milter's user.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from relayguard.parsing.rfc5322 import ascii_lower
from relayguard.state import (
    ApiToken,
    Disabled,
    IdempotencyRecord,
    StateUnavailable,
    StoredBaseline,
    Suppression,
    Usage,
)
from relayguard.state.window import current_bucket, evaluate, oldest_live_bucket

SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_buckets (
    key TEXT NOT NULL, bucket INTEGER NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (key, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS disabled (
    source TEXT PRIMARY KEY, reason TEXT NOT NULL, actor TEXT NOT NULL, since REAL NOT NULL,
    expires REAL
);
CREATE TABLE IF NOT EXISTS baselines (
    source TEXT PRIMARY KEY, version INTEGER NOT NULL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS known_domains (
    source TEXT NOT NULL, domain TEXT NOT NULL, last_seen REAL NOT NULL,
    PRIMARY KEY (source, domain)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS known_domains_seen ON known_domains (source, last_seen);
CREATE TABLE IF NOT EXISTS suppressions (
    scope TEXT NOT NULL, recipient TEXT NOT NULL, reason TEXT NOT NULL, since REAL NOT NULL,
    PRIMARY KEY (scope, recipient)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id TEXT PRIMARY KEY, source TEXT NOT NULL, digest TEXT NOT NULL, actor TEXT NOT NULL,
    created REAL NOT NULL, expires REAL, revoked REAL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, result TEXT NOT NULL, expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_expires ON idempotency (expires);
"""

_SELECT_TOKENS = "SELECT token_id, source, digest, actor, created, expires, revoked FROM api_tokens"

_SELECT_DISABLED = "SELECT source, reason, actor, since, expires FROM disabled"

_OPEN: weakref.WeakSet[SqliteStore] = weakref.WeakSet()


def _add_expires_column(conn: sqlite3.Connection) -> None:
    """A database from before automatic locks has no `expires` column: add it (NULL: no expiry)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(disabled)")}
    if "expires" not in columns:
        conn.execute("ALTER TABLE disabled ADD COLUMN expires REAL")


def _close_all_before_fork() -> None:
    for store in list(_OPEN):
        store.close_for_fork()


os.register_at_fork(before=_close_all_before_fork)


def _write_disabled(conn: sqlite3.Connection, entry: Disabled) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO disabled (source, reason, actor, since, expires)"
        " VALUES (?, ?, ?, ?, ?)",
        (entry.source, entry.reason, entry.actor, entry.since, entry.expires),
    )


def _close_in_owner(conn: sqlite3.Connection, pid: int) -> None:
    """A store garbage-collected without close(): close its connection explicitly (which finalizes
    its statements) in the process that opened it. Left to deallocation, SQLite can keep the file
    and its lock bookkeeping open as a zombie, and a later fork() inherits the hazard above."""
    if os.getpid() == pid:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


class SqliteStore:
    """One connection per process, serialised by a lock between libmilter's threads."""

    backend = "sqlite"

    def __init__(self, path: Path, timeout_ms: int = 1000) -> None:
        self.path = path
        self.timeout_ms = timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.Lock()

    # --- connection and transactions ---------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self._conn = None  # a connection inherited over fork() is never touched
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self.timeout_ms / 1000,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._lock
            )
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.executescript(SCHEMA)
                _add_expires_column(conn)
            except sqlite3.Error:
                conn.close()
                raise
            self._conn, self._pid = conn, os.getpid()
            _OPEN.add(self)
            weakref.finalize(self, _close_in_owner, conn, self._pid)
        return self._conn

    def close_for_fork(self) -> None:
        """Before fork(): waits for a transaction in flight, then closes (reopened lazily)."""
        with self._lock:
            self._drop()

    @contextlib.contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """Atomic: BEGIN IMMEDIATE ... COMMIT (or one autocommit statement for a read)."""
        with self._lock:
            try:
                conn = self._connection()
                if not write:
                    yield conn
                    return
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                self._drop()
                raise StateUnavailable(f"SQLite state {self.path}: {exc}") from exc

    def _drop(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None

    # --- rate limits -------------------------------------------------------------------------
    def consume(self, key: str, amount: int, limit: int, window: float, now: float) -> Usage:
        return self.consume_many([(key, limit, window)], amount, now)[0]

    def consume_many(
        self, counters: Sequence[tuple[str, int, float]], amount: int, now: float
    ) -> list[Usage]:
        with self._transaction() as conn:
            usages = []
            for key, limit, window in counters:
                conn.execute(
                    "DELETE FROM rate_buckets WHERE key = ? AND bucket < ?",
                    (key, oldest_live_bucket(window, now)),
                )
                usages.append(evaluate(dict(_buckets(conn, key)), amount, limit, window, now))
            if not any(usage.exceeded for usage in usages):
                conn.executemany(
                    "INSERT INTO rate_buckets (key, bucket, amount) VALUES (?, ?, ?)"
                    " ON CONFLICT (key, bucket) DO UPDATE SET amount = amount + excluded.amount",
                    [(key, current_bucket(window, now), amount) for key, _, window in counters],
                )
            return usages

    def peek_usage(self, counters: Sequence[tuple[str, int, float]], now: float) -> list[Usage]:
        with self._transaction(write=False) as conn:
            return [
                evaluate(dict(_buckets(conn, key)), 0, limit, window, now)
                for key, limit, window in counters
            ]

    # --- kill switch -------------------------------------------------------------------------
    def disable(
        self, source: str, reason: str, actor: str, now: float, expires: float | None = None
    ) -> None:
        with self._transaction() as conn:
            _write_disabled(conn, Disabled(source, reason, actor, now, expires))

    def auto_disable(
        self, source: str, reason: str, actor: str, now: float, expires: float | None = None
    ) -> bool:
        with self._transaction() as conn:
            row = conn.execute(_SELECT_DISABLED + " WHERE source = ?", (source,)).fetchone()
            if row is not None and Disabled(*row).in_force(now):
                return False
            _write_disabled(conn, Disabled(source, reason, actor, now, expires))
            return True

    def enable(self, source: str, actor: str) -> bool:
        with self._transaction() as conn:
            return conn.execute("DELETE FROM disabled WHERE source = ?", (source,)).rowcount > 0

    def disabled(self, source: str) -> Disabled | None:
        with self._transaction(write=False) as conn:
            row = conn.execute(_SELECT_DISABLED + " WHERE source = ?", (source,)).fetchone()
        return Disabled(*row) if row else None

    def all_disabled(self) -> list[Disabled]:
        with self._transaction(write=False) as conn:
            rows = conn.execute(_SELECT_DISABLED + " ORDER BY source").fetchall()
        return [Disabled(*row) for row in rows]

    # --- suppression list --------------------------------------------------------------------
    def suppress(self, scope: str, recipient: str, reason: str, now: float) -> bool:
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO suppressions (scope, recipient, reason, since)"
                " VALUES (?, ?, ?, ?)",
                (scope, ascii_lower(recipient), reason, now),
            )
            return cursor.rowcount > 0

    def unsuppress(self, scope: str, recipient: str) -> bool:
        with self._transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM suppressions WHERE scope = ? AND recipient = ?",
                (scope, ascii_lower(recipient)),
            )
            return cursor.rowcount > 0

    def is_suppressed(self, scope: str, recipient: str) -> bool:
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT 1 FROM suppressions WHERE scope = ? AND recipient = ?",
                (scope, ascii_lower(recipient)),
            ).fetchone()
        return row is not None

    def suppressions(self, scope: str | None = None) -> list[Suppression]:
        query = "SELECT scope, recipient, reason, since FROM suppressions"
        with self._transaction(write=False) as conn:
            if scope is None:
                rows = conn.execute(query + " ORDER BY scope, recipient").fetchall()
            else:
                rows = conn.execute(
                    query + " WHERE scope = ? ORDER BY recipient", (scope,)
                ).fetchall()
        return [Suppression(*row) for row in rows]

    # --- send-API tokens ----------------------------------------------------------------------
    def add_api_token(self, token: ApiToken) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO api_tokens"
                " (token_id, source, digest, actor, created, expires, revoked)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    *(token.token_id, token.source, token.digest, token.actor),
                    *(token.created, token.expires, token.revoked),
                ),
            )

    def api_token(self, token_id: str) -> ApiToken | None:
        with self._transaction(write=False) as conn:
            row = conn.execute(_SELECT_TOKENS + " WHERE token_id = ?", (token_id,)).fetchone()
        return ApiToken(*row) if row else None

    def api_tokens(self, source: str | None = None) -> list[ApiToken]:
        query = _SELECT_TOKENS
        with self._transaction(write=False) as conn:
            if source is None:
                rows = conn.execute(query + " ORDER BY source, created").fetchall()
            else:
                rows = conn.execute(
                    query + " WHERE source = ? ORDER BY created", (source,)
                ).fetchall()
        return [ApiToken(*row) for row in rows]

    def revoke_api_token(self, token_id: str, now: float) -> bool:
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE api_tokens SET revoked = ? WHERE token_id = ? AND revoked IS NULL",
                (now, token_id),
            )
            return cursor.rowcount > 0

    # --- idempotency keys --------------------------------------------------------------------
    def claim_idempotency(
        self, key: str, fingerprint: str, now: float, ttl: float
    ) -> IdempotencyRecord | None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM idempotency WHERE expires <= ?", (now,))
            row = conn.execute(
                "SELECT fingerprint, result FROM idempotency WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                return IdempotencyRecord(*row)
            conn.execute(
                "INSERT INTO idempotency (key, fingerprint, result, expires) VALUES (?, ?, '', ?)",
                (key, fingerprint, now + ttl),
            )
            return None

    def finish_idempotency(self, key: str, result: str, now: float, ttl: float) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE idempotency SET result = ?, expires = ? WHERE key = ?",
                (result, now + ttl, key),
            )

    def release_idempotency(self, key: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM idempotency WHERE key = ?", (key,))

    # --- anomaly baselines --------------------------------------------------------------------
    def baseline(self, source: str) -> StoredBaseline | None:
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT version, data FROM baselines WHERE source = ?", (source,)
            ).fetchone()
        return StoredBaseline(*row) if row else None

    def replace_baseline(self, source: str, data: str, version: int) -> bool:
        with self._transaction() as conn:
            if version == 0:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO baselines (source, version, data) VALUES (?, 1, ?)",
                    (source, data),
                )
            else:
                cursor = conn.execute(
                    "UPDATE baselines SET version = version + 1, data = ?"
                    " WHERE source = ? AND version = ?",
                    (data, source, version),
                )
            return cursor.rowcount > 0

    def learn_domains(
        self, source: str, domains: Collection[str], now: float, forget_before: float
    ) -> set[str]:
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM known_domains WHERE source = ? AND last_seen < ?",
                (source, forget_before),
            )
            new = set()
            for domain in set(domains):
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO known_domains (source, domain, last_seen)"
                    " VALUES (?, ?, ?)",
                    (source, domain, now),
                ).rowcount
                if inserted:
                    new.add(domain)
                else:
                    conn.execute(
                        "UPDATE known_domains SET last_seen = ? WHERE source = ? AND domain = ?",
                        (now, source, domain),
                    )
            return new

    def learn_domains_and_baseline(
        self, source: str, domains: Collection[str], now: float, forget_before: float
    ) -> tuple[set[str], StoredBaseline | None]:
        return self.learn_domains(source, domains, now, forget_before), self.baseline(source)

    def close(self) -> None:
        with self._lock:
            self._drop()


def _buckets(conn: sqlite3.Connection, key: str) -> list[tuple[int, int]]:
    rows = conn.execute("SELECT bucket, amount FROM rate_buckets WHERE key = ?", (key,))
    return [(int(bucket), int(amount)) for bucket, amount in rows.fetchall()]
