"""The audit page: a search of the audit index (audit_index.py), newest first, a page at a time."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relayguard.core.audit_record import AdminRecord, DecisionRecord
from relayguard.core.safe_text import printable
from relayguard.services.console.audit_index import Query, outcome_group

if TYPE_CHECKING:
    from relayguard.services.console.app import Console


def routes(console: Console) -> list[Route]:
    return [Route("/audit", console.page(partial(audit, console)))]


async def audit(console: Console, request: Request) -> Response:
    params = request.query_params
    query, problem = _query(params)
    page = None
    if console.index is not None and problem is None:
        page = await run_in_threadpool(console.index.search, query)
    kept = {k: v for k, v in params.items() if k != "before" and v}
    next_link = (
        "/audit?" + urlencode({**kept, "before": page.next_before})
        if page is not None and page.next_before is not None
        else None
    )
    return console.render(
        request,
        "audit.html",
        form=params,
        problem=problem,
        rows=[audit_row(h.row_id, h.record) for h in page.hits] if page else [],
        next_link=next_link,
        first_link="/audit?" + urlencode(kept) if query.before is not None else None,
        indexed=console.index is not None,
        outcomes=("accept", "tag", "reject", "quarantine", "tempfail", "would_reject"),
        sources=[s.name for s in console.config.sources],
    )


def audit_row(row_id: int, record: DecisionRecord | AdminRecord) -> dict[str, Any]:
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
