"""Serving an ASGI application (console, send API) with uvicorn: loopback, or TLS elsewhere.

A service that controls the relay must not be reachable in clear text from the network: it
listens on a loopback address by default, and any other address needs a certificate and key.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from relayguard.config import Config, is_loopback_host, load_config
from relayguard.core.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Listener:
    """Where a service listens, and its TLS files (required unless the address is loopback)."""

    address: str = "127.0.0.1"
    port: int = 8443
    tls_certificate: Path | None = None
    tls_key: Path | None = None

    @property
    def tls(self) -> bool:
        return self.tls_certificate is not None and self.tls_key is not None

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.address)


def listener_problem(listener: Listener) -> str | None:
    """Why this listener must not start, or None."""
    if (listener.tls_certificate is None) != (listener.tls_key is None):
        return "tls_certificate and tls_key go together"
    if not listener.loopback and not listener.tls:
        return f"{listener.address!r} is not loopback: set tls_certificate and tls_key"
    return None


def serve_asgi(app: Any, listener: Listener) -> None:
    """Run `app` in this process (one worker) until SIGTERM/SIGINT."""
    problem = listener_problem(listener)
    if problem:
        raise ValueError(problem)
    uvicorn.run(
        app,
        host=listener.address,
        port=listener.port,
        ssl_certfile=str(listener.tls_certificate) if listener.tls_certificate else None,
        ssl_keyfile=str(listener.tls_key) if listener.tls_key else None,
        proxy_headers=False,  # the client address is the peer's: the login limit counts it
        server_header=False,
        date_header=False,
        log_level="info",
        access_log=False,
    )


def reload_on_sighup(path: str | Path, apply: Callable[[Config], None]) -> None:
    """On SIGHUP read PATH again and hand the new snapshot to `apply` (which may refuse it with
    ConfigError). A bad file keeps the running configuration; the log names file, key and problem.
    The handler runs in the main thread, between two steps of the event loop. Read as the HTTP
    services read it at start: without the DKIM keys (they sign nothing, and cannot read them)."""

    def reload(signum: int, frame: FrameType | None) -> None:
        try:
            apply(load_config(path, signing_keys=False))
        except ConfigError as exc:
            log.error("SIGHUP: %s refused, keeping the running configuration:\n%s", path, exc)
            return
        log.info("SIGHUP: %s reloaded", path)

    signal.signal(signal.SIGHUP, reload)
