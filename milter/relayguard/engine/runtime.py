"""The live configuration of a milter process: replaced whole on reload, never mutated.

A transaction takes the current Runtime when it starts and keeps it to the end, so a reload never
changes the rules under a message in flight. A reload that fails validation keeps the old runtime.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from relayguard.checks import dlp
from relayguard.config import Config, load_config
from relayguard.core.errors import ConfigError
from relayguard.engine.audit import AuditLog
from relayguard.engine.memory import keep_large_buffers_unmapped
from relayguard.engine.pipeline import Pipeline
from relayguard.engine.registry import Observer, build_observers

log = logging.getLogger(__name__)


def prepare_process() -> None:
    """What a process that decides mail sets up once, by this explicit call at its start (a
    worker, `relayguard test-message`), never as a side effect of an import: dkimpy signs RSA
    through OpenSSL (dkim/openssl.py); freed message buffers go back to the kernel (memory.py).
    The metrics' multiprocess values are set by the
    supervisor before it forks (metrics.start_exporter)."""
    from relayguard.dkim import openssl as dkim_openssl  # noqa: PLC0415 (dkimpy: only to sign)

    dkim_openssl.install()
    keep_large_buffers_unmapped()


def prepare_supervisor(config: Config) -> None:
    """What the milter's supervisor sets up for CONFIG before it forks workers, so that each
    worker inherits it instead of doing it on its first message: the DLP prefilter's Hyperscan
    database (50-80 ms to compile here; see Prefilter.compile for why before the fork)."""
    dlp.compile_prefilters(config.content.dlp)


@dataclass(frozen=True, slots=True)
class Runtime:
    config: Config
    pipeline: Pipeline
    audit: AuditLog
    observers: tuple[Observer, ...] = ()

    @classmethod
    def build(
        cls, config: Config, audit: AuditLog | None = None, *, dry_run: bool = False
    ) -> Runtime:
        if audit is None or audit.path != config.relay.audit_log:
            if audit is not None:
                audit.flush_all()  # counts held back belong to the log they were counted for
            audit = AuditLog(config.relay.audit_log)
        pipeline = Pipeline.for_config(config, dry_run=dry_run)
        return cls(config, pipeline, audit, () if dry_run else build_observers(config))


class RuntimeHolder:
    """Holds the current Runtime; `refresh()` reloads when the supervisor's generation moved."""

    def __init__(
        self, path: Path, runtime: Runtime, generation: Callable[[], int] = lambda: 0
    ) -> None:
        self.path = path
        self._runtime = runtime
        self._generation = generation
        self._seen = generation()
        self._lock = threading.Lock()

    @property
    def current(self) -> Runtime:
        return self._runtime

    def refresh(self) -> Runtime:
        """Cheap when nothing changed: one integer comparison per transaction."""
        generation = self._generation()
        if generation != self._seen:
            with self._lock:
                if generation != self._seen:
                    self._seen = generation
                    self.reload()
        return self._runtime

    def reload(self) -> bool:
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)
            return False
        self._runtime = Runtime.build(config, self._runtime.audit)
        log.info("configuration reloaded from %s (%d sources)", self.path, len(config.sources))
        return True
