"""[[sources]]: the registered sending devices and applications, and how each is identified."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from relayguard.config.api import API_LISTENER
from relayguard.config.declare import Place, choice, number, section, text, texts
from relayguard.config.relay import MODES
from relayguard.core.verdict import Mode
from relayguard.parsing.identities import IdentitySet, build_identity_set, parse_identity
from relayguard.parsing.rfc5322 import ascii_lower

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Rate limits per source (state.md): what is counted, over which sliding windows (seconds).
RATE_KINDS = ("messages", "recipients", "bytes")
RATE_WINDOWS: Mapping[str, int] = MappingProxyType({"minute": 60, "hour": 3600, "day": 86400})
MAX_LIMIT = 2**53
# The {daemon_name} of each SMTP listener in postfix/master.cf.j2 (milter_macro_daemon_name).
LISTENERS = ("smtp", "submission", "smtps")


def source_name(name: str) -> str:
    if not name:
        raise ValueError("missing: every source needs a name")
    if not SOURCE_NAME.fullmatch(name):
        raise ValueError(f"{name!r} must be 1-64 of A-Z a-z 0-9 . _ - (letter/digit first)")
    return name


def cert_name(whose: str, example: str) -> Callable[[str], str]:
    """Postfix's {cert_subject} and {cert_issuer} macros are Common Names of a certificate it
    verified, not whole DNs: accept 'CN=name' or 'name' and keep the name."""

    def parse(text: str) -> str:
        name = text[3:] if text[:3].upper() == "CN=" else text
        if not name or any(c in name for c in ",+=") or name != name.strip():
            raise ValueError(
                f"{text!r}: give the {whose} Common Name (e.g. 'CN={example}');"
                " Postfix passes only the CN of a verified client certificate"
            )
        return name

    return parse


def network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid network: {exc}") from None


def listener(name: str) -> str:
    doors = (*LISTENERS, API_LISTENER)  # the send API's listener is a door too (docs/api.md)
    if name not in doors:
        raise ValueError(f"{name!r} is not a listener: use {', '.join(map(repr, doors))}")
    return name


def identity_pattern(pattern: str) -> str:
    """An address or '@domain' a source may use (checked here, matched by IdentitySet)."""
    parse_identity(pattern)
    return pattern


def identities(patterns: tuple[str, ...]) -> IdentitySet:
    return build_identity_set(patterns)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per-source limits per sliding window; unset keys are no limit."""

    messages_per_minute: int | None = number(None, 1, MAX_LIMIT)
    messages_per_hour: int | None = number(None, 1, MAX_LIMIT)
    messages_per_day: int | None = number(None, 1, MAX_LIMIT)
    recipients_per_minute: int | None = number(None, 1, MAX_LIMIT)
    recipients_per_hour: int | None = number(None, 1, MAX_LIMIT)
    recipients_per_day: int | None = number(None, 1, MAX_LIMIT)
    bytes_per_minute: int | None = number(None, 1, MAX_LIMIT)
    bytes_per_hour: int | None = number(None, 1, MAX_LIMIT)
    bytes_per_day: int | None = number(None, 1, MAX_LIMIT)

    @property
    def limits(self) -> tuple[tuple[str, str, int, int], ...]:
        """(kind, window name, window seconds, limit) of every limit set."""
        found = []
        for kind in RATE_KINDS:
            for unit, window in RATE_WINDOWS.items():
                limit = getattr(self, f"{kind}_per_{unit}")
                if limit is not None:
                    found.append((kind, unit, window, limit))
        return tuple(found)

    def of(self, kind: str) -> tuple[tuple[str, int, int], ...]:
        """(window name, window seconds, limit) of one kind: messages, recipients or bytes."""
        return tuple((unit, window, limit) for k, unit, window, limit in self.limits if k == kind)


@dataclass(frozen=True, slots=True)
class Source:
    """A registered sending device or application and what it may do."""

    name: str = text("", parse=source_name)
    description: str = text("")
    sasl_users: tuple[str, ...] = texts()
    client_cert_subjects: tuple[str, ...] = texts(
        each=cert_name("certificate's", "erp.example.com")
    )
    # Empty: any issuer Postfix's client CA file trusts.
    client_cert_issuers: tuple[str, ...] = texts(each=cert_name("issuer's", "Example Device CA"))
    networks: tuple[IPNetwork, ...] = texts(each=network)
    # Unset: the default of checks/source.py (by address: smtp only; otherwise any).
    listeners: tuple[str, ...] = texts(each=listener, shown="unset")
    senders: IdentitySet = texts(each=identity_pattern, parse=identities, shown="required")
    recipients: IdentitySet = texts(each=identity_pattern, parse=identities)
    max_recipients: int | None = number(None, 1, 100_000)
    mode: Mode | None = choice(None, MODES)
    rate_limits: RateLimits = section(RateLimits)
    dlp_profile: str = text("")
    spam_policy: str = text("")  # a [[spam_policies]] name; "": [spam]'s own thresholds
    outbound_path: str = text("")  # an [[outbound_paths]] name; "": the default path

    def verify(self, given: Mapping[str, Any], at: Place) -> None:
        if given.get("listeners") == []:
            at.key("listeners").problem("empty: the source could send through no listener")
        if self.senders.is_empty and "senders" not in given:
            at.key("senders").problem(
                "missing: list the addresses or '@domains' this source may use"
            )
        if self.client_cert_issuers and not self.client_cert_subjects:
            at.key("client_cert_issuers").problem(
                "pins the issuer of client_cert_subjects, but the source has none"
            )
        if not (self.sasl_users or self.client_cert_subjects or given.get("networks")):
            at.key("name").problem(
                f"source {self.name!r} has no sasl_users, client_cert_subjects or networks:"
                " nothing can identify it"
            )


@dataclass(frozen=True, slots=True)
class SourceIndex:
    """Who each identifier belongs to: exactly one source, or the file is refused."""

    by_sasl_user: Mapping[str, Source]
    by_cert_subject: Mapping[str, Source]
    by_network: tuple[tuple[IPNetwork, Source], ...]  # longest prefix first


def index_sources(sources: tuple[Source, ...], at: Place) -> SourceIndex:
    """Index every identifier; a name or identifier claimed twice is a problem at AT[i]."""
    by_name: dict[str, int] = {}
    by_sasl: dict[str, Source] = {}
    by_cert: dict[str, Source] = {}
    by_network: list[tuple[IPNetwork, Source]] = []
    for index, source in enumerate(sources):
        where = at.item(index)
        if source.name in by_name:
            first = by_name[source.name]
            where.key("name").problem(f"duplicate source name (also sources[{first}])")
        by_name.setdefault(source.name, index)
        for user in source.sasl_users:
            other = by_sasl.get(ascii_lower(user))
            if other is not None:
                where.key("sasl_users").problem(f"{user!r} is already claimed by {other.name!r}")
            by_sasl.setdefault(ascii_lower(user), source)
        for subject in source.client_cert_subjects:
            other = by_cert.get(subject)
            if other is not None:
                where.key("client_cert_subjects").problem(
                    f"{subject!r} is already claimed by {other.name!r}"
                )
            by_cert.setdefault(subject, source)
        for net in source.networks:
            for claimed, other in by_network:
                if net.version == claimed.version and net.overlaps(claimed):
                    where.key("networks").problem(
                        f"{net} overlaps {claimed} of source {other.name!r}:"
                        " a client address must identify one source"
                    )
            by_network.append((net, source))
    return SourceIndex(
        MappingProxyType(by_sasl),
        MappingProxyType(by_cert),
        tuple(sorted(by_network, key=lambda item: -item[0].prefixlen)),
    )
