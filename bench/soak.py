"""Soak: N messages (default 20,000) through Postfix + the full relayguard pipeline, then count.

The full pipeline: clamd, YARA, DLP, DKIM (RSA-2048 + Ed25519) and SQLite state. Passes when the
sink received exactly N distinct Message-IDs, each with a valid RSA and a valid Ed25519 DKIM
signature, the audit log has exactly N decision
lines, and the milter's memory (RSS) after the run stays within 1.2x of its warm-up value.
Load from `smtp-source` on the port-25 listener; Postfix's `smtp-sink` dumps every delivered
message to a file. Run: `.venv/bin/python bench/soak.py [--messages 20000]` (as root).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dkim  # noqa: E402
from tests.support.clamd import Clamd  # noqa: E402
from tests.support.milter_process import MilterProcess  # noqa: E402
from tests.support.stack import (  # noqa: E402
    free_ports,
    make_dir,
    make_self_signed,
)

from bench.run import (  # noqa: E402
    RECIPIENT,
    SENDER,
    STAGES,
    memory_mb,
    message_file,
    queue_empty,
    relayguard_config,
    start_postfix,
)
from relayguard.dkim.keys import load_keys, record_name, record_text  # noqa: E402

MESSAGE_ID = re.compile(rb"^Message-I[Dd]:\s*(\S+)", re.MULTILINE)


def both_signatures_valid(data: bytes, records: dict[bytes, bytes]) -> bool:
    """dkimpy verifies each DKIM-Signature against the keys on disk (no DNS in a soak)."""
    checker = dkim.DKIM(data)
    signatures = [v for k, v in checker.headers if k.lower() == b"dkim-signature"]
    algorithms = {b"rsa" if b"a=rsa-sha256" in s else b"ed25519" for s in signatures}
    valid = all(
        checker.verify(idx=index, dnsfunc=lambda name, timeout=5: records.get(name, b""))
        for index in range(len(signatures))
    )
    return valid and algorithms == {b"rsa", b"ed25519"}


def send(port: int, count: int, message: Path, concurrency: int) -> None:
    subprocess.run(
        ["/usr/sbin/smtp-source", "-s", str(concurrency), "-m", str(count), "-F", str(message),
         "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"],
        check=True, timeout=3600, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    base = make_dir("relayguard-soak-")
    dumps = make_dir("dumps-", base)
    shutil.chown(dumps, "postfix", "postfix")
    sink_port = free_ports(1)[0]
    sink = subprocess.Popen(
        ["/usr/sbin/smtp-sink", "-u", "postfix", "-d", f"{dumps}/%Y%m%d%H%M%S",
         f"127.0.0.1:{sink_port}", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    config = base / "relayguard.toml"
    audit = base / "audit.jsonl"
    clamd = Clamd(make_dir("clamd-", base)).start()
    config.write_text(relayguard_config(base, frozenset(STAGES), args.workers, clamd.spec))
    milter = MilterProcess(config, base / "milter.sock", base / "milter.log").start()
    postfix, smtp = start_postfix(
        base, make_self_signed(make_dir("tls-", base)), sink_port, f"unix:{milter.socket_path}"
    )
    message = message_file(base, 10_240)
    try:
        send(smtp, args.warmup, message, args.concurrency)
        while not queue_empty(postfix):
            time.sleep(0.1)
        pids = [milter.pid, *milter.workers()]
        # RSS is the leak measure the issue names; PSS also grows when a worker merely stops
        # sharing a page with the supervisor, so it is reported alongside.
        warm, warm_rss = memory_mb(pids, "Pss"), memory_mb(pids, "VmRSS")
        started = time.perf_counter()
        send(smtp, args.messages, message, args.concurrency)
        while not queue_empty(postfix):
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        after, after_rss = memory_mb(pids, "Pss"), memory_mb(pids, "VmRSS")
    finally:
        postfix.stop()
        milter.stop()
        clamd.stop()
        sink.kill()
        sink.wait()
    records = {
        record_name("example.com", key.selector).encode() + b".": record_text(key).encode()
        for key in load_keys(base / "dkim", "example.com")
    }

    total = args.warmup + args.messages
    ids = set()
    files = signed = 0
    for dump in dumps.iterdir():
        files += 1
        data = dump.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        match = MESSAGE_ID.search(data)
        if match:
            ids.add(match.group(1))
        signed += both_signatures_valid(data, records)
    decisions = [json.loads(line) for line in audit.read_text().splitlines()]
    accepted = sum(1 for d in decisions if d["action"] == "accept")
    verdict = {
        "messages": total,
        "seconds_for_main_run": round(seconds, 1),
        "msg_per_s": round(args.messages / seconds, 1),
        "dumped_files": files,
        "valid_rsa_and_ed25519_signatures": signed,
        "distinct_message_ids": len(ids),
        "audit_lines": len(decisions),
        "audit_accepts": accepted,
        "milter_rss_mb_after_warmup": round(warm_rss, 1),
        "milter_rss_mb_after_run": round(after_rss, 1),
        "rss_ratio": round(after_rss / warm_rss, 3),
        "milter_pss_mb_after_warmup": round(warm, 1),
        "milter_pss_mb_after_run": round(after, 1),
        "pss_ratio": round(after / warm, 3),
    }
    ok = (
        files == total
        and len(ids) == total
        and signed == total
        and len(decisions) == total
        and accepted == total
        and after_rss <= 1.2 * warm_rss
    )
    print(json.dumps(verdict, indent=2))
    print("SOAK PASSED" if ok else "SOAK FAILED")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak-latest.md").write_text(
        f"# Soak, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {'PASSED' if ok else 'FAILED'}\n\n"
        f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}."
        f" Full pipeline, {args.workers} workers, concurrency {args.concurrency},"
        f" {args.warmup} warm-up + {args.messages} messages of 10 KB; every message counted at"
        " the sink by Message-ID and both DKIM signatures verified against the keys on disk.\n\n"
        "```json\n" + json.dumps(verdict, indent=2) + "\n```\n"
    )
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
