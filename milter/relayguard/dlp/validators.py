"""Check-digit and structure validators: what turns a pattern match into a finding.

Each validator takes the matched text and returns the normalised value when it is valid, or None.
A bare regex finds order numbers, dates and digit runs; these rules are what make a DLP hit mean
something.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Validator = Callable[[str], str | None]

NON_DIGITS = re.compile(r"\D")
NON_ALNUM = re.compile(r"[^0-9A-Za-z]")


def luhn_ok(digits: str) -> bool:
    """ISO/IEC 7812-1 Annex B (the Luhn algorithm)."""
    if not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def luhn(text: str) -> str | None:
    digits = NON_DIGITS.sub("", text)
    return digits if len(digits) >= 2 and luhn_ok(digits) else None


# Issuer identification number ranges (ISO/IEC 7812) of the networks that matter, with the
# lengths each issues: (low prefix, high prefix, lengths). A number outside every range is not a
# payment card, whatever its Luhn digit says.
CARD_RANGES: tuple[tuple[str, str, frozenset[int]], ...] = (
    ("4", "4", frozenset({13, 16, 19})),  # Visa
    ("51", "55", frozenset({16})),  # Mastercard
    ("2221", "2720", frozenset({16})),  # Mastercard 2-series
    ("34", "34", frozenset({15})),  # American Express
    ("37", "37", frozenset({15})),
    ("300", "305", frozenset({14, 16, 17, 18, 19})),  # Diners Club
    ("36", "36", frozenset({14, 16, 17, 18, 19})),
    ("38", "39", frozenset({14, 16, 17, 18, 19})),
    ("6011", "6011", frozenset({16, 17, 18, 19})),  # Discover
    ("644", "649", frozenset({16, 17, 18, 19})),
    ("65", "65", frozenset({16, 17, 18, 19})),
    ("3528", "3589", frozenset({16, 17, 18, 19})),  # JCB
    ("62", "62", frozenset({16, 17, 18, 19})),  # UnionPay (and Discover's 622126-622925)
    ("2200", "2204", frozenset({16, 17, 18, 19})),  # Mir
    ("5018", "5018", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),  # Maestro
    ("5020", "5020", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
    ("5038", "5038", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
    ("5893", "5893", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
    ("6304", "6304", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
    ("6759", "6759", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
    ("6761", "6763", frozenset({12, 13, 14, 15, 16, 17, 18, 19})),
)


def card_brand_ok(digits: str) -> bool:
    for low, high, lengths in CARD_RANGES:
        prefix = digits[: len(low)]
        if low <= prefix <= high and len(digits) in lengths:
            return True
    return False


def card_number(text: str) -> str | None:
    """A payment card number: known IIN range and length, Luhn digit, not one repeated digit."""
    digits = NON_DIGITS.sub("", text)
    if len(set(digits)) == 1:  # 0000 0000 0000 0000-style fillers
        return None
    if card_brand_ok(digits) and luhn_ok(digits):
        return digits
    return None


# ISO 13616 IBAN lengths per country (the SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def mod97(text: str) -> str | None:
    """ISO 7064 MOD 97-10 as IBANs use it: move the first four characters to the end, letters
    become 10..35, and the number modulo 97 must be 1."""
    compact = NON_ALNUM.sub("", text).upper()
    if len(compact) < 5:
        return None
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return compact if int(number) % 97 == 1 else None


def iban(text: str) -> str | None:
    compact = NON_ALNUM.sub("", text).upper()
    country = compact[:2]
    if IBAN_LENGTHS.get(country) != len(compact) or not compact[2:4].isdigit():
        return None
    return mod97(compact)


DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def es_dni(text: str) -> str | None:
    """Spanish DNI (8 digits + check letter) or NIE (X/Y/Z + 7 digits + check letter): the letter
    is DNI_LETTERS[number mod 23], with X=0, Y=1, Z=2 for an NIE."""
    compact = NON_ALNUM.sub("", text).upper()
    if len(compact) != 9:
        return None
    head, letter = compact[:8], compact[8]
    if head[0] in "XYZ":
        head = str("XYZ".index(head[0])) + head[1:]
    if not head.isdigit():
        return None
    return compact if DNI_LETTERS[int(head) % 23] == letter else None


# Numbers the Social Security Administration never issues or that are public (advertising,
# documentation) and appear everywhere as examples.
SSN_KNOWN_INVALID = frozenset({"078051120", "219099999", "123456789", "111111111", "987654320"})


def us_ssn(text: str) -> str | None:
    """US SSN: area 001-899 except 666, group 01-99, serial 0001-9999 (SSA rules since 2011)."""
    digits = NON_DIGITS.sub("", text)
    if len(digits) != 9 or digits in SSN_KNOWN_INVALID:
        return None
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    if area in {0, 666} or area >= 900 or group == 0 or serial == 0:
        return None
    return digits


VALIDATORS: dict[str, Validator] = {
    "luhn": luhn,
    "mod97": mod97,
    "iban": iban,
    "card_number": card_number,
    "es_dni": es_dni,
    "us_ssn": us_ssn,
}
