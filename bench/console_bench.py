"""The console's audit search on a large log: index build time, search p95, index lag.

Writes LINES generated audit lines (decisions shaped like engine/transaction.py's, a few admin
lines, 30 days back to now), indexes them with the console's AuditIndex, runs a mix of searches
the audit page offers and reports their percentiles, then measures how long a new line takes to
become searchable while the console's follower thread polls the log. The inventory and report
pages are folded from the index (services/console/digests.py): the bench times that fold once,
then each page's server time; `--compare-cli` also times the CLI's read of the whole log, which
those pages did on every request before.

    .venv/bin/python bench/console_bench.py --lines 1000000 [--keep DIR] [--compare-cli]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from relayguard.cli.inventory import InventoryView, inventory
from relayguard.cli.report import ReportView, build, format_html
from relayguard.config import load_config
from relayguard.services.console.accounts import Accounts
from relayguard.services.console.app import Console, Extras
from relayguard.services.console.audit_index import AuditIndex, Query
from relayguard.services.console.digests import Digests
from relayguard.services.console.follower import Follower

SOURCES = [f"device-{n:02d}" for n in range(40)] + ["erp", "crm", "monitoring", "printer"]
DOMAINS = ["example.com", "corp.example.com", "partner.test", "customer.test"]
OUTCOMES = (
    ["accept"] * 80 + ["reject"] * 8 + ["would_reject"] * 6 + ["quarantine"] * 3 + ["tempfail"] * 3
)
CHECKS = ["source", "sender", "recipients", "clamav", "yara", "dlp", "urls", "ratelimit"]
DAYS = 30


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def decision(rng: random.Random, ts: float, n: int) -> dict[str, Any]:
    source = rng.choice(SOURCES)
    outcome = rng.choice(OUTCOMES)
    sender = f"{source}@{rng.choice(DOMAINS[:2])}"
    recipients = [
        f"user{rng.randrange(5000)}@{rng.choice(DOMAINS)}" for _ in range(rng.randint(1, 3))
    ]
    deciding = rng.choice(CHECKS[1:])
    checks = [
        {
            "name": name,
            "action": outcome.removeprefix("would_") if name == deciding else "accept",
            "reason": f"{name} said so" if name == deciding and outcome != "accept" else "",
            "ms": round(rng.random(), 3),
            **({"error": True} if outcome == "tempfail" and name == "clamav" else {}),
        }
        for name in CHECKS
    ]
    return {
        "time": _iso(ts),
        "queue_id": f"4Q{n:010X}",
        "stage": "end",
        "mode": "monitor" if outcome.startswith("would_") else "enforce",
        "source": source,
        "client_address": f"10.0.{rng.randrange(256)}.{rng.randrange(256)}",
        "sasl_user": source,
        "cert_subject": None,
        "cert_issuer": None,
        "listener": "submission",
        "mail_from": sender,
        "recipients": recipients,
        "recipient_refusals": [],
        "from": f'"{source.title()}" <{sender}>',
        "message_id": f"<{n}.{rng.randrange(1 << 30)}@{source}.example.com>",
        "size": rng.randrange(500, 2_000_000),
        "checks": checks,
        "action": outcome.removeprefix("would_") if not outcome.startswith("would_") else "accept",
        "outcome": outcome,
        "reply": None,
    }


def generate(path: Path, lines: int, seed: int = 16) -> None:
    rng = random.Random(seed)  # noqa: S311 (test data)
    end = time.time()
    start = end - DAYS * 86400
    step = (end - start) / lines
    with path.open("w", encoding="utf-8") as out:
        for n in range(lines):
            ts = start + n * step
            if n % 5000 == 4999:
                record: dict[str, Any] = {
                    "time": _iso(ts),
                    "stage": "admin",
                    "event": "source_disabled",
                    "actor": "console:alice",
                    "source": rng.choice(SOURCES),
                    "reason": "bench",
                }
            else:
                record = decision(rng, ts, n)
            out.write(json.dumps(record, separators=(",", ":")) + "\n")


def queries(rng: random.Random, lines: int) -> list[tuple[str, Query]]:
    """A mix of what operators search for; each kind equally often."""
    now = time.time()
    mix: list[tuple[str, Query]] = []
    for _ in range(40):
        n = rng.randrange(lines)
        source = rng.choice(SOURCES)
        mix += [
            ("latest", Query()),
            ("last hour", Query(since=now - 3600)),
            ("source", Query(source=source)),
            ("source+refused+day", Query(source=source, outcome="reject", since=now - 86400)),
            ("outcome tempfail", Query(outcome="tempfail")),
            ("queue id", Query(queue_id=f"4Q{n:010X}")),
            ("recipient address", Query(recipient=f"user{rng.randrange(5000)}@partner.test")),
            ("recipient domain", Query(recipient="customer.test")),
            ("sender", Query(sender=f"{source}@example.com")),
            ("from", Query(header_from=source)),
            ("check yara", Query(check="yara")),
            ("check+outcome", Query(check="dlp", outcome="quarantine")),
            ("week ago, 1 h", Query(since=now - 7 * 86400, until=now - 7 * 86400 + 3600)),
            ("page 20", Query(before=max(1, lines - 20 * 50))),
        ]
    rng.shuffle(mix)
    return mix


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure_lag(
    index: AuditIndex,
    log: Path,
    poll: float,
    *,
    tries: int = 10,
    after: Any = None,
    serial: int = 0,
) -> list[float]:
    """Seconds from a line's write to the line being found, while the follower polls (and, with
    `after`, folds the digests after each update as the console's does)."""
    follower = Follower(index, poll, after)
    follower.start()
    lags = []
    try:
        rng = random.Random(7)  # noqa: S311
        for n in range(tries):
            time.sleep(rng.random() * poll)
            record = decision(rng, time.time(), 10**9 + serial + n)  # a queue id not seen yet
            written = time.monotonic()
            with log.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")
            while not index.search(Query(queue_id=record["queue_id"])).hits:
                time.sleep(0.01)
            lags.append(time.monotonic() - written)
    finally:
        follower.stop()
    return lags


CONFIG = """
[relay]
audit_log = "{dir}/audit.jsonl"
[state]
path = "{dir}/state.sqlite3"
[console]
accounts_file = "{dir}/users.json"
state_directory = "{dir}"
{sources}
"""


def page_times(directory: Path, index: AuditIndex, repeats: int = 20) -> dict[str, float]:
    """Median server time (ms) of each page, logged in, over the generated index."""
    sources = "\n".join(
        f'[[sources]]\nname = "{s}"\nsasl_users = ["{s}"]\nsenders = ["{s}@example.com"]'
        "\nrate_limits = { messages_per_hour = 1000, recipients_per_day = 20000 }"
        for s in SOURCES
    )
    (directory / "relayguard.toml").write_text(CONFIG.format(dir=directory, sources=sources))
    config = load_config(directory / "relayguard.toml")
    assert config.console is not None
    Accounts(config.console.accounts_file).add("bench", "viewer", "bench password 123")
    extras = Extras(InventoryView, ReportView)
    console = Console(config, config.console, index, extras, _EmptyHold())  # type: ignore[arg-type]
    assert console.digests is not None
    started = time.monotonic()
    folded = console.digests.refresh()  # what the follower does at start
    print(f"folded {folded} rows into the inventory and report in"
          f" {time.monotonic() - started:.1f} s")  # fmt: skip
    search = "/audit?recipient=customer.test&outcome=reject"
    pages = ["/", "/sources", f"/sources/{SOURCES[0]}", "/audit", search, "/quarantine",
             "/inventory", "/report"]  # fmt: skip
    times: dict[str, float] = {}
    with TestClient(console.app(), base_url="http://127.0.0.1") as client:
        form = client.get("/login").text
        csrf = form.split('name="csrf" value="')[1].split('"')[0]
        client.post(
            "/login", data={"user": "bench", "password": "bench password 123", "csrf": csrf}
        )
        for page in pages:
            samples = []
            for _ in range(repeats):
                answer = client.get(page)
                assert answer.status_code == 200, page
                samples.append(float(answer.headers["server-timing"].split("dur=")[1]))
            times[page] = statistics.median(samples)
    return times


def compare_cli(log: Path) -> None:
    """What the inventory and report pages cost before: the CLI reading the whole log."""
    for name, run in (("inventory", inventory), ("report", lambda p: format_html(build(p)))):
        started = time.monotonic()
        run(log)
        print(f"  the CLI's {name} over the whole log: {time.monotonic() - started:.1f} s")


class _EmptyHold:
    def held(self) -> list[Any]:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--poll", type=float, default=1.0, help="the follower's poll interval")
    parser.add_argument("--keep", type=Path, help="keep the log and index in this directory")
    parser.add_argument(
        "--compare-cli", action="store_true", help="also time the CLI's whole-log inventory, report"
    )
    args = parser.parse_args()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="console-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    log, db = directory / "audit.jsonl", directory / "index.sqlite3"
    try:
        started = time.monotonic()
        generate(log, args.lines)
        print(f"generated {args.lines} lines, {log.stat().st_size >> 20} MiB,"
              f" in {time.monotonic() - started:.1f} s")  # fmt: skip
        db.unlink(missing_ok=True)
        index = AuditIndex(db, log)
        started = time.monotonic()
        indexed = index.update()
        print(f"indexed {indexed} lines in {time.monotonic() - started:.1f} s,"
              f" index {db.stat().st_size >> 20} MiB")  # fmt: skip
        timings: dict[str, list[float]] = {}
        for name, query in queries(random.Random(3), args.lines):  # noqa: S311
            started = time.perf_counter()
            index.search(query)
            timings.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        every = [t for values in timings.values() for t in values]
        print(f"search over {len(every)} queries: p50 {statistics.median(every):.1f} ms,"
              f" p95 {percentile(every, 95):.1f} ms, max {max(every):.1f} ms")  # fmt: skip
        for name, values in sorted(timings.items()):
            print(f"  {name:22} p50 {statistics.median(values):7.1f} ms"
                  f"  p95 {percentile(values, 95):7.1f} ms")  # fmt: skip
        for page, ms in page_times(directory, index).items():
            print(f"  page {page:48} server time median {ms:6.1f} ms")
        if args.compare_cli:
            compare_cli(log)
        lags = measure_lag(index, log, args.poll)
        print(f"index lag (poll {args.poll:g} s): median {statistics.median(lags):.2f} s,"
              f" max {max(lags):.2f} s")  # fmt: skip
        cold = Digests(index, {"inventory": InventoryView(log), "report": ReportView(log)})
        lags = measure_lag(index, log, args.poll, after=cold.refresh_one_batch, serial=1000)
        print(f"index lag while the follower folds cold digests (a console start):"
              f" median {statistics.median(lags):.2f} s, max {max(lags):.2f} s")  # fmt: skip
        index.close()
    finally:
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
