"""The sources pages: every [[sources]] entry with its kill switch and rate-limit usage, one
source with its recent audit lines, and the kill switch itself (engine/admin.py, as the CLI)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relayguard.checks.ratelimit import rate_counters
from relayguard.config import Config, Source
from relayguard.engine.admin import AdminError, disable_source, enable_source
from relayguard.services.console.audit_index import Query
from relayguard.services.console.audit_page import audit_row
from relayguard.state import Disabled, StateStore, StateUnavailable
from relayguard.state.factory import open_store

if TYPE_CHECKING:
    from relayguard.services.console.app import Console


def routes(console: Console) -> list[Route]:
    page = console.page
    switch = page(partial(kill_switch, console), act=True)
    return [
        Route("/sources", page(partial(sources, console))),
        Route("/sources/{name}", page(partial(source, console))),
        Route("/sources/{name}/disable", switch, methods=["POST"]),
        Route("/sources/{name}/enable", switch, methods=["POST"]),
    ]


async def sources(console: Console, request: Request) -> Response:
    disabled, usage, problem = await run_in_threadpool(
        read_state, console.config, console.config.sources, console.clock()
    )
    day = console.clock() - 86400
    rows = [
        {
            "source": s,
            "mode": console.config.mode_for(s).value,
            "identified": _identified(s),
            "disabled": disabled.get(s.name),
            "usage": usage.get(s.name, []),
            "volume": console.index.source_volume(s.name, day) if console.index else None,
            "last_seen": console.index.last_seen(s.name) if console.index else None,
        }
        for s in console.config.sources
    ]
    return console.render(request, "sources.html", rows=rows, state_problem=problem)


async def source(console: Console, request: Request) -> Response:
    return await _source_page(console, request)


async def _source_page(
    console: Console, request: Request, status: int = 200, error: str | None = None
) -> Response:
    source = console.config.source(request.path_params["name"])
    if source is None:
        return console.render(request, "error.html", 404, message="No such source.")
    disabled, usage, problem = await run_in_threadpool(
        read_state, console.config, [source], console.clock()
    )
    recent = console.index.search(Query(source=source.name), 25).hits if console.index else []
    senders, recipients = source.senders, source.recipients
    return console.render(
        request,
        "source.html",
        status,
        source=source,
        mode=console.config.mode_for(source).value,
        identified=_identified(source),
        senders=sorted(senders.addresses) + sorted("@" + d for d in senders.domains),
        recipients=sorted(recipients.addresses) + sorted("@" + d for d in recipients.domains),
        usage=usage.get(source.name, []),
        disabled=disabled.get(source.name),
        state_problem=problem,
        recent=[audit_row(hit.row_id, hit.record) for hit in recent],
        error=error,
    )


async def kill_switch(console: Console, request: Request) -> Response:
    name = request.path_params["name"]
    form = request.state.form
    disable = request.url.path.endswith("/disable")
    reason = str(form.get("reason", ""))[:500]
    if form.get("confirm") != "yes" or (disable and not reason.strip()):
        return await _source_page(
            console, request, 400, "Give a reason and tick the confirmation to go ahead."
        )
    try:
        if disable:
            await run_in_threadpool(
                disable_source, console.config, name, reason, console.actor(request)
            )
        else:
            await run_in_threadpool(
                enable_source, console.config, name, reason, console.actor(request)
            )
    except AdminError as exc:
        return await _source_page(console, request, 400, str(exc))
    done = "disabled" if disable else "enabled"
    return RedirectResponse(f"/sources/{_url_name(name)}?done={done}", 303)


def read_state(
    config: Config, sources: Iterable[Source], now: float
) -> tuple[dict[str, Disabled], dict[str, list[LimitUse]], str | None]:
    """The kill switch, and the rate-limit usage of `sources` (read only: a look is never
    counted), from one visit to the state store."""
    if config.state is None:
        return {}, {}, "No [state] section: the kill switch is off."
    store = open_store(config.state)
    try:
        disabled = {d.source: d for d in store.all_disabled()}
        return disabled, {s.name: _usage(store, s, now) for s in sources}, None
    except StateUnavailable as exc:
        return {}, {}, f"The state store cannot be reached: {exc}"
    finally:
        store.close()


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


def _url_name(name: str) -> str:
    return quote(name, safe="")


def _identified(source: Any) -> list[str]:
    return (
        [f"SASL {u}" for u in source.sasl_users]
        + [f"certificate {c}" for c in source.client_cert_subjects]
        + [f"network {n}" for n in source.networks]
    )
