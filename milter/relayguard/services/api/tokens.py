"""Send-API tokens: `rgapi_<id>_<secret>`, shown once, stored as the SHA-256 of the secret.

The id is public and finds the record (no lookup by secret, so no timing leak in an index); the
secret's digest is compared in constant time. A token belongs to exactly one source. The secret is
32 random bytes: a plain SHA-256 is enough for it (no password stretching needed for a key no human
chose). A token stops working when it is revoked, when it expires, when its source is disabled
(kill switch) and when its source is no longer in the configuration.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from relayguard.config import Config
from relayguard.services.api.errors import ApiError
from relayguard.state import ApiToken, StateStore

PREFIX = "rgapi"
TOKEN = re.compile(rf"^{PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})$")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is sending: the source the token belongs to, and the token's public id (for audit)."""

    source: str
    token_id: str


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    store: StateStore, source: str, actor: str, now: float, expires: float | None
) -> tuple[str, ApiToken]:
    """A new token for SOURCE: its full text (to show once) and the stored record."""
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    record = ApiToken(token_id, source, digest(secret), actor, now, expires)
    store.add_api_token(record)
    return f"{PREFIX}_{token_id}_{secret}", record


def authenticate(store: StateStore, config: Config, header: str, now: float) -> Caller:
    """The caller an `Authorization: Bearer` header proves, or ApiError 401/403."""
    scheme, _, presented = header.partition(" ")
    found = TOKEN.fullmatch(presented.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        raise ApiError(401, "send 'Authorization: Bearer rgapi_…' with a token")
    token_id, secret = found.groups()
    record = store.api_token(token_id)
    if record is None or not hmac.compare_digest(record.digest, digest(secret)):
        raise ApiError(401, "the token is not valid")
    if record.revoked is not None:
        raise ApiError(401, f"token {token_id} was revoked")
    if record.expires is not None and now >= record.expires:
        raise ApiError(401, f"token {token_id} has expired")
    if config.source(record.source) is None:
        raise ApiError(403, f"source {record.source} is no longer registered")
    disabled = store.disabled(record.source)
    if disabled is not None:
        raise ApiError(403, f"source {record.source} is disabled (kill switch)")
    return Caller(record.source, token_id)
