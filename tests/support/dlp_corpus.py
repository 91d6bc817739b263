"""A generated DLP corpus: texts with exactly known findings, for precision and recall.

Positives are built valid by construction (check digits computed), negatives invalid by
construction (a wrong check digit, an impossible range) or shaped like the things DLP must not
flag: order numbers, dates, times, UUIDs, phone numbers, tracking numbers, digit runs inside base64
image data. `Sample.expected` maps detector -> the set of normalised values a perfect detector
finds. The generator is seeded: the same corpus on every run.
"""

from __future__ import annotations

import base64
import random
import string
import uuid
from dataclasses import dataclass, field

from relayguard.dlp.validators import DNI_LETTERS, IBAN_LENGTHS, luhn_ok

CARD_PREFIXES = [("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16),
                 ("34", 15), ("37", 15), ("6011", 16), ("65", 16), ("3528", 16), ("36", 14),
                 ("62", 16), ("6759", 16)]  # fmt: skip
IBAN_COUNTRIES = ["DE", "ES", "FR", "GB", "NL", "IT", "BE", "CH", "PL", "PT", "SE", "AT"]
FILLER = (
    "Please find the monthly statement attached. Contact the service desk for questions. "
    "Reference {ref} was processed on {date} at {time}. "
)


@dataclass
class Sample:
    name: str
    text: str
    expected: dict[str, set[str]] = field(default_factory=dict)


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(count))


def luhn_complete(prefix_and_body: str) -> str:
    for check in string.digits:
        if luhn_ok(prefix_and_body + check):
            return prefix_and_body + check
    raise AssertionError("unreachable")


def valid_card(rng: random.Random) -> str:
    prefix, length = rng.choice(CARD_PREFIXES)
    while True:
        number = luhn_complete(prefix + _digits(rng, length - len(prefix) - 1))
        if len(set(number)) > 1:
            return number


def invalid_card(rng: random.Random) -> str:
    """Card-shaped but wrong: the Luhn digit is off by one, or the IIN is no network's."""
    number = valid_card(rng)
    if rng.random() < 0.5:
        last = (int(number[-1]) + rng.randint(1, 9)) % 10
        return number[:-1] + str(last)
    head = rng.choice("1789")  # no payment network issues these
    return luhn_complete(head + _digits(rng, len(number) - 2))


def format_card(rng: random.Random, number: str) -> str:
    style = rng.choice(["compact", "space", "dash"])
    if style == "compact" or len(number) not in (15, 16):
        return number
    sep = " " if style == "space" else "-"
    if len(number) == 15:
        return sep.join((number[:4], number[4:10], number[10:]))
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def iban_for(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in rearranged))
    return f"{country}{98 - number % 97:02d}{bban}"


def valid_iban(rng: random.Random) -> str:
    country = rng.choice(IBAN_COUNTRIES)
    length = IBAN_LENGTHS[country]
    bban = _digits(rng, length - 4)
    if country == "GB":
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + _digits(rng, 14)
    return iban_for(country, bban)


def invalid_iban(rng: random.Random) -> str:
    good = valid_iban(rng)
    check = int(good[2:4])
    wrong = (check + rng.randint(1, 50)) % 97
    wrong = wrong if wrong >= 2 else wrong + 2
    if wrong == check:
        wrong = (check % 96) + 2
    return f"{good[:2]}{wrong:02d}{good[4:]}"


def group_iban(rng: random.Random, value: str) -> str:
    if rng.random() < 0.5:
        return value
    return " ".join(value[i : i + 4] for i in range(0, len(value), 4))


def valid_dni(rng: random.Random) -> str:
    if rng.random() < 0.3:
        head = rng.choice("XYZ")
        digits = _digits(rng, 7)
        return f"{head}{digits}{DNI_LETTERS[int(str('XYZ'.index(head)) + digits) % 23]}"
    digits = _digits(rng, 8)
    return f"{digits}{DNI_LETTERS[int(digits) % 23]}"


def invalid_dni(rng: random.Random) -> str:
    good = valid_dni(rng)
    wrong = rng.choice([c for c in DNI_LETTERS if c != good[-1]])
    return good[:-1] + wrong


def valid_ssn(rng: random.Random) -> str:
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            return f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"


def invalid_ssn(rng: random.Random) -> str:
    kind = rng.choice(["area0", "area666", "area9", "group", "serial"])
    area, group, serial = (
        f"{rng.randint(1, 665):03d}",
        f"{rng.randint(1, 99):02d}",
        (f"{rng.randint(1, 9999):04d}"),
    )
    if kind == "area0":
        area = "000"
    elif kind == "area666":
        area = "666"
    elif kind == "area9":
        area = str(rng.randint(900, 999))
    elif kind == "group":
        group = "00"
    else:
        serial = "0000"
    return area + group + serial


def format_ssn(rng: random.Random, digits: str) -> str:
    sep = rng.choice("- ")
    return f"{digits[:3]}{sep}{digits[3:5]}{sep}{digits[5:]}"


def _noise(rng: random.Random) -> str:
    """Things shaped like numbers that are none of the detected kinds."""
    choices = [
        lambda: f"Order no. {rng.randint(10**9, 10**10 - 1)}",
        lambda: f"PO-2024-{rng.randint(0, 999999):06d}",
        lambda: f"Invoice INV{rng.randint(10**11, 10**12 - 1)}",
        lambda: f"{rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        lambda: f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(2000, 2030)}",
        lambda: (
            f"{rng.randint(2000, 2030)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
            f"{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}"
        ),
        lambda: str(uuid.UUID(int=rng.getrandbits(128))),
        lambda: f"+34 6{rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(100, 999)}",
        lambda: f"({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
        lambda: f"1Z{rng.randint(100, 999)}AA1{rng.randint(10**8, 10**9 - 1)}",
        lambda: f"Amount: {rng.randint(1, 99999)}.{rng.randint(0, 99):02d} EUR",
        lambda: f"serial {rng.choice('1789')}{_digits(rng, 16)}",  # 17 digits, no network's IIN
        lambda: f"ref {rng.choice('1789')}{_digits(rng, 15)}",
        lambda: f"meter {rng.randint(1, 9)}.{_digits(rng, 16)}",
    ]
    return rng.choice(choices)()


def _base64_image(rng: random.Random) -> str:
    """A PNG-ish payload whose base64 text is full of digit runs."""
    raw = b"\x89PNG\r\n\x1a\n" + bytes(rng.getrandbits(8) for _ in range(600))
    raw += b"4111111111111111" * 4 + "".join(valid_card(rng) for _ in range(5)).encode()
    encoded = base64.b64encode(raw).decode()
    return f'<img src="data:image/png;base64,{encoded}">'


def build(seed: int = 4, size: int = 300) -> list[Sample]:
    rng = random.Random(seed)
    samples: list[Sample] = []
    for index in range(size):
        expected: dict[str, set[str]] = {}
        chunks = []
        for _ in range(rng.randint(2, 6)):
            chunks.append(
                FILLER.format(
                    ref=_noise(rng), date=_noise(rng), time=f"{rng.randint(0, 23):02d}:00"
                )
            )
            roll = rng.random()
            if roll < 0.12:
                card = valid_card(rng)
                expected.setdefault("card_number", set()).add(card)
                chunks.append(f"Card {format_card(rng, card)} was charged.")
            elif roll < 0.24:
                chunks.append(f"Card {format_card(rng, invalid_card(rng))} was declined.")
            elif roll < 0.32:
                value = valid_iban(rng)
                expected.setdefault("iban", set()).add(value)
                chunks.append(f"Pay to IBAN {group_iban(rng, value)} please.")
            elif roll < 0.40:
                chunks.append(f"Old account {group_iban(rng, invalid_iban(rng))} is closed.")
            elif roll < 0.47:
                value = valid_dni(rng)
                expected.setdefault("es_dni", set()).add(value)
                chunks.append(f"DNI: {value}.")
            elif roll < 0.54:
                chunks.append(f"Documento {invalid_dni(rng)} rechazado.")
            elif roll < 0.61:
                value = valid_ssn(rng)
                expected.setdefault("us_ssn", set()).add(value)
                chunks.append(f"Employee SSN {format_ssn(rng, value)} on file.")
            elif roll < 0.68:
                chunks.append(f"Case {format_ssn(rng, invalid_ssn(rng))} closed.")
            elif roll < 0.75:
                chunks.append(_base64_image(rng))
            else:
                chunks.append(_noise(rng) + ".")
        samples.append(Sample(f"sample-{index:04d}", "\n".join(chunks), expected))
    return samples


@dataclass
class Score:
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        wanted = self.true_positives + self.false_negatives
        return self.true_positives / wanted if wanted else 1.0
