"""The RFC 8058 one-click unsubscribe endpoint (`relayguard unsubscribe-server`).

It runs on aiohttp behind the site's HTTPS reverse proxy: POST with the body
List-Unsubscribe=One-Click records the suppression (idempotent, no cookie, no login: RFC 8058
§3.2); GET only shows a page with a button, because link scanners prefetch URLs and a GET must
never unsubscribe; a bad or forged token gets 400. Tokens: transforms/unsubscribe.py.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time

from aiohttp import web

from relayguard.config import UnsubscribeSettings, load_config
from relayguard.state import StateStore, StateUnavailable
from relayguard.state.factory import open_store
from relayguard.transforms.unsubscribe import ONE_CLICK, BadToken, Target, read_token

log = logging.getLogger(__name__)

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
    config = load_config(config_path, signing_keys=False)  # the endpoint signs nothing
    if config.unsubscribe is None or config.state is None:
        print("relayguard unsubscribe-server: the config needs [unsubscribe] and [state]")
        return 1
    settings = config.unsubscribe
    endpoint = Endpoint(settings, open_store(config.state))
    # No access log: a request line holds the token, and the token names the recipient.
    web.run_app(
        endpoint.app(), host=settings.address, port=settings.port, print=None, access_log=None
    )
    return 0
