"""Source identification: which registered device or application is sending, and through which door.

Order: SASL login, then a client certificate Postfix verified, then the client address. A client
that authenticated as an unknown user, or presented a verified certificate that names no source
(or comes from an issuer its source does not accept), is NOT matched by address: an identity that
is not registered is a misconfiguration or an attack, never a reason to fall back to a weaker one.
On the submission listeners Postfix lets any certificate its client CA file trusts relay
(permit_tls_all_clientcerts), so the milter's refusal is what keeps such a certificate out.

A source is also bound to Postfix listeners ({daemon_name}): by default, a source identified by its
address only on the port-25 listener, the one legacy devices use; by login or certificate, any.

The send API's listener (`api`, loopback only) is a door of its own: there the source is the one
the API names in MAIL FROM's AUTH= parameter ({auth_author}), believed only when the client logged
in as the API ([api] sasl_user). Anywhere else {auth_author} is ignored, and on `api` every other
login is refused: nobody but the API can name a source (docs/api.md).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from relayguard.config import Config, Source
from relayguard.config.api import API_LISTENER
from relayguard.core.message import Client
from relayguard.core.verdict import Action, Verdict
from relayguard.parsing.rfc5322 import ascii_lower

NAME = "source"
# The port-25 listener of postfix/master.cf.j2: the only one a device identified by address needs.
NETWORK_LISTENERS = ("smtp",)


@dataclass(frozen=True, slots=True)
class Identification:
    source: Source | None
    reason: str
    # The source is known but may not send this way (wrong listener): refused, still audited as it.
    refused: bool = False


def identify(config: Config, client: Client) -> Identification:
    if client.daemon_name == API_LISTENER:
        return _by_api(config, client)
    if client.sasl_user:
        source = config.by_sasl_user.get(ascii_lower(client.sasl_user))
        if source is None:
            return Identification(
                None, f"SASL user {client.sasl_user!r} is not registered to any source"
            )
        return _on_listener(source, f"SASL user {client.sasl_user!r}", client, source.listeners)
    if client.cert_subject:
        return _by_certificate(config, client)
    source = _by_address(config, client.address)
    if source is not None:
        allowed = source.listeners or NETWORK_LISTENERS
        return _on_listener(source, f"client address {client.address}", client, allowed)
    if not client.address:
        return Identification(
            None, "Postfix passed no {client_addr} (milter_mail_macros): source unknown, refused"
        )
    return Identification(
        None, f"client {client.address} is not a registered source (not authenticated)"
    )


def _by_api(config: Config, client: Client) -> Identification:
    api_login = config.api.sasl_user if config.api is not None else ""
    if not api_login or ascii_lower(client.sasl_user) != ascii_lower(api_login):
        who = f"SASL user {client.sasl_user!r}" if client.sasl_user else "an unauthenticated client"
        return Identification(
            None, f"listener {API_LISTENER} is for the send API's login only, not {who}"
        )
    source = config.source(client.auth_author) if client.auth_author else None
    if source is None:
        return Identification(
            None, f"the send API named {client.auth_author!r}, which is not a registered source"
        )
    return _on_listener(source, "send API token", client, source.listeners)


def _by_certificate(config: Config, client: Client) -> Identification:
    """Postfix sets {cert_subject} and {cert_issuer} (both CNs) only for a certificate that its
    client CA file verified; the issuer pin matters when that file trusts more than one CA."""
    subject = client.cert_subject
    source = config.by_cert_subject.get(subject)
    if source is None:
        return Identification(
            None,
            f"client certificate {subject!r} is not registered to any source"
            " (no fall-back to the client address)",
        )
    if source.client_cert_issuers and client.cert_issuer not in source.client_cert_issuers:
        accepted = ", ".join(map(repr, source.client_cert_issuers))
        return Identification(
            None,
            f"client certificate {subject!r} issued by {client.cert_issuer!r}:"
            f" source {source.name} accepts only certificates issued by {accepted}",
        )
    return _on_listener(source, f"client certificate {subject!r}", client, source.listeners)


def _on_listener(
    source: Source, how: str, client: Client, allowed: tuple[str, ...]
) -> Identification:
    """`allowed` empty: any listener. Otherwise the listener Postfix named must be one of them;
    a missing {daemon_name} (Postfix not passing the macro) is refused, never guessed."""
    if not allowed or client.daemon_name in allowed:
        return Identification(source, how)
    doors = f"listener{'s' if len(allowed) > 1 else ''} {', '.join(allowed)}"
    if client.daemon_name:
        where = f"not {client.daemon_name!r}"
    else:
        where = "but Postfix passed no {daemon_name} (milter_connect_macros)"
    reason = f"source {source.name} ({how}) may send only through {doors}, {where}"
    return Identification(source, reason, refused=True)


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
    if identification.source is None or identification.refused:
        return Verdict(NAME, Action.REJECT, identification.reason)
    return Verdict(NAME, Action.ACCEPT, f"{identification.source.name} by {identification.reason}")
