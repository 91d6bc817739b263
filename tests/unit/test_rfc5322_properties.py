"""Properties of the strict parser that must hold for any input, not just the corpus."""

from __future__ import annotations

import re
import string
import unicodedata

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from relayguard.parsing.rfc5322 import (
    HeaderViolation,
    Mailbox,
    ascii_lower,
    parse_envelope_address,
    parse_mailbox_field,
    split_header_block,
)

pytestmark = pytest.mark.unit

# Pieces that make headers interesting: structure, look-alikes, encoded-words, controls.
FRAGMENTS = [
    "a",
    "Admin",
    "admin",
    "example.com",
    "evil.test",
    "@",
    "<",
    ">",
    " ",
    "\t",
    ".",
    ",",
    ":",
    ";",
    '"',
    "\\",
    "(",
    ")",
    "[",
    "]",
    "\r\n ",
    "\n",
    "\r",
    "\x00",
    "=?utf-8?q?admin=40example.com?=",
    "=?utf-8?b?YWRtaW4=?=",
    "=?",
    "?=",
    "\uff20",
    "\ufe6b",
    "\u3002",
    "\u202e",
    "\u200b",
    "\u00a0",
    "\u0430",
    "\u212a",
    "\u00f6",
]


def _pieces(most: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(FRAGMENTS), max_size=most).map("".join)


# Slots shaped like `name <local@domain> tail`, so a useful share of inputs is accepted.
header_text = st.tuples(
    _pieces(5),
    st.sampled_from(["", "<", " <"]),
    _pieces(3),
    st.sampled_from(["", "@"]),
    _pieces(3),
    st.sampled_from(["", ">"]),
    _pieces(2),
).map("".join)
atext = st.text(alphabet=string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~", min_size=1)
label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?", fullmatch=True)
words = st.text(alphabet=string.ascii_letters + string.digits + "'", min_size=1, max_size=12)


def _accept_or_refuse(raw: bytes) -> Mailbox | None:
    try:
        return parse_mailbox_field(raw)
    except HeaderViolation:
        return None


def _assert_safe(box: Mailbox) -> None:
    address = box.address
    assert address.count("@") == 1
    assert box.local_part
    assert box.domain
    assert all(unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp") for ch in address)
    unquoted = address if not box.local_part.startswith('"') else box.domain
    assert not any(ch.isspace() for ch in unquoted)
    # A display name may show an address only if it is the mailbox's own.
    folded_name = unicodedata.normalize("NFKC", box.display_name)
    for word in re.split(r'[\s<>()\[\]",;:\\]+', folded_name):
        assert "@" not in word or ascii_lower(word) == box.normalized
    assert "@" not in folded_name or not {"<", ">"} & set(folded_name)
    assert "=?" not in box.display_name
    assert all(unicodedata.category(ch) not in ("Cc", "Cf") for ch in box.display_name)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_header_violation(raw: bytes) -> None:
    box = _accept_or_refuse(raw)
    if box is not None:
        _assert_safe(box)


@given(header_text)
@settings(max_examples=1000)
def test_accepted_structured_inputs_are_unambiguous(text: str) -> None:
    box = _accept_or_refuse(text.encode("utf-8"))
    if box is not None:
        _assert_safe(box)


@given(
    name=st.lists(words, min_size=1, max_size=4).map(" ".join),
    local=st.lists(atext, min_size=1, max_size=3).map(".".join),
    domain=st.lists(label, min_size=2, max_size=4).map(".".join),
)
def test_well_formed_name_addr_round_trips(name: str, local: str, domain: str) -> None:
    assume("=?" not in local)  # an atext run may spell an encoded-word opener
    raw = f"{name} <{local}@{domain}>".encode()
    box = parse_mailbox_field(raw)
    assert box == Mailbox(name, local, domain)
    assert parse_mailbox_field(box.address.encode()) == Mailbox("", local, domain)
    if "%" not in local and "!" not in local:  # envelope refuses the old routing hacks
        assert parse_envelope_address(f"<{box.address}>") == Mailbox("", local, domain)


@given(st.one_of(st.text(max_size=120), st.binary(max_size=120)))
def test_envelope_only_ever_raises_header_violation(raw: str | bytes) -> None:
    try:
        box = parse_envelope_address(raw)
    except HeaderViolation:
        return
    if box is not None:
        _assert_safe(box)


@given(st.binary(max_size=2000))
def test_split_header_block_never_crashes_or_drops_lines(raw: bytes) -> None:
    fields, body = split_header_block(raw)
    assert 0 <= body <= len(raw)
    # Every non-blank line before the body is a field or one of its continuations.
    lines = [line for line in raw[:body].split(b"\n") if line.removesuffix(b"\r")]
    assert sum(1 + value.count(b"\n") for _, value in fields) == len(lines)
