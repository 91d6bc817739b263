"""Micro-benchmark: what the anomaly observer costs per message, on SQLite and on Redis.

The observer (engine/anomaly_observer.py) runs for every decision before the milter replies:
it learns the message's recipient domains, reads the source's profile, updates it and writes it
back by compare-and-set (anomaly/detector.py). This drives the real observer with audit records
of accepted messages, in one process, and prints per message: microseconds (median and range of
several rounds, the backends alternated within each round: the machine is noisy), the
state-store calls and, for Redis, the round trips (counted where redis-py sends) with the PING
round trip for scale. Results: results/anomaly-cost-latest.md.

    .venv/bin/python bench/anomaly_cost.py [--messages 2000] [--rounds 5]

Two kinds of traffic: `usual` (one recipient at one of the source's three usual domains, the
common case) and `new domain` (each message to a domain never seen before). Starts its own
redis-server on a loopback port (Debian package redis-server) in a temp directory.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "milter"), str(ROOT)]

from tests.support.redis_server import RedisServer  # noqa: E402

from relayguard.anomaly.detector import Detector  # noqa: E402
from relayguard.config.anomaly import AnomalySettings  # noqa: E402
from relayguard.core.audit_record import CheckEntry, DecisionRecord  # noqa: E402
from relayguard.core.verdict import Action, Mode  # noqa: E402
from relayguard.engine.anomaly_observer import AnomalyObserver  # noqa: E402
from relayguard.engine.audit import AuditLog  # noqa: E402
from relayguard.state import StateStore  # noqa: E402
from relayguard.state.redis import RedisStore  # noqa: E402
from relayguard.state.sqlite import SqliteStore  # noqa: E402

USUAL_DOMAINS = ("example.com", "customer.example", "partner.example")
CHECKS = (
    CheckEntry("source", Action.ACCEPT),
    CheckEntry("envelope_sender", Action.ACCEPT),
    CheckEntry("header_identities", Action.ACCEPT),
)


class CountingStore:
    """The store, with each method call counted (a call is one round trip on Redis: one
    command, one MULTI pipeline or one script)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


def record(source: str, recipient: str) -> DecisionRecord:
    return DecisionRecord(
        time="2026-11-30T12:00:00Z",
        stage="end",
        mode=Mode.ENFORCE,
        action=Action.ACCEPT,
        outcome="accept",
        source=source,
        recipients=(recipient,),
        checks=CHECKS,
    )


def recipients(kind: str, messages: int, round_: int) -> Iterator[str]:
    for index in range(messages):
        if kind == "usual":
            yield f"user{index % 50}@{USUAL_DOMAINS[index % len(USUAL_DOMAINS)]}"
        else:
            yield f"user@r{round_}-n{index}.example"


def measure(
    store: CountingStore, directory: Path, kind: str, messages: int, round_: int
) -> tuple[float, float]:
    """Microseconds and store calls per message through the observer."""
    detector = Detector(store, AnomalySettings())
    observer = AnomalyObserver(detector, AuditLog(directory / "audit.log"), count=_no_metric)
    source = f"bench-{kind.replace(' ', '-')}"
    for recipient in recipients("usual", 20, round_):  # the profile exists, the domains known
        observer(record(source, recipient))
    store.calls.clear()
    records = [record(source, r) for r in recipients(kind, messages, round_)]
    start = time.perf_counter()
    for line in records:
        observer(line)
    elapsed = time.perf_counter() - start
    return elapsed / messages * 1e6, sum(store.calls.values()) / messages


def _no_metric(source: str, rule: str, action: str) -> None:
    """prometheus_client stays out of the measurement (and no rule fires for usual traffic)."""


class RoundTrips:
    """Counts what redis-py sends: one command, or one whole pipeline, is one round trip."""

    def __init__(self) -> None:
        from redis.connection import AbstractConnection  # noqa: PLC0415 - bench instrumentation

        self.count = 0
        send = AbstractConnection.send_packed_command

        def counted(connection: AbstractConnection, *args: Any, **kwargs: Any) -> None:
            self.count += 1
            send(connection, *args, **kwargs)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign,assignment]


def ping_us(store: RedisStore, count: int = 2000) -> float:
    client = store._client  # the same connection the observer uses
    start = time.perf_counter()
    for _ in range(count):
        client.ping()
    return (time.perf_counter() - start) / count * 1e6


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="relayguard-anomaly-cost-"))
    directory.chmod(0o755)
    server = RedisServer(directory).start()
    try:
        redis_store = RedisStore(server.url)
        stores = {
            "sqlite": CountingStore(SqliteStore(directory / "state.sqlite3")),
            "redis": CountingStore(redis_store),
        }
        round_trips = RoundTrips()
        micros: dict[tuple[str, str], list[float]] = {}
        calls: dict[tuple[str, str], float] = {}
        trips: dict[str, float] = {}
        for round_ in range(args.rounds):
            for name, store in stores.items():
                for kind in ("usual", "new domain"):
                    before = round_trips.count
                    us, per = measure(store, directory, kind, args.messages, round_)
                    micros.setdefault((name, kind), []).append(us)
                    calls[name, kind] = per
                    if name == "redis":
                        trips[kind] = (round_trips.count - before) / (args.messages + 20)
        print(
            f"anomaly observer, {args.messages} messages x {args.rounds} rounds; Redis PING"
            f" round trip {ping_us(redis_store):.0f} us; load average {_load()}"
        )
        print(
            "| backend | traffic | us per message: median (min-max) | store calls | round trips |"
        )
        print("| --- | --- | ---: | ---: | ---: |")
        for (name, kind), values in micros.items():
            spread = f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"
            redis_trips = f"{trips[kind]:.1f}" if name == "redis" else "-"
            print(f"| {name} | {kind} | {spread} | {calls[name, kind]:.1f} | {redis_trips} |")
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
