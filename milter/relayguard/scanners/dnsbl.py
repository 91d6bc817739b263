"""DNS block lists of domains and addresses (SURBL, URIBL, Spamhaus DBL style).

A listed name `evil.example` answers an A record in 127.0.0.0/8 for `evil.example.ZONE`; NXDOMAIN
means not listed. The host and its parent domains (down to two labels) are queried, since lists
hold registered domains and we carry no public-suffix list; IP hosts are queried reversed
(`4.3.2.1.ZONE`). Answers in 127.255.255.0/24 are the lists' own error codes (e.g. a query through
a refused resolver), not listings.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from relayguard.core.errors import RelayguardError

ERROR_CODES = "127.255.255."

Lookup = Callable[[str], list[str]]  # name -> A records; [] when the name does not exist


class LookupFailed(RelayguardError):
    """The DNS query got no answer (timeout, SERVFAIL, refused): the name is unchecked."""


@dataclass(frozen=True, slots=True)
class ZoneAnswer:
    """What one list said about one host: the name it lists, a failure, or neither (clean)."""

    listed: str | None = None
    failure: str | None = None


def a_lookup(nameservers: Sequence[str], port: int, timeout: float) -> Lookup:
    """A-record lookups through these servers (the system's when none), `timeout` per question."""
    # dnspython takes ~50 ms to import: loaded when [urls] is configured, not with this module,
    # which the pipeline (and so every `relayguard test-message`) imports.
    import dns.exception  # noqa: PLC0415
    import dns.resolver  # noqa: PLC0415

    from relayguard.scanners.dns import make_resolver  # noqa: PLC0415

    resolver = make_resolver(nameservers, port, timeout=timeout, lifetime=timeout)

    def lookup(name: str) -> list[str]:
        try:
            answer = resolver.resolve(name, "A")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise LookupFailed(type(exc).__name__) from None
        return [record.to_text() for record in answer]

    return lookup


def query_names(host: str) -> list[str]:
    """The names to look up for one host: IPs reversed; else the host and its parents."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")[-5:]
        return [".".join(labels[i:]) for i in range(len(labels) - 1)]
    if address.version == 4:
        return [".".join(reversed(host.split(".")))]
    return [".".join(reversed(address.exploded.replace(":", "")))]


def listed(answers: list[str], codes: Collection[str]) -> bool:
    """`codes` are the answers that count as listed; none given, any 127.0.0.0/8 but errors."""
    for answer in answers:
        if codes:
            if answer in codes:
                return True
        elif answer.startswith("127.") and not answer.startswith(ERROR_CODES):
            return True
    return False


def ask(lookup: Lookup, host: str, zone: str, codes: Collection[str]) -> ZoneAnswer:
    """The host, then its parents, in one list; stops at the first listing or failure."""
    for name in query_names(host):
        try:
            answers = lookup(f"{name}.{zone}")
        except LookupFailed as exc:
            return ZoneAnswer(failure=f"{zone}: {exc}")  # do not hammer it with the parents
        if any(answer.startswith(ERROR_CODES) for answer in answers):
            return ZoneAnswer(failure=f"{zone}: error answer {answers[0]}")
        if listed(answers, codes):
            return ZoneAnswer(listed=name)
    return ZoneAnswer()
