"""Soak: N messages (default 20,000) through Postfix + relayguard in one run, then count.

Passes when the sink received exactly N distinct Message-IDs, the audit log has exactly N decision
lines, and the milter's memory (PSS) after the run stays within 1.2x of its warm-up value.
Load from `smtp-source` on the port-25 listener; Postfix's `smtp-sink` dumps every delivered
message to a file. Run: `.venv/bin/python bench/soak.py [--messages 20000]` (as root).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.milter_process import MilterProcess  # noqa: E402
from tests.support.stack import (  # noqa: E402
    PostfixInstance,
    free_ports,
    make_dir,
    make_self_signed,
    postfix_settings,
)

from bench.run import CONFIG, RECIPIENT, SENDER, message_file, queue_empty  # noqa: E402

MESSAGE_ID = re.compile(rb"^Message-I[Dd]:\s*(\S+)", re.MULTILINE)


def pss_mb(pids: list[int]) -> float:
    """Proportional set size: forked workers share pages, which plain RSS would count twice."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total / 1024


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
    args = parser.parse_args()

    base = make_dir("relayguard-soak-")
    dumps = make_dir("dumps-", base)
    shutil.chown(dumps, "postfix", "postfix")
    sink_port, smtp, submission, smtps = free_ports(4)
    sink = subprocess.Popen(
        ["/usr/sbin/smtp-sink", "-u", "postfix", "-d", f"{dumps}/%Y%m%d%H%M%S",
         f"127.0.0.1:{sink_port}", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    config = base / "relayguard.toml"
    audit = base / "audit.jsonl"
    config.write_text(CONFIG.format(audit=audit, workers=args.workers, sender=SENDER))
    milter = MilterProcess(config, base / "milter.sock", base / "milter.log").start()
    settings = postfix_settings(
        make_dir("postfix-", base),
        tls=make_self_signed(make_dir("tls-", base)),
        relayhost=f"[127.0.0.1]:{sink_port}",
        ports={"smtp": smtp, "submission": submission, "smtps": smtps},
        milter_socket=f"unix:{milter.socket_path}",
        mynetworks=["127.0.0.1/32"],
        smtpd_client_connection_count_limit=0,
        smtpd_client_connection_rate_limit=0,
        smtpd_client_message_rate_limit=0,
        smtpd_client_recipient_rate_limit=0,
        smtpd_client_event_limit_exceptions=["127.0.0.1"],
    )
    postfix = PostfixInstance(settings)
    postfix.write_config()
    postfix.check()
    postfix.start()
    message = message_file(base, 10_240)
    try:
        send(smtp, args.warmup, message, args.concurrency)
        while not queue_empty(postfix):
            time.sleep(0.1)
        pids = [milter.pid, *milter.workers()]
        warm = pss_mb(pids)
        started = time.perf_counter()
        send(smtp, args.messages, message, args.concurrency)
        while not queue_empty(postfix):
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        after = pss_mb(pids)
    finally:
        postfix.stop()
        milter.stop()
        sink.kill()
        sink.wait()

    total = args.warmup + args.messages
    ids = set()
    files = 0
    for dump in dumps.iterdir():
        files += 1
        match = MESSAGE_ID.search(dump.read_bytes())
        if match:
            ids.add(match.group(1))
    decisions = [json.loads(line) for line in audit.read_text().splitlines()]
    accepted = sum(1 for d in decisions if d["action"] == "accept")
    verdict = {
        "messages": total,
        "seconds_for_main_run": round(seconds, 1),
        "msg_per_s": round(args.messages / seconds, 1),
        "dumped_files": files,
        "distinct_message_ids": len(ids),
        "audit_lines": len(decisions),
        "audit_accepts": accepted,
        "milter_pss_mb_after_warmup": round(warm, 1),
        "milter_pss_mb_after_run": round(after, 1),
        "pss_ratio": round(after / warm, 3),
    }
    ok = (
        files == total
        and len(ids) == total
        and len(decisions) == total
        and accepted == total
        and after <= 1.2 * warm
    )
    print(json.dumps(verdict, indent=2))
    print("SOAK PASSED" if ok else "SOAK FAILED")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
