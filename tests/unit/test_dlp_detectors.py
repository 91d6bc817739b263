"""Detectors on text: formats found, look-alikes not, custom patterns and keyword dictionaries."""

from __future__ import annotations

import base64
import subprocess
import sys
import textwrap

import pytest
from tests.support import dlp_corpus

from relayguard.dlp.detectors import BUILTIN, custom_detector, scan_text

pytestmark = pytest.mark.unit


def found(detector: str, text: str) -> list[str]:
    return [m.value for m in BUILTIN[detector].find(text)]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111111111111111.",
        "card 4111 1111 1111 1111 exp 12/27",
        "card 4111-1111-1111-1111",
        "amex 3782 822463 10005",
        "csv: A,4111111111111111,2027",
        "(4111111111111111)",
    ],
)
def test_card_formats_found(text: str) -> None:
    assert found("card_number", text) in (["4111111111111111"], ["378282246310005"])


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # Luhn
        "mixed separators 4111 1111-1111 1111",
        "odd grouping 41 1111 1111 1111 11",
        "id ORD-4111111111111111",
        "hex 4111111111111111abc",
        "decimal 0.4111111111111111",
        "a longer run 41111111111111110000",
        "uuid 41111111-1111-1111-1111-111111111111",
        "base64 iVBORw0KGgo4111111111111111AAAA",
        "path /files/4111111111111111/",
        "b64 ends +4111111111111111=",
    ],
)
def test_card_look_alikes_not_found(text: str) -> None:
    assert found("card_number", text) == []


def test_iban_grouped_then_a_capitalised_word() -> None:
    assert found("iban", "IBAN DE89 3704 0044 0532 0130 00 THEN pay") == ["DE89370400440532013000"]
    assert found("iban", "IBAN DE89 3704 0044 0532 0130 0012 too long") == []


def test_dni_and_nie() -> None:
    assert found("es_dni", "DNI 12345678Z, NIE X-1234567-L") == ["12345678Z", "X1234567L"]
    assert found("es_dni", "DNI 12345678A") == []


def test_ssn_needs_separators_or_context() -> None:
    assert found("us_ssn", "SSN 536-22-1234") == ["536221234"]
    assert found("us_ssn", "ref 536221234") == []
    assert found("us_ssn", "Social Security Number: 536221234") == ["536221234"]
    assert found("us_ssn", "phone 555-12-34567") == []


def test_digit_runs_inside_base64_image_data_are_not_cards() -> None:
    payload = base64.b64encode(b"\x89PNG" + b"4111111111111111" * 20 + bytes(range(256)))
    html = f'<img src="data:image/png;base64,{payload.decode()}">'
    assert found("card_number", html) == []
    assert found("card_number", payload.decode()) == []


def test_custom_regex_with_validator_and_context() -> None:
    detector = custom_detector(
        "employee_card",
        pattern=r"\bEMP\d{11}\b",
        validator="luhn",
        context=["badge", "employee"],
        context_window=30,
    )
    assert [m.value for m in detector.find("employee badge EMP79927398713")] == ["79927398713"]
    assert list(detector.find("badge EMP79927398710")) == []  # Luhn
    assert list(detector.find("EMP79927398713 far away from any context word here ...")) == []


def test_keyword_dictionary_counts_occurrences_near_context() -> None:
    detector = custom_detector(
        "project", keywords=["Project Falcon", "falcon-2"], context=["confidential"]
    )
    text = "CONFIDENTIAL: project falcon update. Project Falcon again. falcon-2 later."
    matches = list(detector.find(text))
    assert detector.count(matches) == 3
    assert list(detector.find("project falcon, no context")) == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"pattern": "(", "keywords": []}, "invalid regular expression"),
        ({"pattern": "a*"}, "matches the empty string"),
        ({}, "exactly one of"),
        ({"pattern": "x", "keywords": ["y"]}, "exactly one of"),
        ({"pattern": r"\d+", "validator": "crc"}, "unknown validator"),
        ({"pattern": r"(\d)\1"}, r"not supported by the linear-time \(RE2\) engine"),
        ({"pattern": r"(?<!\w)\d+"}, r"not supported by the linear-time \(RE2\) engine"),
    ],
)
def test_custom_detector_errors(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        custom_detector("x", **kwargs)  # type: ignore[arg-type]


def test_scan_text_returns_only_detectors_that_hit() -> None:
    result = scan_text("card 4111111111111111 and DNI 12345678Z", list(BUILTIN.values()))
    assert set(result) == {"card_number", "es_dni"}


def test_corpus_precision_and_recall() -> None:
    """The generated corpus: no false positive, every valid number found."""
    scores = {name: dlp_corpus.Score() for name in BUILTIN}
    for sample in dlp_corpus.build():
        hits = scan_text(sample.text, list(BUILTIN.values()))
        for name, score in scores.items():
            got = {m.value for m in hits.get(name, [])}
            wanted = sample.expected.get(name, set())
            score.true_positives += len(got & wanted)
            score.false_positives += len(got - wanted)
            score.false_negatives += len(wanted - got)
    for name, score in scores.items():
        assert score.true_positives > 20, name
        assert (score.false_positives, score.false_negatives) == (0, 0), name


def run_isolated(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a child Python: a regression to a backtracking engine fails on the timeout
    (Python's re holds the GIL and cannot be interrupted) instead of hanging the suite."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the detector did not finish within 20 s: catastrophic backtracking")


def test_custom_pattern_with_nested_quantifiers_finishes_on_hostile_input() -> None:
    """`(\\d+\\s?)+` against 40 digits and no `X` needs 2^40 steps on a backtracking engine."""
    result = run_isolated(
        r"""
        from relayguard.dlp.detectors import custom_detector

        detector = custom_detector("account", pattern=r"ACC(\d+\s?)+X")
        hostile = "ACC" + "1" * 40 + "!"
        print(len(list(detector.find(hostile * 1000))))
        print([m.value for m in detector.find("ACC12 34X")])
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["0", "['acc12 34x']"]


def test_builtin_detectors_stay_linear_on_hostile_input() -> None:
    """About 1.4 MB of the shapes each built-in pattern backtracks on most (digit runs, card and
    IBAN group runs, near-DNI letters) is scanned in well under the timeout (~0.2 s here)."""
    result = run_isolated(
        """
        from relayguard.dlp.detectors import BUILTIN, scan_text

        shapes = ["1" * 200_000, "4111 " * 40_000, "4111-" * 40_000, "DE89 " + "ABCD " * 40_000,
                  "DE89" + "A1" * 100_000, "X-1234567-" * 20_000, "123-45-" * 30_000]
        print(sum(len(scan_text(text, list(BUILTIN.values()))) for text in shapes))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
