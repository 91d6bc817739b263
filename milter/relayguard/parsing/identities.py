"""Address patterns a source may use ("scanner@example.com" or "@example.com") and their matching.

Comparison is ASCII-case-insensitive and otherwise literal: an IDN look-alike matches only when it
is listed exactly as written (see rfc5322.ascii_lower for why str.lower() is not used).
"""

from __future__ import annotations

from dataclasses import dataclass

from relayguard.parsing.rfc5322 import HeaderViolation, ascii_lower, parse_envelope_address


@dataclass(frozen=True, slots=True)
class IdentitySet:
    """Exact addresses and whole domains, normalised for O(1) look-ups."""

    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()

    @property
    def is_empty(self) -> bool:
        return not self.addresses and not self.domains

    def allows(self, address: str) -> bool:
        """True when the address (any case) is listed, or its domain is listed as '@domain'."""
        normalized = ascii_lower(address)
        if normalized in self.addresses:
            return True
        _, at, domain = normalized.rpartition("@")
        return bool(at) and domain in self.domains


def parse_identity(text: str) -> tuple[str, str]:
    """Validate one pattern; return ('address'|'domain', normalised value) or raise ValueError."""
    if text.startswith("@"):
        domain = text[1:]
        try:
            mailbox = parse_envelope_address(f"postmaster@{domain}")
        except HeaderViolation as exc:
            raise ValueError(f"{text!r} is not a valid '@domain' pattern: {exc.reason}") from None
        if mailbox is None or mailbox.domain != domain:
            raise ValueError(f"{text!r} is not a valid '@domain' pattern")
        return "domain", ascii_lower(domain)
    try:
        mailbox = parse_envelope_address(text)
    except HeaderViolation as exc:
        raise ValueError(f"{text!r} is not a valid address: {exc.reason}") from None
    if mailbox is None or mailbox.address != text:
        raise ValueError(f"{text!r} is not a plain address (write it as local@domain)")
    return "address", mailbox.normalized


def build_identity_set(patterns: tuple[str, ...]) -> IdentitySet:
    """Build from already validated patterns."""
    addresses: set[str] = set()
    domains: set[str] = set()
    for pattern in patterns:
        kind, value = parse_identity(pattern)
        (domains if kind == "domain" else addresses).add(value)
    return IdentitySet(frozenset(addresses), frozenset(domains))
