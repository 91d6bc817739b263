"""RFC 8058 one-click unsubscribe for bulk sources: tokens, the header transform, the endpoint.

A token names (source, list, recipient) and carries an HMAC-SHA256 over them with the secret of
`unsubscribe.secrets[0]`; every secret of the list verifies, so a secret is rotated by putting the
new one first and removing the old one after the grace period (the life of the mail in mailboxes).
The list is the message's List-Id (RFC 2919), when the sender sets one; the suppression's scope is
then "source/list", else "source".

A token names one recipient, so a message of a bulk source has exactly one: its second RCPT TO
gets `452 4.5.3` (checks/suppression.py), which makes a well-behaved client send it again in a
separate transaction. (In monitor mode the message passes with several recipients; it then gets
no List-Unsubscribe header, and the audit line says why.)

The endpoint (`relayguard unsubscribe-server`) runs on aiohttp behind the site's HTTPS reverse
proxy: POST with the body List-Unsubscribe=One-Click records the suppression (idempotent, no
cookie, no login: RFC 8058 §3.2); GET only shows a page with a button, because link scanners
prefetch URLs and a GET must never unsubscribe; a bad or forged token gets 400.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import html
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from aiohttp import web

from relayguard.checks import Subject
from relayguard.config import Config, UnsubscribeSettings, load_config
from relayguard.rfc5322 import ascii_lower
from relayguard.state import StateStore, StateUnavailable
from relayguard.state.factory import open_store
from relayguard.transforms import Transform
from relayguard.verdict import Action, Decision, Verdict

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

log = logging.getLogger(__name__)

NAME = "unsubscribe"
ONE_CLICK = "List-Unsubscribe=One-Click"  # RFC 8058 §3.1
_CONTEXT = b"relayguard-unsubscribe-v1\x00"
_SEPARATOR = "\x1f"
MAC_BYTES = 16


class BadToken(ValueError):
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


# --- the HTTP endpoint -------------------------------------------------------------------------

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="robots" content="noindex"></head>
<body><h1>{title}</h1><p>{text}</p>{form}</body></html>
"""


def _page(title: str, text: str, status: int = 200, form: str = "") -> web.Response:
    body = PAGE.format(title=html.escape(title), text=html.escape(text), form=form)
    return web.Response(text=body, status=status, content_type="text/html")


class Endpoint:
    def __init__(self, settings: UnsubscribeSettings, store: StateStore) -> None:
        self.settings = settings
        self.store = store

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4096)
        app.router.add_get("/u/{token}", self.confirm)
        app.router.add_post("/u/{token}", self.unsubscribe)
        return app

    def _target(self, request: web.Request) -> Target | web.Response:
        try:
            return read_token(request.match_info["token"], self.settings.secrets)
        except BadToken:
            return _page("Invalid link", "This unsubscribe link is invalid or damaged.", 400)

    async def confirm(self, request: web.Request) -> web.Response:
        """GET never unsubscribes (link scanners prefetch): it only offers the button."""
        target = self._target(request)
        if isinstance(target, web.Response):
            return target
        form = (
            '<form method="post"><input type="hidden" name="List-Unsubscribe"'
            ' value="One-Click"><button type="submit">Unsubscribe</button></form>'
        )
        text = f"Stop mail from {target.scope} to {target.recipient}?"
        return _page("Unsubscribe", text, 200, form)

    async def unsubscribe(self, request: web.Request) -> web.Response:
        target = self._target(request)
        if isinstance(target, web.Response):
            return target
        form = await request.post()
        if form.get("List-Unsubscribe") != "One-Click":
            return _page("Bad request", f"The request body must be {ONE_CLICK}.", 400)
        try:
            await asyncio.to_thread(
                self.store.suppress, target.scope, target.recipient, "one-click", time.time()
            )
        except StateUnavailable as exc:
            log.error("cannot record unsubscribe for scope %s: %s", target.scope, exc)
            return _page("Try again later", "The request could not be recorded.", 503)
        log.info("unsubscribed a recipient from scope %s", target.scope)
        return _page("Unsubscribed", f"{target.recipient} will get no more mail from this sender.")


def serve(config_path: str) -> int:
    config = load_config(config_path)
    if config.unsubscribe is None or config.state is None:
        print("relayguard unsubscribe-server: the config needs [unsubscribe] and [state]")
        return 1
    settings = config.unsubscribe
    endpoint = Endpoint(settings, open_store(config.state))
    web.run_app(endpoint.app(), host=settings.address, port=settings.port, print=None)
    return 0
