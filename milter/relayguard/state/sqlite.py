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
from collections.abc import Iterator, Sequence
from pathlib import Path

from relayguard.parsing.rfc5322 import ascii_lower
from relayguard.state import Disabled, StateUnavailable, Suppression, Usage
from relayguard.state.window import current_bucket, evaluate, oldest_live_bucket

SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_buckets (
    key TEXT NOT NULL, bucket INTEGER NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (key, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS disabled (
    source TEXT PRIMARY KEY, reason TEXT NOT NULL, actor TEXT NOT NULL, since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS suppressions (
    scope TEXT NOT NULL, recipient TEXT NOT NULL, reason TEXT NOT NULL, since REAL NOT NULL,
    PRIMARY KEY (scope, recipient)
) WITHOUT ROWID;
"""


_OPEN: weakref.WeakSet[SqliteStore] = weakref.WeakSet()


def _close_all_before_fork() -> None:
    for store in list(_OPEN):
        store.close_for_fork()


os.register_at_fork(before=_close_all_before_fork)


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
                rows = conn.execute(
                    "SELECT bucket, amount FROM rate_buckets WHERE key = ?", (key,)
                ).fetchall()
                usages.append(evaluate(dict(rows), amount, limit, window, now))
            if not any(usage.exceeded for usage in usages):
                conn.executemany(
                    "INSERT INTO rate_buckets (key, bucket, amount) VALUES (?, ?, ?)"
                    " ON CONFLICT (key, bucket) DO UPDATE SET amount = amount + excluded.amount",
                    [(key, current_bucket(window, now), amount) for key, _, window in counters],
                )
            return usages

    # --- kill switch -------------------------------------------------------------------------
    def disable(self, source: str, reason: str, actor: str, now: float) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO disabled (source, reason, actor, since)"
                " VALUES (?, ?, ?, ?)",
                (source, reason, actor, now),
            )

    def enable(self, source: str, actor: str) -> bool:
        with self._transaction() as conn:
            return conn.execute("DELETE FROM disabled WHERE source = ?", (source,)).rowcount > 0

    def disabled(self, source: str) -> Disabled | None:
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT source, reason, actor, since FROM disabled WHERE source = ?", (source,)
            ).fetchone()
        return Disabled(*row) if row else None

    def all_disabled(self) -> list[Disabled]:
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT source, reason, actor, since FROM disabled ORDER BY source"
            ).fetchall()
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

    def close(self) -> None:
        with self._lock:
            self._drop()
