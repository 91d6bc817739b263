"""The send API's MIME writer (services/api/mime.py) against the stdlib email parser as oracle:
whatever a JSON request holds, the message parses back to the same headers, bodies and
attachment bytes, without defects, with CRLF lines of at most 998 octets, no Bcc and no header
the request did not ask for."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayguard.parsing.rfc5322 import parse_mailbox_field
from relayguard.services.api import mime
from relayguard.services.api.compose import Outgoing, compose
from relayguard.services.api.errors import ApiError

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0
ALLOWED = frozenset({"x-priority", "x-campaign-name"})
CONTROL = "".join(map(chr, [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F]))
GENERATED = {"from", "to", "cc", "reply-to", "subject", "date", "message-id", "mime-version"}
GENERATED |= {"content-type", "content-transfer-encoding"}
MAILBOX_FIELDS = {"from", "to", "cc", "bcc", "reply_to"}

# Header text: any Unicode but the controls compose refuses (TAB is allowed).
header_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=CONTROL))
# Display names: written as a quoted-string in the request, so without '"' and '\\'. Words of at
# most 44 octets: a longer word is cut inside an encoded-word, which Python's parser reads with a
# blank in the cut (it keeps the blank between encoded-words that RFC 2047 §6.2 drops); that case
# is read by the relay's own RFC 2047 parser in test_a_long_word_in_a_name_is_cut_and_joined.
display_names = st.lists(
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters=CONTROL + '"\\'),
        min_size=1,
        max_size=11,
    ),
    max_size=8,
).map(" ".join)
addresses = st.from_regex(r"\A[a-z0-9]{1,12}(\.[a-z0-9]{1,8})?@(example\.com|mail\.example\.org)\Z")
# Bodies: anything JSON can carry, and long lines that cannot stay 7bit.
bodies = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",))),
    st.text(st.sampled_from("ab .\r\n\t"), min_size=990, max_size=2500),
    st.text(st.sampled_from("aé€😀 \n"), max_size=400),
)
content_types = st.sampled_from(["application/pdf", "image/png", "text/csv", "application/zip"])


def _readable_filename(name: str) -> bool:
    """Python's get_filename strips the ends and unquotes '<…>' (email.utils.unquote): such
    names cannot come back from it as sent."""
    name = name.strip()
    return bool(name) and not (name.startswith("<") and name.endswith(">"))


@st.composite
def mailboxes(draw: st.DrawFn) -> str:
    address, name = draw(addresses), draw(display_names)
    return f'"{name}" <{address}>' if name else address


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": draw(mailboxes()),
        "to": draw(st.lists(mailboxes(), min_size=1, max_size=4)),
        "subject": draw(header_text),
    }
    for name in ("cc", "bcc", "reply_to"):
        if draw(st.booleans()):
            body[name] = draw(st.lists(mailboxes(), min_size=1, max_size=3))
    kinds = draw(st.sampled_from([("text",), ("html",), ("text", "html")]))
    body |= {kind: draw(bodies) for kind in kinds}
    headers = draw(st.dictionaries(st.sampled_from(["X-Priority", "X-Campaign-Name"]), header_text))
    if headers:
        body["headers"] = headers
    attachments = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "filename": st.text(
                        st.characters(blacklist_categories=("Cs",), blacklist_characters=CONTROL),
                        min_size=1,
                        max_size=150,
                    ).filter(_readable_filename),
                    "content_type": content_types,
                    "content": st.binary(max_size=3000).map(lambda b: base64.b64encode(b).decode()),
                }
            ),
            max_size=3,
        )
    )
    if attachments:
        body["attachments"] = attachments
    return body


def composed(body: dict[str, Any]) -> tuple[Outgoing, EmailMessage]:
    try:
        outgoing = compose(body, ALLOWED, T0)
    except ApiError as refused:
        # Only the strict mailbox parser may refuse a generated request (e.g. an address-like
        # display name): then it refuses that mailbox on its own too.
        assert refused.status == 400 and refused.field.split("[")[0] in MAILBOX_FIELDS
        raise
    parsed = email.message_from_bytes(outgoing.data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return outgoing, parsed


def expected_mailbox(value: str) -> tuple[str, str]:
    """The mailbox the relay's own parser reads, its name's runs of whitespace as one space."""
    found = parse_mailbox_field(value.encode("utf-8"))
    return " ".join(found.display_name.split()), found.address


def parsed_mailboxes(message: EmailMessage, name: str) -> list[tuple[str, str]]:
    """Names with runs of whitespace as one: where a long name is cut between two encoded-words
    after a space, Python's parser reads that space twice."""
    header = message[name]
    assert not header.defects, (name, header.defects)
    return [(" ".join(a.display_name.split()), a.addr_spec) for a in header.addresses]


def as_text(value: str) -> str:
    """A text part as compose promises it: line breaks normalised, ending with one."""
    lines = value.replace("\r\n", "\n").replace("\r", "\n")
    return lines if lines.endswith("\n") else lines + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_composed_message_parses_back_to_the_request(body: dict[str, Any]) -> None:
    try:
        outgoing, message = composed(body)
    except ApiError:
        return
    data = outgoing.data
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert max(map(len, data.split(b"\r\n"))) <= 998
    assert data.isascii()  # 7bit, quoted-printable, base64, encoded-words: nothing 8bit
    assert not message.defects and all(not part.defects for part in message.walk())

    names = {name.lower() for name in message}
    wanted = GENERATED - {n for n in ("cc", "reply-to") if n.replace("-", "_") not in body}
    if message.is_multipart():
        wanted.remove("content-transfer-encoding")
    assert names == wanted | {name.lower() for name in body.get("headers", {})}
    assert len(message) == len(names)  # no field twice

    assert parsed_mailboxes(message, "From") == [expected_mailbox(body["from"])]
    for field, header in (("to", "To"), ("cc", "Cc"), ("reply_to", "Reply-To")):
        if field in body:
            assert parsed_mailboxes(message, header) == list(map(expected_mailbox, body[field]))
    assert str(message["Subject"]) == body["subject"]
    for name, value in body.get("headers", {}).items():
        assert str(message[name]) == value
    assert message["Message-ID"] == outgoing.message_id
    assert message["Date"].datetime.timestamp() == T0

    envelope = [expected_mailbox(v)[1] for f in ("to", "cc", "bcc") for v in body.get(f, [])]
    assert outgoing.recipients == tuple(envelope)
    assert message["Bcc"] is None

    for kind, subtype in (("text", "plain"), ("html", "html")):
        part = message.get_body(preferencelist=(subtype,))
        if kind in body:
            assert part is not None and part.get_content_type() == f"text/{subtype}"
            assert part.get_content().replace("\r\n", "\n") == as_text(body[kind])
    attachments = list(message.iter_attachments())
    wanted_attachments = [
        (a["filename"].strip(), a["content_type"], base64.b64decode(a["content"]))
        for a in body.get("attachments", [])
    ]
    assert [
        (a.get_filename(), a.get_content_type(), a.get_payload(decode=True)) for a in attachments
    ] == wanted_attachments


def test_a_boundary_found_in_the_content_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random boundaries make a collision unlikely; the check makes it impossible."""
    drawn = iter(["0" * 24, "1" * 24])
    monkeypatch.setattr(mime.secrets, "token_hex", lambda _: next(drawn))
    text = f"--=_rg{'0' * 24}\n--=_rg{'0' * 24}--\n"
    outgoing, message = composed(
        {"from": "a@example.com", "to": "b@example.com", "text": text, "html": text}
    )
    assert message.get_boundary() == "=_rg" + "1" * 24
    assert outgoing.data.count(b"--=_rg" + b"1" * 24) == 3  # two parts and the close
    for subtype in ("plain", "html"):
        part = message.get_body(preferencelist=(subtype,))
        assert part is not None and part.get_content().replace("\r\n", "\n") == text


INJECTIONS = ["x\r\nBcc: victim@evil.test", "x\nX-Injected: 1", "x\rX-Injected: 1", "x\x00y"]


@pytest.mark.parametrize("attack", INJECTIONS)
@pytest.mark.parametrize(
    ("where", "field"),
    [
        (lambda a: {"subject": a}, "subject"),
        (lambda a: {"from": f'"{a}" <a@example.com>'}, "from"),
        (lambda a: {"to": [f'"{a}" <b@example.com>']}, "to[0]"),
        (lambda a: {"cc": [f"b@example.com{a}"]}, "cc[0]"),
        (lambda a: {"headers": {"X-Priority": a}}, "headers.X-Priority"),
        (
            lambda a: {"attachments": [{"filename": a, "content": "eA=="}]},
            "attachments[0].filename",
        ),
    ],
)
def test_header_injection_is_refused(attack: str, where: Any, field: str) -> None:
    body = {"from": "a@example.com", "to": ["b@example.com"], "text": "x"} | where(attack)
    with pytest.raises(ApiError) as caught:
        compose(body, ALLOWED, T0)
    assert (caught.value.status, caught.value.field) == (400, field)


@given(header_text.map(lambda t: t + "\r\nBcc: victim@evil.test"), header_text)
@settings(max_examples=50, deadline=None)
def test_no_value_adds_a_header_line(subject: str, tag: str) -> None:
    """Whatever the text (here with CRLF: refused; else encoded or folded), no header appears
    that the request did not name, and no line starts a field of its own."""
    for value in (subject, tag, "=?utf-8?q?Bcc:_x?=", "a " * 600):
        body = {"from": "a@example.com", "to": "b@example.com", "text": "x", "subject": value,
                "headers": {"X-Campaign-Name": value}}  # fmt: skip
        try:
            outgoing = compose(body, ALLOWED, T0)
        except ApiError as refused:
            assert (refused.status, refused.field) == (400, "subject") and "\n" in value
            continue
        message = email.message_from_bytes(outgoing.data, policy=email.policy.default)
        assert str(message["Subject"]) == value == str(message["X-Campaign-Name"])
        head = outgoing.data.split(b"\r\n\r\n", 1)[0]
        starts = [
            line.split(b":", 1)[0].lower() for line in head.split(b"\r\n") if line[:1] != b" "
        ]
        assert set(starts) == {n.encode() for n in GENERATED - {"cc", "reply-to"}} | {
            b"x-campaign-name"
        }


def test_non_ascii_text_and_names_are_encoded_and_long_lines_folded() -> None:
    outgoing, message = composed(
        {"from": "Jürgen Müller <erp@example.com>", "to": ["b@example.com"],
         "subject": "Rechnung € " + "lang " * 40, "text": "Grüße\n" + "x" * 1200,
         "attachments": [{"filename": "Überweisung 2026 \u2013 März.pdf", "content": "eA=="}]}
    )  # fmt: skip
    head = outgoing.data.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?b?" in head and max(map(len, head.split(b"\r\n"))) <= 78
    assert b"filename*=utf-8''%C3%9Cberweisung%202026%20%E2%80%93%20M%C3%A4rz.pdf" in outgoing.data
    assert message["From"].addresses[0].display_name == "Jürgen Müller"
    text = message.get_body(preferencelist=("plain",))
    assert text is not None and text["Content-Transfer-Encoding"] == "quoted-printable"
    assert re.search(rb"Content-Transfer-Encoding: 7bit", outgoing.data) is None


def test_non_ascii_addresses_and_lone_surrogates_are_refused() -> None:
    for body, field in (
        ({"from": "a@example.com", "to": "jürgen@example.com", "text": "x"}, "to"),
        ({"from": "a@example.com", "to": "b@example.com", "text": "\ud800"}, "text"),
        ({"from": "a@example.com", "to": "b@example.com", "text": "x", "subject": "\udfff"},
         "subject"),
    ):  # fmt: skip
        with pytest.raises(ApiError) as caught:
            compose(body, ALLOWED, T0)
        assert (caught.value.status, caught.value.field) == (400, field)


def test_a_long_word_in_a_name_is_cut_and_joined() -> None:
    """RFC 2047 §2 limits an encoded-word to 75 characters: a longer word is cut between two,
    which RFC 2047 §6.2 readers (the relay's own parser here) join again."""
    name = "Buchhaltungsabteilungsleiterinnenvertretungsbüro Müller " + "€" * 30
    outgoing = compose(
        {"from": f'"{name}" <erp@example.com>', "to": "b@example.com", "text": "x"}, ALLOWED, T0
    )
    head = outgoing.data.split(b"\r\n\r\n", 1)[0]
    from_field = head.split(b"\r\nTo:", 1)[0].removeprefix(b"From:")
    words = re.findall(rb"=\?utf-8\?b\?[^?]*\?=", from_field)
    assert len(words) >= 3 and max(map(len, words)) <= 75
    assert max(map(len, head.split(b"\r\n"))) <= 78
    assert parse_mailbox_field(from_field).display_name == name
