"""The quarantine pages: Postfix's hold queue, one held message (shown, never rendered), and
release or delete (engine/quarantine.py, through the root helper when there is one)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relayguard.engine import quarantine
from relayguard.engine.admin import AdminError, audit_admin
from relayguard.services.console.message_view import view

if TYPE_CHECKING:
    from relayguard.services.console.app import Console


def routes(console: Console) -> list[Route]:
    page = console.page
    action = page(partial(quarantine_action, console), act=True)
    return [
        Route("/quarantine", page(partial(quarantine_list, console))),
        Route("/quarantine/{queue_id}", page(partial(held_message, console))),
        Route("/quarantine/{queue_id}/release", action, methods=["POST"]),
        Route("/quarantine/{queue_id}/delete", action, methods=["POST"]),
    ]


async def quarantine_list(console: Console, request: Request) -> Response:
    try:
        held = await run_in_threadpool(console.queue.held)
    except quarantine.QuarantineError as exc:
        return console.render(request, "error.html", 503, message=str(exc))
    reasons = _reasons(console, [m.queue_id for m in held])
    now = console.clock()
    rows = [
        {
            "held": m,
            "reason": reasons.get(m.queue_id, ("", ""))[0],
            "source": reasons.get(m.queue_id, ("", ""))[1],
            "age": _age(now - m.arrival_time),
        }
        for m in held
    ]
    return console.render(request, "quarantine.html", rows=rows)


def _reasons(console: Console, queue_ids: list[str]) -> dict[str, tuple[str, str]]:
    """queue id -> (why it was held, its source), from the audit index."""
    if console.index is None:
        return {}
    found = {}
    for queue_id, record in console.index.decisions_for(queue_ids).items():
        why = "; ".join(
            f"{c.name}: {c.reason}" for c in record.checks if c.action.label == "quarantine"
        )
        found[queue_id] = (why, record.source or "")
    return found


async def held_message(console: Console, request: Request) -> Response:
    queue_id = request.path_params["queue_id"]
    try:
        raw = await run_in_threadpool(console.queue.message, queue_id)
    except quarantine.QuarantineError as exc:
        return console.render(request, "error.html", 404, message=str(exc))
    reason, source = _reasons(console, [queue_id]).get(queue_id, ("", ""))
    return console.render(
        request,
        "message.html",
        queue_id=queue_id,
        reason=reason,
        source=source,
        message=await run_in_threadpool(view, raw),
    )


async def quarantine_action(console: Console, request: Request) -> Response:
    queue_id = request.path_params["queue_id"]
    release = request.url.path.endswith("/release")
    if request.state.form.get("confirm") != "yes":
        return console.render(
            request, "error.html", 400, message="Tick the confirmation to go ahead."
        )
    action = console.queue.release if release else console.queue.delete
    event = "quarantine_released" if release else "quarantine_deleted"
    try:
        await run_in_threadpool(action, queue_id)
        await run_in_threadpool(
            audit_admin, console.config, event, console.actor(request), queue_id=queue_id
        )
    except (quarantine.QuarantineError, AdminError) as exc:
        return console.render(request, "error.html", 400, message=str(exc))
    return RedirectResponse(f"/quarantine?done={'released' if release else 'deleted'}", 303)


def _age(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} d"
