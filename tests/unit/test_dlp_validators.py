"""Check-digit validators: every detector's validation, with valid and invalid check digits."""

from __future__ import annotations

import pytest

from relayguard.dlp import validators as v

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111111",  # Visa
        "4012888888881881",
        "4222222222222",  # Visa 13
        "5500000000000004",  # Mastercard
        "2221000000000009",  # Mastercard 2-series
        "378282246310005",  # Amex
        "371449635398431",
        "6011111111111117",  # Discover
        "3530111333300000",  # JCB
        "30569309025904",  # Diners 14
        "6200000000000005",  # UnionPay
    ],
)
def test_valid_card_numbers(number: str) -> None:
    assert v.card_number(number) == number
    assert v.card_number(f"{number[:4]} {number[4:]}") == number


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("4111111111111112", "wrong Luhn digit"),
        ("378282246310006", "wrong Luhn digit"),
        ("1234567812345670", "Luhn-valid but no network issues IIN 1"),
        ("9111111111111119", "IIN 9"),
        ("411111111111111", "Visa never has 15 digits"),
        ("37828224631000", "Amex is 15 digits"),
        ("0000000000000000", "one repeated digit"),
        ("5600000000000003", "56 is not Mastercard at 16 digits... Maestro needs 5018/5020/..."),
    ],
)
def test_invalid_card_numbers(number: str, why: str) -> None:
    assert v.card_number(number) is None, why


@pytest.mark.parametrize(
    "iban",
    [
        "DE89370400440532013000",
        "GB82WEST12345698765432",
        "ES9121000418450200051332",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
        "CH9300762011623852957",
        "NO9386011117947",
        "MT84MALT011000012345MTLCAST001S",
    ],
)
def test_valid_ibans(iban: str) -> None:
    assert v.iban(iban) == iban
    assert v.iban(" ".join(iban[i : i + 4] for i in range(0, len(iban), 4))) == iban


@pytest.mark.parametrize(
    ("iban", "why"),
    [
        ("DE88370400440532013000", "wrong check digits"),
        ("DE8937040044053201300", "DE is 22 characters"),
        ("XX89370400440532013000", "no such country"),
        ("GB82WEST12345698765433", "mod 97 fails"),
        ("DEAB370400440532013000", "check digits must be digits"),
    ],
)
def test_invalid_ibans(iban: str, why: str) -> None:
    assert v.iban(iban) is None, why


def test_mod97_alone_accepts_any_length() -> None:
    assert v.mod97("DE89370400440532013000") == "DE89370400440532013000"
    assert v.mod97("DE88370400440532013000") is None


@pytest.mark.parametrize("value", ["12345678Z", "00000000T", "X1234567L", "Y1234567X", "Z1234567R",
                                   "12345678-z"])  # fmt: skip
def test_valid_dni_nie(value: str) -> None:
    assert v.es_dni(value) is not None


@pytest.mark.parametrize("value", ["12345678A", "X1234567A", "1234567Z", "W1234567L", "ABCDEFGHZ"])
def test_invalid_dni_nie(value: str) -> None:
    assert v.es_dni(value) is None


@pytest.mark.parametrize("value", ["536-22-1234", "001-01-0001", "899 99 9999", "665-12-3456"])
def test_valid_ssn(value: str) -> None:
    assert v.us_ssn(value) == value.replace("-", "").replace(" ", "")


@pytest.mark.parametrize(
    "value",
    ["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "123-00-4567", "123-45-0000",
     "078-05-1120", "219-09-9999", "123-45-6789", "12-345-6789"],
)  # fmt: skip
def test_invalid_ssn(value: str) -> None:
    assert v.us_ssn(value) is None


def test_luhn_validator_for_custom_detectors() -> None:
    assert v.luhn("79927398713") == "79927398713"
    assert v.luhn("79927398710") is None
