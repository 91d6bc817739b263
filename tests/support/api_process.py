"""Start and stop the real `relayguard api serve` process (uvicorn) for the end-to-end tier."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

from tests.support.daemon import Daemon

RELAYGUARD = [sys.executable, "-m", "relayguard.cli"]


class ApiProcess(Daemon):
    """`relayguard api serve`; output goes to a log file, never to pytest's stdout."""

    def __init__(self, config: Path, port: int, log: Path, host: str = "127.0.0.1") -> None:
        self.config = config
        self.host = host
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> Self:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*RELAYGUARD, "api", "serve", "--config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"relayguard api did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
