"""RFC 8058 one-click unsubscribe for bulk sources: the signed tokens and the header transform.

A token names (source, list, recipient) and carries an HMAC-SHA256 over them with the secret of
`unsubscribe.secrets[0]`; every secret of the list verifies, so a secret is rotated by putting the
new one first and removing the old one after the grace period (the life of the mail in mailboxes).
The list is the message's List-Id (RFC 2919), when the sender sets one; the suppression's scope is
then "source/list", else "source". The endpoint that reads the tokens is services/unsubscribe.py.

A token names one recipient, so a message of a bulk source has exactly one: its second RCPT TO
gets `452 4.5.3` (checks/suppression.py), which makes a well-behaved client send it again in a
separate transaction. (In monitor mode the message passes with several recipients; it then gets
no List-Unsubscribe header, and the audit line says why.) A token is a link the relay vouches
for: it is withheld from mail that did not pass policy (transforms/__init__.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, replace

from relayguard.checks import Subject
from relayguard.config import Config, UnsubscribeSettings
from relayguard.core.errors import RelayguardError
from relayguard.core.verdict import Action, Decision, Verdict
from relayguard.parsing.rfc5322 import ascii_lower
from relayguard.transforms import Transform

NAME = "unsubscribe"
ONE_CLICK = "List-Unsubscribe=One-Click"  # RFC 8058 §3.1
_CONTEXT = b"relayguard-unsubscribe-v1\x00"
_SEPARATOR = "\x1f"
MAC_BYTES = 16


class BadToken(RelayguardError, ValueError):
    """Malformed, or not signed by any configured secret."""


@dataclass(frozen=True, slots=True)
class Target:
    """Who unsubscribes from what."""

    source: str
    list_id: str
    recipient: str

    @property
    def scope(self) -> str:
        return f"{self.source}/{self.list_id}" if self.list_id else self.source


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), _CONTEXT + payload, hashlib.sha256).digest()[:MAC_BYTES]


def make_token(target: Target, secret: str) -> str:
    fields = (target.source, target.list_id, ascii_lower(target.recipient))
    payload = _SEPARATOR.join(fields).encode("utf-8")
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def read_token(token: str, secrets: tuple[str, ...]) -> Target:
    try:
        payload_text, mac_text = token.split(".")
        payload, mac = _unb64(payload_text), _unb64(mac_text)
        fields = payload.decode("utf-8").split(_SEPARATOR)
    except (ValueError, UnicodeDecodeError):
        raise BadToken("malformed token") from None
    if len(fields) != 3 or not fields[0] or "@" not in fields[2]:
        raise BadToken("malformed token")
    if not any(hmac.compare_digest(mac, _mac(secret, payload)) for secret in secrets):
        raise BadToken("token not signed by this relay")
    return Target(*fields)


def list_id(subject: Subject) -> str:
    """RFC 2919 §2: the list identifier is the part in angle brackets of List-Id."""
    if subject.message is None:
        return ""
    values = subject.message.header_values("List-Id")
    if not values:
        return ""
    text = values[0].decode("ascii", "replace")
    start, end = text.rfind("<"), text.rfind(">")
    identifier = text[start + 1 : end] if 0 <= start < end else text
    return "".join(c for c in identifier.strip() if c.isalnum() or c in ".-_")[:255]


def unsubscribe_url(settings: UnsubscribeSettings, token: str) -> str:
    return f"{settings.base_url.rstrip('/')}/u/{token}"


def add_headers(subject: Subject, decision: Decision) -> Decision:
    settings = subject.config.unsubscribe
    source = subject.source
    if settings is None or source is None or source.name not in settings.sources:
        return decision
    recipients = subject.envelope.recipients
    if len(recipients) != 1:
        note = f"no List-Unsubscribe: {len(recipients)} recipients, the token names one"
        return replace(decision, verdicts=(*decision.verdicts, Verdict(NAME, Action.ACCEPT, note)))
    target = Target(source.name, list_id(subject), recipients[0])
    token = make_token(target, settings.secrets[0])
    value = f"<{unsubscribe_url(settings, token)}>"
    if settings.mailto:
        value += f", <mailto:{settings.mailto}?subject=unsubscribe%20{token}>"
    headers = (
        ("List-Unsubscribe", value),
        ("List-Unsubscribe-Post", ONE_CLICK),  # RFC 8058 §3.1
    )
    verdict = Verdict(NAME, Action.ACCEPT, f"one-click unsubscribe for scope {target.scope}")
    return replace(
        decision,
        headers=(*decision.headers, *headers),
        verdicts=(*decision.verdicts, verdict),
    )


def transforms(config: Config) -> tuple[Transform, ...]:
    return (Transform(NAME, add_headers, "no List-Unsubscribe"),) if config.unsubscribe else ()
