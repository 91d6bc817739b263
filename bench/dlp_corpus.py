"""DLP detector precision and recall on the generated corpus (tests/support/dlp_corpus.py).

    .venv/bin/python bench/dlp_corpus.py [--seed 4] [--size 300]

The corpus mixes valid numbers (check digits computed) with invalid ones (a wrong check digit, an
impossible range) and look-alikes (order numbers, dates, timestamps, UUIDs, phone and tracking
numbers, digit runs inside base64 image data). Seed 4 / size 300 is the corpus the unit test
asserts on; other seeds are fresh corpora of the same generator.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import dlp_corpus

from relayguard.dlp.detectors import BUILTIN, scan_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--size", type=int, default=300)
    args = parser.parse_args(argv)
    samples = dlp_corpus.build(args.seed, args.size)
    scores = {name: dlp_corpus.Score() for name in BUILTIN}
    for sample in samples:
        hits = scan_text(sample.text, list(BUILTIN.values()))
        for name, score in scores.items():
            got = {m.value for m in hits.get(name, [])}
            wanted = sample.expected.get(name, set())
            score.true_positives += len(got & wanted)
            score.false_positives += len(got - wanted)
            score.false_negatives += len(wanted - got)
    print(
        f"corpus seed {args.seed}, {len(samples)} texts, "
        f"{sum(len(s.text) for s in samples)} characters"
    )
    print("| detector | TP | FP | FN | precision | recall |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, s in scores.items():
        print(
            f"| {name} | {s.true_positives} | {s.false_positives} | {s.false_negatives} |"
            f" {s.precision:.3f} | {s.recall:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
