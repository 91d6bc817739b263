"""[metrics]: the Prometheus endpoint, on loopback only (not named metrics.py: that is another)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relayguard.config.declare import absolute_path, number, text
from relayguard.config.milter import is_loopback_host


def loopback_address(address: str) -> str:
    if not is_loopback_host(address):
        raise ValueError(f"{address!r}: metrics are served on a loopback address only")
    return address


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    port: int | None = number(None, 1, 65535)  # None: no metrics endpoint
    address: str = text("127.0.0.1", parse=loopback_address)
    directory: Path | None = text(None, parse=absolute_path)
    dkim_status_file: Path | None = text(None, parse=absolute_path)  # verify-dns --metrics-file
