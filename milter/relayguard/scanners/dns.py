"""DNS through dnspython, set up in one place for every caller: the URL block lists
(scanners/dnsbl.py), `relayguard dns-audit` and `relayguard dkim rotate | verify-dns`.

A name is asked as written: no search domains (resolv.conf's `search` would turn a block-list
query or a DKIM selector into some other name). Tests name a DNS server on a loopback port.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.resolver

DEFAULT_TIMEOUT = 2.0  # seconds one server gets to answer (dnspython's default)
DEFAULT_LIFETIME = 5.0  # seconds one question gets, across servers and retries


def make_resolver(
    nameservers: Sequence[str] = (),
    port: int = 53,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    lifetime: float = DEFAULT_LIFETIME,
) -> dns.resolver.Resolver:
    """The given servers on `port`, or the system's (/etc/resolv.conf) when none are given."""
    resolver = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = list(nameservers)
        resolver.port = port
    resolver.search = []
    resolver.use_search_by_default = False
    resolver.timeout = timeout
    resolver.lifetime = lifetime
    return resolver


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """Each TXT record as one string, its character-strings concatenated (RFC 7208 §3.3,
    RFC 6376 §3.6.2.2); [] when the name or the record does not exist. Other failures raise
    dnspython's exception: each caller decides what an unanswered question means."""
    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return [b"".join(record.strings).decode("ascii", "replace") for record in answer]
