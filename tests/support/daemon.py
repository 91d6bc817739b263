"""What every test daemon shares: `with Daemon(...) as d:` starts it and always stops it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


def stop_process_group(process: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    """SIGTERM a daemon's process group (it was started in a session of its own), then SIGKILL
    what is left after `timeout`; nothing for a process that is gone already."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


class Daemon(ABC):
    @abstractmethod
    def start(self) -> Self:
        """Start the daemon and return once it serves."""

    @abstractmethod
    def stop(self) -> None:
        """Stop it by PID; safe to call when it is not running."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
