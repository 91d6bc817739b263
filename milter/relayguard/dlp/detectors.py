"""DLP detectors: a pattern that finds candidates, a validator that keeps the real ones, optional
context words that must appear nearby, and keyword dictionaries.

A detector returns `Match` objects. Their `value` is the normalised matched data: it is for
counting distinct findings and for `relayguard rules test --show-matches` on a security team's own
machine, and never leaves this package otherwise (logs, replies, audit lines and headers carry
only detector names and counts).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from relayguard.dlp import validators
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
    pattern: re.Pattern[str]
    validator: Validator | None = None
    context: re.Pattern[str] | None = None
    context_window: int = 80
    count_distinct: bool = True
    context_for_unformatted: re.Pattern[str] | None = field(default=None)
    description: str = ""

    def find(self, text: str) -> Iterator[Match]:
        for found in self.pattern.finditer(text):
            raw = found.group(0)
            value = self.validator(raw) if self.validator else raw.strip().lower()
            if value is None:
                continue
            if self.context is not None and not self._near(self.context, text, found):
                continue
            if (
                self.context_for_unformatted is not None
                and raw.isdigit()
                and not self._near(self.context_for_unformatted, text, found)
            ):
                continue
            yield Match(self.name, value, found.start(), found.end())

    def _near(self, words: re.Pattern[str], text: str, found: re.Match[str]) -> bool:
        low = max(0, found.start() - self.context_window)
        return (
            words.search(text, low, min(len(text), found.end() + self.context_window)) is not None
        )

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
    ),
    "iban": Detector(
        "iban",
        IBAN_PATTERN,
        _iban_prefix,
        description="IBAN: country length and ISO 7064 mod-97 check digits",
    ),
    "es_dni": Detector(
        "es_dni",
        DNI_PATTERN,
        validators.es_dni,
        description="Spanish DNI / NIE: the mod-23 check letter",
    ),
    "us_ssn": Detector(
        "us_ssn",
        SSN_PATTERN,
        validators.us_ssn,
        context_for_unformatted=SSN_CONTEXT,
        description="US SSN: SSA area/group/serial rules; 9 bare digits only next to 'SSN'",
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
    """A detector from configuration; raises ValueError (re.error) with the reason when invalid."""
    if bool(pattern) == bool(keywords):
        raise ValueError("give exactly one of 'pattern' or 'keywords'")
    check = None
    if validator:
        if validator not in validators.VALIDATORS:
            raise ValueError(
                f"unknown validator {validator!r} (one of {', '.join(validators.VALIDATORS)})"
            )
        check = validators.VALIDATORS[validator]
    if pattern:
        try:
            compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        if compiled.match(""):
            raise ValueError("the pattern matches the empty string")
    else:
        compiled = word_list(keywords)
    return Detector(
        name,
        compiled,
        check,
        context=word_list(context) if context else None,
        context_window=context_window,
        count_distinct=bool(pattern),
        description=f"custom {'pattern' if pattern else 'keyword dictionary'}",
    )


def scan_text(text: str, detectors: Sequence[Detector]) -> dict[str, list[Match]]:
    found: dict[str, list[Match]] = {}
    for detector in detectors:
        matches = list(detector.find(text))
        if matches:
            found[detector.name] = matches
    return found
