"""Prometheus metrics: counted from the audit records, served by the supervisor on loopback.

Design: the milter's supervisor forks worker processes, and each worker decides mail. Every worker
counts into prometheus_client's *multiprocess* files (PROMETHEUS_MULTIPROC_DIR, one mmap file per
process); the supervisor, which handles no mail, serves the sum of all files on `[metrics]
address:port`. The supervisor sets the directory (emptied at start, so counters start at zero like
any restarted exporter) before it forks, so every worker inherits it. A dead worker's file stays:
its counts remain in the totals instead of making counters go backwards. Only counters and
histograms are written by workers; the state gauges (disabled sources, backend up) are read from
the state store at scrape time by the supervisor, so they are exact on every node.

The numbers come from one observer (registry.OBSERVERS) that sees each audit record after it is
written: one place that knows the record's shape, and metrics can never disagree with the audit
log. Label values are bounded: source names come from the configuration, check names from code.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from relayguard.config import Config
from relayguard.core.audit_record import (
    AuditRecord,
    DecisionRecord,
    dkim_algorithms,
    rate_limit_hit,
)
from relayguard.dkim import status as dkim_status
from relayguard.dkim.status import DkimStatusError
from relayguard.state import StateUnavailable
from relayguard.state.factory import store_for

log = logging.getLogger(__name__)

STATE_CHECKS = frozenset({"kill_switch", "rate_limit", "suppression"})
SCANNER_CHECKS = frozenset({"clamav", "yara", "dlp", "urls"})
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Metrics:
    """The counters of this process, created once (after the multiprocess directory is set)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        kwargs: dict[str, Any] = {"registry": registry}
        self.messages = Counter(
            "relayguard_messages",
            "Decisions (one per transaction) by source, final action and outcome",
            ["source", "action", "outcome"],
            **kwargs,
        )
        self.message_bytes = Counter(
            "relayguard_message_bytes", "Size of messages that reached end of data", ["source"],
            **kwargs,
        )  # fmt: skip
        self.check_duration = Histogram(
            "relayguard_check_duration_seconds",
            "Time each check took",
            ["check"],
            buckets=DURATION_BUCKETS,
            **kwargs,
        )
        self.check_errors = Counter(
            "relayguard_check_errors", "Checks that failed (error verdict)", ["check"], **kwargs
        )
        self.scanner_errors = Counter(
            "relayguard_scanner_errors", "Content scanners that could not scan", ["scanner"],
            **kwargs,
        )  # fmt: skip
        self.state_errors = Counter(
            "relayguard_state_backend_errors",
            "State backend unavailable (kill switch, rate limits, suppression list)",
            ["backend"],
            **kwargs,
        )
        self.rate_limit_hits = Counter(
            "relayguard_rate_limit_hits",
            "Messages or recipients refused (or would be, in monitor mode) by a rate limit",
            ["source", "limit"],
            **kwargs,
        )
        self.dkim_signatures = Counter(
            "relayguard_dkim_signatures", "DKIM signatures added, by algorithm", ["algorithm"],
            **kwargs,
        )  # fmt: skip
        self.anomalies = Counter(
            "relayguard_anomalies",
            "Anomaly rules that fired (anomaly/), by source, rule and action taken",
            ["source", "rule", "action"],
            **kwargs,
        )


_lock = threading.Lock()
_process_metrics: dict[int, _Metrics] = {}


def _metrics() -> _Metrics:
    with _lock:
        found = _process_metrics.get(os.getpid())
        if found is None:
            found = _process_metrics[os.getpid()] = _Metrics(None)  # the default registry
        return found


def count_anomaly(source: str, rule: str, action: str) -> None:
    """The anomaly observer reports here: its findings are not in the decision's audit record
    (a `monitor` finding has no audit line at all)."""
    _metrics().anomalies.labels(source, rule, action).inc()


class MetricsObserver:
    """Turns each audit record into counter increments: typed fields and the checks' facts, never
    the wording of a reason."""

    def __init__(self, backend: str | None, metrics: Callable[[], _Metrics] = _metrics) -> None:
        self.backend = backend
        self.metrics = metrics

    def __call__(self, record: AuditRecord) -> None:
        if not isinstance(record, DecisionRecord):
            return  # an administrative line (kill switch), not a mail decision
        m = self.metrics()
        source = record.source or "none"
        m.messages.labels(source, record.action.label, record.outcome).inc()
        if record.size:
            m.message_bytes.labels(source).inc(record.size)
        for check in record.checks:
            m.check_duration.labels(check.name).observe(check.ms / 1000)
            if check.error:
                self._count_error(m, check.name)
            for algorithm in dkim_algorithms(check):
                m.dkim_signatures.labels(algorithm).inc()
        for entry in [*record.checks, *(r.as_check() for r in record.recipient_refusals)]:
            limit = rate_limit_hit(entry)
            if limit is not None:
                m.rate_limit_hits.labels(source, limit).inc()

    def _count_error(self, m: _Metrics, name: str) -> None:
        m.check_errors.labels(name).inc()
        if name in STATE_CHECKS:
            m.state_errors.labels(self.backend or "none").inc()
        if name in SCANNER_CHECKS:
            m.scanner_errors.labels(name).inc()


def observers(config: Config) -> Sequence[MetricsObserver]:
    if config.metrics.port is None:
        return ()
    return (MetricsObserver(config.state.backend if config.state else None),)


class StateCollector(Collector):
    """Read at scrape time from the state store: what every node sees, not what one counted."""

    def __init__(self, current: Callable[[], Config]) -> None:
        self.current = current

    def collect(self) -> Iterator[Metric]:
        config = self.current()
        store = store_for(config)
        up = GaugeMetricFamily("relayguard_state_up", "1 when the state backend answered")
        count = GaugeMetricFamily("relayguard_sources_disabled", "Sources the kill switch stops")
        each = GaugeMetricFamily(
            "relayguard_source_disabled", "1 for each disabled source", labels=["source"]
        )
        if store is not None:
            try:
                now = time.time()  # an automatic lock past its expiry stops nothing
                disabled = [d for d in store.all_disabled() if d.in_force(now)]
            except StateUnavailable as exc:
                log.warning("metrics: %s", exc)
                up.add_metric([], 0)
            else:
                up.add_metric([], 1)
                count.add_metric([], len(disabled))
                for entry in disabled:
                    each.add_metric([entry.source], 1)
        yield from (up, count, each)


class DkimStatusCollector(Collector):
    """Read at scrape time from `[metrics] dkim_status_file`, which `relayguard dkim verify-dns
    --metrics-file` writes: the milter never asks DNS about its own keys. A missing or broken
    file gives no DKIM gauges (the stale-check alert then fires), never a failed scrape."""

    def __init__(self, current: Callable[[], Config]) -> None:
        self.current = current

    def collect(self) -> Iterator[Metric]:
        path = self.current().metrics.dkim_status_file
        if path is None:
            return
        try:
            domains = dkim_status.read_status(path)
        except FileNotFoundError:
            log.warning("metrics: %s: no DKIM status file yet (relayguard dkim verify-dns)", path)
            return
        except DkimStatusError as exc:
            log.warning("metrics: %s", exc)
            return
        match = GaugeMetricFamily(
            "relayguard_dkim_dns_match",
            "1 when DNS served the key on disk at the last verify-dns",
            labels=["domain", "selector"],
        )
        created = GaugeMetricFamily(
            "relayguard_dkim_key_created_timestamp_seconds",
            "When each DKIM key was generated (Unix time)",
            labels=["domain", "selector", "algorithm", "status"],
        )
        checked = GaugeMetricFamily(
            "relayguard_dkim_dns_check_timestamp_seconds",
            "When verify-dns last checked the domain (Unix time)",
            labels=["domain"],
        )
        for domain in domains:
            checked.add_metric([domain.domain], domain.checked)
            for key in domain.keys:
                match.add_metric([domain.domain, key.selector], key.dns_match)
                labels = [domain.domain, key.selector, key.algorithm, key.status]
                created.add_metric(labels, key.created)
        yield from (match, created, checked)


@dataclass
class Exporter:
    server: Any
    directory: Path
    temporary: bool

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.temporary:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_exporter(config: Config, current: Callable[[], Config]) -> Exporter | None:
    """In the supervisor, before it forks workers: the shared directory and the HTTP endpoint."""
    settings = config.metrics
    if settings.port is None:
        return None
    temporary = settings.directory is None
    directory = settings.directory or Path(tempfile.mkdtemp(prefix="relayguard-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    # prometheus_client picks its value class when imported; the directory is set only now.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    registry.register(StateCollector(current))
    registry.register(DkimStatusCollector(current))
    server, _ = start_http_server(settings.port, settings.address, registry)
    log.info("metrics on http://%s:%d/metrics", settings.address, settings.port)
    return Exporter(server, directory, temporary)
