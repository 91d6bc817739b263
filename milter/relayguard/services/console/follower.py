"""The thread that keeps the audit index current: it polls the log every `interval` seconds, then
brings the console's digests (inventory, report) up to the index."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from relayguard.services.console.audit_index import AuditIndex

log = logging.getLogger(__name__)


class Follower:
    def __init__(
        self, index: AuditIndex, interval: float, after: Callable[[], object] | None = None
    ) -> None:
        self.index = index
        self.interval = interval
        self.after = after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-index", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.index.update()
                if self.after is not None:
                    self.after()
            except Exception:  # a damaged index must not stop the console; it says why
                log.exception("indexing %s failed; retrying", self.index.audit_log)
            self._stop.wait(self.interval)
