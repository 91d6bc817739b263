"""The operator console: server-rendered pages over the relay's own code (state store, audit
index, hold queue), and the few actions an operator takes (kill switch, release, delete).

Routes parse the request and call the code the CLI calls (engine/admin.py, engine/quarantine.py);
no policy lives here. Every page needs a session; every POST needs the operator role and the
session's CSRF token; every action is an admin line in the audit log with the operator's name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from relayguard.checks.ratelimit import rate_counters
from relayguard.config import Config, Source
from relayguard.config.console import ConsoleSettings
from relayguard.core.audit_record import AdminRecord, DecisionRecord
from relayguard.core.safe_text import printable
from relayguard.dkim.status import DkimStatusError, DomainStatus, read_status
from relayguard.engine import quarantine
from relayguard.engine.admin import AdminError, audit_admin, disable_source, enable_source
from relayguard.engine.audit import clip
from relayguard.services.console import plot
from relayguard.services.console.accounts import Account, Accounts
from relayguard.services.console.audit_index import AuditIndex, Query, outcome_group
from relayguard.services.console.digests import AuditView, Digests
from relayguard.services.console.follower import Follower
from relayguard.services.console.login_guard import LoginGuard
from relayguard.services.console.message_view import view
from relayguard.services.console.web import (
    REPORT_CSP,
    SecurityHeaders,
    Session,
    Sessions,
    csrf_matches,
    new_csrf,
    session_key,
)
from relayguard.services.http import Listener
from relayguard.services.quarantine_helper.client import HelperHoldQueue
from relayguard.state import Disabled, StateStore, StateUnavailable
from relayguard.state.factory import open_store

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
OUTCOME_ORDER = ("delivered", "refused", "would-refuse", "quarantined", "tempfailed")
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
        self.queue = self.hold or hold_queue(self.settings)
        self.accounts = Accounts(self.settings.accounts_file)
        self.guard = LoginGuard(
            self.settings.login_attempts,
            self.settings.login_window_seconds,
            self.settings.lockout_minutes * 60,
        )
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

    # --- login --------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        request.state.started = time.perf_counter()
        session = self.sessions.read(request) or Session(new_csrf())
        if self.account(session) is not None:
            return RedirectResponse("/", 303)
        session = Session(session.csrf)
        request.state.session = session
        response = self.render(request, "login.html", error=None)
        self.sessions.write(response, session)
        return response

    async def login(self, request: Request) -> Response:
        request.state.started = time.perf_counter()
        session = self.sessions.read(request)
        form = await request.form()
        request.state.session = session or Session(new_csrf())
        if not csrf_matches(session, form.get("csrf")):
            return self.render(request, "login.html", 403, error="The form expired: try again.")
        typed = str(form.get("user", ""))[:1024]
        name = typed[:64]
        password = str(form.get("password", ""))[:1024]
        client = request.client.host if request.client else "?"
        keys = (f"user:{name}", f"client:{client}")
        if self.guard.locked(*keys):
            await run_in_threadpool(
                self._audit_failure, "console_login_failed", typed, client, "locked out"
            )
            return self.render(request, "login.html", 429, error="Too many failed logins: wait.")
        account = await run_in_threadpool(self.accounts.verify, name, password)
        if account is None:
            await run_in_threadpool(
                self._audit_failure, "console_login_failed", typed, client, "wrong name or password"
            )
            if self.guard.failed(*keys):
                await run_in_threadpool(self._audit_failure, "console_lockout", typed, client)
            return self.render(request, "login.html", 401, error="Wrong name or password.")
        self.guard.succeeded(*keys)
        await run_in_threadpool(
            audit_admin, self.config, "console_login", f"console:{account.name}", client=client
        )
        response = RedirectResponse("/", 303)
        # A new CSRF token with the new session: a token seen before the login is worthless.
        self.sessions.write(
            response, Session(new_csrf(), account.name, account.role, account.fingerprint)
        )
        return response

    def _audit_failure(self, event: str, typed: str, client: str, reason: str = "") -> None:
        """A failed login as an admin line: the name as typed (escaped, clipped: it is the
        client's text) and the client's address; never the password. The login stays refused
        when the line cannot be written, so a failure here is only logged."""
        try:
            audit_admin(
                self.config,
                event,
                "console",
                reason=reason,
                user=clip(printable(typed), 64),
                client=client,
            )
        except AdminError as exc:
            log.error("%s", exc)

    async def logout(self, request: Request) -> Response:
        await run_in_threadpool(audit_admin, self.config, "console_logout", self.actor(request))
        response = RedirectResponse("/login", 303)
        self.sessions.clear(response)
        return response

    # --- pages --------------------------------------------------------------------------------

    def _disabled(self) -> tuple[dict[str, Disabled], str | None]:
        disabled, _, problem = self._state(())
        return disabled, problem

    def _state(
        self, sources: Iterable[Source]
    ) -> tuple[dict[str, Disabled], dict[str, list[LimitUse]], str | None]:
        """The kill switch, and the rate-limit usage of `sources` (read only: a look is never
        counted), from one visit to the state store."""
        if self.config.state is None:
            return {}, {}, "No [state] section: the kill switch is off."
        store = open_store(self.config.state)
        try:
            disabled = {d.source: d for d in store.all_disabled()}
            now = self.clock()
            return disabled, {s.name: _usage(store, s, now) for s in sources}, None
        except StateUnavailable as exc:
            return {}, {}, f"The state store cannot be reached: {exc}"
        finally:
            store.close()

    def _dkim_status(self) -> list[DomainStatus] | None:
        """The last verify-dns result per domain, or None when there is none to show: the
        overview says so rather than failing over a missing or damaged file."""
        path = self.config.metrics.dkim_status_file
        if path is None:
            return None
        try:
            return sorted(read_status(path), key=lambda status: status.domain)
        except FileNotFoundError:
            return None
        except DkimStatusError as exc:
            log.warning("%s", exc)
            return None

    async def overview(self, request: Request) -> Response:
        now = self.clock()
        disabled, problem = await run_in_threadpool(self._disabled)
        dkim = await run_in_threadpool(self._dkim_status)
        hour = day = {}
        errors = 0
        busiest: list[tuple[str, int]] = []
        series: list[tuple[int, dict[str, int]]] = []
        if self.index is not None:
            hour = self.index.outcome_counts(now - 3600)
            day = self.index.outcome_counts(now - 86400)
            errors = self.index.scanner_errors(now - 86400)
            busiest = self.index.busiest_sources(now - 86400)
            series = self.index.hourly_series(now - 23 * 3600)
        return self.render(
            request,
            "overview.html",
            outcomes=OUTCOME_ORDER,
            hour=hour,
            day=day,
            scanner_errors=errors,
            busiest=busiest,
            disabled=sorted(disabled.values(), key=lambda d: d.source),
            state_problem=problem,
            chart=plot.stacked_bars(series, OUTCOME_ORDER),
            indexed=self.index is not None,
            dkim=dkim,
        )

    async def sources(self, request: Request) -> Response:
        disabled, usage, problem = await run_in_threadpool(self._state, self.config.sources)
        day = self.clock() - 86400
        rows = [
            {
                "source": s,
                "mode": self.config.mode_for(s).value,
                "identified": _identified(s),
                "disabled": disabled.get(s.name),
                "usage": usage.get(s.name, []),
                "volume": self.index.source_volume(s.name, day) if self.index else None,
                "last_seen": self.index.last_seen(s.name) if self.index else None,
            }
            for s in self.config.sources
        ]
        return self.render(request, "sources.html", rows=rows, state_problem=problem)

    async def source(self, request: Request) -> Response:
        return await self._source_page(request)

    async def _source_page(
        self, request: Request, status: int = 200, error: str | None = None
    ) -> Response:
        source = self.config.source(request.path_params["name"])
        if source is None:
            return self.render(request, "error.html", 404, message="No such source.")
        disabled, usage, problem = await run_in_threadpool(self._state, [source])
        recent = self.index.search(Query(source=source.name), 25).hits if self.index else []
        senders, recipients = source.senders, source.recipients
        return self.render(
            request,
            "source.html",
            status,
            source=source,
            mode=self.config.mode_for(source).value,
            identified=_identified(source),
            senders=sorted(senders.addresses) + sorted("@" + d for d in senders.domains),
            recipients=sorted(recipients.addresses) + sorted("@" + d for d in recipients.domains),
            usage=usage.get(source.name, []),
            disabled=disabled.get(source.name),
            state_problem=problem,
            recent=[_row(hit.row_id, hit.record) for hit in recent],
            error=error,
        )

    async def kill_switch(self, request: Request) -> Response:
        name = request.path_params["name"]
        form = request.state.form
        disable = request.url.path.endswith("/disable")
        reason = str(form.get("reason", ""))[:500]
        if form.get("confirm") != "yes" or (disable and not reason.strip()):
            return await self._source_page(
                request, 400, "Give a reason and tick the confirmation to go ahead."
            )
        try:
            if disable:
                await run_in_threadpool(
                    disable_source, self.config, name, reason, self.actor(request)
                )
            else:
                await run_in_threadpool(
                    enable_source, self.config, name, reason, self.actor(request)
                )
        except AdminError as exc:
            return await self._source_page(request, 400, str(exc))
        done = "disabled" if disable else "enabled"
        return RedirectResponse(f"/sources/{_url_name(name)}?done={done}", 303)

    async def audit(self, request: Request) -> Response:
        params = request.query_params
        query, problem = _query(params)
        page = None
        if self.index is not None and problem is None:
            page = await run_in_threadpool(self.index.search, query)
        kept = {k: v for k, v in params.items() if k != "before" and v}
        next_link = (
            "/audit?" + urlencode({**kept, "before": page.next_before})
            if page is not None and page.next_before is not None
            else None
        )
        return self.render(
            request,
            "audit.html",
            form=params,
            problem=problem,
            rows=[_row(h.row_id, h.record) for h in page.hits] if page else [],
            next_link=next_link,
            first_link="/audit?" + urlencode(kept) if query.before is not None else None,
            indexed=self.index is not None,
            outcomes=("accept", "tag", "reject", "quarantine", "tempfail", "would_reject"),
            sources=[s.name for s in self.config.sources],
        )

    async def quarantine_list(self, request: Request) -> Response:
        try:
            held = await run_in_threadpool(self.queue.held)
        except quarantine.QuarantineError as exc:
            return self.render(request, "error.html", 503, message=str(exc))
        reasons = self._reasons([m.queue_id for m in held])
        now = self.clock()
        rows = [
            {
                "held": m,
                "reason": reasons.get(m.queue_id, ("", ""))[0],
                "source": reasons.get(m.queue_id, ("", ""))[1],
                "age": _age(now - m.arrival_time),
            }
            for m in held
        ]
        return self.render(request, "quarantine.html", rows=rows)

    def _reasons(self, queue_ids: list[str]) -> dict[str, tuple[str, str]]:
        """queue id -> (why it was held, its source), from the audit index."""
        if self.index is None:
            return {}
        found = {}
        for queue_id, record in self.index.decisions_for(queue_ids).items():
            why = "; ".join(
                f"{c.name}: {c.reason}" for c in record.checks if c.action.label == "quarantine"
            )
            found[queue_id] = (why, record.source or "")
        return found

    async def held_message(self, request: Request) -> Response:
        queue_id = request.path_params["queue_id"]
        try:
            raw = await run_in_threadpool(self.queue.message, queue_id)
        except quarantine.QuarantineError as exc:
            return self.render(request, "error.html", 404, message=str(exc))
        reason, source = self._reasons([queue_id]).get(queue_id, ("", ""))
        return self.render(
            request,
            "message.html",
            queue_id=queue_id,
            reason=reason,
            source=source,
            message=await run_in_threadpool(view, raw),
        )

    async def quarantine_action(self, request: Request) -> Response:
        queue_id = request.path_params["queue_id"]
        release = request.url.path.endswith("/release")
        if request.state.form.get("confirm") != "yes":
            return self.render(
                request, "error.html", 400, message="Tick the confirmation to go ahead."
            )
        action = self.queue.release if release else self.queue.delete
        event = "quarantine_released" if release else "quarantine_deleted"
        try:
            await run_in_threadpool(action, queue_id)
            await run_in_threadpool(
                audit_admin, self.config, event, self.actor(request), queue_id=queue_id
            )
        except (quarantine.QuarantineError, AdminError) as exc:
            return self.render(request, "error.html", 400, message=str(exc))
        return RedirectResponse(f"/quarantine?done={'released' if release else 'deleted'}", 303)

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
            try:
                yield
            finally:
                if follower is not None:
                    follower.stop()

        page = self.page
        routes = [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", page(self.logout), methods=["POST"]),
            Route("/", page(self.overview)),
            Route("/sources", page(self.sources)),
            Route("/sources/{name}", page(self.source)),
            Route("/sources/{name}/disable", page(self.kill_switch, act=True), methods=["POST"]),
            Route("/sources/{name}/enable", page(self.kill_switch, act=True), methods=["POST"]),
            Route("/audit", page(self.audit)),
            Route("/quarantine", page(self.quarantine_list)),
            Route("/quarantine/{queue_id}", page(self.held_message)),
            Route(
                "/quarantine/{queue_id}/release",
                page(self.quarantine_action, act=True),
                methods=["POST"],
            ),
            Route(
                "/quarantine/{queue_id}/delete",
                page(self.quarantine_action, act=True),
                methods=["POST"],
            ),
            Route("/inventory", page(self.inventory)),
            Route("/report", page(self.report)),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        app = Starlette(routes=routes, lifespan=lifespan)
        app.add_middleware(SecurityHeaders, tls=self.listener.tls)
        return app


# --- helpers for the templates --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitUse:
    """One rate limit of a source and how much of its window is used now."""

    kind: str
    unit: str
    limit: int
    used: int

    @property
    def full(self) -> bool:
        return self.used >= self.limit


def _usage(store: StateStore, source: Source, now: float) -> list[LimitUse]:
    uses = []
    for kind in dict.fromkeys(kind for kind, _, _, _ in source.rate_limits.limits):
        limits = source.rate_limits.of(kind)
        counters = rate_counters(source.name, kind, limits)
        for (unit, _, limit), usage in zip(limits, store.peek_usage(counters, now), strict=True):
            uses.append(LimitUse(kind, unit, limit, usage.used))
    return uses


def _when(value: float | str | None) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        return value.replace("T", " ")[:19]
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _day(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d")


def _age(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} d"


def _url_name(name: str) -> str:
    return quote(name, safe="")


def _identified(source: Any) -> list[str]:
    return (
        [f"SASL {u}" for u in source.sasl_users]
        + [f"certificate {c}" for c in source.client_cert_subjects]
        + [f"network {n}" for n in source.networks]
    )


def _row(row_id: int, record: DecisionRecord | AdminRecord) -> dict[str, Any]:
    """One line of the audit table: every value is text the template escapes."""
    if isinstance(record, AdminRecord):
        return {
            "id": row_id,
            "time": record.time,
            "source": record.source or "",
            "outcome": record.event,
            "group": "admin",
            "mail_from": "",
            "from": "",
            "recipients": "",
            "queue_id": record.details.get("queue_id", ""),
            "message_id": "",
            "why": f"{record.actor}: {record.reason}".rstrip(": "),
        }
    deciding = record.deciding_check()
    return {
        "id": row_id,
        "time": record.time,
        "source": record.source or "",
        "outcome": record.outcome,
        "group": outcome_group(record.outcome),
        "mail_from": printable(record.mail_from),
        "from": printable(record.from_header or ""),
        "recipients": printable(", ".join(record.recipients)),
        "queue_id": record.queue_id or "",
        "message_id": printable(record.message_id or ""),
        "why": printable(f"{deciding.name}: {deciding.reason}") if deciding else "",
    }


def _timestamp(text: str) -> float | None:
    if not text:
        return None
    value = datetime.fromisoformat(text)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _query(params: Any) -> tuple[Query, str | None]:
    """The search form as a Query; a problem to show when a value cannot be read."""
    try:
        since = _timestamp(params.get("since", ""))
        until = _timestamp(params.get("until", ""))
        before = int(params["before"]) if params.get("before") else None
    except ValueError:
        return Query(), "Times are ISO 8601 (2026-05-01 or 2026-05-01T08:00)."
    text = {
        key: str(params.get(key, ""))[:256].strip()
        for key in (
            "source",
            "sender",
            "header_from",
            "recipient",
            "queue_id",
            "message_id",
            "outcome",
            "check",
        )
    }
    return Query(since=since, until=until, before=before, **text), None
