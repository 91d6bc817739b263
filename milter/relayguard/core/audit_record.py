"""The audit line as types: a decision of the transaction, or an operator's act.

The transaction and the admin commands write these records; metrics, `relayguard report` and
`relayguard inventory` read their fields and the checks' `facts`, never the wording of a reason or
a reply, so rewording a reply cannot break a counter. Every line carries `"v"`, the schema
version. `parse_record` is the one reader: a line without `v` is version 1 (before facts), and
fields a later version adds are ignored, so this reader keeps working on a newer log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from relayguard.core.verdict import Action, Facts, FactValue, Mode

SCHEMA = 2
VERSION_KEY = "v"
LEGACY_SCHEMA = 1  # lines written before the version field

ACTIONS = {action.label: action for action in Action}
MODES = {mode.value: mode for mode in Mode}


@dataclass(frozen=True, slots=True)
class CheckEntry:
    """One verdict as audited: `facts` are for counting, `reason` for a person."""

    name: str
    action: Action
    reason: str = ""
    ms: float = 0.0
    error: bool = False
    facts: Facts = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "name": self.name,
            "action": self.action.label,
            "reason": self.reason,
            "ms": self.ms,
        }
        if self.error:
            line["error"] = True
        if self.facts:
            line["facts"] = facts_json(self.facts)
        return line


@dataclass(frozen=True, slots=True)
class RecipientRefusal:
    """A recipient refused at RCPT (`applied`), or one monitor mode let through."""

    recipient: str
    check: str
    reason: str = ""
    applied: bool = True
    facts: Facts = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "recipient": self.recipient,
            "check": self.check,
            "reason": self.reason,
            "applied": self.applied,
        }
        if self.facts:
            line["facts"] = facts_json(self.facts)
        return line

    def as_check(self) -> CheckEntry:
        return CheckEntry(self.check, Action.REJECT, self.reason, facts=self.facts)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One decision: a refusal at MAIL FROM, the end of a message, or all recipients refused.

    `count` and `last_time` are set on the one line that stands for several refusals of an
    unregistered client (engine.audit.RefusalCounter).
    """

    time: str
    stage: str  # mail, rcpt or end
    mode: Mode
    action: Action
    outcome: str  # the action, or would_<action> when monitor mode let the message pass
    queue_id: str | None = None
    source: str | None = None
    client_address: str | None = None
    sasl_user: str | None = None
    cert_subject: str | None = None
    cert_issuer: str | None = None
    listener: str | None = None
    mail_from: str = ""
    recipients: tuple[str, ...] = ()
    recipient_refusals: tuple[RecipientRefusal, ...] = ()
    from_header: str | None = None
    message_id: str | None = None
    size: int | None = None
    checks: tuple[CheckEntry, ...] = ()
    reply: str | None = None
    count: int | None = None
    last_time: str | None = None
    schema: int = SCHEMA

    @property
    def attempts(self) -> int:
        """How many decisions this line stands for: a counted line `count`, any other one."""
        return self.count if self.count is not None and self.count > 0 else 1

    def deciding_check(self) -> CheckEntry | None:
        """The most severe refusing check (what explains a refusal or a would_*), else the
        recipient refusal that does."""
        refusing = [c for c in self.checks if c.action > Action.ACCEPT]
        refusing = refusing or [r.as_check() for r in self.recipient_refusals]
        return max(refusing, key=lambda c: c.action, default=None)

    def refusing_checks(self) -> list[CheckEntry]:
        """Every check that refused (or would have), and every recipient refusal."""
        refusing = [c for c in self.checks if c.action is not Action.ACCEPT]
        return refusing + [r.as_check() for r in self.recipient_refusals]

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            VERSION_KEY: self.schema,
            "time": self.time,
            "queue_id": self.queue_id,
            "stage": self.stage,
            "mode": self.mode.value,
            "source": self.source,
            "client_address": self.client_address,
            "sasl_user": self.sasl_user,
            "cert_subject": self.cert_subject,
            "cert_issuer": self.cert_issuer,
            "listener": self.listener,
            "mail_from": self.mail_from,
            "recipients": list(self.recipients),
            "recipient_refusals": [r.to_json() for r in self.recipient_refusals],
            "from": self.from_header,
            "message_id": self.message_id,
            "size": self.size,
            "checks": [c.to_json() for c in self.checks],
            "action": self.action.label,
            "outcome": self.outcome,
            "reply": self.reply,
        }
        if self.count is not None:
            line["count"] = self.count
            line["last_time"] = self.last_time
        return line


@dataclass(frozen=True, slots=True)
class AdminRecord:
    """An operator's act (the kill switch, the console's actions), with who did it and why.

    `details` are the act's further text fields (what it acted on), written as fields of their own.
    """

    time: str
    event: str  # source_disabled, source_enabled, ...
    actor: str
    source: str | None = None
    reason: str = ""
    details: Mapping[str, str] = field(default_factory=dict, hash=False)
    schema: int = SCHEMA

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            VERSION_KEY: self.schema,
            "time": self.time,
            "stage": "admin",
            "event": self.event,
            "source": self.source,
            "actor": self.actor,
            "reason": self.reason,
        }
        line.update((k, v) for k, v in self.details.items() if k not in line)
        return line


ADMIN_FIELDS = frozenset({VERSION_KEY, "time", "stage", "event", "source", "actor", "reason"})


AuditRecord = DecisionRecord | AdminRecord


def facts_json(facts: Facts) -> dict[str, Any]:
    return {key: _fact_json(value) for key, value in facts.items()}


def _fact_json(value: FactValue) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    return list(value) if isinstance(value, tuple) else value


def fact_text(facts: Facts, key: str) -> str | None:
    value = facts.get(key)
    return value if isinstance(value, str) else None


def fact_int(facts: Facts, key: str) -> int | None:
    value = facts.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def fact_names(facts: Facts, key: str) -> tuple[str, ...]:
    value = facts.get(key)
    return value if isinstance(value, tuple) else ()


def fact_counts(facts: Facts, key: str) -> Mapping[str, int]:
    value = facts.get(key)
    return value if isinstance(value, Mapping) else {}


# --- reading --------------------------------------------------------------------------------------


def parse_line(line: str) -> AuditRecord | None:
    """One line of the audit log as a record; None when it is none (a torn line, foreign text)."""
    try:
        fields = json.loads(line)
    except json.JSONDecodeError:
        return None
    return parse_record(fields) if isinstance(fields, dict) else None


def parse_record(fields: Mapping[str, Any]) -> AuditRecord | None:
    """A decoded line of any schema version as a record; None when it is no audit line.

    Missing fields take their defaults (v1 lines and hand-made ones omit some); a field present
    with the wrong type makes the line unreadable rather than half-read.
    """
    try:
        read = _Fields(fields)
        version = read.integer(VERSION_KEY) or LEGACY_SCHEMA
        if "action" in fields and "outcome" in fields:
            return _decision(read, version)
        if fields.get("stage") == "admin":
            return _admin(read, version)
    except _Malformed:
        return None
    return None


class _Malformed(ValueError):
    """A field holds a value of the wrong type."""


@dataclass(frozen=True, slots=True)
class _Fields:
    raw: Mapping[str, Any]

    def _typed(self, key: str, kind: type | tuple[type, ...]) -> Any:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise _Malformed(key)  # True is a JSON boolean, not a number
        return value

    def text(self, key: str) -> str:
        return self.optional_text(key) or ""

    def optional_text(self, key: str) -> str | None:
        value: str | None = self._typed(key, str)
        return value

    def integer(self, key: str) -> int | None:
        value: int | None = self._typed(key, int)
        return value

    def number(self, key: str) -> float:
        value: float | None = self._typed(key, (int, float))
        return float(value or 0)

    def flag(self, key: str, default: bool) -> bool:
        value: bool | None = self._typed(key, bool)
        return default if value is None else value

    def action(self, key: str) -> Action:
        label = self.text(key)
        if label not in ACTIONS:
            raise _Malformed(key)
        return ACTIONS[label]

    def texts(self, key: str) -> tuple[str, ...]:
        return tuple(self._list(key, str))

    def objects(self, key: str) -> list[_Fields]:
        return [_Fields(item) for item in self._list(key, dict)]

    def _list(self, key: str, kind: type) -> list[Any]:
        items = self.raw.get(key) or []
        if not isinstance(items, list) or not all(isinstance(item, kind) for item in items):
            raise _Malformed(key)
        return items

    def facts(self) -> dict[str, FactValue]:
        """Facts of the shape this reader knows; others (a later version's) are left out."""
        raw = self.raw.get("facts") or {}
        if not isinstance(raw, dict):
            raise _Malformed("facts")
        return {k: v for k, v in ((k, _fact_value(v)) for k, v in raw.items()) if v is not None}


def _fact_value(value: Any) -> FactValue | None:
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    if isinstance(value, dict) and all(
        isinstance(n, int) and not isinstance(n, bool) for n in value.values()
    ):
        return {str(name): count for name, count in value.items()}
    return None


def _admin(read: _Fields, version: int) -> AdminRecord:
    details = {k: v for k, v in read.raw.items() if k not in ADMIN_FIELDS and isinstance(v, str)}
    return AdminRecord(
        read.text("time"),
        read.text("event"),
        read.text("actor"),
        read.optional_text("source"),
        read.text("reason"),
        details,
        version,
    )


def _decision(read: _Fields, version: int) -> DecisionRecord:
    mode = MODES.get(read.text("mode"))
    if mode is None:
        raise _Malformed("mode")
    legacy = _legacy_facts if version == LEGACY_SCHEMA else _stored_facts
    return DecisionRecord(
        time=read.text("time"),
        stage=read.text("stage"),
        mode=mode,
        action=read.action("action"),
        outcome=read.text("outcome"),
        queue_id=read.optional_text("queue_id"),
        source=read.optional_text("source"),
        client_address=read.optional_text("client_address"),
        sasl_user=read.optional_text("sasl_user"),
        cert_subject=read.optional_text("cert_subject"),
        cert_issuer=read.optional_text("cert_issuer"),
        listener=read.optional_text("listener"),
        mail_from=read.text("mail_from"),
        recipients=read.texts("recipients"),
        recipient_refusals=tuple(
            RecipientRefusal(
                r.text("recipient"),
                r.text("check"),
                r.text("reason"),
                r.flag("applied", True),
                legacy(r, r.text("check")),
            )
            for r in read.objects("recipient_refusals")
        ),
        from_header=read.optional_text("from"),
        message_id=read.optional_text("message_id"),
        size=read.integer("size"),
        checks=tuple(
            CheckEntry(
                c.text("name"),
                c.action("action"),
                c.text("reason"),
                c.number("ms"),
                c.flag("error", False),
                legacy(c, c.text("name")),
            )
            for c in read.objects("checks")
        ),
        reply=read.optional_text("reply"),
        count=read.integer("count"),
        last_time=read.optional_text("last_time"),
        schema=version,
    )


def _stored_facts(entry: _Fields, name: str) -> Facts:
    return entry.facts()


# Version 1 lines predate facts. Their wording is frozen (no writer produces v1 any more), so the
# two facts the v1 readers took from it are recovered here, once, for reports over older logs.
V1_RATE_LIMIT = re.compile(r"limit of (\d+) (\w+) per (\w+)")
V1_DKIM_SIGNED = re.compile(r"signed d=(\S+) s=(\S+)")
V1_SELECTOR = re.compile(r"([^\s,()]+)\(([\w-]+)\)")


def _legacy_facts(entry: _Fields, name: str) -> Facts:
    recover = V1_RECOVERY.get(name)
    return recover(entry.text("reason")) if recover else {}


def _v1_rate_limit(reason: str) -> Facts:
    found = V1_RATE_LIMIT.search(reason)
    if found is None:
        return {}
    return {"kind": found[2], "window": found[3], "limit": int(found[1])}


def _v1_dkim(reason: str) -> Facts:
    found = V1_DKIM_SIGNED.fullmatch(reason)
    if found is None:
        return {}
    selectors = V1_SELECTOR.findall(found[2])
    return {
        "domain": found[1],
        "selectors": tuple(selector for selector, _ in selectors),
        "algorithms": tuple(algorithm for _, algorithm in selectors),
    }


V1_RECOVERY: dict[str, Callable[[str], Facts]] = {
    "rate_limit": _v1_rate_limit,
    "dkim": _v1_dkim,
}


# --- what readers take from the facts (metrics, report) -------------------------------------------


def dkim_algorithms(entry: CheckEntry) -> tuple[str, ...]:
    """One algorithm per DKIM signature the entry records (transforms/signing.py)."""
    return fact_names(entry.facts, "algorithms") if entry.name == "dkim" else ()


def rate_limit(entry: CheckEntry) -> tuple[str, str, int] | None:
    """(kind, window, limit) of the rate limit an entry ran into (checks/ratelimit.py)."""
    kind, window = fact_text(entry.facts, "kind"), fact_text(entry.facts, "window")
    limit = fact_int(entry.facts, "limit")
    if entry.name != "rate_limit" or entry.error or not kind or not window or limit is None:
        return None
    return kind, window, limit


def rate_limit_hit(entry: CheckEntry) -> str | None:
    """'recipients_per_hour' when the entry is a refusal until the window moves (a 451)."""
    found = rate_limit(entry)
    if found is None or fact_int(entry.facts, "retry_after") is None:
        return None
    return f"{found[0]}_per_{found[1]}"
