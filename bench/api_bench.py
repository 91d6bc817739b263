"""The send API against SMTP submission, in one run, through the same Postfix + milter stack.

One Postfix instance from the project's templates (bench/run.py's `start_postfix`), one relayguard
milter, Dovecot SASL and Postfix's `smtp-sink` behind it. Two ways in, alternated in each repeat:

  smtp  N clients on the submission port: STARTTLS, AUTH once, then messages one after the other
        on that session (one session per client, many messages per session)
  api   N HTTP clients posting JSON messages to `relayguard api serve`, which hands each one to
        Postfix's `api` listener over its pooled, AUTHenticated SMTP sessions (`[api] connections`
        is set to N, so it too keeps one session per client)

Both deliver 10 KB messages from the same source; a run ends when Postfix's queue is empty again.
The report gives each repeat's API/SMTP throughput ratio and the median (goal >= 0.8), and the
p50/p99 latency of the API's `202` at the concurrency where SMTP peaks (goal p99 < 100 ms).
Writes bench/results/api-latest.md. Run (as root): `.venv/bin/python bench/api_bench.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import smtplib
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import client
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.api_process import ApiProcess  # noqa: E402
from tests.support.milter_process import MilterProcess  # noqa: E402
from tests.support.stack import (  # noqa: E402
    DovecotSasl,
    PostfixInstance,
    free_ports,
    make_dir,
    make_self_signed,
)

from bench.run import (  # noqa: E402
    CONFIG,
    RECIPIENT,
    SENDER,
    SIZES,
    cpu_jiffies,
    machine_busy_jiffies,
    message_file,
    queue_empty,
    stage_sections,
    start_postfix,
)

DEVICE_USER, DEVICE_PASSWORD = "bench-device", "bench device password"
API_USER, API_PASSWORD = "relayguard-api", "bench api password"
RATIO_GOAL = 0.8
P99_GOAL_MS = 100.0
WAYS = ("smtp", "api")


@dataclass
class Run:
    way: str  # "smtp" or "api"
    concurrency: int
    repeat: int
    messages: int
    seconds: float
    machine_cpu_ms: float  # whole machine per message (Postfix, milter, API, load generator)
    api_cpu_ms: float  # the API process per message (0 for smtp)
    client_cpu_ms: float  # this process, the load generator, per message
    latencies_ms: list[float] = field(default_factory=list)  # per message: send to reply
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def api_message(raw: str) -> dict[str, object]:
    """The JSON request carrying the body of bench/run.py's message `raw`."""
    return {
        "from": f"Bench Device <{SENDER}>",
        "to": [RECIPIENT],
        "subject": "benchmark",
        "text": raw.split("\n\n", 1)[1],
    }


class ApiBench:
    """The stack, up once for the whole run; `load` drives one way at one concurrency."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = make_dir("relayguard-api-bench-")
        self.hz = os.sysconf("SC_CLK_TCK")
        self.processes: list[Callable[[], None]] = []  # stoppers, in start order
        self.postfix: PostfixInstance | None = None
        self.submission_port = 0
        self.api: ApiProcess | None = None
        self.token = ""
        text = message_file(self.base, SIZES["10k"]).read_text()
        self.raw = text.replace("\n", "\r\n").encode()
        self.request = api_message(text)

    def start(self) -> None:
        tls = make_self_signed(make_dir("tls-", self.base))
        sink_port, api_port, relay_port = free_ports(3)
        sink = subprocess.Popen(
            ["/usr/sbin/smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "1024"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )  # fmt: skip

        def stop_sink() -> None:
            sink.kill()
            sink.wait()

        self.processes.append(stop_sink)
        dovecot = DovecotSasl(
            make_dir("dovecot-", self.base),
            {DEVICE_USER: DEVICE_PASSWORD, API_USER: API_PASSWORD},
            auth_failure_delay="0 secs",
        )
        dovecot.start()
        self.processes.append(dovecot.stop)
        config = self.write_config(api_port, relay_port)
        milter = MilterProcess(config, self.base / "milter.sock", self.base / "milter.log")
        milter.start()
        self.processes.append(milter.stop)
        self.postfix, _ = start_postfix(
            self.base, tls, sink_port, f"unix:{milter.socket_path}",
            api_listen=f"127.0.0.1:{relay_port}", api_sasl_user=API_USER,
        )  # fmt: skip
        self.processes.append(self.postfix.stop)
        link_sasl_socket(self.postfix, dovecot)
        self.submission_port = int(self.postfix.settings["submission_listen"].rsplit(":", 1)[1])
        self.api = ApiProcess(config, api_port, self.base / "api.log").start()
        self.processes.append(self.api.stop)
        self.token = self.create_token(config)

    def write_config(self, api_port: int, relay_port: int) -> Path:
        """bench/run.py's relayguard.toml (state stage: the API's tokens live there) plus the
        device's SASL login and the [api] table."""
        source_extra, sections = stage_sections(frozenset({"state"}), self.base, "")
        password_file = self.base / "api-password"
        password_file.write_text(API_PASSWORD + "\n")
        password_file.chmod(0o600)
        sections += (
            f'\n[api]\nport = {api_port}\nrelay_port = {relay_port}\nsasl_user = "{API_USER}"\n'
            f'sasl_password_file = "{password_file}"\n'
            f"connections = {max(self.args.concurrency)}\n"
        )
        config = self.base / "relayguard.toml"
        config.write_text(
            CONFIG.format(
                audit=self.base / "audit.jsonl",
                workers=self.args.workers,
                sender=SENDER,
                source_extra=f'sasl_users = ["{DEVICE_USER}"]\n{source_extra}',
                sections=sections,
            )
        )
        return config

    @staticmethod
    def create_token(config: Path) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "relayguard.cli", "api", "token", "create", "--config",
             str(config), "--source", "bench"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        return done.stdout.strip()

    def stop(self) -> None:
        for stop in reversed(self.processes):
            stop()
        if not self.args.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def load(self, way: str, concurrency: int, repeat: int) -> Run:
        """`messages` messages shared by `concurrency` clients; ends when the queue is empty."""
        assert self.postfix is not None
        count: int = self.args.messages
        client = self.smtp_client if way == "smtp" else self.api_client
        left = [count]
        latencies: list[float] = []
        errors = [0]
        lock = threading.Lock()

        def take() -> bool:
            with lock:
                left[0] -= 1
                return left[0] >= 0

        def record(ms: float, ok: bool) -> None:
            with lock:
                latencies.append(ms)
                errors[0] += not ok

        assert self.api is not None and self.api.process is not None
        api_pid = self.api.process.pid
        api_before, client_before = cpu_jiffies(api_pid), cpu_jiffies(os.getpid())
        machine_before = machine_busy_jiffies()
        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(take, record)) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        while not queue_empty(self.postfix):
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        per_message = 1000 / self.hz / count
        return Run(
            way, concurrency, repeat, count, seconds,
            (machine_busy_jiffies() - machine_before) * per_message,
            (cpu_jiffies(api_pid) - api_before) * per_message,
            (cpu_jiffies(os.getpid()) - client_before) * per_message,
            latencies, errors[0],
        )  # fmt: skip

    def smtp_client(self, take: Callable[[], bool], record: Callable[[float, bool], None]) -> None:
        """One submission session: STARTTLS, AUTH, then one message after the other."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", self.submission_port, timeout=60) as smtp:
            smtp.starttls(context=context)
            smtp.login(DEVICE_USER, DEVICE_PASSWORD)
            while take():
                started = time.perf_counter()
                refused = smtp.sendmail(SENDER, [RECIPIENT], self.raw)
                record((time.perf_counter() - started) * 1000, not refused)

    def api_client(self, take: Callable[[], bool], record: Callable[[float, bool], None]) -> None:
        """One HTTP client (keep-alive) posting one JSON message after the other. The stdlib's
        http.client, as the SMTP side uses smtplib: the load generator's own CPU counts in the
        machine's, and httpx spent twice as much per request."""
        assert self.api is not None
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        body = json.dumps(self.request).encode()
        http = client.HTTPConnection(self.api.host, self.api.port, timeout=60)
        try:
            while take():
                started = time.perf_counter()
                http.request("POST", "/v1/messages", body, headers)
                answer = http.getresponse()
                answer.read()
                record((time.perf_counter() - started) * 1000, answer.status == 202)
        finally:
            http.close()

    def runs(self) -> list[Run]:
        results = []
        for concurrency in self.args.concurrency:
            for repeat in range(self.args.repeats):
                # Alternate which way goes first, so neither always meets a warmer machine.
                for way in WAYS if repeat % 2 == 0 else WAYS[::-1]:
                    run = self.load(way, concurrency, repeat)
                    print(
                        f"c={concurrency:<3} #{repeat} {way:<4} {run.rate:8.1f} msg/s"
                        f"  p99 {percentile(run.latencies_ms, 99):7.1f} ms  errors {run.errors}",
                        flush=True,
                    )
                    results.append(run)
        return results


def link_sasl_socket(postfix: PostfixInstance, dovecot: DovecotSasl) -> None:
    """Postfix's `private/auth` reaches the bench's Dovecot (smtpd connects per session)."""
    link = postfix.queue_directory / "private" / "auth"
    link.symlink_to(dovecot.socket_path)
    owner = pwd.getpwnam(postfix.settings["mail_owner"])
    os.lchown(link, owner.pw_uid, owner.pw_gid)


def select(runs: list[Run], way: str, concurrency: int) -> list[Run]:
    return [r for r in runs if r.way == way and r.concurrency == concurrency]


def smtp_peak(runs: list[Run], concurrencies: list[int]) -> int:
    """The concurrency with the highest median SMTP throughput."""
    return max(
        concurrencies, key=lambda c: statistics.median(r.rate for r in select(runs, "smtp", c))
    )


def report(args: argparse.Namespace, runs: list[Run], load: tuple[float, ...], busy: str) -> str:
    peak = smtp_peak(runs, args.concurrency)
    lines = [
        "# Send API vs SMTP submission",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `bench/api_bench.py`; {os.cpu_count()} cores;"
        f" {args.messages} messages of 10 KB per run, {args.repeats} repeats,"
        f" relayguard milter with {args.workers} workers and the state stage.",
        "",
        f"Machine load (shared machine): load average before the run"
        f" {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min); {busy}.",
        "",
        "- **smtp**: N clients on the submission port, one session each (STARTTLS + AUTH once,"
        " then one message after the other on that session).",
        "- **api**: N HTTP keep-alive clients (http.client) posting JSON to `relayguard api"
        " serve` (one uvicorn process), which hands each message to Postfix's `api` listener"
        " over its pool of AUTHenticated sessions (`[api] connections` = the largest N): one"
        " session per client here too, without TLS (loopback), MAIL and RCPT pipelined, the"
        " message as one BDAT.",
        "",
        "Throughput counts until Postfix's queue is empty again. Latency: SMTP from MAIL FROM to"
        " the end-of-data reply; API from the request to the `202`.",
        "",
        "CPU per message, in ms: *machine* is the whole machine (other users included), *api proc*"
        " the `relayguard api` process, *client* the load generator (this script's threads).",
        "",
        "| N | repeat | smtp msg/s | api msg/s | api/smtp | smtp: machine / client"
        " | api: machine / api proc / client |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for concurrency in args.concurrency:
        for smtp, api in zip(
            select(runs, "smtp", concurrency), select(runs, "api", concurrency), strict=True
        ):
            lines.append(
                f"| {concurrency} | {smtp.repeat} | {smtp.rate:.1f} | {api.rate:.1f}"
                f" | {api.rate / smtp.rate:.2f}"
                f" | {smtp.machine_cpu_ms:.2f} / {smtp.client_cpu_ms:.2f}"
                f" | {api.machine_cpu_ms:.2f} / {api.api_cpu_ms:.2f} / {api.client_cpu_ms:.2f} |"
            )
    lines += ["", "| N | median smtp | median api | median ratio | api p50 ms | api p99 ms"
              " | smtp p50 ms | smtp p99 ms | errors |", "| --- | --- | --- | --- | --- | --- |"
              " --- | --- | --- |"]  # fmt: skip
    for concurrency in args.concurrency:
        lines.append(summary_row(runs, concurrency))
    lines += ["", *goals(runs, peak)]
    return "\n".join(lines) + "\n"


def summary_row(runs: list[Run], concurrency: int) -> str:
    smtp, api = select(runs, "smtp", concurrency), select(runs, "api", concurrency)
    ratios = [a.rate / s.rate for s, a in zip(smtp, api, strict=True)]
    api_ms = [ms for r in api for ms in r.latencies_ms]
    smtp_ms = [ms for r in smtp for ms in r.latencies_ms]
    errors = sum(r.errors for r in smtp + api)
    return (
        f"| {concurrency} | {statistics.median(r.rate for r in smtp):.1f}"
        f" | {statistics.median(r.rate for r in api):.1f} | {statistics.median(ratios):.2f}"
        f" | {percentile(api_ms, 50):.1f} | {percentile(api_ms, 99):.1f}"
        f" | {percentile(smtp_ms, 50):.1f} | {percentile(smtp_ms, 99):.1f} | {errors} |"
    )


def goals(runs: list[Run], peak: int) -> list[str]:
    """The issue's two goals, at the concurrency where SMTP peaks."""
    smtp, api = select(runs, "smtp", peak), select(runs, "api", peak)
    ratios = [a.rate / s.rate for s, a in zip(smtp, api, strict=True)]
    ratio = statistics.median(ratios)
    p99 = percentile([ms for r in api for ms in r.latencies_ms], 99)
    per_repeat = ", ".join(f"{x:.2f}" for x in ratios)
    errors = sum(r.errors for r in runs)
    return [
        f"## Goals (SMTP peaks at N = {peak})",
        "",
        f"- API/SMTP throughput: median **{ratio:.2f}** (per repeat {per_repeat});"
        f" goal >= {RATIO_GOAL}: **{'met' if ratio >= RATIO_GOAL else 'NOT met'}**.",
        f"- API `202` latency p99 **{p99:.1f} ms**; goal < {P99_GOAL_MS:.0f} ms:"
        f" **{'met' if p99 < P99_GOAL_MS else 'NOT met'}**.",
        f"- Refused or failed messages in all runs: {errors}"
        + (" (the figures above are not valid)" if errors else "."),
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--concurrency", default="1,4,8,16", help="client counts (default %(default)s)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="repeats (default %(default)s)")
    parser.add_argument("--messages", type=int, default=500, help="per run (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="milter worker processes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/api-latest.md")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    return args


def main() -> int:
    args = parse_args()
    load = os.getloadavg()
    bench = ApiBench(args)
    try:
        bench.start()
        busy_before, started = machine_busy_jiffies(), time.monotonic()
        runs = bench.runs()
        elapsed = time.monotonic() - started
    finally:
        bench.stop()
    busy = (machine_busy_jiffies() - busy_before) / bench.hz / elapsed
    after = os.getloadavg()
    text = report(
        args, runs, load,
        f"during it the machine was busy {busy:.2f} of {os.cpu_count()} cores on average"
        f" (this benchmark's own load included), load average after {after[0]:.2f}",
    )  # fmt: skip
    args.output.write_text(text)
    print(text)
    return 1 if any(r.errors for r in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
