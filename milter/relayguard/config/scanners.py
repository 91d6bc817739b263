"""[clamav] and [yara]: the scanners of the content checks.

YARA rules are compiled by the I/O pass (config/resolve.py), so that a rule that does not compile
is a configuration error (file and line) and a reload keeps the running rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relayguard.config.declare import CONTENT_ACTIONS, FAILURE_ACTIONS, actions, number, text
from relayguard.core.verdict import Action
from relayguard.scanners.clamd import parse_spec
from relayguard.scanners.yara_rules import CompiledRules


def clamd_socket(spec: str) -> str:
    if not spec:
        raise ValueError("missing: clamd's 'unix:/path' or 'inet:PORT@HOST'")
    parse_spec(spec)
    return spec


def optional_path(text: str) -> Path | None:
    return Path(text) if text else None


def rules_dir(text: str) -> Path:
    """As written; config/reader.py makes a relative one relative to the configuration file."""
    if not text:
        raise ValueError("missing: the directory holding *.yar files")
    return Path(text)


@dataclass(frozen=True, slots=True)
class ClamavSettings:
    socket: str = text("", parse=clamd_socket)
    timeout: int = number(30, 1, 3600)
    failure_action: Action = actions("tempfail", FAILURE_ACTIONS)
    # Read only by `relayguard check`'s signature warning.
    database_directory: Path | None = text(None, parse=optional_path)


@dataclass(frozen=True, slots=True)
class YaraSettings:
    rules_dir: Path = text("", parse=rules_dir)
    default_action: Action = actions("reject", CONTENT_ACTIONS)
    timeout: int = number(10, 1, 600)
    failure_action: Action = actions("tempfail", FAILURE_ACTIONS)
    compiled_rules: CompiledRules | None = None  # filled by config/resolve.py

    @property
    def compiled(self) -> CompiledRules:
        """The rules; only a loaded configuration (load_config, resolve) has them."""
        if self.compiled_rules is None:
            raise RuntimeError(f"YARA rules of {self.rules_dir} not compiled: config not resolved")
        return self.compiled_rules
