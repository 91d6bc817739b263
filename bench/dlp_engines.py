"""DLP engines, before and after the Hyperscan prefilter, in milliseconds per MB of text.

    .venv/bin/python bench/dlp_engines.py [--megabytes 1] [--repeats 5]

Texts: the benchmark's message body (bench/run.py: "... 0123456789 ABCDEFGHIJ." on every line,
digit-heavy without a finding), meter readings (bench/scan_bench.py: dates, amounts, order
numbers), prose without numbers, and the generated DLP corpus (tests/support/dlp_corpus.py:
findings, invalid numbers and look-alikes on every other line, base64 image data: the worst case
for a prefilter).

"before" is each detector's own full scan (`Detector.find`: the built-in patterns on Python's
`re`, a keyword dictionary as one `re` alternation), which the engine did for every part until
now; "after" is `scan_text` (dlp/prefilter.py: one Hyperscan pass finds the lines a built-in can
match, or where a keyword can start, and `re` runs only there). Both give the same matches
(tests/unit/test_dlp_prefilter.py). The works are alternated within each repeat (the machine is
noisy); the table gives the median and the best of the repeats.
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import dlp_corpus

from relayguard.dlp.detectors import BUILTIN, Detector, custom_detector, scan_text

LINES = {
    "benchmark body (digit-heavy)": (
        "The quick brown fox jumps over the lazy dog, 0123456789 ABCDEFGHIJ.\n"
    ),
    "meter readings (digit-heavy)": (
        "Meter 4711 reading 2024-01-15: 12,345.67 kWh; ref PO-2024-000123, see https://example.org/m\n"
    ),
    'prose, no numbers ("statement" on every line)': (
        "Please find the monthly statement attached. Contact the desk.\n"
    ),
}
CUSTOM = r"\bEMP\d{11}\b"


def texts(megabytes: float) -> dict[str, str]:
    size = int(megabytes * 1_000_000)
    every = {name: line * (size // len(line)) for name, line in LINES.items()}
    corpus = "\n\n".join(sample.text for sample in dlp_corpus.build())
    every["DLP corpus (findings on every other line)"] = (corpus * (size // len(corpus) + 1))[:size]
    return every


def dictionary(size: int) -> Detector:
    """SIZE random words and one that the corpus holds on every other line ("statement")."""
    rng = random.Random(size)  # noqa: S311  (test words, not secrets)
    words = [
        "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(5, 12)))
        for _ in range(size - 1)
    ]
    return custom_detector(f"words_{size}", keywords=[*words, "statement"])


def before(detectors: list[Detector], text: str) -> int:
    return sum(1 for detector in detectors for _ in detector.find(text))


def after(detectors: list[Detector], text: str) -> int:
    return sum(len(matches) for matches in scan_text(text, detectors).values())


def timed(repeats: int, works: list[Callable[[], object]]) -> list[list[float]]:
    """Seconds of each work in each repeat, the works alternated within every repeat."""
    seconds: list[list[float]] = [[] for _ in works]
    for _ in range(repeats):
        for index, work in enumerate(works):
            start = time.perf_counter()
            work()
            seconds[index].append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    builtins = list(BUILTIN.values())
    groups: list[tuple[str, list[Detector]]] = [("4 built-ins", builtins)]
    groups += [(f"dictionary of {n} keywords", [dictionary(n)]) for n in (10, 1000)]
    groups.append(
        (f"custom pattern {CUSTOM} (RE2, unchanged)", [custom_detector("b", pattern=CUSTOM)])
    )
    rows: list[tuple[str, str, Callable[[], int], Callable[[], int]]] = []
    for text_name, text in texts(args.megabytes).items():
        for group_name, detectors in groups:
            rows.append(
                (
                    group_name,
                    text_name,
                    lambda d=detectors, t=text: before(d, t),  # type: ignore[misc]
                    lambda d=detectors, t=text: after(d, t),  # type: ignore[misc]
                )
            )
    for _, _, full_scan, prefiltered in rows:
        assert full_scan() == prefiltered(), "the engines disagree"
    seconds = timed(args.repeats, [work for row in rows for work in row[2:]])
    megabytes = args.megabytes
    print(f"{megabytes:g} MB per text; median (best) of {args.repeats} repeats, ms per MB")
    print("| detectors | text | before | after | before / after |")
    print("| --- | --- | ---: | ---: | ---: |")
    for index, (group_name, text_name, _, _) in enumerate(rows):
        old, new = seconds[2 * index], seconds[2 * index + 1]
        old_ms, new_ms = (statistics.median(s) * 1000 / megabytes for s in (old, new))
        print(
            f"| {group_name} | {text_name} | {old_ms:.1f} ({min(old) * 1000 / megabytes:.1f})"
            f" | {new_ms:.1f} ({min(new) * 1000 / megabytes:.1f}) | {old_ms / new_ms:.1f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
