"""Reading the audit log back (inventory, reports): decisions and administrative lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass
class AuditRecords:
    decisions: list[dict[str, Any]] = field(default_factory=list)
    admin: list[dict[str, Any]] = field(default_factory=list)
    unreadable: int = 0  # lines that are not JSON objects (a torn last line, a foreign file)


def parse_since(text: str) -> datetime:
    """'2026-11-20' or an ISO time ('2026-11-20T08:00', '...Z'); naive means UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def record_time(record: dict[str, Any]) -> datetime | None:
    try:
        return parse_since(str(record["time"]))
    except (KeyError, ValueError):
        return None


def read_audit(path: Path, since: datetime | None = None) -> AuditRecords:
    found = AuditRecords()
    for record in _lines(path, found):
        when = record_time(record)
        if since is not None and (when is None or when < since):
            continue
        if "outcome" in record and "action" in record:
            found.decisions.append(record)
        elif record.get("stage") == "admin":
            found.admin.append(record)
        else:
            found.unreadable += 1
    return found


def _lines(path: Path, found: AuditRecords) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                found.unreadable += 1
                continue
            if isinstance(record, dict):
                yield record
            else:
                found.unreadable += 1


def attempts(record: dict[str, Any]) -> int:
    """How many decisions one line stands for: repeated refusals of an unregistered client are
    written as one line with a `count` (audit.RefusalCounter); other lines stand for one."""
    count = record.get("count", 1)
    return count if isinstance(count, int) and count > 0 else 1


def deciding_check(record: dict[str, Any]) -> dict[str, Any] | None:
    """The most severe check entry (what explains a refusal or a would_*)."""
    order = {"accept": 0, "tag": 1, "quarantine": 2, "tempfail": 3, "reject": 4}
    checks = [c for c in record.get("checks", ()) if order.get(c.get("action", ""), 0) > 0]
    refusals = [
        {"name": r.get("check", "?"), "action": "reject", "reason": r.get("reason", "")}
        for r in record.get("recipient_refusals", ())
    ]
    worst = max(checks or refusals, key=lambda c: order.get(c.get("action", ""), 0), default=None)
    return worst
