"""Kill switch and rate-limit checks, their configuration, the metrics observer and the report."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from relayguard import metrics
from relayguard.checks import Subject
from relayguard.checks.killswitch import KillSwitch
from relayguard.checks.ratelimit import RateLimit
from relayguard.cli import report
from relayguard.config import Config, load_config
from relayguard.core.audit_record import AdminRecord, parse_record
from relayguard.core.errors import ConfigError
from relayguard.core.message import Client, Envelope, Message
from relayguard.core.verdict import Action
from relayguard.state import StateUnavailable
from relayguard.state.sqlite import SqliteStore
from relayguard.state.window import evaluate

pytestmark = pytest.mark.unit

STATE = """
[state]
backend = "sqlite"
path = "{path}"
"""
LIMITS = "rate_limits = { messages_per_minute = 2, bytes_per_hour = 1000 }\n"


@pytest.fixture
def config(tmp_path: Path, write_config: Callable[..., Path]) -> Config:
    text = (
        write_config().read_text().replace("max_recipients = 3\n", "max_recipients = 3\n" + LIMITS)
    )
    path = tmp_path / "state.toml"
    path.write_text(text + STATE.format(path=tmp_path / "state.sqlite3"))
    return load_config(path)


class DownStore:
    """A backend that cannot be reached."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def fail(*args: object) -> Any:
            raise StateUnavailable("Redis state redis://127.0.0.1:1/0: Connection refused")

        return fail


def subject(config: Config, size: int = 0) -> Subject:
    source = config.source("scanner-hq")
    envelope = Envelope(Client("127.0.0.1", sasl_user="scanner-hq"), "scanner@example.com")
    message = Message(envelope, (), b"", size) if size else None
    return Subject(config, source, envelope, message=message)


def test_config_reads_state_rate_limits_and_metrics(tmp_path: Path, config: Config) -> None:
    assert config.state is not None
    assert (config.state.backend, config.state.path) == ("sqlite", tmp_path / "state.sqlite3")
    assert config.state.failure_action is Action.TEMPFAIL
    source = config.source("scanner-hq")
    assert source is not None
    assert source.rate_limits.of("messages") == (("minute", 60, 2),)
    assert source.rate_limits.of("bytes") == (("hour", 3600, 1000),)
    assert config.metrics.port is None


def test_config_refuses_doubtful_state_settings(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[state]\nbackend = "etcd"\nredis_url = "http://x"\npath = "relative.db"\n'
        '[metrics]\nport = 9100\naddress = "0.0.0.0"\n'
        '[[sources]]\nname = "a"\nsasl_users = ["a"]\nsenders = ["a@example.com"]\n'
        "rate_limits = { messages_per_week = 3, bytes_per_day = 0 }\n"
        '[[sources]]\nname = "b"\nsasl_users = ["b"]\nsenders = ["b@example.com"]\n'
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    text = str(error.value)
    assert "state.backend: must be one of 'sqlite', 'redis', got 'etcd'" in text
    assert "state.redis_url: 'http://x' is not a redis://" in text
    assert "state.path: must be an absolute path" in text
    assert "metrics.address: '0.0.0.0': metrics are served on a loopback address only" in text
    assert "sources[0].rate_limits.messages_per_week: unknown key" in text
    assert "sources[0].rate_limits.bytes_per_day: must be between 1 and" in text


def test_rate_limits_need_a_state_section(tmp_path: Path) -> None:
    path = tmp_path / "nostate.toml"
    path.write_text(
        '[[sources]]\nname = "a"\nsasl_users = ["a"]\nsenders = ["a@example.com"]\n' + LIMITS
    )
    with pytest.raises(ConfigError, match=r"sources\[0\]\.rate_limits: rate limits need a"):
        load_config(path)


def test_kill_switch_refuses_a_disabled_source(config: Config, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "ks.sqlite3")
    check = KillSwitch(store)
    assert check(subject(config)).action is Action.ACCEPT
    store.disable("scanner-hq", "compromised", "alice", 0)
    verdict = check(subject(config))
    assert (verdict.action, str(verdict.smtp_reply)) == (
        Action.REJECT,
        "550 5.7.1 source scanner-hq is disabled: compromised",
    )


def test_kill_switch_admits_a_source_whose_automatic_lock_expired(
    config: Config, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "ks.sqlite3")
    now = [1000.0]
    check = KillSwitch(store, clock=lambda: now[0])
    store.disable("scanner-hq", "auto-lock: volume burst", "anomaly", 900.0, expires=1600.0)
    assert check(subject(config)).action is Action.REJECT
    now[0] = 1600.0
    assert check(subject(config)).action is Action.ACCEPT


@pytest.mark.parametrize("action", [Action.TEMPFAIL, Action.REJECT])
def test_backend_down_is_an_explicit_error_verdict(config: Config, action: Action) -> None:
    for run in (KillSwitch(DownStore(), action), RateLimit(DownStore(), action).at_mail):
        verdict = run(subject(config))
        assert (verdict.action, verdict.error) == (action, True)
        assert verdict.reason.startswith("state backend unavailable: Redis state")
        if action is Action.TEMPFAIL:
            assert str(verdict.smtp_reply).startswith("451 4.7.0 temporary failure")


def test_rate_limit_reply_names_the_limit_and_when_to_retry(config: Config, tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    limiter = RateLimit(SqliteStore(tmp_path / "rl.sqlite3"), clock=lambda: now[0])
    assert limiter.at_mail(subject(config)).reason == "messages 1/2 per minute"
    assert limiter.at_mail(subject(config)).action is Action.ACCEPT
    now[0] += 30
    verdict = limiter.at_mail(subject(config))
    assert str(verdict.smtp_reply) == (
        "451 4.7.1 source scanner-hq is over its limit of 2 messages per minute; retry in 31 s"
    )
    assert limiter.at_rcpt(subject(config)).reason == "no recipients limit"


def test_bytes_are_counted_at_end_and_a_message_over_the_quota_is_refused(
    config: Config, tmp_path: Path
) -> None:
    limiter = RateLimit(SqliteStore(tmp_path / "b.sqlite3"), clock=lambda: 1_800_000_000.0)
    assert limiter.at_end(subject(config, size=600)).action is Action.ACCEPT
    over = limiter.at_end(subject(config, size=600))
    assert over.action is Action.TEMPFAIL and over.reply is not None
    assert over.reply.status == "4.7.1"
    huge = limiter.at_end(subject(config, size=5000))
    assert (huge.action, str(huge.smtp_reply)[:10]) == (Action.REJECT, "552 5.3.4 ")


def test_window_forgets_each_bucket_exactly_one_window_after_it_ends() -> None:
    buckets = {100: 5}  # width 1 s (60 s window): bucket 100 covers [100, 101)
    assert evaluate(buckets, 1, 5, 60, 160.99).exceeded
    assert not evaluate(buckets, 1, 5, 60, 161.0).exceeded
    assert evaluate(buckets, 1, 5, 60, 150.5).retry_after == pytest.approx(10.5)


RECORD: dict[str, Any] = {
    "v": 2, "time": "2026-11-23T10:00:00.000Z", "stage": "end", "mode": "enforce", "source": "erp",
    "client_address": "192.0.2.1", "sasl_user": "erp", "cert_subject": None,
    "mail_from": "erp@example.com", "recipients": ["a@example.com"],
    "recipient_refusals": [{"recipient": "b@example.com", "check": "rate_limit", "applied": True,
                            "reason": "source erp is over its limit of 5 recipients per hour;"
                                      " retry in 3 s",
                            "facts": {"kind": "recipients", "window": "hour", "limit": 5,
                                      "retry_after": 3}}],
    "from": "erp@example.com", "size": 2048,
    "checks": [
        {"name": "kill_switch", "action": "accept", "reason": "enabled", "ms": 0.05},
        {"name": "clamav", "action": "tempfail", "reason": "clamd down", "ms": 3.0,
         "error": True},
        {"name": "dkim", "action": "accept", "reason": "signed d=example.com s=a(rsa),b(ed25519)",
         "ms": 1.5, "facts": {"domain": "example.com", "selectors": ["a", "b"],
                              "algorithms": ["rsa", "ed25519"]}},
    ],
    "action": "tempfail", "outcome": "tempfail", "reply": "451 4.7.0 x",
}  # fmt: skip


def test_metrics_observer_counts_an_audit_record() -> None:
    registry = CollectorRegistry()
    counters = metrics._Metrics(registry)
    observe = metrics.MetricsObserver("redis", lambda: counters)
    record = parse_record(RECORD)
    assert record is not None
    observe(record)
    observe(AdminRecord(RECORD["time"], "source_disabled", "alice", "erp"))  # not a decision

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("relayguard_messages_total", source="erp", action="tempfail",
                 outcome="tempfail") == 1  # fmt: skip
    assert value("relayguard_message_bytes_total", source="erp") == 2048
    assert value("relayguard_scanner_errors_total", scanner="clamav") == 1
    assert value("relayguard_check_errors_total", check="clamav") == 1
    assert value("relayguard_dkim_signatures_total", algorithm="ed25519") == 1
    assert value("relayguard_rate_limit_hits_total", source="erp",
                 limit="recipients_per_hour") == 1  # fmt: skip
    assert value("relayguard_check_duration_seconds_count", check="kill_switch") == 1


def test_report_text_and_self_contained_html(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    accepted = {**RECORD, "action": "accept", "outcome": "accept", "checks": RECORD["checks"][2:],
                "recipient_refusals": []}  # fmt: skip
    refused = {**RECORD, "time": "2026-11-24T09:00:00Z", "source": None, "stage": "mail",
               "action": "reject", "outcome": "reject", "recipient_refusals": [],
               "checks": [{"name": "yara", "action": "reject", "reason": "rule Phish_Invoice",
                           "ms": 2}]}  # fmt: skip
    admin = {"time": "2026-11-24T09:30:00Z", "stage": "admin", "event": "source_disabled",
             "source": "erp", "actor": "alice", "reason": "<script>alert(1)</script>"}  # fmt: skip
    log.write_text("".join(json.dumps(r) + "\n" for r in (RECORD, accepted, refused, admin)))
    built = report.build(log)
    text = report.format_text(built)
    assert "DKIM coverage: 1 of 1 delivered signed (100.0%); by algorithm:" in text
    assert "yara: rule Phish_Invoice" in text
    assert "source_disabled erp by alice" in text
    page = report.format_html(built)
    assert page.count("<svg") >= 5
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert not re.search(r"(src|href)=|@import|url\(|https?://", page)
    assert report.format_text(report.build(log, "2026-11-24")).count("\n  ") >= 1
    assert report.build(log, "2026-11-24").decisions == 1


def test_grafana_dashboard_uses_only_metrics_the_milter_exports() -> None:
    root = Path(__file__).parents[2]
    dashboard = json.loads((root / "monitoring/grafana/relayguard.json").read_text())
    used = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"relayguard_[a-z_]+", target["expr"])
    }
    source = (root / "milter/relayguard/metrics.py").read_text()
    exported = set(re.findall(r'"(relayguard_[a-z_]+)"', source))
    assert used and used <= exported, used - exported


def test_kill_switch_binds_in_monitor_mode_too(tmp_path: Path, config: Config) -> None:
    """Monitor mode relaxes policy; a disabled (compromised) source is still refused."""
    from relayguard.core.verdict import Mode
    from relayguard.engine.pipeline import combine

    store = SqliteStore(tmp_path / "monitor.sqlite3")
    store.disable("scanner-hq", "compromised", "alice", 0)
    verdict = KillSwitch(store)(subject(config))
    decision = combine([verdict], Mode.MONITOR)
    assert decision.action is Action.REJECT
    assert str(decision.reply) == "550 5.7.1 source scanner-hq is disabled: compromised"


def test_dry_run_does_not_use_up_the_quota(config: Config, tmp_path: Path) -> None:
    from dataclasses import replace

    store = SqliteStore(tmp_path / "dry.sqlite3")
    limiter = RateLimit(store)
    for _ in range(5):
        verdict = limiter.at_mail(replace(subject(config), dry_run=True))
        assert verdict.action is Action.ACCEPT
    assert limiter.at_mail(subject(config)).reason == "messages 1/2 per minute"
