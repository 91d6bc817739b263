"""What every test daemon shares: `with Daemon(...) as d:` starts it and always stops it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


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
