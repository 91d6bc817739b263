"""Runs the milter: one listening socket, several worker processes, one supervisor.

pymilter callbacks hold the GIL, so one process serialises every connection. The supervisor opens
the socket once (setting its owner, group and mode so Postfix's smtpd can connect), then forks
workers that each run libmilter's accept loop on the inherited socket. It replaces a worker that
dies, forwards SIGTERM, and on SIGHUP validates the configuration and bumps a generation counter in
shared memory that every worker checks at the start of each transaction: a bad reload changes
nothing, and a message in flight keeps the snapshot it started with.

Stopping: libmilter needs seconds to notice SIGTERM, so the supervisor removes the socket path (no
new connections), waits until the workers' open-connection counters (shared memory) reach zero or
the grace period ends, then kills the workers. Postfix answers any connection cut short with its
default_action=tempfail, so nothing is lost either way.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import grp
import logging
import multiprocessing
import os
import pwd
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from relayguard import metrics
from relayguard.config import Config, MilterSettings, load_config
from relayguard.core.errors import ConfigError
from relayguard.daemon.adapter import listen, run_worker
from relayguard.engine.runtime import Runtime, RuntimeHolder, prepare_process, prepare_supervisor

log = logging.getLogger(__name__)

RESPAWN_PAUSE = 1.0  # seconds between respawns, so a worker that dies at once cannot spin
STOP_GRACE = 30.0  # seconds in-flight connections get to finish when the milter stops
FLUSH_PERIOD = 0.2  # seconds between a worker's looks at the audit counts it holds back
FLUSH_GRACE = 2.0  # seconds workers get to write those counts when the milter stops


class SlotGauge:
    """One worker's open-connection count in a shared array (only that worker writes its slot)."""

    def __init__(self, counters: ctypes.Array[ctypes.c_long], slot: int) -> None:
        self.counters = counters
        self.slot = slot
        self.lock = threading.Lock()

    def opened(self) -> None:
        with self.lock:
            self.counters[self.slot] += 1

    def closed(self) -> None:
        with self.lock:
            self.counters[self.slot] -= 1


@dataclass
class Supervisor:
    config_path: Path
    config: Config
    socket_spec: str

    def __post_init__(self) -> None:
        # Anonymous shared memory created before fork: workers read it, the supervisor bumps it.
        self.generation = multiprocessing.RawValue(ctypes.c_ulonglong, 0)
        self.connections = multiprocessing.RawArray(ctypes.c_long, self.config.milter.workers)
        # Stopping: the supervisor sets `flush`, each worker writes its audit counts and says so.
        self.flush = multiprocessing.RawValue(ctypes.c_bool, False)
        self.flushed = multiprocessing.RawArray(ctypes.c_bool, self.config.milter.workers)
        self.workers: dict[int, int] = {}  # pid -> slot
        self.stopping = False
        self.reload_requested = False

    def run(self) -> int:
        open_socket(self.socket_spec, self.config.milter)
        drop_privileges(self.config.milter.user)
        # Before the first fork: workers inherit the metrics directory (metrics.py).
        exporter = metrics.start_exporter(self.config, lambda: self.config)
        prepare_supervisor(self.config)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        for slot in range(self.config.milter.workers):
            self._spawn(slot)
        log.info(
            "relayguard milter listening on %s with %d workers",
            self.socket_spec,
            self.config.milter.workers,
        )
        while not self.stopping:
            if self.reload_requested:
                self.reload_requested = False
                self._reload()
            self._reap()
            time.sleep(0.2)
        try:
            return self._shutdown()
        finally:
            if exporter is not None:
                exporter.close()

    def _spawn(self, slot: int) -> None:
        self.connections[slot] = 0  # a dead worker's connections died with it
        self.flushed[slot] = False
        # What exists now is moved out of the collector's reach: a worker's collections would
        # otherwise write to every object and copy the pages it shares with the supervisor.
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = self._worker(slot)
            finally:
                os._exit(code)
        self.workers[pid] = slot

    def _worker(self, slot: int) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        prepare_process()
        runtime = Runtime.build(self.config)
        holder = RuntimeHolder(self.config_path, runtime, lambda: int(self.generation.value))
        threading.Thread(
            target=self._flush_audit_counts, args=(holder, slot), name="audit-flush", daemon=True
        ).start()
        run_worker(holder, SlotGauge(self.connections, slot))
        holder.current.audit.flush_all()
        return 0

    def _flush_audit_counts(self, holder: RuntimeHolder, slot: int) -> None:
        """The timer of audit.RefusalCounter: counts reach the log without waiting for traffic,
        and all of them before the supervisor kills this worker."""
        while not self.flush.value:
            time.sleep(FLUSH_PERIOD)
            holder.current.audit.flush_due()
        holder.current.audit.flush_all()
        self.flushed[slot] = True

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.workers.pop(pid, None)
            if slot is None or self.stopping:
                continue
            log.error("worker %d exited (status %d); starting a new one", pid, status)
            time.sleep(RESPAWN_PAUSE)
            self._spawn(slot)

    def _reload(self) -> None:
        try:
            self.config = load_config(self.config_path)
        except ConfigError as exc:
            log.error("SIGHUP: configuration refused, keeping the running one:\n%s", exc)
            return
        prepare_supervisor(self.config)  # for the workers forked from now on
        self.generation.value += 1
        log.info(
            "SIGHUP: configuration valid, workers reload (generation %d)", self.generation.value
        )

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True

    def _shutdown(self) -> int:
        path = unix_socket_path(self.socket_spec)
        if path is not None:
            path.unlink(missing_ok=True)
        deadline = time.monotonic() + STOP_GRACE
        while sum(self.connections) > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if sum(self.connections) > 0:
            log.warning("stopping with %d connection(s) still open", sum(self.connections))
        self.flush.value = True
        deadline = time.monotonic() + FLUSH_GRACE
        while not all(self.flushed[s] for s in self.workers.values()):
            if time.monotonic() >= deadline:
                log.warning("stopping before every worker wrote its audit counts")
                break
            time.sleep(0.05)
        for pid in self.workers:
            _signal(pid, signal.SIGKILL)
        while self.workers:
            pid, _ = os.waitpid(-1, 0)
            self.workers.pop(pid, None)
        log.info("relayguard milter stopped")
        return 0


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def unix_socket_path(spec: str) -> Path | None:
    kind, _, rest = spec.partition(":")
    return Path(rest) if kind in ("unix", "local") else None


def open_socket(spec: str, settings: MilterSettings) -> None:
    """Bind the listening socket and give it the owner, group and mode Postfix needs."""
    path = unix_socket_path(spec)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    # Created with the configured mode from the start: never a window where others can connect.
    previous = os.umask(0o777 & ~settings.socket_mode)
    try:
        listen(spec, settings.timeout)
    finally:
        os.umask(previous)
    if path is None:
        return
    uid = pwd.getpwnam(settings.socket_owner).pw_uid if settings.socket_owner else -1
    gid = grp.getgrnam(settings.socket_group).gr_gid if settings.socket_group else -1
    os.chown(path, uid, gid)
    os.chmod(path, settings.socket_mode)


def drop_privileges(user: str) -> None:
    """After binding, run as the milter's own user (least privilege)."""
    if not user or os.getuid() != 0:
        return
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    log.info("running as user %s", user)


def serve(config_path: Path, socket_spec: str | None = None) -> int:
    config = load_config(config_path)
    return Supervisor(config_path, config, socket_spec or config.milter.socket).run()
