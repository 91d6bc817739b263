"""The relayguard benchmark: throughput against bare Postfix in the same run, latency, CPU, memory.

Every variant is a real Postfix instance from the project's templates, on loopback, delivering to
Postfix's own `smtp-sink`; the load comes from Postfix's `smtp-source` on the port-25 listener
(the source is identified by address). Variants differ only in the milter behind `smtpd_milters`:

  bare         no milter
  floor        the smallest pymilter milter, accepting everything (the protocol's own cost)
  relayguard-N relayguard with the built-in checks (source, sender, recipients), N worker processes
  STAGE-N      pass-through plus one stage: clamav, yara, dlp, dkim (RSA-2048 + Ed25519), state
  full-N       every stage at once: the full pipeline
  avdkim-N     relayguard AV+DKIM: clamav and one RSA-2048 signature, nothing else
  classic      the classic peer: clamav-milter + OpenDKIM (RSA-2048), Debian's packages
  rspamd       the other peer: Rspamd 3.4 as a milter (stock rules, antivirus, RSA-2048 signing)
  peers        (a preset) bare, avdkim-2, classic, full-2, rspamd: the comparison of issue 14

Before the timed runs, every variant that scans or signs proves on a sample that it does
(bench/work_check.py); one that does not is marked INVALID and the run exits non-zero.

Throughput on these machines is noisy (±15 % run to run), so each repeat runs every variant, in a
rotated order, and the report gives per-repeat ratios as well as medians. Results are written as
Markdown under bench/results/. Run: `make bench` (or `.venv/bin/python bench/run.py --help`).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.milter_process import MilterProcess  # noqa: E402
from tests.support.stack import (  # noqa: E402
    PostfixInstance,
    SmtpSink,
    TlsFiles,
    free_ports,
    make_dir,
    make_self_signed,
    postfix_settings,
)

from bench.peer_stacks import RSPAMD_CACHE, ClassicStack, PeerStack, RspamdStack  # noqa: E402
from bench.work_check import (  # noqa: E402
    ScanLoggingClamd,
    WorkCheck,
    WorkClaim,
    WorkReport,
    key_records,
)

SENDER = "bench@example.com"
RECIPIENT = "sink@example.net"
SIZES = {
    "10k": 10_240,
    "100k": 102_400,
    "1m": 1_048_576,
    "2m": 2_097_152,
    "10m": 10_485_760,
}
CONFIG = """
[relay]
mode = "enforce"
internal_domains = ["example.com"]
audit_log = "{audit}"

[milter]
workers = {workers}
socket_group = "postfix"

[[sources]]
name = "bench"
networks = ["127.0.0.1/32"]
senders = ["{sender}"]
{source_extra}
{sections}
"""
STAGES = ("clamav", "yara", "dlp", "dkim", "state")
# relayguard AV+DKIM, the match for the classic stack: clamd and one RSA-2048 signature.
AV_DKIM = frozenset({"clamav", "dkim-rsa"})
PEER_NAMES = ("classic", "rspamd")
# The comparison issue 14 asks for, in the order of its table.
PEERS_PRESET = ("bare", "avdkim-2", "classic", "full-2", "rspamd")
YARA_RULES = """
rule suspicious_script { meta: action = "tag" strings: $a = "eval(" $b = "document.write(unescape"
  condition: any of them }
rule office_macro { meta: action = "quarantine" strings: $a = "AutoOpen" $b = "Document_Open"
  condition: any of them }
rule eicar_text { strings: $a = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE" condition: $a }
"""


def stage_sections(stages: frozenset[str], directory: Path, clamd_spec: str) -> tuple[str, str]:
    """The config of the chosen stages: ([[sources]] additions, extra tables)."""
    source, sections = [], []
    if "clamav" in stages:
        sections.append(f'[clamav]\nsocket = "{clamd_spec}"\n')
    if "yara" in stages:
        rules = directory / "yara"
        rules.mkdir(exist_ok=True)
        (rules / "bench.yar").write_text(YARA_RULES)
        sections.append(f'[yara]\nrules_dir = "{rules}"\n')
    if "dlp" in stages:
        source.append('dlp_profile = "cards"')
        sections.append(
            '[[dlp_profiles]]\nname = "cards"\n'
            'detectors = { card_number = 3, iban = 3, es_dni = 3, us_ssn = 3 }\naction = "tag"\n'
        )
    if "dkim" in stages or "dkim-rsa" in stages:
        keys = directory / "dkim"
        for algorithm, selector in (("rsa", "rsa1"), ("ed25519", "ed1")):
            if algorithm not in dkim_algorithms(stages):
                continue
            subprocess.run(
                [sys.executable, "-m", "relayguard.cli", "dkim", "generate", "--key-directory",
                 str(keys), "--user", "root", "--domain", "example.com", "--selector", selector,
                 "--algorithm", algorithm],
                check=True, capture_output=True,
            )  # fmt: skip
        sections.append(f'[dkim]\nkey_directory = "{keys}"\ndomains = ["example.com"]\n')
    if "state" in stages:
        source.append(
            "rate_limits = { messages_per_minute = 1000000, bytes_per_hour = 100000000000 }"
        )
        sections.append(f'[state]\nbackend = "sqlite"\npath = "{directory / "state.sqlite3"}"\n')
    return "\n".join(source), "\n".join(sections)


def dkim_algorithms(stages: frozenset[str]) -> frozenset[str]:
    """The DKIM keys relayguard signs with in these stages: RSA + Ed25519 for "dkim", RSA alone
    for "dkim-rsa" (AV+DKIM, like the peers)."""
    if "dkim" in stages:
        return frozenset({"rsa", "ed25519"})
    return frozenset({"rsa"}) if "dkim-rsa" in stages else frozenset()


def relayguard_config(directory: Path, stages: frozenset[str], workers: int, clamd: str) -> str:
    """The benchmark's relayguard.toml: the bench source, these stages, the audit log in
    `directory` (which also holds the stages' rule and key files)."""
    source_extra, sections = stage_sections(stages, directory, clamd)
    return CONFIG.format(
        audit=directory / "audit.jsonl",
        workers=workers,
        sender=SENDER,
        source_extra=source_extra,
        sections=sections,
    )


@dataclass
class Variant:
    name: str
    workers: int = 0  # relayguard worker processes; 0 = no relayguard
    floor: bool = False
    stages: frozenset[str] = frozenset()
    peer_name: str = ""  # "classic" or "rspamd": one of the peers (bench/peer_stacks.py)
    peer: PeerStack | None = None
    postfix: PostfixInstance | None = None
    milter: MilterProcess | None = None
    floor_process: subprocess.Popen[bytes] | None = None
    port: int = 0
    directory: Path | None = None
    work: WorkReport | None = None  # the work check's findings; None: nothing to check

    def milter_pids(self) -> list[int]:
        if self.milter is not None:
            return [self.milter.pid, *self.milter.workers()]
        if self.floor_process is not None:
            return [self.floor_process.pid]
        if self.peer is not None:
            return self.peer.pids()
        return []

    @property
    def invalid(self) -> bool:
        return self.work is not None and not self.work.valid

    def claim(self) -> WorkClaim:
        """What this started variant must be seen doing to every message of the work check."""
        if self.peer is not None:
            return WorkClaim(True, frozenset({"rsa"}), self.peer.dkim_records)
        signs = dkim_algorithms(self.stages)
        assert self.directory is not None
        records = key_records(self.directory / "dkim") if signs else {}
        return WorkClaim("clamav" in self.stages, signs, records)


def parse_variant(name: str) -> Variant:
    """A variant from its name on the command line (the module's docstring lists them)."""
    variant = Variant(name)
    kind, _, workers = name.partition("-")
    if name == "floor":
        variant.floor = True
    elif name in PEER_NAMES:
        variant.peer_name = name
    elif kind in ("relayguard", "full", "avdkim", *STAGES) and workers.isdigit():
        variant.workers = int(workers)
        if kind == "avdkim":
            variant.stages = AV_DKIM
        else:
            variant.stages = frozenset(set(STAGES) if kind == "full" else {kind} & set(STAGES))
    elif name != "bare":
        raise SystemExit(f"unknown variant {name!r}")
    return variant


@dataclass
class Run:
    variant: str
    size: str
    concurrency: int
    repeat: int
    messages: int
    seconds: float
    machine_cpu_ms: float  # whole machine (Postfix + milter + load generator) per message
    milter_cpu_ms: float  # milter processes only, per message
    milter_rss_mb: float  # sum of the milter processes' peak RSS (VmHWM): shared pages count twice
    milter_pss_mb: float  # peak of their summed proportional set size: what the machine pays
    clamd_cpu_ms: float = 0.0  # the shared clamd, per message: scanning work outside the milter
    error: str = ""  # smtp-source's complaint when a message was refused or timed out

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


@dataclass
class Latency:
    variant: str
    size: str
    samples: list[float] = field(default_factory=list)  # ms from MAIL FROM to end-of-DATA reply

    def percentile(self, p: float) -> float:
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[index]


def start_postfix(
    directory: Path, tls: TlsFiles, sink_port: int, milter_socket: str | None, **extra: object
) -> tuple[PostfixInstance, int]:
    """A Postfix instance from the templates delivering to the sink; returns it and its port-25
    listener, where 127.0.0.1 is the bench source's network. `extra`: more template settings."""
    smtp, submission, smtps = free_ports(3)
    settings = postfix_settings(
        make_dir("postfix-", directory),
        tls=tls,
        relayhost=f"[127.0.0.1]:{sink_port}",
        ports={"smtp": smtp, "submission": submission, "smtps": smtps},
        milter_socket=milter_socket,
        mynetworks=["127.0.0.1/32"],
        # The benchmark measures throughput, not anvil's protection against it.
        smtpd_client_connection_count_limit=0,
        smtpd_client_connection_rate_limit=0,
        smtpd_client_message_rate_limit=0,
        smtpd_client_recipient_rate_limit=0,
        smtpd_client_event_limit_exceptions=["127.0.0.1"],
        message_size_limit=50_000_000,
        **extra,
    )
    postfix = PostfixInstance(settings)
    postfix.write_config()
    postfix.check()
    postfix.start()
    return postfix, smtp


def message_file(directory: Path, size: int) -> Path:
    """A device-like message of about SIZE bytes (smtp-source adds CRLF and dot-stuffing)."""
    path = directory / f"message-{size}.txt"
    head = (
        f"From: Bench Device <{SENDER}>\nTo: <{RECIPIENT}>\nSubject: benchmark\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
    )
    line = "The quick brown fox jumps over the lazy dog, 0123456789 ABCDEFGHIJ.\n"
    body = line * max(1, (size - len(head)) // len(line))
    path.write_text(head + body)
    return path


def cpu_jiffies(pid: int) -> int:
    """utime + stime of a live process; 0 for one that exited (its CPU is then not counted: the
    run is marked, see Bench.load)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_busy_jiffies() -> int:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4]  # minus idle and iowait


def memory_mb(pids: list[int], field: str) -> float:
    """A /proc memory field summed over `pids`, in MB: "Pss" (smaps_rollup; a page the forked
    workers share counts once), or "VmRSS" / "VmHWM" (status; it counts in every process)."""
    source = "smaps_rollup" if field == "Pss" else "status"
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/{source}").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a peer's worker that exited (Rspamd replaces its own): nothing to count
        for line in text.splitlines():
            if line.startswith(f"{field}:"):
                total += int(line.split()[1])
    return total / 1024


class PeakPss:
    """Samples the milter processes' summed PSS while a run goes; the kernel keeps no PSS peak."""

    def __init__(self, pids: list[int], interval: float = 0.25) -> None:
        self.pids = pids
        self.interval = interval
        self.peak = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakPss:
        if self.pids:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self.pids:
            self._thread.join()
            self.peak = max(self.peak, memory_mb(self.pids, "Pss"))

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            self.peak = max(self.peak, memory_mb(self.pids, "Pss"))


def queue_empty(postfix: PostfixInstance) -> bool:
    for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
        for _, _, files in os.walk(postfix.queue_directory / sub):
            if files:
                return False
    return True


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = make_dir("relayguard-bench-")
        self.tls = make_self_signed(make_dir("tls-", self.base))
        self.sink_port = free_ports(1)[0]
        self.sink: subprocess.Popen[bytes] | None = None
        self.variants: list[Variant] = []
        self.hz = os.sysconf("SC_CLK_TCK")
        self.clamd: ScanLoggingClamd | None = None

    def start(self) -> None:
        """Every variant up, each one's work checked, then the sink of the timed runs."""
        variants = [parse_variant(name) for name in self.args.variants]
        if any(v.peer_name or "clamav" in v.stages for v in variants):
            # One clamd for every variant that scans, relayguard's and the peers' alike.
            self.clamd = ScanLoggingClamd(make_dir("clamd-", self.base)).start()
        for variant in variants:
            self.variants.append(variant)  # stopped by stop() even if its start fails
            self._start_variant(variant)
        self.check_work()
        sink_log = (self.base / "smtp-sink.log").open("wb")
        self.sink = subprocess.Popen(
            ["/usr/sbin/smtp-sink", "-u", "postfix", f"127.0.0.1:{self.sink_port}", "1024"],
            stdout=sink_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def check_work(self) -> None:
        """The work check (bench/work_check.py) on every variant that scans or signs, delivering
        to a sink that keeps the messages, on the port smtp-sink takes over afterwards."""
        sink = SmtpSink(port=self.sink_port)
        sink.start()
        checker = WorkCheck(
            sink, self.clamd, SENDER, RECIPIENT, message_file(self.base, SIZES["10k"]),
            self.args.sample,
        )  # fmt: skip
        try:
            for variant in self.variants:
                claim = variant.claim()
                if not (claim.scans or claim.signs):
                    continue
                variant.work = checker.check(variant.port, claim)
                if not self.wait_queue_empty(variant):
                    variant.work.problems.append("the work check's mail is still queued")
                verdict = (
                    "ok" if variant.work.valid else "INVALID: " + "; ".join(variant.work.problems)
                )
                print(f"work check {variant.name:<13} {verdict}", flush=True)
        finally:
            sink.stop()

    def wait_queue_empty(self, variant: Variant, timeout: float = 60.0) -> bool:
        """Nothing of the work check may be left in a queue: the first timed run would wait for
        its retry (minutes) and report that as the variant's throughput."""
        assert variant.postfix is not None
        deadline = time.monotonic() + timeout
        while not queue_empty(variant.postfix):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _start_variant(self, variant: Variant) -> None:
        directory = variant.directory = make_dir(f"{variant.name}-", self.base)
        socket_path = None
        milter = None
        if variant.peer_name:
            assert self.clamd is not None
            if variant.peer_name == "rspamd":
                variant.peer = RspamdStack(self.clamd.socket_path, self.args.rspamd_cache)
            else:
                variant.peer = ClassicStack(self.clamd.socket_path)
            variant.peer.start()
            milter = variant.peer.milter_spec
        elif variant.workers:
            config = directory / "relayguard.toml"
            clamd_spec = self.clamd.spec if self.clamd else ""
            config.write_text(
                relayguard_config(directory, variant.stages, variant.workers, clamd_spec)
            )
            variant.milter = MilterProcess(
                config, directory / "milter.sock", directory / "milter.log"
            )
            variant.milter.start()
            socket_path = variant.milter.socket_path
        elif variant.floor:
            socket_path = directory / "floor.sock"
            log = (directory / "floor.log").open("wb")
            variant.floor_process = subprocess.Popen(
                [sys.executable, str(ROOT / "bench/floor_milter.py"), f"unix:{socket_path}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            while not socket_path.exists():
                time.sleep(0.05)
        if socket_path:
            milter = f"unix:{socket_path}"
        variant.postfix, variant.port = start_postfix(directory, self.tls, self.sink_port, milter)

    def stop(self) -> None:
        for variant in self.variants:
            if variant.postfix is not None:
                variant.postfix.stop()
            if variant.milter is not None:
                variant.milter.stop()
            if variant.floor_process is not None:
                variant.floor_process.send_signal(signal.SIGKILL)
                variant.floor_process.wait()
            if variant.peer is not None:
                variant.peer.stop(keep=self.args.keep)
        if self.sink is not None:
            self.sink.kill()
            self.sink.wait()
        if self.clamd is not None:
            self.clamd.stop()
        if not self.args.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def load(self, variant: Variant, size: str, concurrency: int, repeat: int) -> Run:
        """smtp-source sends N messages; the run ends when Postfix's queue is empty again."""
        assert variant.postfix is not None
        count = self.args.messages[size]
        source = message_file(self.base, SIZES[size])
        pids = variant.milter_pids()
        milter_before = sum(cpu_jiffies(pid) for pid in pids)
        clamd_before = self.clamd_jiffies()
        machine_before = machine_busy_jiffies()
        started = time.perf_counter()
        with PeakPss(pids) as memory:
            loaded = subprocess.run(
                ["/usr/sbin/smtp-source", "-s", str(concurrency), "-m", str(count), "-F",
                 str(source), "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{variant.port}"],
                check=False, timeout=900, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            while not queue_empty(variant.postfix):
                time.sleep(0.01)
        # A refused or timed-out message is reported, not fatal: one bad run must not lose the
        # other results of an hour-long benchmark.
        error = loaded.stderr.decode(errors="replace").strip()[:300] if loaded.returncode else ""
        gone = [pid for pid in pids if not Path(f"/proc/{pid}").exists()]
        if gone:  # e.g. a peer replacing a worker: its CPU before it exited is not in milter_ms
            error = (error + "; " if error else "") + f"milter process(es) {gone} exited"
        seconds = time.perf_counter() - started
        machine_ms = (machine_busy_jiffies() - machine_before) * 1000 / self.hz / count
        milter_ms = (sum(cpu_jiffies(pid) for pid in pids) - milter_before) * 1000 / self.hz
        clamd_ms = (self.clamd_jiffies() - clamd_before) * 1000 / self.hz
        return Run(
            variant.name, size, concurrency, repeat, count, seconds, machine_ms,
            milter_ms / count, memory_mb(pids, "VmHWM"), memory.peak, clamd_ms / count, error,
        )  # fmt: skip

    def clamd_jiffies(self) -> int:
        """CPU time of the shared clamd so far (0 without one)."""
        if self.clamd is None or self.clamd.process is None:
            return 0
        return cpu_jiffies(self.clamd.process.pid)

    def latency(self, variant: Variant, size: str, concurrency: int) -> Latency:
        """Per message: MAIL FROM to the end-of-data reply, C clients on persistent sessions."""
        result = Latency(variant.name, size)
        raw = message_file(self.base, SIZES[size]).read_bytes().replace(b"\n", b"\r\n")
        per_client = max(1, self.args.latency_messages // concurrency)
        lock = threading.Lock()

        def client() -> None:
            with smtplib.SMTP("127.0.0.1", variant.port, timeout=60) as smtp:
                smtp.ehlo("bench.test")
                for _ in range(per_client):
                    started = time.perf_counter()
                    smtp.sendmail(SENDER, [RECIPIENT], raw)
                    with lock:
                        result.samples.append((time.perf_counter() - started) * 1000)

        threads = [threading.Thread(target=client) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert variant.postfix is not None
        while not queue_empty(variant.postfix):
            time.sleep(0.01)
        return result

    def runs(self) -> Iterator[Run]:
        for size in self.args.sizes:
            for concurrency in self.args.concurrency:
                for repeat in range(self.args.repeats):
                    # Rotate the order so no variant always runs first (warm caches, drift).
                    shift = repeat % len(self.variants)
                    for variant in self.variants[shift:] + self.variants[:shift]:
                        run = self.load(variant, size, concurrency, repeat)
                        print(
                            f"{size:>5} c={concurrency:<3} #{repeat} {variant.name:<13}"
                            f" {run.rate:8.1f} msg/s  milter {run.milter_cpu_ms:6.2f} ms/msg"
                            f" {run.error}",
                            flush=True,
                        )
                        yield run


def report(bench: Bench, runs: list[Run], latencies: list[Latency]) -> str:
    args = bench.args
    names = [v.name for v in bench.variants]
    lines = [
        f"# relayguard benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        "## Machine",
        "",
        f"- {os.cpu_count()} cores, {platform.processor() or platform.machine()},"
        f" {_cpu_model()}, {_mem_total()} memory",
        f"- Python {platform.python_version()}, Postfix {_postfix_version()},"
        f" kernel {platform.release()}",
        f"- {args.repeats} repeats, variants alternated in rotated order within each repeat;"
        f" messages per run: {', '.join(f'{s}={args.messages[s]}' for s in args.sizes)}",
        "- throughput = messages / (first SMTP connection .. Postfix queue empty again); load from"
        " `smtp-source` on the port-25 listener, delivery to `smtp-sink`, all on loopback",
        "",
        "## Throughput (median msg/s, ratio to bare Postfix in the same repeat)",
        "",
    ]
    header = "| size | concurrency | " + " | ".join(names) + " |"
    lines += [header, "|" + " --- |" * (len(names) + 2)]
    ratio_rows = []
    for size in args.sizes:
        for concurrency in args.concurrency:
            bare = by_repeat(runs, "bare", size, concurrency)
            cells, ratios = [], {}
            for name in names:
                own = by_repeat(runs, name, size, concurrency)
                ratios[name] = [rate / bare[rep] for rep, rate in own.items() if rep in bare]
                median_ratio = f" ({statistics.median(ratios[name]):.2f})" if ratios[name] else ""
                cells.append(f"{statistics.median(own.values()):.0f}{median_ratio}"
                             f"{invalid_mark(bench, name)}")  # fmt: skip
            lines.append(f"| {size} | {concurrency} | " + " | ".join(cells) + " |")
            ratio_rows.append((size, concurrency, ratios))
    lines += ["", "### Per-repeat ratios to bare Postfix", ""]
    for size, concurrency, ratios in ratio_rows:
        for name in names:
            if name != "bare" and ratios[name]:
                values = ", ".join(f"{v:.2f}" for v in ratios[name])
                lines.append(f"- {size} c={concurrency} {name}: {values}")
    if "floor" in names:
        lines += ["", "### Against the protocol floor (relayguard / floor, same repeat)", ""]
        for size in args.sizes:
            for concurrency in args.concurrency:
                floor = by_repeat(runs, "floor", size, concurrency)
                for name in (n for n in names if n.startswith("relayguard")):
                    own = by_repeat(runs, name, size, concurrency)
                    values = [rate / floor[rep] for rep, rate in own.items() if rep in floor]
                    lines.append(
                        f"- {size} c={concurrency} {name}: median {statistics.median(values):.2f}"
                        f" (repeats: {', '.join(f'{v:.2f}' for v in values)})"
                    )
    lines += ["", "## CPU and memory (medians; memory: the largest seen)", "",
              "PSS counts a page shared by the forked workers once, as the machine pays for it;"
              " the RSS sum counts it in every process. Milter CPU is every process of the"
              " variant's filter (for the peers: clamav-milter + OpenDKIM; Rspamd's main process"
              " and workers); the shared clamd's CPU is its own column.", "",
              "| size | variant | machine CPU ms/msg | milter CPU ms/msg | clamd CPU ms/msg"
              " | milter peak PSS MB | milter peak RSS sum MB |",
              "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for size in args.sizes:
        for name in names:
            own = [r for r in runs if (r.variant, r.size) == (name, size)]
            lines.append(
                f"| {size} | {name} | {statistics.median(r.machine_cpu_ms for r in own):.2f}"
                f" | {statistics.median(r.milter_cpu_ms for r in own):.2f}"
                f" | {statistics.median(r.clamd_cpu_ms for r in own):.2f}"
                f" | {max(r.milter_pss_mb for r in own):.1f}"
                f" | {max(r.milter_rss_mb for r in own):.1f} |"
            )
    if latencies:
        lines += ["", f"## Latency (ms, MAIL FROM to end-of-data reply, {args.latency_concurrency}"
                  " concurrent persistent sessions)", "",
                  "| size | variant | p50 | p95 | p99 | added p50 | added p95 | added p99 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for size in args.sizes:
            bare = next((x for x in latencies if (x.variant, x.size) == ("bare", size)), None)
            for lat in (x for x in latencies if x.size == size):
                p = [lat.percentile(q) for q in (50, 95, 99)]
                added = (
                    [v - bare.percentile(q) for v, q in zip(p, (50, 95, 99), strict=True)]
                    if bare
                    else []
                )
                lines.append(
                    f"| {size} | {lat.variant} | "
                    + " | ".join(f"{v:.1f}" for v in p)
                    + " | "
                    + (" | ".join(f"{v:+.1f}" for v in added) if added else "- | - | -")
                    + " |"
                )
    failed = [r for r in runs if r.error]
    if failed:
        lines += ["", "## Runs in which smtp-source reported an error", ""]
        lines += [f"- {r.size} c={r.concurrency} #{r.repeat} {r.variant}: {r.error}"
                  for r in failed]  # fmt: skip
    lines += work_section(bench)
    lines += peers_section(bench, runs)
    lines += goals(bench, runs, latencies)
    return "\n".join(lines) + "\n"


def invalid_mark(bench: Bench, name: str) -> str:
    """The mark after each figure of a variant that failed its work check."""
    return " INVALID" if any(v.invalid for v in bench.variants if v.name == name) else ""


def work_section(bench: Bench) -> list[str]:
    """What the work check saw on each variant that scans or signs (bench/work_check.py)."""
    checked = [v for v in bench.variants if v.work is not None]
    if not checked:
        return []
    lines = ["", f"## Work check ({bench.args.sample} identical 10 KB messages per variant, before"
             " the timed runs)", "",
             "Each delivered copy verified by dkimpy against the keys on disk; clamd's log counted"
             " (one line per scan); an EICAR message must be refused at SMTP time. A variant that"
             " fails is INVALID: its figures above measure a filter that skipped work.", "",
             "| variant | delivered | validly signed | clamd scans | EICAR reply | verdict |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for variant in checked:
        work = variant.work
        assert work is not None
        verdict = "ok" if work.valid else "**INVALID**: " + "; ".join(work.problems)
        signed = f"{work.signed}/{work.delivered} ({'+'.join(sorted(work.claim.signs))})"
        lines.append(
            f"| {variant.name} | {work.delivered}/{work.sent}"
            f" | {signed if work.claim.signs else '-'} | {work.scans}"
            f" | {work.eicar.replace('|', '/')} | {verdict} |"
        )
    return lines


# Issue 14's goals against the peers: (relayguard prefix, peer, what, target ratio, at least?).
PEER_GOALS = (
    ("avdkim-", "classic", "rate", 1.0, True),
    ("avdkim-", "classic", "milter_cpu_ms", 1.5, False),
    ("full-", "rspamd", "rate", 1.2, True),
)


def peers_section(bench: Bench, runs: list[Run]) -> list[str]:
    """Issue 14's comparison, in its table's shape: relayguard against the classic stack and
    Rspamd at each size, then each goal per size with its per-repeat ratios, met or not met."""
    names = [v.name for v in bench.variants]
    if not set(PEER_NAMES) & set(names):
        return []
    avdkim = max((n for n in names if n.startswith("avdkim-")), default="")
    full = max((n for n in names if n.startswith("full-")), default="")
    columns = [
        (label, name)
        for label, name in (
            ("bare Postfix", "bare"),
            (f"relayguard AV+DKIM ({avdkim}: clamav + RSA)", avdkim),
            ("classic (clamav-milter + OpenDKIM)", "classic"),
            (f"relayguard full ({full})", full),
            ("Rspamd 3.4, 2 proxy workers (stock rules, AV, DKIM)", "rspamd"),
        )
        if name in names
    ]
    lines = ["", "## Against the peers (median msg/s; milter CPU per message in brackets)", "",
             "Same run, same Postfix, same clamd (EICAR-only database), RSA-2048 signing for"
             " example.com; the peers are set up by `bench/peer_stacks.py` from"
             " `bench/peers/`.", "",
             "| size | concurrency | " + " | ".join(label for label, _ in columns) + " |",
             "| ---: | ---: |" + " ---: |" * len(columns)]  # fmt: skip
    for size in bench.args.sizes:
        for concurrency in bench.args.concurrency:
            cells = [peer_cell(bench, runs, name, size, concurrency) for _, name in columns]
            lines.append(f"| {size} | {concurrency} | " + " | ".join(cells) + " |")
    return lines + peer_goals(bench, runs, {"avdkim-": avdkim, "full-": full})


def peer_cell(bench: Bench, runs: list[Run], name: str, size: str, concurrency: int) -> str:
    rates = per_repeat(runs, name, size, concurrency, "rate")
    if not rates:
        return "-"
    cpu = statistics.median(per_repeat(runs, name, size, concurrency, "milter_cpu_ms").values())
    cpu_text = f" ({cpu:.1f} ms)" if name != "bare" else ""
    return f"{statistics.median(rates.values()):.0f}{cpu_text}{invalid_mark(bench, name)}"


def peer_goals(bench: Bench, runs: list[Run], relayguard: dict[str, str]) -> list[str]:
    """One row per goal and size: the same-repeat ratios, their median, met or not met. A goal
    whose variants failed the work check is "invalid", never met."""
    lines = ["", "### Goals against the peers (ratios taken within each repeat)", "",
             "| goal | size | concurrency | median | per repeat | verdict |",
             "| --- | ---: | ---: | ---: | --- | --- |"]  # fmt: skip
    verdicts: dict[str, list[str]] = {}
    for prefix, peer, attribute, target, at_least in PEER_GOALS:
        mine = relayguard[prefix]
        what = "throughput" if attribute == "rate" else "milter CPU per message"
        goal = f"{mine or prefix + 'N'} / {peer} {what} {'>=' if at_least else '<='} {target}"
        for size in bench.args.sizes:
            for concurrency in bench.args.concurrency:
                ours = per_repeat(runs, mine, size, concurrency, attribute)
                theirs = per_repeat(runs, peer, size, concurrency, attribute)
                ratios = [ours[rep] / theirs[rep] for rep in ours if theirs.get(rep)]
                if not ratios:
                    continue
                median = statistics.median(ratios)
                met = median >= target if at_least else median <= target
                verdict = "met" if met else "not met"
                if invalid_mark(bench, mine) or invalid_mark(bench, peer):
                    verdict = "invalid (work check failed)"
                verdicts.setdefault(goal, []).append(verdict)
                lines.append(
                    f"| {goal} | {size} | {concurrency} | {median:.2f}"
                    f" | {', '.join(f'{r:.2f}' for r in ratios)} | {verdict} |"
                )
    for goal, seen in verdicts.items():
        overall = "met" if set(seen) == {"met"} else "not met"
        if any(v.startswith("invalid") for v in seen):
            overall = "invalid (work check failed)"
        lines.append(f"| {goal} | every size | | | | **{overall}** |")
    return lines


def per_repeat(
    runs: list[Run], name: str, size: str, concurrency: int, attribute: str
) -> dict[int, float]:
    """One figure of one variant and load ("rate", "milter_cpu_ms"), keyed by repeat."""
    key = (name, size, concurrency)
    return {
        r.repeat: float(getattr(r, attribute))
        for r in runs
        if (r.variant, r.size, r.concurrency) == key
    }


def goals(bench: Bench, runs: list[Run], latencies: list[Latency]) -> list[str]:
    """The issue's goals, read off this run: 10 KB messages, the concurrency where bare peaks."""
    names = {v.name for v in bench.variants}
    if "10k" not in bench.args.sizes or "bare" not in names:
        return []
    peak = max(
        bench.args.concurrency,
        key=lambda c: statistics.median(by_repeat(runs, "bare", "10k", c).values()),
    )

    def ratio(name: str, against: str) -> str:
        own, ref = by_repeat(runs, name, "10k", peak), by_repeat(runs, against, "10k", peak)
        values = [rate / ref[rep] for rep, rate in own.items() if rep in ref]
        return f"{statistics.median(values):.2f}" if values else "-"

    def median(name: str, attribute: str) -> str:
        own = [getattr(r, attribute) for r in runs if (r.variant, r.size) == (name, "10k")]
        return f"{statistics.median(own):.2f}" if own else "-"

    def peak_pss(name: str) -> str:
        own = [
            r.milter_pss_mb
            for r in runs
            if (r.variant, r.size, r.concurrency) == (name, "10k", peak)
        ]
        return f"{max(own):.0f}" if own else "-"

    def added_p99(name: str) -> str:
        lat = {x.variant: x for x in latencies if x.size == "10k"}
        if name not in lat or "bare" not in lat:
            return "-"
        return f"{lat[name].percentile(99) - lat['bare'].percentile(99):+.1f}"

    passthrough = max((n for n in names if n.startswith("relayguard-")), default="")
    full = max((n for n in names if n.startswith("full-")), default="")
    rows = [
        (f"pass-through ({passthrough}) / floor", ratio(passthrough, "floor"), ">= 0.95"),
        (f"full pipeline ({full}) / bare Postfix", ratio(full, "bare"), ">= 0.50"),
        (f"milter CPU per message, {full}, ms", median(full, "milter_cpu_ms"), "<= 3"),
        (f"added p99 latency, {full}, ms", added_p99(full), "<= 25"),
        (f"milter memory, {full}, peak PSS MB", peak_pss(full), "<= 200"),
        ("full-1 / bare, full-2 / bare (cores)", f"{ratio('full-1', 'bare')}, "
         f"{ratio('full-2', 'bare')}", "scales"),
    ]  # fmt: skip
    return [
        "",
        f"## Goals (10 KB messages, concurrency {peak}, where bare Postfix peaked)",
        "",
        "| goal | this run | target |",
        "| --- | --- | --- |",
        *(f"| {goal} | {value} | {target} |" for goal, value, target in rows),
        "",
        "The 30 MB attachment's peak memory is measured by `bench/attachment_memory.py`"
        " ([memory-latest.md](memory-latest.md)).",
    ]


def by_repeat(runs: list[Run], name: str, size: str, concurrency: int) -> dict[int, float]:
    """Throughput of one variant and load, keyed by repeat, for same-repeat ratios."""
    return per_repeat(runs, name, size, concurrency, "rate")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _mem_total() -> str:
    kb = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{kb / 1024 / 1024:.0f} GiB"


def _postfix_version() -> str:
    out = subprocess.run(
        ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--variants",
        default="bare,floor,relayguard-1,relayguard-2,clamav-2,yara-2,dlp-2,dkim-2,state-2,full-1,"
        "full-2,avdkim-2,classic,rspamd",
        help="comma-separated; 'peers' stands for " + ",".join(PEERS_PRESET),
    )
    parser.add_argument("--sizes", default="10k,100k,1m,10m", help=f"of {', '.join(SIZES)}")
    parser.add_argument("--concurrency", default="8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--messages", default="10k=400,100k=200,1m=40,2m=20,10m=8",
                        help="messages per run, per size")  # fmt: skip
    parser.add_argument("--latency-messages", type=int, default=400)
    parser.add_argument("--latency-concurrency", type=int, default=8)
    parser.add_argument(
        "--latency-sizes",
        default="10k,100k,1m",
        help="sizes of the latency phase ('none': skip it); 400 messages of 10 MB per variant"
        " would take longer than the whole throughput phase",
    )
    parser.add_argument("--sample", type=int, default=5,
                        help="messages per variant in the work check")  # fmt: skip
    parser.add_argument("--rspamd-cache", type=Path, default=RSPAMD_CACHE,
                        help="Rspamd's Hyperscan cache, kept between runs")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the instances' directories")
    args = parser.parse_args()
    args.variants = list(
        dict.fromkeys(
            expanded
            for name in args.variants.split(",")
            for expanded in (PEERS_PRESET if name == "peers" else (name,))
        )
    )
    args.sizes = args.sizes.split(",")
    unknown = [size for size in args.sizes if size not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {', '.join(unknown)}; known: {', '.join(SIZES)}")
    args.latency_sizes = [s for s in args.latency_sizes.split(",") if s in args.sizes]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.messages = {k: int(v) for k, v in (item.split("=") for item in args.messages.split(","))}
    return args


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark starts Postfix instances: run it as root")
    bench = Bench(args)
    try:
        bench.start()
        runs = list(bench.runs())
        latencies = [
            bench.latency(variant, size, args.latency_concurrency)
            for size in args.latency_sizes
            for variant in bench.variants
        ]
    finally:
        bench.stop()
    text = report(bench, runs, latencies)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{datetime.now(UTC):%Y-%m-%d-%H%M}.md"
    out.write_text(text)
    (args.out / "latest.md").write_text(text)
    print(text)
    print(f"written to {out}")
    invalid = [v.name for v in bench.variants if v.invalid]
    if invalid:
        print(f"INVALID (failed the work check): {', '.join(invalid)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
