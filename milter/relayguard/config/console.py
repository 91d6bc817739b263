"""[console]: the operator console (services/console, docs/console.md), a process of its own.

It listens on loopback unless it has a certificate: a page that pulls the kill switch must not
be reachable in clear text from the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relayguard.config.declare import Place, absolute_path, number, text
from relayguard.config.milter import is_loopback_host


def required_path(value: str) -> Path:
    path = absolute_path(value)
    if path is None:
        raise ValueError("missing: an absolute path")
    return path


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    address: str = text("127.0.0.1")
    port: int = number(8443, 1, 65535)
    tls_certificate: Path | None = text(None, parse=absolute_path)
    tls_key: Path | None = text(None, parse=absolute_path)
    accounts_file: Path = text("/etc/relayguard/console-users.json", parse=required_path)
    # The session signing key and the audit index live here (the console's user owns it).
    state_directory: Path = text("/var/lib/relayguard/console", parse=required_path)
    postfix_config: Path = text("/etc/postfix", parse=required_path)
    # The root helper's socket (relayguard quarantine-helper): unset, the console runs Postfix's
    # tools itself, which only works as root.
    quarantine_helper: Path | None = text(None, parse=absolute_path)
    session_minutes: int = number(480, 5, 7 * 24 * 60)
    login_attempts: int = number(5, 1, 100)
    login_window_seconds: int = number(300, 10, 86_400)
    lockout_minutes: int = number(15, 1, 24 * 60)
    index_interval: int = number(1, 1, 60)

    @property
    def index_path(self) -> Path:
        return self.state_directory / "audit-index.sqlite3"

    @property
    def secret_path(self) -> Path:
        return self.state_directory / "session.key"

    def verify(self, given: Mapping[str, Any], at: Place) -> None:
        if (self.tls_certificate is None) != (self.tls_key is None):
            at.key("tls_key").problem("tls_certificate and tls_key go together")
        if not is_loopback_host(self.address) and self.tls_certificate is None:
            at.key("address").problem(
                f"{self.address!r} is not loopback: set tls_certificate and tls_key"
            )
