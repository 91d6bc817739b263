"""[unsubscribe]: RFC 8058 one-click unsubscribe for bulk sources (transforms/unsubscribe.py).

Which sources are bulk, and that [state] exists, are cross-references: config/reader.py checks them.
"""

from __future__ import annotations

from dataclasses import dataclass

from relayguard.config.declare import number, text, texts
from relayguard.parsing.identities import parse_identity

SECRETS = "give at least one secret of 16 or more characters"


def https_url(url: str) -> str:
    if not url.startswith("https://") or any(c in url for c in " <>\"'"):
        # RFC 8058 §3.1: the one-click URI must be HTTPS.
        raise ValueError(f"must be an https:// URL, got {url!r}")
    return url


def secrets(given: tuple[str, ...]) -> tuple[str, ...]:
    if not given or any(len(secret) < 16 for secret in given):
        raise ValueError(SECRETS)
    return given


def mailto(address: str) -> str:
    if address:
        parse_identity(address)
    return address


@dataclass(frozen=True, slots=True)
class UnsubscribeSettings:
    sources: frozenset[str] = texts(parse=frozenset)
    base_url: str = text("", parse=https_url)
    mailto: str = text("", parse=mailto)
    secrets: tuple[str, ...] = texts(parse=secrets)  # the first signs new tokens; all verify
    address: str = text("127.0.0.1")
    port: int = number(8025, 1, 65535)
