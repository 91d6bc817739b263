"""Micro-benchmark: what the state checks cost per message, on SQLite and on Redis.

Per message the milter does one kill-switch read (MAIL FROM) and, for a source with limits, one
rate-limit update per stage: messages at MAIL FROM (here 3 windows: minute, hour, day), one per
recipient, bytes at end of data. This runs that sequence through the real checks and stores, in
one process, and prints microseconds per message (median of several rounds).

    .venv/bin/python bench/state_bench.py [--messages 2000] [--rounds 5]

Starts its own redis-server on a loopback port (Debian package redis-server) in a temp directory.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "milter"), str(ROOT)]

from tests.support.redis_server import RedisServer  # noqa: E402

from relayguard.checks import Subject  # noqa: E402
from relayguard.checks.killswitch import KillSwitch  # noqa: E402
from relayguard.checks.ratelimit import RateLimit  # noqa: E402
from relayguard.config import Config, load_config  # noqa: E402
from relayguard.core.message import Client, Envelope, Message  # noqa: E402
from relayguard.state import StateStore  # noqa: E402
from relayguard.state.redis import RedisStore  # noqa: E402
from relayguard.state.sqlite import SqliteStore  # noqa: E402

CONFIG = """
[state]
path = "{path}"
[[sources]]
name = "bench"
sasl_users = ["bench"]
senders = ["bench@example.com"]
[sources.rate_limits]
messages_per_minute = 1000000000
messages_per_hour = 1000000000
messages_per_day = 1000000000
recipients_per_hour = 1000000000
bytes_per_day = 1000000000000
"""


def per_message(store: StateStore, config: Config, messages: int, limits: bool) -> float:
    kill = KillSwitch(store)
    limiter = RateLimit(store)
    source = config.source("bench")
    envelope = Envelope(Client("127.0.0.1", sasl_user="bench"), "bench@example.com")
    subject = Subject(config, source, envelope, recipient="a@example.com")
    end = Subject(config, source, envelope, message=Message(envelope, (), b"", 10240))
    start = time.perf_counter()
    for _ in range(messages):
        kill(subject)
        if limits:
            limiter.at_mail(subject)
            limiter.at_rcpt(subject)
            limiter.at_end(end)
    return (time.perf_counter() - start) / messages * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="relayguard-bench-"))
    directory.chmod(0o755)
    path = directory / "config.toml"
    path.write_text(CONFIG.format(path=directory / "state.sqlite3"))
    config = load_config(path)
    server = RedisServer(directory).start()
    try:
        stores: dict[str, StateStore] = {
            "sqlite": SqliteStore(directory / "state.sqlite3"),
            "redis": RedisStore(server.url),
        }
        results: dict[tuple[str, bool], list[float]] = {}
        for _ in range(args.rounds):  # alternate the variants within each round (noisy machine)
            for name, store in stores.items():
                for limits in (False, True):
                    results.setdefault((name, limits), []).append(
                        per_message(store, config, args.messages, limits)
                    )
        print(f"{args.messages} messages x {args.rounds} rounds, median microseconds per message")
        for (name, limits), values in results.items():
            what = "kill switch + rate limits (5 counters)" if limits else "kill switch only"
            print(f"  {name:<7} {what:<40} {statistics.median(values):8.1f} us")
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
