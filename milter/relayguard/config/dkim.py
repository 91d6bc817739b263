"""[dkim]: the signed domains and where their keys are.

The keys themselves are read by the I/O pass (config/resolve.py) into `keys`, so that a missing
or exposed key is a located error at start, on reload and in `relayguard check`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from relayguard.config.declare import absolute, choice, number, text, texts
from relayguard.config.relay import domain

if TYPE_CHECKING:  # the keys are loaded by config/resolve.py; cryptography is not needed to parse
    from relayguard.dkim.keys import SigningKey


@dataclass(frozen=True, slots=True)
class DkimSettings:
    key_directory: Path = text("/etc/relayguard/dkim", parse=absolute)
    domains: tuple[str, ...] = texts(each=domain)
    # "unsigned": pass with a warning in the audit line.
    missing_key: str = choice("refuse", {"refuse": "refuse", "unsigned": "unsigned"})
    grace_days: int = number(7, 0, 365)
    keys: Mapping[str, tuple[SigningKey, ...]] = field(default_factory=lambda: MappingProxyType({}))
