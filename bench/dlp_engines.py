"""Python `re` against RE2 on the built-in DLP patterns, over about 1 MB of mixed text.

    .venv/bin/python bench/dlp_engines.py [--megabytes 1] [--repeats 5]

The text is the generated DLP corpus (tests/support/dlp_corpus.py: prose, valid and invalid card
numbers, IBANs, DNIs, SSNs, dates, UUIDs, phone numbers, base64 image data) repeated to the size.

The built-in patterns lean on lookbehinds and a backreference, which RE2 does not have. Their RE2
form here keeps only what RE2 can run (the same alternatives, no lookarounds, separators spelled
out): it finds a superset of candidates, and the boundary checks the lookarounds do would still
cost Python code per candidate. So the RE2 column is a lower bound for RE2 on the built-ins,
and the `re, same candidates` column times the stdlib engine on exactly those patterns.
A custom pattern shaped like the documentation's example is timed on both engines too.
"""

from __future__ import annotations

import argparse
import re
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path

import re2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import dlp_corpus

from relayguard.dlp.detectors import BUILTIN, custom_detector, scan_text

# The built-ins' alternatives without lookarounds or backreferences (see the module docstring).
CANDIDATES = {
    "card_number": r"\d(?:\d{12,18}|\d{3} \d{4} \d{4} \d{4}(?: \d{3})?"
    r"|\d{3}-\d{4}-\d{4}-\d{4}(?:-\d{3})?|\d{3} \d{6} \d{4,5}|\d{3}-\d{6}-\d{4,5})",
    "iban": r"[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)",
    "es_dni": r"(?:\d{8}|[XYZ][ -]?\d{7})[ -]?[A-Za-z]",
    "us_ssn": r"\d(?:\d{2}-\d{2}-\d{4}|\d{2} \d{2} \d{4}|\d{8})",
}
CUSTOM = r"\bEMP\d{11}\b"
# Characters that glue a number to its neighbours (the built-ins' lookarounds, simplified).
GLUE = frozenset(string.ascii_letters + string.digits + "_+/=-")


def mixed_text(megabytes: float) -> str:
    corpus = "\n\n".join(sample.text for sample in dlp_corpus.build())
    size = int(megabytes * 1_000_000)
    return (corpus * (size // len(corpus) + 1))[:size]


def best_times(repeats: int, works: list[Callable[[], object]]) -> list[float]:
    """Best time of each, the works alternated within every repeat (the machine is noisy)."""
    best = [float("inf")] * len(works)
    for _ in range(repeats):
        for index, work in enumerate(works):
            start = time.perf_counter()
            work()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def count_all(patterns: list[re.Pattern[str]] | list[re2._Regexp], text: str) -> int:
    return sum(1 for pattern in patterns for _ in pattern.finditer(text))


def count_boundary_checked(patterns: list[re2._Regexp], text: str) -> int:
    """RE2 candidates kept by the cheapest form of the lookarounds, done in Python."""
    kept = 0
    for pattern in patterns:
        for found in pattern.finditer(text):
            start, end = found.span()
            before = text[start - 1] if start else " "
            after = text[end] if end < len(text) else " "
            decimal = start >= 2 and text[start - 1] in ".," and text[start - 2].isdigit()
            kept += before not in GLUE and after not in GLUE and not decimal
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    text = mixed_text(args.megabytes)
    builtins = list(BUILTIN.values())
    stdlib = [re.compile(p) for p in CANDIDATES.values()]
    linear = [re2.compile(p) for p in CANDIDATES.values()]
    custom_re = re.compile(CUSTOM)
    custom_re2 = custom_detector("badge", pattern=CUSTOM).pattern
    rows = [
        ("built-ins, detectors as shipped (re + validators)", lambda: scan_text(text, builtins)),
        ("built-ins, candidates only, re", lambda: count_all(stdlib, text)),
        ("built-ins, candidates only, RE2", lambda: count_all(linear, text)),
        (
            "built-ins, RE2 candidates + minimal boundary checks in Python",
            lambda: count_boundary_checked(linear, text),
        ),
        ("custom pattern, re", lambda: count_all([custom_re], text)),
        ("custom pattern, RE2 (as shipped)", lambda: count_all([custom_re2], text)),
    ]
    shipped = sum(1 for detector in builtins for _ in detector.pattern.finditer(text))
    print(f"{len(text):,} characters, best of {args.repeats}")
    print(
        f"matches of the shipped built-in patterns: {shipped};"
        f" RE2 candidates to check in Python: {count_all(linear, text)}"
    )
    print("| what | ms | MB/s |")
    print("| --- | --- | --- |")
    times = best_times(args.repeats, [work for _, work in rows])
    for (label, _), seconds in zip(rows, times, strict=True):
        print(f"| {label} | {seconds * 1000:.1f} | {len(text) / seconds / 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
