"""The anomaly detector on the real SQLite store with a simulated clock, its observer on typed
audit records, and the [anomaly] section."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from relayguard.anomaly.detector import ACTOR, Detector, Traffic
from relayguard.config import load_config
from relayguard.config.anomaly import AnomalySettings, RuleAction
from relayguard.core.audit_record import CheckEntry, DecisionRecord, RecipientRefusal
from relayguard.core.errors import ConfigError
from relayguard.core.verdict import Action, Mode
from relayguard.engine.anomaly_observer import AnomalyObserver, traffic_from_record
from relayguard.engine.audit import AuditLog
from relayguard.state.sqlite import SqliteStore

pytestmark = pytest.mark.unit

DAY = 86400.0
T0 = 1_767_225_600.0 + 10 * 3600  # 10:00 UTC
ESTABLISHED = T0 + 40 * DAY  # past the 35-day learning period


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "state.sqlite3")
    yield opened
    opened.close()


def detector(store: SqliteStore, clock: Clock, settings: AnomalySettings | None = None) -> Detector:
    return Detector(store, settings or AnomalySettings(), clock)


def scans(found: Detector, clock: Clock, days: int, start: float = T0) -> None:
    """Two scans a day to one colleague."""
    for day in range(days):
        for hour in (0, 3):
            clock.now = start + day * DAY + hour * 3600
            assert found.observe(Traffic("printer", recipients=("a@example.com",))) == []


def burst(found: Detector, clock: Clock, recipients: int, start: float) -> list[str]:
    """One message every 10 s to `recipients` colleagues; the findings' actions and reasons."""
    seen = []
    for i in range(30):
        clock.now = start + i * 10
        addresses = tuple(f"u{i}-{n}@example.com" for n in range(recipients))
        findings = found.observe(Traffic("printer", 1, addresses))
        seen += [f"{f.action.value}: {f.reason}" for f in findings]
    return seen


def test_an_established_source_that_bursts_is_locked_with_the_rule_and_figures(
    store: SqliteStore,
) -> None:
    clock = Clock()
    found = detector(store, clock)
    scans(found, clock, 40)
    seen = burst(found, clock, 10, ESTABLISHED)
    assert seen == ["lock: volume burst: 60 recipients in 10 min, usual peak 1"]
    locked = store.disabled("printer")
    assert locked is not None
    assert locked.reason == "auto-lock: volume burst: 60 recipients in 10 min, usual peak 1"
    assert (locked.actor, locked.expires) == (ACTOR, None)


def test_a_learning_source_only_alerts(store: SqliteStore) -> None:
    clock = Clock()
    found = detector(store, clock)
    scans(found, clock, 3)
    seen = burst(found, clock, 10, T0 + 3 * DAY)
    assert seen == [
        "alert: volume burst: 60 recipients in 10 min, usual peak 1 (would lock: learning period)"
    ]
    assert store.disabled("printer") is None


def test_a_lock_with_an_expiry_lifts_itself(store: SqliteStore) -> None:
    clock = Clock()
    settings = AnomalySettings()
    found = detector(
        store, clock, replace(settings, volume=replace(settings.volume, lock_expiry=600))
    )
    scans(found, clock, 40)
    assert burst(found, clock, 10, ESTABLISHED)[0].startswith("lock: volume burst")
    locked = store.disabled("printer")
    assert locked is not None and locked.expires == locked.since + 600
    assert locked.in_force(locked.since + 599) and not locked.in_force(locked.since + 600)


def test_a_burst_that_fired_is_not_learnt(store: SqliteStore) -> None:
    clock = Clock()
    settings = AnomalySettings()
    alerting = replace(settings, volume=replace(settings.volume, action=RuleAction.ALERT))
    found = detector(store, clock, alerting)
    scans(found, clock, 40)
    first = burst(found, clock, 10, ESTABLISHED)
    later = burst(found, clock, 10, ESTABLISHED + DAY)  # a day later, after the quiet hour
    assert first == ["alert: volume burst: 60 recipients in 10 min, usual peak 1"]
    assert later == first  # the usual peak is still that of the scans


def test_alerts_are_not_repeated_within_the_quiet_period(store: SqliteStore) -> None:
    clock = Clock()
    settings = AnomalySettings()
    alerting = replace(settings, volume=replace(settings.volume, action=RuleAction.ALERT))
    found = detector(store, clock, alerting)
    scans(found, clock, 40)
    assert len(burst(found, clock, 10, ESTABLISHED)) == 1
    assert burst(found, clock, 10, ESTABLISHED + 1800) == []  # same hour: no new alert


def test_monitor_mode_never_locks(store: SqliteStore) -> None:
    clock = Clock(ESTABLISHED)
    found = detector(store, clock)
    seen = []
    for i in range(5):
        clock.now = ESTABLISHED + i
        traffic = Traffic("erp", 1, ("a@example.com",), frozenset({"clamav"}), monitor=True)
        seen += [(f.action, f.reason) for f in found.observe(traffic)]
    assert seen == [
        (
            RuleAction.ALERT,
            "refusal streak: 5 messages refused in 10 min (last by clamav)"
            " (would lock: monitor mode)",
        )
    ]
    assert store.disabled("erp") is None


def test_refusal_streak_locks_a_new_source_too_and_never_replaces_an_operator_lock(
    store: SqliteStore,
) -> None:
    clock = Clock()
    found = detector(store, clock)
    for i in range(5):
        clock.now = T0 + i * 60
        refused = frozenset({"dlp"}) if i % 2 else frozenset({"clamav", "yara"})
        found.observe(Traffic("scanner", 1, ("a@example.com",), refused))
    locked = store.disabled("scanner")
    assert locked is not None
    assert locked.reason == (
        "auto-lock: refusal streak: 5 messages refused in 10 min (last by clamav, yara)"
    )
    store.disable("erp", "ticket 4711", "alice", T0)
    for i in range(5):
        clock.now = T0 + i
        found.observe(Traffic("erp", 1, ("a@example.com",), frozenset({"clamav"})))
    manual = store.disabled("erp")
    assert manual is not None and manual.reason == "ticket 4711"


def test_two_processes_learn_together(tmp_path: Path) -> None:
    """Two stores on one file (two milter processes): every message counts once."""
    clock = Clock(ESTABLISHED)
    first, second = (SqliteStore(tmp_path / "state.sqlite3") for _ in range(2))
    try:
        detectors = [detector(first, clock), detector(second, clock)]
        for i in range(21):  # the 21st message crosses the floor of 20 messages per 10 min
            clock.now = T0 + i
            found = detectors[i % 2].observe(Traffic("erp", 1, ("a@example.com",)))
            assert [f.rule for f in found] == (["volume"] if i == 20 else [])
    finally:
        first.close()
        second.close()


# --- the observer ----------------------------------------------------------------------------


def decision(**fields: object) -> DecisionRecord:
    base: dict[str, object] = {
        "time": "2026-01-01T10:00:00.000Z",
        "stage": "end",
        "mode": Mode.ENFORCE,
        "action": Action.ACCEPT,
        "outcome": "accept",
        "source": "printer",
        "recipients": ("a@example.com",),
    }
    return DecisionRecord(**{**base, **fields})  # type: ignore[arg-type]


def test_traffic_from_records() -> None:
    refused = decision(
        recipients=("a@example.com",),
        recipient_refusals=(
            RecipientRefusal("b@other.example", "recipients", "not allowed", True),
            RecipientRefusal("a@example.com", "suppression", "unsubscribed", False),
        ),
        checks=(
            CheckEntry("clamav", Action.REJECT, "Eicar"),
            CheckEntry("yara", Action.TEMPFAIL, "scanner down", error=True),
            CheckEntry("dlp", Action.TAG, "tagged"),
        ),
        mode=Mode.MONITOR,
    )
    assert traffic_from_record(refused) == Traffic(
        "printer", 1, ("a@example.com", "b@other.example"), frozenset({"clamav"}), True
    )
    spoof = decision(
        stage="mail", recipients=(), checks=(CheckEntry("envelope_sender", Action.REJECT),)
    )
    assert traffic_from_record(spoof) == Traffic("printer", 0, (), frozenset({"envelope_sender"}))
    assert traffic_from_record(decision(stage="mail", recipients=())) is None
    locked = decision(stage="mail", checks=(CheckEntry("kill_switch", Action.REJECT, "disabled"),))
    assert traffic_from_record(locked) is None
    assert traffic_from_record(decision(source=None)) is None


def test_observer_audits_a_lock_like_an_operators_and_counts_it(
    store: SqliteStore, tmp_path: Path
) -> None:
    clock = Clock(ESTABLISHED)
    counted: list[tuple[str, str, str]] = []
    audit = tmp_path / "audit.jsonl"
    observe = AnomalyObserver(
        detector(store, clock), AuditLog(audit), lambda *labels: counted.append(labels)
    )
    for i in range(5):
        clock.now = ESTABLISHED + i
        observe(decision(checks=(CheckEntry("spam", Action.REJECT, "spam"),)))
    assert counted == [("printer", "refusals", "lock")]
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(x["stage"], x["event"], x["actor"], x["rule"]) for x in lines] == [
        ("admin", "source_disabled", ACTOR, "refusals")
    ]
    assert lines[0]["reason"].startswith("auto-lock: refusal streak: 5 messages refused")


# --- the [anomaly] section -------------------------------------------------------------------

CONFIG = """
[state]
path = "{directory}/state.sqlite3"

[anomaly]
learning_days = 14

[anomaly.volume]
factor = 8

[[anomaly_overrides]]
sources = ["erp"]
memory_days = 120

[anomaly_overrides.volume]
min_recipients = 5000

[[sources]]
name = "erp"
sasl_users = ["erp"]
senders = ["erp@example.com"]

[[sources]]
name = "printer"
sasl_users = ["printer"]
senders = ["printer@example.com"]
"""


def test_anomaly_section_and_overrides_that_change_only_what_they_write(tmp_path: Path) -> None:
    path = tmp_path / "relayguard.toml"
    path.write_text(CONFIG.format(directory=tmp_path))
    anomaly = load_config(path).anomaly
    assert anomaly is not None
    printer, erp = anomaly.for_source("printer"), anomaly.for_source("erp")
    assert (printer.learning_days, printer.memory_days) == (14, 60)
    assert (printer.volume.factor, printer.volume.min_recipients) == (8, 50)
    assert (erp.learning_days, erp.memory_days) == (14, 120)  # [anomaly]'s, and its own
    assert (erp.volume.factor, erp.volume.min_recipients) == (8, 5000)
    assert erp.volume.action is RuleAction.LOCK and erp.hours.action is RuleAction.MONITOR


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('[state]\npath = "{directory}/state.sqlite3"\n', ""),
            "anomaly: needs a [state] section",
        ),
        (
            ('sources = ["erp"]', 'sources = ["fax"]'),
            "anomaly_overrides[0].sources[0]: no source named 'fax'",
        ),
        (
            ("factor = 8", 'action = "block"'),
            "anomaly.volume.action: must be one of 'off', 'monitor', 'alert', 'lock'",
        ),
        (("learning_days = 14", "learning_days = 14\nlearn = 3"), "anomaly.learn: unknown key"),
    ],
)
def test_anomaly_section_problems_name_the_key(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    path = tmp_path / "relayguard.toml"
    path.write_text(CONFIG.replace(*change).format(directory=tmp_path))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any(expected in problem for problem in info.value.problems), info.value.problems


def test_sources_disabled_lists_automatic_locks_like_manual_ones_with_their_expiry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from relayguard.cli import main

    path = tmp_path / "relayguard.toml"
    path.write_text(CONFIG.format(directory=tmp_path))
    store = SqliteStore(tmp_path / "state.sqlite3")
    reason = "auto-lock: volume burst: 412 recipients in 10 min, usual peak 30"
    store.auto_disable("erp", reason, ACTOR, T0, 2_000_000_000)  # expires in 2033
    store.disable("printer", "ticket 4711", "alice", T0 - 60, T0 - 30)  # expired
    store.close()
    assert main(["sources", "disabled", "--config", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"erp  disabled since 2026-01-01T10:00:00+00:00 by {ACTOR}: {reason}"
        " (until 2033-05-18T03:33:20+00:00)",
        "printer  disabled since 2026-01-01T09:59:00+00:00 by alice: ticket 4711"
        " (expired 2026-01-01T09:59:30+00:00: sends again)",
    ]
