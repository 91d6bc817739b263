"""Logging in: the form, the password check behind the lock-out (login_guard.py), and the
failed logins as bounded audit lines (login_audit.py); never the password."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relayguard.core.safe_text import printable
from relayguard.engine.admin import AdminError, audit_admin
from relayguard.engine.audit import clip
from relayguard.services.console.login_audit import Line
from relayguard.services.console.web import Session, csrf_matches, new_csrf

if TYPE_CHECKING:
    from relayguard.services.console.app import Console

log = logging.getLogger(__name__)

SUMMARY_TICK = 60.0  # seconds between looks for a finished window of refused logins


def routes(console: Console) -> list[Route]:
    return [
        Route("/login", partial(login_form, console), methods=["GET"]),
        Route("/login", partial(login, console), methods=["POST"]),
    ]


async def login_form(console: Console, request: Request) -> Response:
    request.state.started = time.perf_counter()
    session = console.sessions.read(request) or Session(new_csrf())
    if console.account(session) is not None:
        return RedirectResponse("/", 303)
    session = Session(session.csrf)
    request.state.session = session
    response = console.render(request, "login.html", error=None)
    console.sessions.write(response, session)
    return response


async def login(console: Console, request: Request) -> Response:
    request.state.started = time.perf_counter()
    session = console.sessions.read(request)
    form = await request.form()
    request.state.session = session or Session(new_csrf())
    if not csrf_matches(session, form.get("csrf")):
        return console.render(request, "login.html", 403, error="The form expired: try again.")
    typed = str(form.get("user", ""))[:1024]
    name = typed[:64]
    password = str(form.get("password", ""))[:1024]
    client = request.client.host if request.client else "?"
    keys = (f"user:{name}", f"client:{client}")
    shown = clip(printable(typed), 64)  # the client's text: escaped and clipped
    if console.guard.locked(*keys):
        await write_login_lines(console, console.login_audit.refused(shown, client))
        return console.render(request, "login.html", 429, error="Too many failed logins: wait.")
    account = await run_in_threadpool(console.accounts.verify, name, password)
    if account is None:
        locked_now = console.guard.failed(*keys)
        lines = console.login_audit.failed(shown, client, locked_now, console.guard.attempts)
        await write_login_lines(console, lines)
        return console.render(request, "login.html", 401, error="Wrong name or password.")
    console.guard.succeeded(*keys)
    await write_login_lines(console, console.login_audit.due())
    await run_in_threadpool(
        audit_admin, console.config, "console_login", f"console:{account.name}", client=client
    )
    response = RedirectResponse("/", 303)
    # A new CSRF token with the new session: a token seen before the login is worthless.
    console.sessions.write(
        response, Session(new_csrf(), account.name, account.role, account.fingerprint)
    )
    return response


async def write_login_lines(console: Console, lines: list[Line]) -> None:
    """Failed logins as admin lines (login_audit.py says which, and never the password).
    The login stays refused when a line cannot be written, so a failure is only logged."""
    if lines:
        await run_in_threadpool(write_lines, console, lines)


def write_lines(console: Console, lines: list[Line]) -> None:
    for line in lines:
        try:
            audit_admin(console.config, line.event, "console", reason=line.reason, **line.details)
        except AdminError as exc:
            log.error("%s", exc)


async def summaries(console: Console) -> None:
    """Writes the summary of a window of refused logins when it ends, not at the next
    login (which may be days later); the last one at shutdown."""
    try:
        while True:
            await asyncio.sleep(min(console.login_audit.window, SUMMARY_TICK))
            await write_login_lines(console, console.login_audit.due())
    finally:
        write_lines(console, console.login_audit.flush())
