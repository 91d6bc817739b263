r"""DLP detectors: a pattern that finds candidates, a validator that keeps the real ones, optional
context words that must appear nearby, and keyword dictionaries.

A detector returns `Match` objects. Their `value` is the normalised matched data: it is for
counting distinct findings and for `relayguard rules test --show-matches` on a security team's own
machine, and never leaves this package otherwise (logs, replies, audit lines and headers carry
only detector names and counts).

Engines. A custom `[[dlp_detectors]] pattern` runs on RE2 (google-re2), whose time is linear in
the text whatever the pattern: on Python's backtracking `re`, `ACC(\d+\s?)+X` against 40 digits
never finishes and holds the GIL, so a few messages would stop every worker. RE2 refuses what it
cannot run in linear time (backreferences, lookarounds), and the configuration names the detector.
The built-in patterns stay on `re`: they need lookbehinds and a backreference, and every quantifier
in them is bounded, so the work per starting position is bounded and the scan linear (a unit
test runs them on hostile shapes). Keyword dictionaries and context words are escaped literals on
`re` (linear for the same reason). `scan_text` runs the built-ins and the dictionaries only where
one Hyperscan pass says they can match (dlp/prefilter.py): the same findings, at a fraction of the
time on text without them (bench/dlp_engines.py; docs/rules.md, "Pattern engines").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import re2

from relayguard.core.errors import RelayguardError
from relayguard.dlp import prefilter, validators
from relayguard.dlp.prefilter import Keywords, Prefilter
from relayguard.dlp.validators import Validator

# Digits glued to letters or base64 alphabet characters are not a number of their own: this keeps
# digit runs inside base64 data, hex strings, UUIDs and identifiers such as "INV-2024..." out.
# Each pattern consumes its first digit before looking behind it ("\d(?<!X\d)"): Python's regex
# engine then skips non-digits quickly, about twice as fast as leading lookbehinds.
_FIRST_DIGIT = r"\d(?<![\w+/=-]\d)(?<!\d[.,]\d)"
_AFTER = r"(?![\w+/=-])"
# A card-shaped group run inside a longer grouped number (a grouped IBAN "AT73 6759 6828 8772
# 0790", an account number) is part of that number, not a card of its own.
_NOT_IN_GROUPS_BEFORE = r"(?<![A-Z]{2}\d{2} \d)(?<!\d{4} \d)(?<!\d{4}-\d)"
_NOT_IN_GROUPS_AFTER = r"(?![ -]\d{1,4}(?![\w/]))"


class Found(Protocol):
    """What a detector reads of a pattern match: `re` and RE2 matches both have it."""

    def span(self, group: int = 0, /) -> tuple[int, int]: ...


class TextPattern(Protocol):
    """A compiled pattern of either engine."""

    def finditer(self, string: str, pos: int = 0, endpos: int = ..., /) -> Iterator[Found]: ...

    def match(self, string: str, pos: int = 0, endpos: int = ..., /) -> Found | None: ...


@dataclass(frozen=True, slots=True)
class Match:
    detector: str
    value: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Detector:
    """A named detector. `count_distinct`: count distinct values (a card number quoted twice in
    the text and the HTML alternative is one card), else every occurrence (keyword hits)."""

    name: str
    pattern: TextPattern
    validator: Validator | None = None
    context: re.Pattern[str] | None = None
    context_window: int = 80
    count_distinct: bool = True
    context_for_unformatted: re.Pattern[str] | None = field(default=None)
    description: str = ""
    prefilter: Prefilter | None = None  # flags the lines where it can match (dlp/prefilter.py)
    keywords: Keywords | None = None  # where a dictionary's keywords can start (the same)

    def find(self, text: str) -> Iterator[Match]:
        return self.find_in(text, self.pattern.finditer(text))

    def find_on_lines(self, text: str, lines: Iterable[tuple[int, int]]) -> Iterator[Match]:
        """What `find` finds, when every match lies on one of LINES (the prefilter's spans)."""
        for start, end in lines:
            yield from self.find_in(text, self.pattern.finditer(text, start, end))

    def find_at(self, text: str, starts: Iterable[int]) -> Iterator[Match]:
        """What `find` finds, when every match starts at one of STARTS (in order): the pattern
        is tried at each start not inside the previous match, as finditer would."""
        end = 0
        for start in starts:
            found = self.pattern.match(text, start) if start >= end else None
            if found is not None:
                end = found.span()[1]
                yield from self.find_in(text, iter((found,)))

    def find_in(self, text: str, candidates: Iterator[Found]) -> Iterator[Match]:
        for found in candidates:
            start, end = found.span()
            raw = text[start:end]
            value = self.validator(raw) if self.validator else raw.strip().lower()
            if value is None:
                continue
            if self.context is not None and not self._near(self.context, text, start, end):
                continue
            if (
                self.context_for_unformatted is not None
                and raw.isdigit()
                and not self._near(self.context_for_unformatted, text, start, end)
            ):
                continue
            yield Match(self.name, value, start, end)

    def _near(self, words: re.Pattern[str], text: str, start: int, end: int) -> bool:
        low = max(0, start - self.context_window)
        return words.search(text, low, min(len(text), end + self.context_window)) is not None

    def count(self, matches: Sequence[Match]) -> int:
        if self.count_distinct:
            return len({m.value for m in matches})
        return len(matches)


def word_list(words: Sequence[str]) -> re.Pattern[str]:
    """Case-insensitive whole-word alternation of literal words or phrases."""
    escaped = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{escaped})(?!\w)", re.IGNORECASE)


CARD_PATTERN = re.compile(
    _FIRST_DIGIT
    + _NOT_IN_GROUPS_BEFORE
    + r"(?:\d{12,18}"  # compact
    + r"|\d{3}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?"  # 4-4-4-4 and 4-4-4-4-3
    + r"|\d{3}([ -])\d{6}\2\d{4,5})"  # 4-6-5 (Amex) and 4-6-4 (Diners)
    + _AFTER
    + _NOT_IN_GROUPS_AFTER
)
IBAN_PATTERN = re.compile(
    r"[A-Z](?<!\w[A-Z])[A-Z]\d{2}"
    r"(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)(?![\w])"
)
DNI_PATTERN = re.compile(
    r"[\dXYZ](?<![\w+/=-][\dXYZ])(?<!\d[.,]\d)(?:(?<=\d)\d{7}|(?<=[XYZ])[ -]?\d{7})"
    r"[ -]?[A-Za-z](?![\w-])"
)
SSN_PATTERN = re.compile(_FIRST_DIGIT + r"(?:\d{2}-\d{2}-\d{4}|\d{2} \d{2} \d{4}|\d{8})" + _AFTER)
SSN_CONTEXT = word_list(["ssn", "social security", "social security number", "ss#", "ssn#"])


def _iban_prefix(text: str) -> str | None:
    """A grouped IBAN may be followed by a word of four capitals ("... 00 THEN"): cut the match
    at the length the country code announces, on a group boundary, and validate that."""
    compact = re.sub(r"\s", "", text)
    expected = validators.IBAN_LENGTHS.get(compact[:2].upper())
    if expected is None or len(compact) < expected:
        return None
    if len(compact) > expected:
        seen = 0
        for index, char in enumerate(text):
            if not char.isspace():
                seen += 1
            if seen == expected:
                rest = text[index + 1 :]
                if rest and not rest[0].isspace():
                    return None
                break
    return validators.iban(compact[:expected])


BUILTIN: dict[str, Detector] = {
    "card_number": Detector(
        "card_number",
        CARD_PATTERN,
        validators.card_number,
        description="payment card numbers: known IIN range and length, Luhn check digit",
        prefilter=prefilter.BUILTIN,
    ),
    "iban": Detector(
        "iban",
        IBAN_PATTERN,
        _iban_prefix,
        description="IBAN: country length and ISO 7064 mod-97 check digits",
        prefilter=prefilter.BUILTIN,
    ),
    "es_dni": Detector(
        "es_dni",
        DNI_PATTERN,
        validators.es_dni,
        description="Spanish DNI / NIE: the mod-23 check letter",
        prefilter=prefilter.BUILTIN,
    ),
    "us_ssn": Detector(
        "us_ssn",
        SSN_PATTERN,
        validators.us_ssn,
        context_for_unformatted=SSN_CONTEXT,
        description="US SSN: SSA area/group/serial rules; 9 bare digits only next to 'SSN'",
        prefilter=prefilter.BUILTIN,
    ),
}


def custom_detector(
    name: str,
    *,
    pattern: str = "",
    keywords: Sequence[str] = (),
    validator: str = "",
    context: Sequence[str] = (),
    context_window: int = 80,
    ignore_case: bool = False,
) -> Detector:
    """A detector from configuration; raises DetectorError naming the key and the reason."""
    if bool(pattern) == bool(keywords):
        raise DetectorError("name", "give exactly one of 'pattern' or 'keywords'")
    check = None
    if validator:
        if validator not in validators.VALIDATORS:
            raise DetectorError(
                "validator",
                f"unknown validator {validator!r} (one of {', '.join(validators.VALIDATORS)})",
            )
        check = validators.VALIDATORS[validator]
    compiled = linear_pattern(pattern, ignore_case) if pattern else word_list(keywords)
    return Detector(
        name,
        compiled,
        check,
        context=word_list(context) if context else None,
        context_window=context_window,
        count_distinct=bool(pattern),
        description=f"custom {'pattern' if pattern else 'keyword dictionary'}",
        keywords=None if pattern else Keywords(keywords),
    )


class DetectorError(RelayguardError, ValueError):
    """A custom detector that cannot be built; `key` is the [[dlp_detectors]] key at fault."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


def linear_pattern(pattern: str, ignore_case: bool = False) -> TextPattern:
    """Compile a custom pattern with RE2. One RE2 refuses is explained with Python's parser: a
    syntax error reads as usual, valid Python that RE2 cannot run says so."""
    options = re2.Options()
    options.log_errors = False  # RE2 would print the error on stderr as well
    options.case_sensitive = not ignore_case
    try:
        compiled: TextPattern = re2.compile(pattern, options)
    except re2.error as exc:
        try:
            re.compile(pattern)
        except re.error as python_error:
            raise DetectorError("pattern", f"invalid regular expression: {python_error}") from None
        reason = exc.args[0] if exc.args else ""
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise DetectorError(
            "pattern",
            f"not supported by the linear-time (RE2) engine: {reason}"
            " (no backreferences or lookarounds; see docs/rules.md)",
        ) from None
    if next(compiled.finditer(""), None) is not None:
        raise DetectorError("pattern", "the pattern matches the empty string")
    return compiled


def scan_text(text: str, detectors: Sequence[Detector]) -> dict[str, list[Match]]:
    """Every detector's matches in TEXT, by detector name (detectors without any left out)."""
    found: dict[str, list[Match]] = {}
    for match in iter_matches(text, detectors):
        found.setdefault(match.detector, []).append(match)
    return found


def iter_matches(text: str, detectors: Sequence[Detector]) -> Iterator[Match]:
    """The matches of each detector in turn, as they are found. A detector with a prefilter runs
    only on the lines it flags (one Hyperscan pass for all the built-ins), a keyword dictionary
    only where one of its keywords starts (one pass each), all found in one trip to the scan
    thread (prefilter.locate); a custom pattern runs over the whole text on RE2."""
    prefilters: dict[Prefilter, list[str]] = {}
    for detector in detectors:
        if detector.prefilter is not None:
            prefilters.setdefault(detector.prefilter, []).append(detector.name)
    dictionaries = [d.keywords for d in detectors if d.keywords is not None]
    located = prefilter.locate(text, prefilters, dictionaries)
    for detector in detectors:
        starts = located.starts[detector.keywords] if detector.keywords is not None else None
        if detector.prefilter is not None:
            yield from detector.find_on_lines(text, located.lines[detector.name])
        elif starts is not None:
            yield from detector.find_at(text, starts)
        else:
            yield from detector.find(text)
