"""scan_parts: counts over the whole message, one part in memory at a time."""

from __future__ import annotations

import tracemalloc

import pytest

from relayguard.dlp.detectors import BUILTIN, custom_detector
from relayguard.dlp.profiles import scan_parts
from relayguard.parsing.mime import Part

pytestmark = pytest.mark.unit

CARD = "4111 1111 1111 1111"
OTHER_CARD = "5555 5555 5555 4444"


def text_part(path: str, text: str) -> Part:
    return Part(path, "text/plain", "", text.encode(), "utf-8")


def test_counts_distinct_values_across_parts_and_keyword_occurrences() -> None:
    words = custom_detector("secret", keywords=["project x"])
    parts = [
        text_part("1", f"card {CARD}, project X\n"),
        text_part("2", f"<p>card {CARD} and {OTHER_CARD}, project x</p>\n"),
        Part("3", "image/png", "scan.png", b"\x89PNG not text"),
    ]
    detectors = [BUILTIN["card_number"], BUILTIN["us_ssn"], words]
    for keep in (True, False):
        scan = scan_parts(parts, detectors, keep_matches=keep)
        assert scan.counts == {"card_number": 2, "secret": 2}
        assert scan.scanned_parts == 2
    assert scan_parts(parts, detectors, keep_matches=False).parts == []
    kept = scan_parts(parts, detectors)
    assert [(p.path, sorted(p.matches)) for p in kept.parts] == [
        ("1", ["card_number", "secret"]),
        ("2", ["card_number", "secret"]),
    ]


def test_unreadable_part_is_reported_not_counted() -> None:
    broken = Part("2", "application/pdf", "r.pdf", b"%PDF-1.4 truncated")
    scan = scan_parts([text_part("1", f"card {CARD}\n"), broken], [BUILTIN["card_number"]])
    assert scan.counts == {"card_number": 1}
    assert [u.split(":")[0] for u in scan.unreadable] == ["2"]


def test_memory_holds_one_part_not_the_message_and_its_matches() -> None:
    """Four 1 MB parts, a card every few lines: the check's scan (keep_matches=False) peaks at
    about one part's text, not at the message's text plus every match it held before (18x)."""
    size = 1 << 20
    lines = f"Card {CARD} paid, ref 0123456789.\n" + "The meter was read on time.\n" * 4
    parts = [text_part(str(i), lines * (size // len(lines))) for i in range(4)]
    detectors = list(BUILTIN.values())
    scan_parts(parts[:1], detectors)  # the prefilter compiled and imports done before measuring
    tracemalloc.start()
    try:
        scan = scan_parts(parts, detectors, keep_matches=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert scan.counts == {"card_number": 1}
    assert peak < 2 * size
