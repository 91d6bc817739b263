"""Source identification: which registered device or application is sending.

Order: SASL login, then a client certificate Postfix verified, then the client address. A client
that authenticated as an unknown user is NOT matched by address: a login that is not registered is a
misconfiguration or an attack, never a reason to fall back to a weaker identity.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from relayguard.config import Config, Source
from relayguard.message import Client
from relayguard.rfc5322 import ascii_lower
from relayguard.verdict import Action, Verdict

NAME = "source"


@dataclass(frozen=True, slots=True)
class Identification:
    source: Source | None
    reason: str


def identify(config: Config, client: Client) -> Identification:
    if client.sasl_user:
        source = config.by_sasl_user.get(ascii_lower(client.sasl_user))
        if source is None:
            return Identification(
                None, f"SASL user {client.sasl_user!r} is not registered to any source"
            )
        return Identification(source, f"SASL user {client.sasl_user!r}")
    if client.cert_subject:
        source = config.by_cert_subject.get(client.cert_subject)
        if source is not None:
            return Identification(source, f"client certificate {client.cert_subject!r}")
    source = _by_address(config, client.address)
    if source is not None:
        return Identification(source, f"client address {client.address}")
    what = f"client {client.address or 'unknown'}"
    if client.cert_subject:
        what += f" with certificate {client.cert_subject!r}"
    return Identification(None, f"{what} is not a registered source (not authenticated)")


def _by_address(config: Config, address: str) -> Source | None:
    try:
        ip = ipaddress.ip_address(address.removeprefix("IPv6:"))
    except ValueError:
        return None
    # IPv4 clients of a dual-stack listener arrive as ::ffff:a.b.c.d.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # by_network is sorted most specific first.
    return next((source for network, source in config.by_network if ip in network), None)


def verdict(identification: Identification) -> Verdict:
    if identification.source is None:
        return Verdict(NAME, Action.REJECT, identification.reason)
    return Verdict(NAME, Action.ACCEPT, f"{identification.source.name} by {identification.reason}")
