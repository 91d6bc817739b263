"""The audit log: one JSON line per decision, never message content or secrets.

Lines are appended with a single write() on an O_APPEND descriptor, so several milter processes can
share the file. The file is reopened when log rotation replaced it (checked by inode on each write),
so no signal choreography with logrotate is needed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relayguard.errors import AuditError

log = logging.getLogger(__name__)

MAX_FIELD = 998  # RFC 5322 §2.1.1 line limit: more is never needed to identify a message


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one line, or raise AuditError: the message must not pass unaudited."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
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


def clip(text: str) -> str:
    return text if len(text) <= MAX_FIELD else text[:MAX_FIELD] + "…"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
