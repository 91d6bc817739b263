"""A searchable SQLite index of the audit log, built incrementally by the console.

The console follows the log like `tail -F`: it remembers the file's inode and the offset of the
last whole line it read, in the same transaction as the rows that line produced (a restart neither
loses nor repeats a line). When the inode changes the log was rotated: the rest of the old file
is read from its rotated name (the same inode beside it, e.g. audit.jsonl.1) before the new file
is read from its start; a file shorter than the offset was truncated in place (copytruncate) and
is read again from its start.

Addresses and check names are searched through FTS5 (words of an address: `example.com` finds
every address at that domain); queue id, Message-ID, source and outcome are exact-match columns
with their own indexes. Rows are in log order, so "newest first" is rowid order, and a time range
becomes a rowid range: every search walks an index backwards and stops at a page.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from relayguard.core.audit_record import AdminRecord, AuditRecord, DecisionRecord, parse_line

SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1), device INTEGER, inode INTEGER, offset INTEGER
);
CREATE TABLE IF NOT EXISTS lines (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    source TEXT,
    outcome TEXT,
    stage TEXT,
    queue_id TEXT,
    message_id TEXT,
    count INTEGER NOT NULL DEFAULT 1,
    scanner_error INTEGER NOT NULL DEFAULT 0,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lines_ts ON lines (ts);
CREATE INDEX IF NOT EXISTS lines_source ON lines (source, id);
CREATE INDEX IF NOT EXISTS lines_outcome ON lines (outcome, id);
CREATE INDEX IF NOT EXISTS lines_queue_id ON lines (queue_id);
CREATE INDEX IF NOT EXISTS lines_message_id ON lines (message_id);
CREATE VIRTUAL TABLE IF NOT EXISTS words USING fts5 (
    sender, header_from, recipients, checks, content='', columnsize=0
);
CREATE TABLE IF NOT EXISTS hourly (
    hour INTEGER, source TEXT, outcome TEXT, n INTEGER NOT NULL,
    scanner_errors INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (hour, source, outcome)
) WITHOUT ROWID;
"""

# Outcomes as the overview groups them (engine/transaction.py writes the words).
OUTCOME_GROUPS = {
    "accept": "delivered",
    "tag": "delivered",
    "quarantine": "quarantined",
    "tempfail": "tempfailed",
    "reject": "refused",
}
PAGE_SIZE = 50
EDGE = 1000  # rows either side of a time range's edge whose times may be out of order
MAX_READ = 8 << 20  # bytes per read: a huge backlog is indexed in bounded steps
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class Query:
    """One audit search; empty fields do not filter. Times are Unix seconds."""

    since: float | None = None
    until: float | None = None
    source: str = ""
    sender: str = ""
    header_from: str = ""
    recipient: str = ""
    queue_id: str = ""
    message_id: str = ""
    outcome: str = ""
    check: str = ""
    before: int | None = None  # the page after: rows older than this row id


@dataclass(frozen=True, slots=True)
class Hit:
    row_id: int
    record: AuditRecord


@dataclass(frozen=True, slots=True)
class Page:
    hits: list[Hit]
    next_before: int | None  # row id for the next (older) page, None on the last


def outcome_group(outcome: str) -> str:
    if outcome.startswith("would_"):
        return "would-refuse"
    return OUTCOME_GROUPS.get(outcome, outcome)


def _epoch(text: object) -> float:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _phrase(text: str) -> str | None:
    """An FTS5 phrase of the words in `text` (quotes are no syntax there), None without any."""
    words = _WORD.findall(text)
    return '"' + " ".join(words) + '"' if words else None


class AuditIndex:
    """The index file; `update()` reads what the log gained since the last call."""

    def __init__(self, index_path: Path, audit_log: Path) -> None:
        self.audit_log = audit_log
        self.path = index_path
        self._lock = threading.Lock()
        index_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(index_path, check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)
        self._db.execute("PRAGMA synchronous = NORMAL")

    def close(self) -> None:
        self._db.close()

    # --- following the log ----------------------------------------------------------------

    def update(self) -> int:
        """Index every whole line the log gained; how many lines were indexed."""
        total = 0
        while True:
            with self._lock:  # per step: searches wait for one step, not for a whole backlog
                read = self._step()
            total += read
            if read == 0:
                return total

    def _cursor(self) -> tuple[int, int, int]:
        row = self._db.execute("SELECT device, inode, offset FROM cursor WHERE id = 1").fetchone()
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    def _step(self) -> int:
        try:
            st = os.stat(self.audit_log)
        except FileNotFoundError:
            return 0
        device, inode, offset = self._cursor()
        if (st.st_dev, st.st_ino) != (device, inode):
            if inode and self._finish_rotated(device, inode, offset):
                return 1  # the old file's tail went in; the new file comes next round
            return self._read(self.audit_log, st.st_dev, st.st_ino, 0)
        if st.st_size < offset:
            return self._read(self.audit_log, st.st_dev, st.st_ino, 0)  # copytruncate
        return self._read(self.audit_log, device, inode, offset)

    def _finish_rotated(self, device: int, inode: int, offset: int) -> bool:
        """Read the rest of the rotated file (found by its inode beside the log) once."""
        for candidate in self.audit_log.parent.glob(self.audit_log.name + ".*"):
            try:
                st = candidate.stat()
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (device, inode) and st.st_size > offset:
                self._read(candidate, device, inode, offset, until_end=True)
                # Mark the old file as done so the next round starts the new one.
                self._save_cursor(0, 0, 0)
                return True
        return False

    def _read(
        self, path: Path, device: int, inode: int, offset: int, *, until_end: bool = False
    ) -> int:
        try:
            with path.open("rb") as log:
                log.seek(offset)
                data = log.read(MAX_READ)
        except OSError:
            return 0
        end = data.rfind(b"\n") + 1
        if end == 0:
            if (device, inode) != self._cursor()[:2]:
                self._save_cursor(device, inode, offset)
            return 0
        lines = data[:end].split(b"\n")[:-1]
        self._db.execute("BEGIN")
        try:
            for line in lines:
                self._insert(line)
            self._save_cursor(device, inode, offset + end)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if until_end and len(data) == MAX_READ:
            return len(lines) + self._read(path, device, inode, offset + end, until_end=True)
        return len(lines)

    def _save_cursor(self, device: int, inode: int, offset: int) -> None:
        self._db.execute(
            "INSERT INTO cursor (id, device, inode, offset) VALUES (1, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET device = excluded.device,"
            " inode = excluded.inode, offset = excluded.offset",
            (device, inode, offset),
        )

    def _insert(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace")
        record = parse_line(text)
        if record is None:
            return  # a torn or foreign line: nothing to find in it
        ts = _epoch(record.time)
        if isinstance(record, AdminRecord):
            self._row(ts, record.source, record.event, "admin", None, None, 1, 0, text)
            self._words_row(self._last_id(), "", "", "", record.actor)
            return
        error = int(any(c.error for c in record.checks))
        count = record.attempts
        self._row(
            ts,
            record.source,
            record.outcome,
            record.stage,
            record.queue_id,
            record.message_id,
            count,
            error,
            text,
        )
        refusing = {c.name for c in record.refusing_checks()}
        self._words_row(
            self._last_id(),
            record.mail_from,
            record.from_header or "",
            " ".join(record.recipients),
            " ".join(sorted(refusing)),
        )
        self._db.execute(
            "INSERT INTO hourly (hour, source, outcome, n, scanner_errors)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (hour, source, outcome) DO UPDATE SET"
            " n = n + excluded.n, scanner_errors = scanner_errors + excluded.scanner_errors",
            (int(ts // 3600), record.source or "", record.outcome, count, error),
        )

    def _row(self, *values: object) -> None:
        self._db.execute(
            "INSERT INTO lines (ts, source, outcome, stage, queue_id, message_id, count,"
            " scanner_error, line) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )

    def _last_id(self) -> int:
        return int(self._db.execute("SELECT last_insert_rowid()").fetchone()[0])

    def _words_row(
        self, row_id: int, sender: str, header_from: str, rcpts: str, checks: str
    ) -> None:
        self._db.execute(
            "INSERT INTO words (rowid, sender, header_from, recipients, checks)"
            " VALUES (?, ?, ?, ?, ?)",
            (row_id, sender, header_from, rcpts, checks),
        )

    # --- searching ------------------------------------------------------------------------

    def search(self, query: Query, page_size: int = PAGE_SIZE) -> Page:
        where, params = self._conditions(query)
        words = self._match(query)
        if words:
            sql = (
                "SELECT lines.id, lines.line FROM words JOIN lines ON lines.id = words.rowid"
                " WHERE words MATCH ?"
            )
            params = [words, *params]
            order = "words.rowid"
        else:
            sql = "SELECT lines.id, lines.line FROM lines WHERE 1"
            order = "lines.id"
        for condition in where:
            sql += f" AND {condition.replace('{id}', order)}"
        sql += f" ORDER BY {order} DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, [*params, page_size + 1]).fetchall()
        hits = [Hit(int(r[0]), record) for r in rows[:page_size] if (record := parse_line(r[1]))]
        return Page(hits, hits[-1].row_id if len(rows) > page_size else None)

    def rows_after(self, row_id: int, limit: int) -> list[Hit]:
        """Up to `limit` rows after `row_id`, in log order (the console's digests fold them)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, line FROM lines WHERE id > ? ORDER BY id LIMIT ?", (row_id, limit)
            ).fetchall()
        return [Hit(int(r[0]), record) for r in rows if (record := parse_line(r[1]))]

    def _conditions(self, query: Query) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        low, high = self._id_range(query.since, query.until)
        if low is not None:
            where += ["{id} >= ?", "lines.ts >= ?"]
            params += [low, query.since]
        if high is not None:
            where += ["{id} <= ?", "lines.ts <= ?"]
            params += [high, query.until]
        if query.before is not None:
            where.append("{id} < ?")
            params.append(query.before)
        for column, value in (
            ("source", query.source),
            ("outcome", query.outcome),
            ("queue_id", query.queue_id),
            ("message_id", query.message_id),
        ):
            if value:
                where.append(f"lines.{column} = ?")
                params.append(value)
        return where, params

    def _id_range(self, since: float | None, until: float | None) -> tuple[int | None, int | None]:
        """The rows of a time range as a rowid range: rows are in log order, whose times rise
        (but for a few milliseconds between processes: the exact times filter the edges)."""
        low = high = None
        with self._lock:
            if since is not None:
                row = self._db.execute(
                    "SELECT id FROM lines WHERE ts >= ? ORDER BY ts LIMIT 1", (since,)
                ).fetchone()
                low = -1 if row is None else int(row[0]) - EDGE  # nothing that late: empty
            if until is not None:
                row = self._db.execute(
                    "SELECT id FROM lines WHERE ts <= ? ORDER BY ts DESC LIMIT 1", (until,)
                ).fetchone()
                high = -1 if row is None else int(row[0]) + EDGE
        return low, high

    def _match(self, query: Query) -> str:
        terms = []
        for column, value in (
            ("sender", query.sender),
            ("header_from", query.header_from),
            ("recipients", query.recipient),
            ("checks", query.check),
        ):
            phrase = _phrase(value) if value else None
            if phrase:
                terms.append(f"{column} : {phrase}")
        return " AND ".join(terms)

    # --- what the overview and the sources page show --------------------------------------

    def outcome_counts(self, since: float) -> dict[str, int]:
        """Decisions by outcome group since `since` (from the hourly roll-up, whole hours)."""
        counts: dict[str, int] = {}
        with self._lock:
            rows = self._db.execute(
                "SELECT outcome, sum(n) FROM hourly WHERE hour >= ? GROUP BY outcome",
                (int(since // 3600),),
            ).fetchall()
        for outcome, n in rows:
            group = outcome_group(str(outcome))
            counts[group] = counts.get(group, 0) + int(n)
        return counts

    def scanner_errors(self, since: float) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT coalesce(sum(scanner_errors), 0) FROM hourly WHERE hour >= ?",
                (int(since // 3600),),
            ).fetchone()
        return int(row[0])

    def busiest_sources(self, since: float, limit: int = 10) -> list[tuple[str, int]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT source, sum(n) AS total FROM hourly WHERE hour >= ? AND source != ''"
                " GROUP BY source ORDER BY total DESC LIMIT ?",
                (int(since // 3600), limit),
            ).fetchall()
        return [(str(s), int(n)) for s, n in rows]

    def hourly_series(self, since: float, hours: int = 24) -> list[tuple[int, dict[str, int]]]:
        """(hour start, counts by outcome group) for each of `hours` hours from `since`."""
        first = int(since // 3600)
        series: dict[int, dict[str, int]] = {first + i: {} for i in range(hours)}
        with self._lock:
            rows = self._db.execute(
                "SELECT hour, outcome, sum(n) FROM hourly WHERE hour >= ? AND hour < ?"
                " GROUP BY hour, outcome",
                (first, first + hours),
            ).fetchall()
        for hour, outcome, n in rows:
            bucket = series[int(hour)]
            group = outcome_group(str(outcome))
            bucket[group] = bucket.get(group, 0) + int(n)
        return [(hour * 3600, counts) for hour, counts in series.items()]

    def source_volume(self, source: str, since: float) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT coalesce(sum(n), 0) FROM hourly WHERE source = ? AND hour >= ?",
                (source, int(since // 3600)),
            ).fetchone()
        return int(row[0])

    def last_seen(self, source: str) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT ts FROM lines WHERE source = ? ORDER BY id DESC LIMIT 1", (source,)
            ).fetchone()
        return float(row[0]) if row else None

    def decisions_for(self, queue_ids: list[str]) -> dict[str, DecisionRecord]:
        """queue id -> its last decision line (the quarantine's reasons)."""
        found: dict[str, DecisionRecord] = {}
        with self._lock:
            for queue_id in queue_ids:
                rows = self._db.execute(
                    "SELECT line FROM lines WHERE queue_id = ? ORDER BY id", (queue_id,)
                ).fetchall()
                for (line,) in rows:
                    record = parse_line(line)
                    if isinstance(record, DecisionRecord):
                        found[queue_id] = record
        return found
