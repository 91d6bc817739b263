"""The audit log: one JSON line per decision, never message content or secrets.

Each line is a typed record (core/audit_record.py) with its schema version.

Lines are appended with a single write() on an O_APPEND descriptor, so several milter processes can
share the file. The file is reopened when log rotation replaced it (checked by inode on each write),
so no signal choreography with logrotate is needed.

The log must not be a way to fill the disk from the internet (a full disk turns every message into
451): every client-controlled value is clipped (`clip`), and the refusals of clients that are no
registered source are counted per client and interval instead of written one by one
(`RefusalCounter`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from relayguard.core.audit_record import AuditRecord, DecisionRecord
from relayguard.core.errors import AuditError
from relayguard.core.verdict import Facts, FactValue

log = logging.getLogger(__name__)

# Longest client-controlled value kept in an audit line, per kind (docs/configuration.md).
ADDRESS_LIMIT = 256  # RFC 5321 §4.5.3.1.3: a path is at most 256 octets (an address 254)
IDENTITY_LIMIT = 256  # SASL login, certificate subject, client address
HEADER_LIMIT = 256  # From and Message-ID: enough to identify a message
REASON_LIMIT = 512  # check reasons and replies, which quote client values
# Facts are names and counts from code and configuration, but a list of matched rules can be long.
FACT_KEYS_LIMIT = 16
FACT_ITEMS_LIMIT = 32  # names in a list, detectors in a count
FACT_TEXT_LIMIT = 128
# Clients whose refusals are being counted at once; beyond, each refusal is written as it happens.
MAX_COUNTED_CLIENTS = 10_000


class AuditLog:
    def __init__(self, path: Path | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self.refusals = RefusalCounter(self.write, clock)

    def write(self, record: AuditRecord) -> None:
        """Append one line, or raise AuditError: the message must not pass unaudited."""
        line = json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"
        if self.path is None:
            log.info("audit %s", line.rstrip("\n"))
            return
        data = line.encode("utf-8", "surrogateescape")
        with self._lock:
            try:
                fd = self._current_fd()
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(f"short write ({written} of {len(data)} bytes)")
            except OSError as exc:
                self._close()
                raise AuditError(f"cannot write audit log {self.path}: {exc}") from exc

    def flush_due(self) -> None:
        """Write the counts whose interval is over (the worker's timer calls this)."""
        self._flush(everything=False)

    def flush_all(self) -> None:
        """Write every count held back (the worker is stopping, or the log is replaced)."""
        self._flush(everything=True)

    def _flush(self, *, everything: bool) -> None:
        # No SMTP client is waiting on these lines: an error can only be logged.
        try:
            self.refusals.flush(everything=everything)
        except AuditError as exc:
            log.error("%s; refusal counts kept for the next try", exc)

    def _current_fd(self) -> int:
        assert self.path is not None
        try:
            st = os.stat(self.path)
            current = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            current = None
        if self._fd is None or current != self._inode:
            self._close()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            st = os.fstat(self._fd)
            self._inode = (st.st_dev, st.st_ino)
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._inode = None

    def close(self) -> None:
        with self._lock:
            self._close()


@dataclass
class _Window:
    """One client's refusals since its last line."""

    written: float  # clock time of the client's last line
    interval: float
    first: DecisionRecord | None = None  # the first refusal held back: its details make the line
    count: int = 0
    last_time: str = ""

    def due(self, now: float) -> bool:
        return now - self.written >= self.interval


class RefusalCounter:
    """At most one audit line per client and interval for refusals of unregistered clients.

    A client's first refusal is written at once. Later ones are counted; once `interval` seconds
    have passed since the client's last line, one line stands for all of them: the first counted
    refusal's record plus `count` and `last_time`. It is written by the next refusal, by the
    worker's timer (`flush`), or when the worker stops. Each worker process counts on its own.
    """

    def __init__(self, write: Callable[[DecisionRecord], None], clock: Callable[[], float]):
        self._write = write
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def add(self, client: str, record: DecisionRecord, interval: float) -> None:
        """Write or count one refusal; raises AuditError when a line cannot be written."""
        with self._lock:
            now = self._clock()
            window = self._windows.get(client)
            if window is not None and window.count == 0 and window.due(now):
                del self._windows[client]  # quiet for a whole interval: start afresh
                window = None
            if window is None:
                self._write(record)
                if interval > 0 and len(self._windows) < MAX_COUNTED_CLIENTS:
                    self._windows[client] = _Window(now, interval)
                return
            if window.first is None:
                window.first = record
            window.count += 1
            window.last_time = record.time
            if window.due(now):
                self._write_count(window, now)

    def flush(self, *, everything: bool) -> None:
        with self._lock:
            now = self._clock()
            for client, window in list(self._windows.items()):
                if window.count and (everything or window.due(now)):
                    self._write_count(window, now)
                elif window.due(now) or everything:
                    del self._windows[client]

    def _write_count(self, window: _Window, now: float) -> None:
        """The counted line; on failure the count stays for the next try."""
        assert window.first is not None
        self._write(replace(window.first, count=window.count, last_time=window.last_time))
        window.written, window.first, window.count, window.last_time = now, None, 0, ""


def clip(text: str, limit: int) -> str:
    """A client-controlled value, cut to `limit` characters with a marker saying how many more."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[clipped {len(text) - limit} chars]"


def bounded_facts(facts: Facts) -> Facts:
    """A verdict's facts as the audit line holds them: a bounded number of bounded values."""
    return {
        clip(key, FACT_TEXT_LIMIT): _bounded(value)
        for key, value in list(facts.items())[:FACT_KEYS_LIMIT]
    }


def _bounded(value: FactValue) -> FactValue:
    if isinstance(value, str):
        return clip(value, FACT_TEXT_LIMIT)
    if isinstance(value, tuple):
        return tuple(clip(item, FACT_TEXT_LIMIT) for item in value[:FACT_ITEMS_LIMIT])
    if isinstance(value, int | float):
        return value
    return {clip(k, FACT_TEXT_LIMIT): n for k, n in list(value.items())[:FACT_ITEMS_LIMIT]}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
