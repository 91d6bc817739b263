"""The overview: decisions this hour and day by outcome, scanner errors, the busiest and the
disabled sources, the DKIM keys' last DNS check, and a 24-hour plot."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relayguard.dkim.status import DkimStatusError, DomainStatus, read_status
from relayguard.services.console import plot
from relayguard.services.console.sources_pages import read_state

if TYPE_CHECKING:
    from relayguard.services.console.app import Console

log = logging.getLogger(__name__)

OUTCOME_ORDER = ("delivered", "refused", "would-refuse", "quarantined", "tempfailed")


def routes(console: Console) -> list[Route]:
    return [Route("/", console.page(partial(overview, console)))]


async def overview(console: Console, request: Request) -> Response:
    now = console.clock()
    disabled, _, problem = await run_in_threadpool(read_state, console.config, (), now)
    dkim = await run_in_threadpool(_dkim_status, console)
    hour = day = {}
    errors = 0
    busiest: list[tuple[str, int]] = []
    series: list[tuple[int, dict[str, int]]] = []
    if console.index is not None:
        hour = console.index.outcome_counts(now - 3600)
        day = console.index.outcome_counts(now - 86400)
        errors = console.index.scanner_errors(now - 86400)
        busiest = console.index.busiest_sources(now - 86400)
        series = console.index.hourly_series(now - 23 * 3600)
    return console.render(
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
        indexed=console.index is not None,
        dkim=dkim,
    )


def _dkim_status(console: Console) -> list[DomainStatus] | None:
    """The last verify-dns result per domain, or None when there is none to show: the
    overview says so rather than failing over a missing or damaged file."""
    path = console.config.metrics.dkim_status_file
    if path is None:
        return None
    try:
        return sorted(read_status(path), key=lambda status: status.domain)
    except FileNotFoundError:
        return None
    except DkimStatusError as exc:
        log.warning("%s", exc)
        return None
