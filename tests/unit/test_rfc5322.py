"""The strict originator-field parser: positive controls, spoofing tricks, header splitting."""

from __future__ import annotations

import base64
import contextlib
import time

import pytest

from relayguard.parsing.rfc5322 import (
    HeaderViolation,
    Mailbox,
    ascii_lower,
    is_valid_field_name,
    parse_envelope_address,
    parse_mailbox_field,
    split_header_block,
)

pytestmark = pytest.mark.unit


def _b64_word(text: str) -> bytes:
    return b"=?UTF-8?B?" + base64.b64encode(text.encode()) + b"?="


def _reason(value: bytes) -> str:
    with pytest.raises(HeaderViolation) as caught:
        parse_mailbox_field(value)
    return caught.value.reason


# (raw field value, display name, local part, domain)
POSITIVE = [
    (b"scanner@example.com", "", "scanner", "example.com"),
    (b"<scanner@example.com>", "", "scanner", "example.com"),
    (b"Scanner HQ <scanner@example.com>", "Scanner HQ", "scanner", "example.com"),
    (b'"Doe, John" <john@example.com>', "Doe, John", "john", "example.com"),
    (b"=?utf-8?q?J=C3=B6rg_M=C3=BCller?= <jorg@example.com>", "Jörg Müller", "jorg", "example.com"),
    (_b64_word("Jörg Müller") + b" <jorg@example.com>", "Jörg Müller", "jorg", "example.com"),
    (b'"Scanner\r\n HQ" <scanner@example.com>', "Scanner HQ", "scanner", "example.com"),
    (b"Scanner HQ\r\n <scanner@example.com>", "Scanner HQ", "scanner", "example.com"),
    (b"Scanner HQ\n\t<scanner@example.com>", "Scanner HQ", "scanner", "example.com"),
    (b"scanner@example.com (Scanner HQ)", "", "scanner", "example.com"),
    ("Jörg <jorg@example.com>".encode(), "Jörg", "jorg", "example.com"),
    (b"scanner@Example.COM", "", "scanner", "Example.COM"),
    (
        b'"scanner@example.com" <scanner@example.com>',
        "scanner@example.com",
        "scanner",
        "example.com",
    ),
    (
        b"Printer 3rd floor <printer+hq@example.com>",
        "Printer 3rd floor",
        "printer+hq",
        "example.com",
    ),
    (b"O'Brien J. <ob@example.com>", "O'Brien J.", "ob", "example.com"),
    (b"   <scanner@example.com>", "", "scanner", "example.com"),  # leading WSP kept by the MTA
    (b"\r\n <scanner@example.com>", "", "scanner", "example.com"),  # value starts folded
    (b"< scanner@example.com >", "", "scanner", "example.com"),
    (b"Scanner <scanner@example.com> (HQ)", "Scanner", "scanner", "example.com"),
    (b"Scanner (HQ) <scanner@example.com>", "Scanner", "scanner", "example.com"),
    (b"(legacy) scanner@example.com", "", "scanner", "example.com"),
    (b"Scanner<scanner@example.com>", "Scanner", "scanner", "example.com"),
    (b'"john doe"@example.com', "", '"john doe"', "example.com"),
    (b'"john"@example.com', "", "john", "example.com"),
    (b'"john..doe"@example.com', "", '"john..doe"', "example.com"),
    ('"j\u00f6rg"@example.com'.encode(), "", "j\u00f6rg", "example.com"),
    (b'"a\\"b" <ab@example.com>', 'a"b', "ab", "example.com"),
    (b'"<b>" <b@example.com>', "<b>", "b", "example.com"),
    ("Émile <émile@exämple.example>".encode(), "Émile", "émile", "exämple.example"),
    (b"x <first.last@sub-1.example.com>", "x", "first.last", "sub-1.example.com"),
    (b"=?utf-8?q?a?= =?utf-8?q?b?= <x@example.com>", "ab", "x", "example.com"),
    (b"=?utf-8?q?a?= (c) =?utf-8?q?b?= <x@example.com>", "a b", "x", "example.com"),
    (b"=?utf-8?q?a?= Plain <x@example.com>", "a Plain", "x", "example.com"),
    (b"=?ISO-8859-1*de?Q?J=F6rg?= <x@example.com>", "Jörg", "x", "example.com"),
    (b"=?utf-8?q?=c3=b6?= <x@example.com>", "ö", "x", "example.com"),
    (
        b'"Scanner@Example.com" <scanner@example.com>',
        "Scanner@Example.com",
        "scanner",
        "example.com",
    ),
    (b"Printer \xf0\x9f\x96\xa8 <p@example.com>", "Printer \U0001f5a8", "p", "example.com"),
]


@pytest.mark.parametrize(("raw", "name", "local", "domain"), POSITIVE)
def test_positive_controls_parse(raw: bytes, name: str, local: str, domain: str) -> None:
    assert parse_mailbox_field(raw) == Mailbox(name, local, domain)


NEGATIVE = [
    # zero or several mailboxes, groups, routes, literals
    (b"", "no mailbox"),
    (b"   ", "no mailbox"),
    (b"(only a comment)", "no mailbox"),
    (b"a@x.example, b@y.example", "multiple mailboxes"),
    (b"<attacker@evil.test>, <admin@example.com>", "multiple mailboxes"),
    (b"<attacker@evil.test>,<admin@example.com>", "multiple mailboxes"),
    (b"Group: a@x.example;", "group syntax"),
    (b"undisclosed-recipients:;", "group syntax"),
    (b"a@x.example;", "group syntax"),
    (b"<@route,@r2:user@example.com>", "source route"),
    (b"<@example.com:attacker@evil.test>", "source route"),
    (b"Admin < @example.com:attacker@evil.test>", "source route"),
    (b"user@[192.0.2.1]", "domain literal"),
    (b"<user@[IPv6:2001:db8::1]>", "domain literal"),
    (b"<user@[192.0.2.1]>", "domain literal"),
    # '@' count and empty parts
    (b"scanner.example.com", "missing '@'"),
    (b"admin@example.com@evil.test", "more than one '@'"),
    (b"<admin@example.com@evil.test>", "more than one '@'"),
    (b"@example.com", "empty local part"),
    (b'""@example.com', "empty local part"),
    (b"admin@", "empty domain"),
    (b"<>", "empty address"),
    (b"Admin <>", "empty address"),
    # angle brackets and trailing text
    (b"Admin <admin@example.com", "unbalanced angle brackets"),
    (b"admin@example.com>", "unbalanced angle brackets"),
    (b">admin@example.com<", "unbalanced angle brackets"),
    (b"<a@example.com><b@evil.test>", "multiple angle brackets"),
    (b"<a@example.com> <b@evil.test>", "multiple angle brackets"),
    (b"<<a@example.com>>", "multiple angle brackets"),
    (b"<attacker@evil.test>admin@example.com", "trailing text after address"),
    (b"<attacker@evil.test> admin", "trailing text after address"),
    (b'<attacker@evil.test> "x"', "trailing text after address"),
    # quotes and parentheses
    (b'"Admin <admin@example.com>', "unbalanced quotes"),
    (b'"admin@example.com\\" <attacker@evil.test>', "unbalanced quotes"),
    (b'"Admin\\', "unbalanced quotes"),
    (b"attacker@evil.test (Admin", "unbalanced parentheses"),
    (b"attacker@evil.test Admin)", "unbalanced parentheses"),
    (b"attacker@evil.test (((deep)))", "comments nested too deep"),
    (b"attacker@evil.test (a \\) b)", "quoted-pair in comment"),
    (b'(") <admin@example.com> (")', "quote in comment"),
    # comments that hide addresses or encoded text
    (b"attacker@evil.test (admin@example.com)", "comment contains address characters"),
    (b"<attacker@evil.test> (admin@example.com)", "comment contains address characters"),
    (b"<attacker@evil.test> (<admin>)", "comment contains address characters"),
    (
        "<attacker@evil.test> (admin\uff20example.com)".encode(),
        "comment contains address characters",
    ),
    (b"<attacker@evil.test> (=?utf-8?q?admin=40example.com?=)", "encoded-word in comment"),
    (b"attacker(x)@evil.test", "comment inside address"),
    (b"<attacker@(x)evil.test>", "comment inside address"),
    # display names that show another address
    (b"admin@example.com <attacker@evil.test>", "display name looks like another address"),
    (b'"admin@example.com" <attacker@evil.test>', "display name looks like another address"),
    (
        b"=?utf-8?b?YWRtaW5AZXhhbXBsZS5jb20=?= <attacker@evil.test>",
        "display name looks like another address",
    ),
    (
        b"=?utf-8?q?admin=40example=2Ecom?= <attacker@evil.test>",
        "display name looks like another address",
    ),
    (
        "admin\uff20example.com <attacker@evil.test>".encode(),
        "display name looks like another address",
    ),
    (
        '"admin\ufe6bexample.com" <attacker@evil.test>'.encode(),
        "display name looks like another address",
    ),
    (b'"<admin@example.com>" <attacker@evil.test>', "display name looks like another address"),
    (b'"Admin <admin>" @ <attacker@evil.test>', "display name looks like another address"),
    (b'"Admin @ HQ" <attacker@evil.test>', "display name looks like another address"),
    (b'"admin@example" <attacker@evil.test>', "display name looks like another address"),
    (b'"admin@example.com." <attacker@evil.test>', "display name looks like another address"),
    (
        b'"scanner@example.com" <scanner@example.com.evil.test>',
        "display name looks like another address",
    ),
    (b'"a\\"@example.com" <attacker@evil.test>', "display name looks like another address"),
    (b'"admin@example.com\r\n " <attacker@evil.test>', "display name looks like another address"),
    # encoded-words outside the display name or malformed
    (b"=?utf-8?q?admin=40example.com?=@evil.test", "encoded-word in address"),
    (b"<=?utf-8?q?admin?=@example.com>", "encoded-word in address"),
    (b"admin@=?utf-8?q?example?=.com", "encoded-word in address"),
    (b"=?utf-8?b?PGFkbWluQGV4YW1wbGUuY29tPg==?=", "encoded-word in address"),
    (b'"=?utf-8?q?admin=40example.com?=" <attacker@evil.test>', "encoded-word in quoted string"),
    (b'"=?utf-8?q?Admin?=" <attacker@evil.test>', "encoded-word in quoted string"),
    (b'"=?utf-8?q?x?="@evil.test', "encoded-word in quoted string"),
    (b"=?utf-8?x?abc?= <a@example.com>", "malformed encoded-word"),
    (b"=?utf-8?q?abc <a@example.com>", "malformed encoded-word"),
    (b"=?utf-8?q??= <a@example.com>", "malformed encoded-word"),
    (b"=??q?abc?= <a@example.com>", "malformed encoded-word"),
    (b"=?utf-8?q?a?b?= <a@example.com>", "malformed encoded-word"),
    (b"=?utf-8?q?a=4?= <a@example.com>", "malformed encoded-word"),
    (b"=?utf-8?q?a=ZZ?= <a@example.com>", "malformed encoded-word"),
    (b"=?utf-8?q?a#b?= <a@example.com>", "malformed encoded-word"),
    (b"=?utf-8?b?YWJ?= <a@example.com>", "malformed encoded-word"),
    (b"=?utf-8?b?YW=j?= <a@example.com>", "malformed encoded-word"),
    (b"=?utf-8?b?YWJj!!!!?= <a@example.com>", "malformed encoded-word"),
    (b"=?utf-8?b?YWJj====?= <a@example.com>", "malformed encoded-word"),
    (b"=?utf-8?b?YQ=?= <a@example.com>", "malformed encoded-word"),
    (b"Mr=?utf-8?q?Admin?= <a@example.com>", "malformed encoded-word"),
    (b"=?utf-8?q?Adm\r\n in?= <a@example.com>", "malformed encoded-word"),
    (b"=?no-such-charset?q?abc?= <a@example.com>", "unknown charset in encoded-word"),
    (b"=?utf-7?q?+AEA-?= <a@example.com>", "unknown charset in encoded-word"),
    (b"=?unicode_escape?q?abc?= <a@example.com>", "unknown charset in encoded-word"),
    (b"=?rot13?q?abc?= <a@example.com>", "undecodable encoded-word"),
    (b"=?utf-8?q?=FF?= <a@example.com>", "undecodable encoded-word"),
    (b"=?us-ascii?q?=C3=B6?= <a@example.com>", "undecodable encoded-word"),
    (b'=?utf-8?q?x?="y" <a@example.com>', "encoded-word not separated by whitespace"),
    (b'"y"=?utf-8?q?x?= <a@example.com>', "encoded-word not separated by whitespace"),
    (b"=?utf-8?q?x?=. <a@example.com>", "encoded-word not separated by whitespace"),
    (
        b"=?utf-8?q?=3D=3Futf-8=3Fq=3Fx=3F=3D?= <a@example.com>",
        "hidden encoded-word in display name",
    ),
    (b'"="?utf-8?q?admin=40example=2Ecom?= <a@example.com>', "hidden encoded-word in display name"),
    (
        b"=?utf-8?q?=3D?= =?utf-8?q?=3Futf-8=3Fq=3Fadmin=3D40example=2Ecom=3F=3D?= <a@example.com>",
        "hidden encoded-word in display name",
    ),
    (b"=?utf-8?q?a=00b?= <a@example.com>", "control character"),
    (b"=?utf-8?q?a=0D=0Ab?= <a@example.com>", "control character"),
    (b"=?utf-8?q?=E2=80=AEmoc=2Eelpmaxe?= <a@example.com>", "bidirectional control character"),
    (b"=?utf-8?q?a=E2=80=8Bb?= <a@example.com>", "invisible formatting character"),
    # quoted local parts that hide structure
    (b'"admin@example.com"@evil.test', "unsafe quoted local part"),
    (b'"a@x"@evil.test', "unsafe quoted local part"),
    (b'"<admin>"@evil.test', "unsafe quoted local part"),
    (b'"a,b"@evil.test', "unsafe quoted local part"),
    ('"admin\uff20example.com"@evil.test'.encode(), "unsafe quoted local part"),
    (b'"a\\"b"@evil.test', "quoted-pair in local part"),
    (b'"a\\\\b"@evil.test', "quoted-pair in local part"),
    (b'"admin".x@evil.test', "invalid character in local part"),
    (b'"john\tdoe"@example.com', "whitespace in address"),
    ('"john\u00a0doe"@example.com'.encode(), "whitespace in address"),
    ('"john\u00a8doe"@example.com'.encode(), "look-alike character in address"),
    # characters
    (b"admin@example.com\x00 <attacker@evil.test>", "NUL byte"),
    (b"admin\x01@example.com", "control character"),
    (b"admin\x7f@example.com", "control character"),
    (b"Admin\x1b[2J <admin@example.com>", "control character"),
    ("admin\u0085@example.com".encode(), "control character"),
    ("Admin\u009b <admin@example.com>".encode(), "control character"),
    (b"\xe9@example.com", "invalid UTF-8"),
    (b"J\xf6rg <jorg@example.com>", "invalid UTF-8"),
    (b"\xc0\x80@example.com", "invalid UTF-8"),
    (b"\xed\xa0\x80@example.com", "invalid UTF-8"),
    ("ad\u202emin@example.com".encode(), "bidirectional control character"),
    ("Admin\u202e <admin@example.com>".encode(), "bidirectional control character"),
    ("Admin\u2066 <admin@example.com>".encode(), "bidirectional control character"),
    ("Admin\u200f <admin@example.com>".encode(), "bidirectional control character"),
    ("Admin\u061c <admin@example.com>".encode(), "bidirectional control character"),
    ("ad\u200bmin@example.com".encode(), "invisible formatting character"),
    ("Admin\u200d <admin@example.com>".encode(), "invisible formatting character"),
    ("admin@exa\u00admple.com".encode(), "invisible formatting character"),
    ("\ufeffadmin@example.com".encode(), "invisible formatting character"),
    ("Admin\u2060 <admin@example.com>".encode(), "invisible formatting character"),
    ("Admin \u3164 <admin@example.com>".encode(), "invisible formatting character"),
    ("Admin\u2028 <admin@example.com>".encode(), "line separator character"),
    # folding
    (b"a@x.example\nFrom: b@y.example", "line break not followed by whitespace"),
    (b"a@x.example\r\nFrom: b@y.example", "line break not followed by whitespace"),
    (b"admin@example.com\r\n", "line break not followed by whitespace"),
    (b"a@x.example\r b@y.example", "bare CR"),
    (b"a@x.example\r", "bare CR"),
    (b"Admin\r\n \r\n <admin@example.com>", "whitespace-only continuation line"),
    # address characters and look-alikes
    (b"a @ example.com", "whitespace in address"),
    (b"Admin Name admin@example.com", "whitespace in address"),
    (b"<admin @example.com>", "whitespace in address"),
    ("admin\u00a0@example.com".encode(), "whitespace in address"),
    ("admin@example\u3000.com".encode(), "whitespace in address"),
    ("admin\uff20example.com@evil.test".encode(), "look-alike character in address"),
    ("admin@example\u3002com".encode(), "look-alike character in address"),
    ("admin@example\uff0ecom".encode(), "look-alike character in address"),
    ("admin@evil\uff61example.com".encode(), "look-alike character in address"),
    ("admin\uff1e@evil.test".encode(), "look-alike character in address"),
    (b"a\\b@example.com", "invalid character in local part"),
    (b"[a]@example.com", "invalid character in local part"),
    (b".admin@example.com", "misplaced dot in local part"),
    (b"admin.@example.com", "misplaced dot in local part"),
    (b"ad..min@example.com", "misplaced dot in local part"),
    # domain rules
    (b"a@example..com", "empty domain label"),
    (b"a@.example.com", "empty domain label"),
    (b"a@example.com.", "empty domain label"),
    (b"a@-example.com", "domain label starts or ends with hyphen"),
    (b"a@example-.com", "domain label starts or ends with hyphen"),
    (b"a@exa_mple.com", "invalid character in domain"),
    (b"a@exa!mple.com", "invalid character in domain"),
    (b'a@"example".com', "invalid character in domain"),
    (b"a@" + b"x" * 64 + b".com", "domain label too long"),
    (b"a@" + b".".join([b"x" * 60] * 5), "domain too long"),
    (b"x" * 65 + b"@example.com", "local part too long"),
    # display-name syntax
    (b"Admin [HQ] <admin@example.com>", "invalid character in display name"),
    (b"Admin \\ <admin@example.com>", "invalid character in display name"),
    # length
    (b"a" * 4097, "field too long"),
    (b"Admin " + b" " * 4096 + b"<admin@example.com>", "field too long"),
]


@pytest.mark.parametrize(("raw", "reason"), NEGATIVE)
def test_refusals(raw: bytes, reason: str) -> None:
    assert _reason(raw) == reason


def test_every_refusal_reason_is_smtp_safe() -> None:
    for raw, _ in NEGATIVE:
        with pytest.raises(HeaderViolation) as caught:
            parse_mailbox_field(raw, field="Resent-From")
        text = str(caught.value)
        assert text == f"Resent-From: {caught.value.reason}"
        assert text.isascii()
        assert text.isprintable()
        assert len(text) < 100


def test_violation_field_name_is_sanitized() -> None:
    with pytest.raises(HeaderViolation) as caught:
        parse_mailbox_field(b"", field="Fr\r\nom\x00" + "x" * 200)
    assert caught.value.field == "From" + "x" * 60
    assert caught.value.reason == "no mailbox"


def test_violation_is_a_value_error() -> None:
    assert issubclass(HeaderViolation, ValueError)


def test_mailbox_address_and_normalized() -> None:
    box = parse_mailbox_field(b"Scanner <Scanner@Example.COM>")
    assert box.address == "Scanner@Example.COM"
    assert box.normalized == "scanner@example.com"


def test_idn_lookalike_never_normalises_to_listed_domain() -> None:
    cyrillic = parse_mailbox_field("admin@ex\u0430mple.com".encode())
    kelvin = parse_mailbox_field("admin@\u212aelvin.example".encode())
    assert cyrillic.normalized != "admin@example.com"
    assert kelvin.normalized == "admin@\u212aelvin.example"


def test_ascii_lower_touches_ascii_only() -> None:
    assert ascii_lower("ABC-xyz") == "abc-xyz"
    assert ascii_lower("\u212a\u0130\u00c9") == "\u212a\u0130\u00c9"


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("From", True),
        (b"Resent-Sender", True),
        ("X-Weird!#$~", True),
        ("From ", False),
        (" From", False),
        ("Fr:om", False),
        ("", False),
        (b"", False),
        ("Fr\u00f6m", False),
        (b"Fr\xf6m", False),
        ("From\x7f", False),
        ("\tFrom", False),
    ],
)
def test_is_valid_field_name(name: str | bytes, valid: bool) -> None:
    assert is_valid_field_name(name) is valid


@pytest.mark.parametrize(
    ("raw", "local", "domain"),
    [
        ("<a@b.example>", "a", "b.example"),
        ("a@b.example", "a", "b.example"),
        (b"<Scanner@Example.COM>", "Scanner", "Example.COM"),
        ('<"john doe"@example.com>', '"john doe"', "example.com"),
        ('<"john"@example.com>', "john", "example.com"),
        ("<j\u00f6rg@b\u00fccher.example>", "j\u00f6rg", "b\u00fccher.example"),
    ],
)
def test_envelope_accepts(raw: str | bytes, local: str, domain: str) -> None:
    assert parse_envelope_address(raw) == Mailbox("", local, domain)


@pytest.mark.parametrize("raw", ["<>", b"<>"])
def test_envelope_null_path(raw: str | bytes) -> None:
    assert parse_envelope_address(raw) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty address"),
        ("<@a,@b:c@d.example>", "source route"),
        ("@a.example:c@d.example", "source route"),
        ('<"x@y"@z.example>', "unsafe quoted local part"),
        ("<a@b.example", "unbalanced angle brackets"),
        ("a@b.example>", "unbalanced angle brackets"),
        ("<", "unbalanced angle brackets"),
        ("<<a@b.example>>", "multiple angle brackets"),
        ("<a@b.example> <c@d.example>", "multiple angle brackets"),
        ("<a@[192.0.2.1]>", "domain literal"),
        ("<a@b@c.example>", "more than one '@'"),
        ("<ab.example>", "missing '@'"),
        ("<@b.example>", "source route"),
        ("<a@>", "empty domain"),
        (" <a@b.example>", "whitespace in address"),
        ("<a@b.example> ", "whitespace in address"),
        ("< a@b.example>", "whitespace in address"),
        ("<a@b.example >", "whitespace in address"),
        ("<a@b.example>\t", "control character"),
        ("<a @b.example>", "whitespace in address"),
        ("<a\x00@b.example>", "control character"),
        ("<a@b.example>\r\n", "control character"),
        ("<ad\u202emin@b.example>", "bidirectional control character"),
        ("<ad\u200bmin@b.example>", "invisible formatting character"),
        ("<a%c.example@b.example>", "percent or bang routing"),
        ("<c.example!a@b.example>", "percent or bang routing"),
        ("<(x)a@b.example>", "comment inside address"),
        ("<=?utf-8?q?a?=@b.example>", "encoded-word in address"),
        ("<a@b.example.>", "empty domain label"),
        ("<a,b@c.example>", "invalid character in local part"),
        ("<a\ud800@b.example>", "invalid UTF-8"),
        (b"<\xe9@b.example>", "invalid UTF-8"),
        ("<" + "a" * 4100 + "@b.example>", "field too long"),
    ],
)
def test_envelope_refusals(raw: str | bytes, reason: str) -> None:
    with pytest.raises(HeaderViolation) as caught:
        parse_envelope_address(raw)
    assert caught.value.reason == reason


def test_megabyte_inputs_return_quickly() -> None:
    hostile = [
        b"(" * 1_000_000,
        b'"' + b"\\" * 1_000_000,
        b"a@" + b"x." * 500_000,
        b"=?" * 500_000,
        b"<" * 1_000_000,
    ]
    start = time.monotonic()
    for raw in hostile:
        with pytest.raises(HeaderViolation):
            parse_mailbox_field(raw)
        with pytest.raises(HeaderViolation):
            parse_envelope_address(raw)
    assert time.monotonic() - start < 1.0


def test_worst_case_under_the_cap_is_linear() -> None:
    shapes = [
        b"<" * 4000,
        b"(a)" * 1300,
        b"a." * 2000 + b"@x",
        b"=?utf-8?q?a?= " * 290,
        b"@" * 4000,
    ]
    start = time.monotonic()
    for raw in shapes:
        with contextlib.suppress(HeaderViolation):
            parse_mailbox_field(raw + b" <a@example.com>")
    assert time.monotonic() - start < 1.0


# -- split_header_block ---------------------------------------------------------------


def test_split_crlf_and_body_offset() -> None:
    raw = b"From: a@example.com\r\nTo: b@example.com\r\n\r\nbody\r\n"
    fields, body = split_header_block(raw)
    assert fields == [("From", b"a@example.com"), ("To", b"b@example.com")]
    assert raw[body:] == b"body\r\n"


def test_split_lf_and_body_offset() -> None:
    raw = b"From: a@example.com\nTo: b@example.com\n\nbody\n"
    fields, body = split_header_block(raw)
    assert fields == [("From", b"a@example.com"), ("To", b"b@example.com")]
    assert body == raw.index(b"\n\n") + 2


def test_split_keeps_folding_normalised_to_lf() -> None:
    raw = b"Subject: one\r\n two\r\n\tthree\r\nFrom:\r\n <a@example.com>\r\n\r\n"
    fields, body = split_header_block(raw)
    assert fields == [("Subject", b"one\n two\n\tthree"), ("From", b"\n <a@example.com>")]
    assert body == len(raw)
    assert parse_mailbox_field(fields[1][1]).address == "a@example.com"


def test_split_strips_only_the_leading_whitespace_run() -> None:
    fields, _ = split_header_block(b"From: \t a@example.com  \r\nX:\r\n\r\n")
    assert fields == [("From", b"a@example.com  "), ("X", b"")]


def test_split_keeps_odd_names_for_the_caller() -> None:
    raw = b" From: lead@example.com\r\nFrom : x@example.com\r\nno colon here\r\n\r\nbody"
    fields, body = split_header_block(raw)
    assert fields == [
        (" From", b"lead@example.com"),
        ("From ", b"x@example.com"),
        ("no colon here", b""),
    ]
    assert not any(is_valid_field_name(name) for name, _ in fields)
    assert raw[body:] == b"body"


def test_split_tab_first_line_is_a_field() -> None:
    fields, _ = split_header_block(b"\tFrom: a@example.com\n\n")
    assert fields == [("\tFrom", b"a@example.com")]


def test_split_whitespace_only_line_is_a_continuation() -> None:
    raw = b"From: a@example.com\r\n \r\nTo: b@example.com\r\n\r\n"
    fields, _ = split_header_block(raw)
    assert fields[0] == ("From", b"a@example.com\n ")
    assert _reason(fields[0][1]) == "whitespace-only continuation line"


def test_split_name_is_latin1_and_bare_cr_kept() -> None:
    fields, _ = split_header_block(b"Fr\xf6m: a\rb@example.com\r\r\n\r\n")
    assert fields == [("Fr\u00f6m", b"a\rb@example.com\r")]
    assert _reason(fields[0][1]) == "bare CR"


@pytest.mark.parametrize(
    ("raw", "body"),
    [(b"", 0), (b"\r\n", 2), (b"\n", 1), (b"\r\nFrom: x\r\n", 2), (b"\nbody", 1)],
)
def test_split_empty_header_block(raw: bytes, body: int) -> None:
    assert split_header_block(raw) == ([], body)


def test_split_without_blank_line_body_is_at_end() -> None:
    raw = b"From: a@example.com\r\nTo: b@example.com"
    fields, body = split_header_block(raw)
    assert fields == [("From", b"a@example.com"), ("To", b"b@example.com")]
    assert body == len(raw)


def test_split_ten_thousand_headers_quickly() -> None:
    raw = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000)) + b"\r\nbody"
    start = time.monotonic()
    fields, body = split_header_block(raw)
    assert time.monotonic() - start < 1.0
    assert len(fields) == 10_000
    assert fields[-1] == ("X-H9999", b"v")
    assert raw[body:] == b"body"


def test_split_long_folded_field_quickly() -> None:
    raw = b"Subject: x" + b"\r\n y" * 200_000 + b"\r\n\r\n"
    start = time.monotonic()
    fields, body = split_header_block(raw)
    assert time.monotonic() - start < 2.0
    assert fields[0][1] == b"x" + b"\n y" * 200_000
    assert body == len(raw)


def test_split_from_a_real_message_feeds_the_parser() -> None:
    raw = (
        b"Received: from scanner (scanner.example.com [192.0.2.7])\r\n"
        b"\tby relay.example.com; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"From: =?utf-8?q?Scanner_M=C3=BCnchen?=\r\n <scanner@example.com>\r\n"
        b"Subject: scan\r\n\r\n%PDF"
    )
    fields, body = split_header_block(raw)
    value = dict(fields)["From"]
    assert parse_mailbox_field(value) == Mailbox("Scanner M\u00fcnchen", "scanner", "example.com")
    assert raw[body:] == b"%PDF"
