"""[api]: the HTTP send API (services/api, docs/api.md).

The milter reads `sasl_user` too: it believes the source named in {auth_author} only from that
login on the `api` listener (checks/source.py). That no source lists the API's login among its
sasl_users is a cross-reference: `api_reference_problems()` gives it to the reader.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relayguard.config.declare import Place, absolute_path, number, text, texts
from relayguard.config.milter import is_loopback_host
from relayguard.parsing.rfc5322 import ascii_lower

if TYPE_CHECKING:
    from relayguard.config.sources import Source

# The {daemon_name} of the send-API listener in postfix/master.cf.j2.
API_LISTENER = "api"
HEADER_NAME = re.compile(r"^[!-9;-~]{1,64}$")  # RFC 5322 §3.6.8 ftext
# Custom headers a caller may set unless [api] headers says otherwise.
DEFAULT_HEADERS = ("X-Priority", "Importance", "X-Mailer", "List-Id", "Auto-Submitted")
# Never custom: identity, trace, routing and MIME structure belong to the API or the relay.
FORBIDDEN_HEADERS = frozenset(
    {"from", "sender", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id"}
    | {"received", "return-path", "dkim-signature", "arc-seal", "authentication-results"}
    | {"mime-version", "content-type", "content-transfer-encoding", "x-relayguard"}
    | {"x-relayguard-route", "list-unsubscribe", "list-unsubscribe-post"}
)


def loopback_relay(address: str) -> str:
    if not is_loopback_host(address):
        raise ValueError(f"{address!r}: Postfix's api listener must be on loopback")
    return address


def header_name(name: str) -> str:
    if not HEADER_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a header field name")
    if name.lower() in FORBIDDEN_HEADERS:
        raise ValueError(f"{name!r} is set by the API or the relay only")
    return name.lower()


def login(user: str) -> str:
    if not user:
        raise ValueError("missing: the API's SASL login on Postfix's api listener")
    return user


@dataclass(frozen=True, slots=True)
class ApiSettings:
    address: str = text("127.0.0.1")
    port: int = number(8580, 1, 65535)
    tls_certificate: Path | None = text(None, parse=absolute_path)
    tls_key: Path | None = text(None, parse=absolute_path)
    relay_host: str = text("127.0.0.1", parse=loopback_relay)
    relay_port: int = number(10587, 1, 65535)
    sasl_user: str = text("relayguard-api", parse=login)
    sasl_password_file: Path | None = text("/etc/relayguard/api-sasl-password", parse=absolute_path)
    max_message_bytes: int = number(10_240_000, 1024, 2**31)
    headers: frozenset[str] = texts(each=header_name, parse=frozenset, default=DEFAULT_HEADERS)
    idempotency_ttl: int = number(86_400, 60, 30 * 86_400)
    connections: int = number(8, 1, 256)
    timeout: int = number(30, 1, 600)

    def verify(self, given: Mapping[str, Any], at: Place) -> None:
        if (self.tls_certificate is None) != (self.tls_key is None):
            at.key("tls_key").problem("tls_certificate and tls_key go together")
        if not is_loopback_host(self.address) and self.tls_certificate is None:
            at.key("address").problem(
                f"{self.address!r} is not loopback: set tls_certificate and tls_key"
            )


def api_reference_problems(api: ApiSettings, sources: Sequence[Source]) -> Iterator[str]:
    """The API's login must belong to no source: on the submission ports it would be that
    source's identity, and the milter could not tell the API from the device."""
    for source in sources:
        if ascii_lower(api.sasl_user) in map(ascii_lower, source.sasl_users):
            yield (
                f"{api.sasl_user!r} is also a sasl_users entry of source {source.name!r}:"
                " the API's login must belong to no source"
            )
