"""[relay]: the relay's mode, its own domains, the audit log and the trace header."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from relayguard.config.declare import (
    ERROR_ACTIONS,
    absolute_path,
    actions,
    choice,
    flag,
    number,
    text,
    texts,
)
from relayguard.core.verdict import Action, Mode
from relayguard.parsing.identities import parse_identity

HEADER_NAME = re.compile(r"^[!-9;-~]{1,64}$")  # RFC 5322 §3.6.8 ftext
MODES = {mode.value: mode for mode in Mode}


def domain(text: str) -> str:
    """A domain name as identities compare it (ASCII-lowercased)."""
    return parse_identity("@" + text)[1]


def header_name(name: str) -> str:
    if name and not HEADER_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid header field name")
    return name


@dataclass(frozen=True, slots=True)
class RelaySettings:
    mode: Mode = choice("enforce", MODES)
    internal_domains: frozenset[str] = texts(each=domain, parse=frozenset)
    internal_subdomains: bool = flag(True)
    audit_log: Path | None = text(None, parse=absolute_path)
    trace_header: str = text("X-Relayguard", parse=header_name)
    error_action: Action = actions("tempfail", ERROR_ACTIONS)
    # Seconds over which an unregistered client's refusals make one counted audit line; 0 = off.
    unregistered_audit_interval: int = number(60, 0, 3600)

    def internal_domain_of(self, domain: str) -> str | None:
        """The listed internal domain that DOMAIN (ASCII-lowercased) is, or is below when
        internal_subdomains is on: erp.example.com is as much yours as example.com."""
        if domain in self.internal_domains:
            return domain
        if self.internal_subdomains:
            labels = domain.split(".")
            for start in range(1, len(labels)):
                parent = ".".join(labels[start:])
                if parent in self.internal_domains:
                    return parent
        return None
