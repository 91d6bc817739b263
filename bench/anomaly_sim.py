"""Simulated traffic histories through the real anomaly detector and the real SQLite state store.

Each scenario is a source's history (its normal behaviour, weeks of it) followed by an episode
(an attack, or a legitimate peak that must not lock). A simulated clock drives the detector. Before
each message the kill switch is consulted as the milter would at MAIL FROM: a locked source's
messages are refused and not observed. The table says, per scenario, whether and how fast the
source was locked and how many messages of the episode got through first.

    .venv/bin/python -m bench.anomaly_sim          # prints the table (docs/anomaly.md)
"""

from __future__ import annotations

import random
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from relayguard.anomaly.detector import Detector, Finding, Traffic
from relayguard.config.anomaly import AnomalySettings
from relayguard.state.sqlite import SqliteStore

DAY = 86400.0
HOUR = 3600.0
MINUTE = 60.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a Thursday: the first day of a month
Event = tuple[float, Traffic, bool]  # time, what the source sends, part of the episode?


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Outcome:
    scenario: str
    expect_lock: bool
    history_messages: int = 0
    episode_messages: int = 0  # the episode's messages the source tried to send
    through: int = 0  # the episode's messages accepted (and observed): those before the lock
    locked_at: float | None = None  # seconds after the episode began
    locked_in_history: bool = False
    reason: str = ""
    findings: Counter[str] = field(default_factory=Counter)

    @property
    def locked(self) -> bool:
        return self.locked_at is not None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    expect_lock: bool
    events: Callable[[random.Random], Iterator[Event]]


def run(scenario: Scenario, directory: Path, settings: AnomalySettings | None = None) -> Outcome:
    """Feed the scenario through a fresh store; a locked source's messages are refused."""
    clock = Clock()
    store = SqliteStore(directory / f"{scenario.name}.sqlite3")
    detector = Detector(store, settings or AnomalySettings(), clock)
    outcome = Outcome(scenario.name, scenario.expect_lock)
    episode_start: float | None = None
    try:
        rng = random.Random(scenario.name)  # noqa: S311 - reproducible traffic, not secrets
        for when, traffic, episode in scenario.events(rng):
            clock.now = when
            if episode and episode_start is None:
                episode_start = when
            if episode:
                outcome.episode_messages += traffic.messages
            locked = store.disabled(traffic.source)
            if locked is not None and locked.in_force(when):
                continue  # refused at MAIL FROM: the detector never sees it
            if episode:
                outcome.through += traffic.messages
            else:
                outcome.history_messages += traffic.messages
            for finding in detector.observe(traffic):
                _record(outcome, finding, when, episode_start if episode else None)
    finally:
        store.close()
    return outcome


def _record(outcome: Outcome, finding: Finding, when: float, episode_start: float | None) -> None:
    outcome.findings[f"{finding.rule}:{finding.action.value}"] += 1
    if finding.action.value != "lock":
        return
    outcome.reason = f"auto-lock: {finding.reason}"
    if episode_start is None:
        outcome.locked_in_history = True
        outcome.locked_at = 0.0
    else:
        outcome.locked_at = when - episode_start


# --- traffic generators ----------------------------------------------------------------------


def office_time(day: int, rng: random.Random) -> float:
    """A time during office hours (08:00-17:00 UTC) of `day` days after T0."""
    return T0 + day * DAY + 8 * HOUR + rng.uniform(0, 9 * HOUR)


def weekday(day: int) -> bool:
    return (day + 3) % 7 < 5  # T0 is a Thursday


def printer_history(rng: random.Random, days: int) -> Iterator[Event]:
    """About 3 scans a day on weekdays, each to one colleague."""
    colleagues = [f"user{i}@example.com" for i in range(40)]
    for day in range(days):
        if not weekday(day):
            continue
        for when in sorted(office_time(day, rng) for _ in range(rng.randint(1, 5))):
            yield when, Traffic("printer", recipients=(rng.choice(colleagues),)), False


def printer_burst(rng: random.Random) -> Iterator[Event]:
    """60 days of scans, then a message every 6 s to 1-4 addresses at domains it never used."""
    yield from printer_history(rng, 60)
    start = T0 + 60 * DAY + 10 * HOUR
    for i in range(600):
        recipients = tuple(
            f"x{rng.randrange(10**6)}@d{rng.randrange(10**6)}.example"
            for _ in range(rng.randint(1, 4))
        )
        yield start + i * 6, Traffic("printer", recipients=recipients), True


def printer_internal_burst(rng: random.Random) -> Iterator[Event]:
    """60 days of scans, then a message every 6 s to 5 colleagues: only the volume is unusual."""
    yield from printer_history(rng, 60)
    start = T0 + 60 * DAY + 10 * HOUR
    colleagues = [f"user{i}@example.com" for i in range(400)]
    for i in range(600):
        yield start + i * 6, Traffic("printer", recipients=tuple(rng.sample(colleagues, 5))), True


def erp_month_end(rng: random.Random) -> Iterator[Event]:
    """Three months of an ERP: 100-400 invoices per working day to its customers, about ten new
    customers a month, and a month-end run over six hours that grows: 15,000 invoices in January
    (while it learns), 17,000 in February, 20,000 in March. The last run is the episode: it must
    not lock."""
    customers = [f"c{i}.example" for i in range(2000)]
    runs = {30: 15_000, 58: 17_000, 89: 20_000}  # the last working days of January to March 2026
    for day in range(90):
        customers += [f"new{day}-{i}.example" for i in range(rng.choice((0, 0, 1)))]
        if day in runs:
            yield from _run(rng, customers, day, runs[day], day == 89)
        elif weekday(day):
            for when in sorted(office_time(day, rng) for _ in range(rng.randint(100, 400))):
                yield when, Traffic("erp", recipients=(_invoice(rng, customers),)), False


def _run(
    rng: random.Random, customers: list[str], day: int, count: int, episode: bool
) -> Iterator[Event]:
    """`count` invoices evenly over six hours from 17:00."""
    start = T0 + day * DAY + 17 * HOUR
    for i in range(count):
        when = start + i * 6 * HOUR / count
        yield when, Traffic("erp", recipients=(_invoice(rng, customers),)), episode


def _invoice(rng: random.Random, customers: list[str]) -> str:
    # Recent customers are invoiced as often as old ones.
    return f"billing@{customers[rng.randrange(len(customers))]}"


def slow_spammer(rng: random.Random) -> Iterator[Event]:
    """A CRM sending ~40 notifications a working day to 30 partner domains for 60 days; then a
    stolen credential adds 3-5 messages an hour, day and night, each to 1-2 new domains, a quarter
    of them refused by the spam check."""
    partners = [f"p{i}.example" for i in range(30)]
    for day in range(60):
        if weekday(day):
            for when in sorted(office_time(day, rng) for _ in range(rng.randint(30, 50))):
                yield when, Traffic("crm", recipients=(f"team@{rng.choice(partners)}",)), False
    start = T0 + 60 * DAY + 20 * HOUR  # the evening, when nobody watches
    for hour in range(72):
        for _ in range(rng.randint(3, 5)):
            when = start + hour * HOUR + rng.uniform(0, HOUR)
            recipients = tuple(
                f"v{rng.randrange(10**6)}@s{rng.randrange(10**6)}.example"
                for _ in range(rng.randint(1, 2))
            )
            refused = frozenset({"spam"}) if rng.random() < 0.25 else frozenset()
            yield when, Traffic("crm", recipients=recipients, refusals=refused), True


def refusal_streak(rng: random.Random) -> Iterator[Event]:
    """A scanner's 60 days of scans, then an infected workstation's files: a virus or DLP
    refusal every two minutes, among ordinary scans."""
    yield from printer_history(rng, 60)
    start = T0 + 60 * DAY + 9 * HOUR
    for i in range(20):
        refused = frozenset({"clamav" if i % 2 else "dlp"})
        yield (
            start + i * 2 * MINUTE,
            Traffic("printer", recipients=("u1@example.com",), refusals=refused),
            True,
        )


SCENARIOS = (
    Scenario(
        "printer_burst",
        "printer (3 scans/day) suddenly mails hundreds of outside recipients",
        True,
        printer_burst,
    ),
    Scenario(
        "printer_internal_burst",
        "printer suddenly mails hundreds of colleagues (known domain)",
        True,
        printer_internal_burst,
    ),
    Scenario(
        "erp_month_end",
        "ERP month-end run: 20,000 invoices to its usual customers",
        False,
        erp_month_end,
    ),
    Scenario(
        "slow_spammer",
        "stolen CRM credential: 3-5 spam messages an hour to new domains",
        True,
        slow_spammer,
    ),
    Scenario(
        "refusal_streak",
        "virus/DLP refusals every 2 minutes",
        True,
        refusal_streak,
    ),
)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < HOUR:
        return f"{seconds / MINUTE:.1f} min"
    return f"{seconds / HOUR:.1f} h"


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| scenario | history msgs | expected | locked | after | episode msgs through "
        "| findings | lock reason |",
        "| --- | ---: | --- | --- | ---: | ---: | --- | --- |",
    ]
    for o in outcomes:
        findings = ", ".join(f"{k} {n}" for k, n in sorted(o.findings.items())) or "-"
        locked = "in history!" if o.locked_in_history else ("yes" if o.locked else "no")
        lines.append(
            f"| {o.scenario} | {o.history_messages} | {'lock' if o.expect_lock else 'no lock'} "
            f"| {locked} | {duration(o.locked_at)} | {o.through} of {o.episode_messages} "
            f"| {findings} | {o.reason or '-'} |"
        )
    return "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="relayguard-anomaly-sim-") as directory:
        outcomes = [run(scenario, Path(directory)) for scenario in SCENARIOS]
    print(table(outcomes))
    failed = [o.scenario for o in outcomes if o.locked != o.expect_lock or o.locked_in_history]
    if failed:
        print(f"\nnot as expected: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
