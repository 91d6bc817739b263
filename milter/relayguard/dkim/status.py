"""The DKIM status file: what `relayguard dkim verify-dns --metrics-file` last found, per domain.

verify-dns (run by a timer) writes it; the metrics supervisor reads it at scrape time, so the
milter itself never asks DNS about its own keys. One file holds every domain: each run replaces
its domain's entry and keeps the others, and the file is replaced atomically (rename), so a scrape
never sees half a file.

    {"domains": {"example.com": {"checked": 1764500000.0, "keys": [
        {"selector": "rsa2026", "algorithm": "rsa", "status": "active",
         "created": 1733000000.0, "dns_match": 1}]}}}
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from relayguard.core.errors import RelayguardError


class DkimStatusError(RelayguardError):
    """The status file cannot be read or does not have the expected shape."""


@dataclass(frozen=True, slots=True)
class KeyStatus:
    selector: str
    algorithm: str
    status: str  # active | pending | retired
    created: float  # Unix time
    dns_match: int  # 1 when DNS serves the key on disk


@dataclass(frozen=True, slots=True)
class DomainStatus:
    domain: str
    checked: float  # Unix time of the verify-dns run
    keys: tuple[KeyStatus, ...]


def write_domain(path: Path, status: DomainStatus) -> None:
    """Replace this domain's entry, keeping the other domains' (an unreadable file starts over)."""
    try:
        domains = _raw_domains(path)
    except (FileNotFoundError, DkimStatusError):
        domains = {}
    domains[status.domain] = {
        "checked": status.checked,
        "keys": [asdict(key) for key in status.keys],
    }
    text = json.dumps({"domains": domains}, indent=2, sort_keys=True) + "\n"
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.chmod(temporary, 0o644)  # no secret in it; the metrics process must read it
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_status(path: Path) -> list[DomainStatus]:
    """Every domain of the file; raises FileNotFoundError or DkimStatusError."""
    domains = _raw_domains(path)
    try:
        return [
            DomainStatus(
                str(domain),
                float(entry["checked"]),
                tuple(_key_status(key) for key in entry["keys"]),
            )
            for domain, entry in domains.items()
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise DkimStatusError(f"{path}: malformed DKIM status file: {exc!r}") from None


def _key_status(raw: Any) -> KeyStatus:
    return KeyStatus(
        str(raw["selector"]),
        str(raw["algorithm"]),
        str(raw["status"]),
        float(raw["created"]),
        1 if raw["dns_match"] else 0,
    )


def _raw_domains(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise DkimStatusError(f"{path}: cannot read the DKIM status file: {exc}") from None
    domains = raw.get("domains") if isinstance(raw, dict) else None
    if not isinstance(domains, dict):
        raise DkimStatusError(f"{path}: malformed DKIM status file: no 'domains' table")
    return domains
