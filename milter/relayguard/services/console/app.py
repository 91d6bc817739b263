"""The operator console: server-rendered pages over the relay's own code (state store, audit
index, hold queue), and the few actions an operator takes (kill switch, release, delete).

This module holds what every page shares (configuration and its reload, sessions, rendering,
the guard around each route) and assembles the application; each page has its module
(login_pages, overview_page, sources_pages, audit_page, quarantine_pages). Routes parse the
request and call the code the CLI calls (engine/admin.py, engine/quarantine.py); no policy
lives here. Every page needs a session; every POST needs the operator role and the
session's CSRF token; every action is an admin line in the audit log with the operator's name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from relayguard.config import Config
from relayguard.config.console import ConsoleSettings
from relayguard.core.errors import ConfigError
from relayguard.engine import quarantine
from relayguard.engine.admin import audit_admin
from relayguard.services.console import (
    audit_page,
    login_pages,
    overview_page,
    quarantine_pages,
    sources_pages,
)
from relayguard.services.console.accounts import Account, Accounts
from relayguard.services.console.audit_index import AuditIndex
from relayguard.services.console.digests import AuditView, Digests
from relayguard.services.console.follower import Follower
from relayguard.services.console.login_audit import LoginAudit
from relayguard.services.console.login_guard import LoginGuard
from relayguard.services.console.web import (
    REPORT_CSP,
    SecurityHeaders,
    Session,
    Sessions,
    csrf_matches,
    session_key,
)
from relayguard.services.http import Listener
from relayguard.services.quarantine_helper.client import HelperHoldQueue

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
# Shown after an action (by key: no text of the request is reflected into the page).
NOTICES = {
    "disabled": "The source is disabled: its next transaction is refused.",
    "enabled": "The source is enabled again.",
    "released": "The message was released for delivery.",
    "deleted": "The message was deleted.",
}


@dataclass(frozen=True)
class Extras:
    """Views that live in the CLI's modules (the console must not import cli/): the command
    passes them in. Each makes an empty view of the audit log at that path, which the console
    fills from its index (digests.py): the inventory as text, the report as HTML."""

    inventory: Callable[[Path], AuditView] | None = None
    report_html: Callable[[Path], AuditView] | None = None


def hold_queue(settings: ConsoleSettings) -> quarantine.Hold:
    """Through the root helper when one is configured; else Postfix's tools in this process."""
    if settings.quarantine_helper is not None:
        return HelperHoldQueue(settings.quarantine_helper)
    return quarantine.HoldQueue(settings.postfix_config)


@dataclass
class Console:
    config: Config
    settings: ConsoleSettings
    index: AuditIndex | None
    extras: Extras = field(default_factory=Extras)
    hold: quarantine.Hold | None = None
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.started_with = self.config
        self.queue = self.hold or hold_queue(self.settings)
        self.accounts = Accounts(self.settings.accounts_file)
        self.guard = LoginGuard(
            self.settings.login_attempts,
            self.settings.login_window_seconds,
            self.settings.lockout_minutes * 60,
        )
        self.login_audit = LoginAudit(self.settings.login_window_seconds)
        self.listener = Listener(
            self.settings.address,
            self.settings.port,
            self.settings.tls_certificate,
            self.settings.tls_key,
        )
        secure = self.listener.tls or not self.listener.loopback
        self.sessions = Sessions(
            session_key(self.settings.secret_path), self.settings.session_minutes * 60, secure
        )
        self.templates = Environment(
            loader=PackageLoader("relayguard.services.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.templates.filters["when"] = _when
        self.templates.filters["day"] = _day
        self.digests = self._digests()

    def reload(self, config: Config) -> None:
        """SIGHUP: the next request sees the new sources, modes, state store, accounts file,
        hold queue, session length and login limits (counts and lock-outs so far are kept).
        Where it listens, its state directory and the audit log it indexes are read at start:
        a change there is logged and waits for a restart. Refused (ConfigError) without
        [console]; everything is built before anything is swapped."""
        settings = config.console
        if settings is None:
            raise ConfigError([f"{config.path}: console: the running console needs [console]"])
        waiting = _start_only_changes(self.started_with, config)
        if waiting:
            log.warning("SIGHUP: %s: changed, used at the next restart", ", ".join(waiting))
        queue = self.hold or hold_queue(settings)
        accounts = self.accounts
        if settings.accounts_file != accounts.path:
            accounts = Accounts(settings.accounts_file)
        self.guard.configure(
            settings.login_attempts, settings.login_window_seconds, settings.lockout_minutes * 60
        )
        self.login_audit.window = settings.login_window_seconds
        self.sessions.lifetime = settings.session_minutes * 60
        self.config, self.settings, self.queue, self.accounts = config, settings, queue, accounts

    def _digests(self) -> Digests | None:
        audit_log = self.config.relay.audit_log
        if self.index is None or audit_log is None:
            return None
        views = {
            name: make(audit_log)
            for name, make in (
                ("inventory", self.extras.inventory),
                ("report", self.extras.report_html),
            )
            if make is not None
        }
        return Digests(self.index, views)

    # --- rendering and sessions -------------------------------------------------------------

    def render(
        self, request: Request, name: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        session: Session = request.state.session
        started = request.state.started
        body = self.templates.get_template(name).render(
            session=session,
            notice=NOTICES.get(request.query_params.get("done", "")),
            path=request.url.path,
            **context,
        )
        response = HTMLResponse(body, status)
        response.headers["server-timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    def account(self, session: Session | None) -> Account | None:
        if session is None or not session.user:
            return None
        account = self.accounts.get(session.user)
        if account is None or account.fingerprint != session.fingerprint:
            return None  # removed, or the password changed since the login
        return account

    def actor(self, request: Request) -> str:
        return f"console:{request.state.account.name}"

    # --- the guard around every route -------------------------------------------------------

    def page(
        self, handler: Callable[[Request], Awaitable[Response]], *, act: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """A route that needs a login; `act`: a POST that needs the operator role and CSRF."""

        async def guarded(request: Request) -> Response:
            request.state.started = time.perf_counter()
            session = self.sessions.read(request)
            account = self.account(session)
            if session is None or account is None:
                return RedirectResponse("/login", 303)
            request.state.session = session
            request.state.account = account
            if request.method == "POST":
                form = await request.form()
                if not csrf_matches(session, form.get("csrf")):
                    return self.render(request, "error.html", 403, message="Invalid form token.")
                if act and not account.may_act:
                    return self.render(
                        request, "error.html", 403, message="Your role may not do this."
                    )
                request.state.form = form
            return await handler(request)

        return guarded

    async def logout(self, request: Request) -> Response:
        await run_in_threadpool(audit_admin, self.config, "console_logout", self.actor(request))
        response = RedirectResponse("/login", 303)
        self.sessions.clear(response)
        return response

    async def inventory(self, request: Request) -> Response:
        text = None
        if self.digests is not None and "inventory" in self.digests.views:
            text = await run_in_threadpool(self.digests.render, "inventory")
        return self.render(request, "inventory.html", text=text)

    async def report(self, request: Request) -> Response:
        if self.digests is None or "report" not in self.digests.views:
            return self.render(request, "error.html", 404, message="No audit log to report on.")
        started = request.state.started
        body = await run_in_threadpool(self.digests.render, "report")
        took = (time.perf_counter() - started) * 1000
        return HTMLResponse(
            body,
            headers={"content-security-policy": REPORT_CSP, "server-timing": f"app;dur={took:.1f}"},
        )

    # --- the application ----------------------------------------------------------------------

    def app(self) -> Starlette:
        follower = None
        if self.index is not None:
            after = self.digests.refresh_one_batch if self.digests is not None else None
            follower = Follower(self.index, self.settings.index_interval, after)

        @asynccontextmanager
        async def lifespan(app: Starlette) -> Any:
            if follower is not None:
                follower.start()
            summaries = asyncio.create_task(login_pages.summaries(self))
            try:
                yield
            finally:
                summaries.cancel()
                with suppress(asyncio.CancelledError):
                    await summaries
                if follower is not None:
                    follower.stop()

        page = self.page
        routes = [
            *login_pages.routes(self),
            Route("/logout", page(self.logout), methods=["POST"]),
            *overview_page.routes(self),
            *sources_pages.routes(self),
            *audit_page.routes(self),
            *quarantine_pages.routes(self),
            Route("/inventory", page(self.inventory)),
            Route("/report", page(self.report)),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        app = Starlette(routes=routes, lifespan=lifespan)
        app.add_middleware(SecurityHeaders, tls=self.listener.tls)
        return app


# Read at start only (the listener, the session key, the index and what follows it).
START_ONLY = ("address", "port", "tls_certificate", "tls_key", "state_directory", "index_interval")


def _start_only_changes(running: Config, new: Config) -> list[str]:
    """The keys whose new value the console cannot take without a restart."""
    assert running.console is not None and new.console is not None
    changed = [
        f"console.{key}"
        for key in START_ONLY
        if getattr(running.console, key) != getattr(new.console, key)
    ]
    if running.relay.audit_log != new.relay.audit_log:
        changed.append("relay.audit_log (the index follows the old one)")
    return changed


# --- filters for the templates --------------------------------------------------------------


def _when(value: float | str | None) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        return value.replace("T", " ")[:19]
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _day(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d")
