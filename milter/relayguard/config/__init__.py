"""The TOML configuration, validated once into frozen dataclasses.

Every problem names the file, the key path and what is wrong; all problems are reported at once so
a sysadmin fixes a file in one pass. Unknown keys are errors: a typo must never silently disable a
policy.

How a key is declared (once). Each section is a frozen dataclass in its own module (relay.py,
milter.py, sources.py, state.py, prometheus.py for [metrics], dkim.py, unsubscribe.py, content.py,
scanners.py, dlp.py, urls.py, ...). Each field that is a TOML key is made by a helper of
config/declare.py (`text`, `number`, `flag`, `texts`, `choice`, `actions`, `counts`, `section`,
`sections`): its metadata carries the TOML type, the default as written in TOML, the bounds or
allowed choices and a parse function. One generic reader (`declare.read_section`) reads any
section from those fields alone: unknown keys, wrong types, bounds, choices and refused values
are located problems. The same declaration gives the Python default, the derived `SCHEMA` and
the default docs/configuration.md must show (tests/unit/test_config_docs.py). Why our own ~400
lines over dataclasses and not pydantic or msgspec: no new dependency, every error message kept
word for word (tests assert them), and a few milliseconds of import time.

Two passes. config/reader.py reads the file (no other I/O), every section, then the
cross-references (sources <-> DLP profiles, unsubscribe sources, what needs [state], the index of
SASL users, certificates and networks). config/resolve.py does the I/O: user and group lookups,
DKIM keys, YARA compilation. `parse_config` is the first pass, `resolve` the second,
`load_config` both with one report.
"""

from __future__ import annotations

from pathlib import Path

from relayguard.config.declare import Problems, schema
from relayguard.config.dkim import DkimSettings
from relayguard.config.milter import MilterSettings, is_loopback_host, milter_socket_problem
from relayguard.config.prometheus import MetricsSettings
from relayguard.config.reader import Document, parse_config, read_config
from relayguard.config.relay import RelaySettings
from relayguard.config.resolve import resolve, resolve_into
from relayguard.config.snapshot import Config
from relayguard.config.sources import LISTENERS, SOURCE_NAME, RateLimits, Source
from relayguard.config.state import StateSettings
from relayguard.config.unsubscribe import UnsubscribeSettings

# Every key the declarations know, per table ('' is the root); docs/configuration.md documents each.
SCHEMA = schema(Document)

__all__ = [
    "LISTENERS",
    "SCHEMA",
    "SOURCE_NAME",
    "Config",
    "DkimSettings",
    "MetricsSettings",
    "MilterSettings",
    "RateLimits",
    "RelaySettings",
    "Source",
    "StateSettings",
    "UnsubscribeSettings",
    "is_loopback_host",
    "load_config",
    "milter_socket_problem",
    "parse_config",
    "resolve",
]


def load_config(path: str | Path, *, signing_keys: bool = True) -> Config:
    """Read, validate and resolve PATH, or raise ConfigError listing every problem found.

    signing_keys=False is for the services that never sign (send API, console, unsubscribe
    endpoint): they run as their own users, who cannot read the milter's private keys."""
    path = Path(path)
    problems = Problems(path)
    config = read_config(path, problems)
    resolved = (
        resolve_into(config, problems, signing_keys=signing_keys) if config is not None else None
    )
    problems.raise_if_any()
    assert resolved is not None  # no problem: the file was read
    return resolved
