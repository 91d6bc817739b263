"""Reading the audit log back (inventory, reports): decisions and administrative lines, typed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from relayguard.core.audit_record import AdminRecord, AuditRecord, DecisionRecord, parse_line


@dataclass
class AuditRecords:
    decisions: list[DecisionRecord] = field(default_factory=list)
    admin: list[AdminRecord] = field(default_factory=list)
    unreadable: int = 0  # lines that are no audit record (a torn last line, a foreign file)


def parse_since(text: str) -> datetime:
    """'2026-11-20' or an ISO time ('2026-11-20T08:00', '...Z'); naive means UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def record_time(record: AuditRecord) -> datetime | None:
    try:
        return parse_since(record.time)
    except ValueError:
        return None


def read_audit(path: Path, since: datetime | None = None) -> AuditRecords:
    found = AuditRecords()
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            record = parse_line(line)
            if record is None:
                found.unreadable += 1
                continue
            when = record_time(record)
            if since is not None and (when is None or when < since):
                continue
            if isinstance(record, DecisionRecord):
                found.decisions.append(record)
            else:
                found.admin.append(record)
    return found
