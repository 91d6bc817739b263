"""The anomaly detector as an observer: it sees each decision after its audit line is written.

It turns the typed record into what the detector needs (counts, recipient domains, which checks
refused; never content), runs the detector, and reports what fired: `monitor` in the metric and
the log, `alert` also as an audit line (`anomaly_alert`), `lock` as the kill switch's own audit
line (`source_disabled`, by the detector), so `relayguard sources` and the console show it like an
operator's lock. The lock is already in the state store when the line is written: the source's
next MAIL FROM is refused (checks/killswitch.py) on every process and node.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from relayguard.anomaly.detector import ACTOR, LOCK_PREFIX, Detector, Finding, Traffic
from relayguard.checks.killswitch import NAME as KILL_SWITCH
from relayguard.config import Config
from relayguard.config.anomaly import RuleAction
from relayguard.core.audit_record import AdminRecord, AuditRecord, DecisionRecord
from relayguard.core.errors import AuditError
from relayguard.core.verdict import Action, Mode
from relayguard.engine.audit import AuditLog, now
from relayguard.state import StateUnavailable
from relayguard.state.factory import store_for

log = logging.getLogger(__name__)

MESSAGE_STAGES = frozenset({"end", "rcpt"})  # a message tried (delivered, or refused whole)


def traffic_from_record(record: DecisionRecord) -> Traffic | None:
    """What the decision says about its source's behaviour; None when it says nothing (no
    source, or a source the kill switch already stops)."""
    if record.source is None:
        return None
    if any(c.name == KILL_SWITCH and c.action is Action.REJECT for c in record.checks):
        return None
    refusals = frozenset(
        c.name for c in record.checks if c.action >= Action.QUARANTINE and not c.error
    )
    monitor = record.mode is Mode.MONITOR
    if record.stage not in MESSAGE_STAGES:  # refused at MAIL FROM: no message, maybe a refusal
        return Traffic(record.source, 0, (), refusals, monitor) if refusals else None
    refused = tuple(r.recipient for r in record.recipient_refusals if r.applied)
    return Traffic(record.source, 1, record.recipients + refused, refusals, monitor)


def _count_anomaly(source: str, rule: str, action: str) -> None:
    """The metric, imported on first use: prometheus_client is for processes that count."""
    from relayguard import metrics  # noqa: PLC0415

    metrics.count_anomaly(source, rule, action)


class AnomalyObserver:
    def __init__(
        self,
        detector: Detector,
        audit: AuditLog,
        count: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.detector = detector
        self.audit = audit
        self.count = count or _count_anomaly
        weakref.finalize(self, audit.close)

    def __call__(self, record: AuditRecord) -> None:
        if not isinstance(record, DecisionRecord):
            return
        traffic = traffic_from_record(record)
        if traffic is None:
            return
        try:
            findings = self.detector.observe(traffic)
        except StateUnavailable as exc:
            log.warning("anomaly detector: %s", exc)
            return
        for finding in findings:
            self.report(finding)

    def report(self, finding: Finding) -> None:
        self.count(finding.source, finding.rule, finding.action.value)
        if finding.action is RuleAction.MONITOR:
            log.info("anomaly (monitor) %s: %s", finding.source, finding.reason)
            return
        log.warning("anomaly (%s) %s: %s", finding.action.value, finding.source, finding.reason)
        details = {"rule": finding.rule}
        if finding.action is RuleAction.LOCK:
            if finding.expires is not None:
                expires = datetime.fromtimestamp(finding.expires, UTC)
                details["expires"] = expires.isoformat(timespec="seconds").replace("+00:00", "Z")
            event, reason = "source_disabled", LOCK_PREFIX + finding.reason
        else:
            event, reason = "anomaly_alert", finding.reason
        line = AdminRecord(now(), event, ACTOR, finding.source, reason, details)
        try:
            self.audit.write(line)
        except AuditError as exc:
            log.error("anomaly %s of %s not audited: %s", finding.rule, finding.source, exc)


def observers(config: Config) -> Sequence[AnomalyObserver]:
    store = store_for(config)
    if config.anomaly is None or store is None:
        return ()
    return (AnomalyObserver(Detector(store, config.anomaly), AuditLog(config.relay.audit_log)),)
