"""Start and stop the real `relayguard milter` process for the protocol and end-to-end tiers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

from tests.support.daemon import Daemon

RELAYGUARD = [sys.executable, "-m", "relayguard.cli"]


class MilterProcess(Daemon):
    """`relayguard milter` on a unix socket; output goes to a log file, never to pytest's stdout."""

    def __init__(self, config: Path, socket_path: Path, log: Path) -> None:
        self.config = config
        self.socket_path = socket_path
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self._starts = 0

    def start(self, timeout: float = 15.0) -> Self:
        self.socket_path.unlink(missing_ok=True)
        self._starts = (
            self.log.read_text(errors="replace").count("relayguard milter listening on")
            if self.log.exists()
            else 0
        )
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*RELAYGUARD, "milter", "--config", str(self.config),
                 "--socket", f"unix:{self.socket_path}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        # The supervisor logs "listening" once the socket is bound AND every worker is forked.
        deadline = time.monotonic() + timeout
        while not (self.socket_path.exists() and self._listening()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"milter did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        text = self.log.read_text(errors="replace")
        return text.count("relayguard milter listening on") > self._starts

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self) -> None:
        """SIGTERM the supervisor; it stops its workers (SIGKILL after its own grace period)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            for pid in [self.pid, *self.workers()]:
                os.kill(pid, signal.SIGKILL)
            self.process.wait(timeout=5)
