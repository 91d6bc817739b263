"""Content scanning time per message: the MIME walk, YARA, DLP and (optionally) real clamd, for
10 KB and 1 MB messages of a few shapes, measured with relayguard's own check functions.

    .venv/bin/python bench/scan_bench.py [--repeats 7] [--count 20] [--clamd]

`--clamd` starts the real clamd (Debian's clamav-daemon) with the test signature database, as the
end-to-end tests do, and adds INSTREAM to the measurement. Each repeat scans `count` messages of
each shape; the report gives the median over repeats of milliseconds per message, per check and
in total. Results go to stdout and bench/results/scan-latest.md.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support: documents and the clamd fixture

from tests.support.documents import docx, pdf  # noqa: E402

from relayguard.checks import Subject, clamav, dlp, mime_limits  # noqa: E402
from relayguard.checks import yara as yara_check  # noqa: E402
from relayguard.config import Config, load_config  # noqa: E402
from relayguard.core.message import Client, Envelope, Message, message_from_bytes  # noqa: E402
from relayguard.scanners.clamd import ClamdClient  # noqa: E402

CONFIG = """
[[sources]]
name = "bench"
sasl_users = ["bench"]
senders = ["@example.com"]
dlp_profile = "all"

[yara]
rules_dir = "{yara}"

[[dlp_profiles]]
name = "all"
detectors = {{ card_number = 3, iban = 3, es_dni = 3, us_ssn = 3 }}
action = "tag"
"""
LINE = (
    "Meter 4711 reading 2024-01-15: 12,345.67 kWh; ref PO-2024-000123, see https://example.org/m\n"
)


def text_body(size: int) -> str:
    return LINE * max(1, size // len(LINE))


def shapes(size: int) -> dict[str, bytes]:
    def base() -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = "bench@example.com"
        msg["To"] = "alice@example.com"
        msg["Subject"] = "benchmark"
        return msg

    plain = base()
    plain.set_content(text_body(size))
    mixed = base()
    mixed.set_content(text_body(size // 4))
    mixed.add_alternative(f"<p>{text_body(size // 4)}</p>", subtype="html")
    mixed.add_attachment(
        docx(text_body(size // 4).splitlines()),
        maintype="application",
        subtype="octet-stream",
        filename="report.docx",
    )
    mixed.add_attachment(
        pdf(text_body(min(size // 8, 20000)).splitlines()[:60]),
        maintype="application",
        subtype="pdf",
        filename="r.pdf",
    )
    binary = base()
    binary.set_content("Scan attached.\n")
    binary.add_attachment(
        bytes(range(256)) * max(1, size * 3 // 4 // 256),
        maintype="image",
        subtype="tiff",
        filename="scan.tiff",
    )
    return {
        "text": plain.as_bytes().replace(b"\n", b"\r\n"),
        "text+html+docx+pdf": mixed.as_bytes().replace(b"\n", b"\r\n"),
        "binary attachment": binary.as_bytes().replace(b"\n", b"\r\n"),
    }


def measure(config: Config, raw: bytes, count: int, clamd: ClamdClient | None) -> dict[str, float]:
    assert config.content.yara is not None
    checks: dict[str, Callable[[Subject], object]] = {
        "walk": mime_limits.check_limits,
        "yara": yara_check.make_check(config.content.yara),
        "dlp": dlp.make_check(config.content.dlp),
    }
    if clamd is not None and config.content.clamav is not None:
        checks["clamd"] = clamav.make_check(config.content.clamav, clamd.instream)
    totals = dict.fromkeys(checks, 0.0)
    source = config.source("bench")
    for _ in range(count):
        message: Message = message_from_bytes(raw, Envelope(Client(), "bench@example.com"))
        subject = Subject(config, source, message.envelope, message=message)
        for name, check in checks.items():
            start = time.perf_counter()
            check(subject)
            totals[name] += time.perf_counter() - start
    return {name: total * 1000 / count for name, total in totals.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--count", type=int, default=20, help="messages per shape per repeat")
    parser.add_argument("--clamd", action="store_true", help="start the real clamd and include it")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "relayguard.toml"
        text = CONFIG.format(yara=ROOT / "tests/data/content/yara")
        clamd_process = None
        client = None
        if args.clamd:
            from tests.support.clamd import Clamd  # noqa: PLC0415  (only with --clamd)
            from tests.support.stack import make_dir  # noqa: PLC0415

            clamd_process = Clamd(make_dir("bench-clamd-")).start()
            text += f'\n[clamav]\nsocket = "{clamd_process.spec}"\n'
            client = ClamdClient(clamd_process.spec, 30)
        path.write_text(text)
        config = load_config(path)
        rows = []
        try:
            for size_name, size in (("10 KB", 10 * 1024), ("1 MB", 1024 * 1024)):
                for shape, raw in shapes(size).items():
                    runs = [measure(config, raw, args.count, client) for _ in range(args.repeats)]
                    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                    rows.append((size_name, shape, len(raw), medians))
        finally:
            if clamd_process is not None:
                clamd_process.stop()
                shutil.rmtree(clamd_process.directory, ignore_errors=True)

    columns = list(rows[0][3])
    lines = [
        "# Content scanning time per message",
        "",
        f"Machine: {platform.node()}, {platform.processor() or platform.machine()},"
        f" Python {platform.python_version()}. Median of {args.repeats} repeats x {args.count}"
        " messages; milliseconds per message (one process, one thread).",
        "",
        "| size | shape | bytes | " + " | ".join(f"{c} ms" for c in columns) + " | total ms |",
        "| --- | --- | --- | " + " | ".join("---" for _ in columns) + " | --- |",
    ]
    for size_name, shape, length, medians in rows:
        cells = " | ".join(f"{medians[c]:.2f}" for c in columns)
        lines.append(
            f"| {size_name} | {shape} | {length} | {cells} | {sum(medians.values()):.2f} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    out = ROOT / "bench" / "results" / "scan-latest.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
