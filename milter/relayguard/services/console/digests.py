"""Views over the whole audit log (the inventory, the report), kept current from the audit index.

Both used to read the whole log on every request (minutes on a million lines). Now each view is
folded one record at a time: a refresh reads only the index rows added since the last one, parses
each once for every view, and a page renders what is already counted. The follower thread
folds up to one batch after each index update (a large backlog, e.g. a million lines at the first
start, must not hold up the index it follows), so a page seldom has rows left to fold.
"""

from __future__ import annotations

import threading
from typing import Protocol

from relayguard.core.audit_record import AuditRecord
from relayguard.services.console.audit_index import AuditIndex

BATCH = 5000  # rows per read: the index's lock is held for one batch, not for a backlog


class AuditView(Protocol):
    """A summary built one audit record at a time (cli/inventory.py, cli/report.py)."""

    def add(self, record: AuditRecord) -> None: ...

    def render(self) -> str: ...


class Digests:
    def __init__(self, index: AuditIndex, views: dict[str, AuditView]) -> None:
        self.index = index
        self.views = views
        self._last_row = 0
        self._lock = threading.Lock()

    def refresh(self, most: int | None = None) -> int:
        """Fold in the rows indexed since the last refresh (at most `most`); how many."""
        folded = 0
        with self._lock:
            while most is None or folded < most:
                hits = self.index.rows_after(self._last_row, BATCH)
                if not hits:
                    break
                for hit in hits:
                    for view in self.views.values():
                        view.add(hit.record)
                self._last_row = hits[-1].row_id
                folded += len(hits)
        return folded

    def refresh_one_batch(self) -> int:
        return self.refresh(BATCH)

    def render(self, name: str) -> str:
        self.refresh()
        with self._lock:
            return self.views[name].render()
