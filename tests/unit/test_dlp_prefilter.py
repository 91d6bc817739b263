"""The Hyperscan prefilter changes nothing found: scan_text (built-ins on the flagged lines only)
against each detector's own full `re` scan, on random text full of numbers and near misses."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support import dlp_corpus

from relayguard.dlp.detectors import BUILTIN, Detector, Match, custom_detector, scan_text
from relayguard.dlp.prefilter import BUILTIN as BUILTIN_PREFILTER
from relayguard.dlp.prefilter import CANDIDATES, locate

pytestmark = pytest.mark.unit

DETECTORS = list(BUILTIN.values())


def full_scan(text: str, detectors: list[Detector]) -> dict[str, list[Match]]:
    """The engine before the prefilter: every pattern over the whole text."""
    return {d.name: found for d in detectors if (found := list(d.find(text)))}


def findings(seed: int) -> str:
    """A valid or invalid number of some detector, formatted as the corpus formats them."""
    rng = random.Random(seed)
    makers = [
        lambda: dlp_corpus.format_card(rng, dlp_corpus.valid_card(rng)),
        lambda: dlp_corpus.format_card(rng, dlp_corpus.invalid_card(rng)),
        lambda: dlp_corpus.group_iban(rng, dlp_corpus.valid_iban(rng)),
        lambda: dlp_corpus.valid_iban(rng),
        lambda: dlp_corpus.invalid_iban(rng),
        lambda: dlp_corpus.valid_dni(rng),
        lambda: dlp_corpus.invalid_dni(rng),
        lambda: dlp_corpus.format_ssn(rng, dlp_corpus.valid_ssn(rng)),
        lambda: dlp_corpus.invalid_ssn(rng),
    ]
    return rng.choice(makers)()


# Python's \d matches digits of every script: the same numbers written in fullwidth and
# Arabic-Indic digits (the validators read them too).
FULLWIDTH = "".join(chr(0xFF10 + digit) for digit in range(10))
ARABIC_INDIC = "".join(chr(0x0660 + digit) for digit in range(10))
OTHER_DIGITS = [str.maketrans("0123456789", FULLWIDTH), str.maketrans("0123456789", ARABIC_INDIC)]


def other_script(seed: int) -> str:
    return findings(seed).translate(OTHER_DIGITS[seed % 2])


# Characters that decide the patterns' boundaries, separators, digits of other scripts
# (fullwidth, Arabic-Indic: Python's \d matches them), letters \w knows, and line ends.
PIECES = st.one_of(
    st.integers(0, 10**6).map(findings),
    st.integers(0, 10**6).map(other_script),
    st.text(alphabet="0123456789", min_size=1, max_size=20),
    st.sampled_from([*" -\n.,+/=_XYZL?é€\u00a0", "\r\n", "DE", "ES89", "SSN ", "ss#"]),
    st.sampled_from(["social security ", FULLWIDTH[1:4], ARABIC_INDIC[3:6]]),
    st.text(max_size=6),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=40).map("".join))
def test_same_matches_as_the_full_scan(text: str) -> None:
    assert scan_text(text, DETECTORS) == full_scan(text, DETECTORS)


@settings(max_examples=200, deadline=None)
@given(st.lists(PIECES, max_size=40).map("".join), st.integers(1, 40))
def test_chunked_lines_cover_every_match(text: str, chunk: int) -> None:
    lines = locate(text, {BUILTIN_PREFILTER: list(CANDIDATES)}, (), chunk).lines
    for detector in DETECTORS:
        on_lines = list(detector.find_on_lines(text, lines[detector.name]))
        assert on_lines == list(detector.find(text))


def test_the_corpus_finds_the_same() -> None:
    for sample in dlp_corpus.build():
        assert scan_text(sample.text, DETECTORS) == full_scan(sample.text, DETECTORS)


def test_custom_and_builtin_detectors_together() -> None:
    badge = custom_detector("badge", pattern=r"\bEMP\d{6}\b")
    words = custom_detector("secret", keywords=["project x"])
    text = "EMP123456 card 4111 1111 1111 1111\nproject X, SSN 536-22-1234\n"
    detectors = [*DETECTORS, badge, words]
    found = scan_text(text, detectors)
    assert found == full_scan(text, detectors)
    assert sorted(found) == ["badge", "card_number", "secret", "us_ssn"]


def test_a_digit_heavy_line_flags_nothing() -> None:
    """The benchmark's body line: a ten-digit run is no candidate of any built-in."""
    line = "The quick brown fox jumps over the lazy dog, 0123456789 ABCDEFGHIJ.\n"
    assert locate(line * 100, {BUILTIN_PREFILTER: list(CANDIDATES)}, ()).lines == {
        name: [] for name in CANDIDATES
    }


def test_every_builtin_has_a_candidate() -> None:
    assert {d.name for d in DETECTORS if d.prefilter is BUILTIN_PREFILTER} == set(CANDIDATES)


# Keywords with what case-insensitive matching makes tricky: the Kelvin sign matches "k", the long
# s matches "s" (either way round), non-ASCII letters, "#" at the end, phrases.
KEYWORDS = [
    "falcon",
    "ss#",
    "Überflieger",
    "project x",
    "key",
    "case",
    "\u212aey",
    "ca\u017fe",
    "été",
]
SPELLINGS = [
    str.upper,
    str.lower,
    str.swapcase,
    lambda word: word.replace("k", "\u212a").replace("K", "\u212a"),
    lambda word: word.replace("s", "\u017f"),
    lambda word: word.replace("\u212a", "k").replace("\u017f", "S"),
]
KEYWORD_PIECES = st.one_of(
    st.tuples(st.sampled_from(KEYWORDS), st.sampled_from(SPELLINGS)).map(lambda t: t[1](t[0])),
    st.sampled_from([*" \n_-.#?kKsSé", "FALCONRY", "\u212a", "\u017f"]),
    st.text(max_size=4),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(KEYWORD_PIECES, max_size=30).map("".join), st.sets(st.sampled_from(KEYWORDS)))
def test_keyword_dictionaries_find_the_same(text: str, words: set[str]) -> None:
    dictionary = custom_detector("words", keywords=sorted(words) or ["falcon"])
    assert scan_text(text, [dictionary]) == full_scan(text, [dictionary])


def test_keyword_starts_skip_non_matching_text() -> None:
    dictionary = custom_detector("words", keywords=["falcon", "\u212aey", "été"])
    keywords = dictionary.keywords
    assert keywords is not None
    text = "no FALCONRY; a Falcon, KEY and ÉTÉ\n" * 2
    assert locate(text, {}, (keywords,)).starts[keywords] == [3, 15, 23, 31, 38, 50, 58, 66]
    folded = locate("\u212a" + text, {}, (keywords,))
    assert folded.starts[keywords] is None  # scanned whole: see FOLDS_TO_ASCII


def test_a_keyword_inside_a_longer_match_is_not_found_again() -> None:
    dictionary = custom_detector("words", keywords=["project x", "x"])
    text = "Project X, and x."
    assert scan_text(text, [dictionary]) == full_scan(text, [dictionary])
    assert [m.value for m in scan_text(text, [dictionary])["words"]] == ["project x", "x"]
