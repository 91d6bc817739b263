"""The MIME walker: decoding, charsets, nesting, archives, limits and malformed input."""

from __future__ import annotations

import base64
import quopri
import re
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.documents import nested_zip, zip_bytes

from relayguard.core.message import Client, Envelope, message_from_bytes
from relayguard.parsing import mime
from relayguard.parsing.mime import WalkLimits, raw_message, release_walk, walk, walk_message

pytestmark = pytest.mark.unit


def base(body: str = "hello") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "scanner@example.com"
    msg["Subject"] = "t"
    msg.set_content(body)
    return msg


def raw_part(content_type: str, cte: str, payload: bytes, extra: str = "") -> bytes:
    return (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: " + content_type.encode() + b"\r\n"
        b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n" + extra.encode() + b"\r\n" + payload
    )


@pytest.mark.parametrize(
    ("charset", "text"),
    [
        ("utf-8", "Grüße, café, 東京"),
        ("iso-8859-1", "Grüße, café"),
        ("iso-8859-15", "price 5 €"),
        ("windows-1252", "\u201cquoted\u201d \u2013 dash \u20ac"),
        ("windows-1251", "Привет"),
        ("utf-16", "UTF-16 text ü"),
    ],
)
def test_text_parts_are_decoded_with_their_charset(charset: str, text: str) -> None:
    payload = base64.encodebytes(text.encode(charset))
    result = walk(raw_part(f'text/plain; charset="{charset}"', "base64", payload))
    assert [p.text().strip() for p in result.parts] == [text]


def test_quoted_printable_is_decoded() -> None:
    payload = quopri.encodestring("café = 4111 1111 1111 1111".encode())
    result = walk(raw_part("text/plain; charset=utf-8", "quoted-printable", payload))
    assert result.parts[0].text() == "café = 4111 1111 1111 1111"


def test_unknown_charset_falls_back_without_raising() -> None:
    result = walk(raw_part("text/plain; charset=x-unknown", "8bit", "naïve".encode()))
    assert result.parts[0].text() == "naïve"
    latin = walk(raw_part("text/plain", "8bit", "naïve".encode("cp1252")))
    assert latin.parts[0].text() == "naïve"


def test_parts_have_paths_names_types_and_sizes() -> None:
    msg = base("body")
    msg.add_alternative("<p>html</p>", subtype="html")
    msg.add_attachment(b"%PDF-1.4 x", maintype="application", subtype="pdf", filename="a.pdf")
    inner = base("inner body")
    inner.add_attachment(
        b"abc", maintype="application", subtype="octet-stream", filename="inner.bin"
    )
    msg.add_attachment(inner)
    msg.add_attachment(
        zip_bytes({"docs/readme.txt": "zipped text", "x.bin": b"\0\1"}),
        maintype="application",
        subtype="zip",
        filename="bundle.zip",
    )
    result = walk(msg.as_bytes())
    summary = [(p.path, p.content_type, p.filename, p.size, p.is_attachment) for p in result.parts]
    assert summary == [
        ("1.1", "text/plain", "", 5, False),
        ("1.2", "text/html", "", 12, False),
        ("2", "application/pdf", "a.pdf", 10, True),
        ("3.1", "text/plain", "", 11, False),
        ("3.2", "application/octet-stream", "inner.bin", 3, True),
        ("4", "application/zip", "bundle.zip", len(msg.get_payload()[3].get_content()), True),
        ("4/docs/readme.txt", "application/octet-stream", "readme.txt", 11, True),
        ("4/x.bin", "application/octet-stream", "x.bin", 2, True),
    ]
    assert result.parts[6].is_text and result.parts[6].in_archive
    assert result.complete and result.defects == []


def test_rfc2231_and_encoded_word_file_names() -> None:
    msg = base()
    msg.add_attachment(
        b"x",
        maintype="application",
        subtype="octet-stream",
        filename=("utf-8", "", "Rechnung März.pdf"),
    )
    raw = msg.as_bytes()
    encoded = raw_part(
        "application/octet-stream",
        "base64",
        base64.encodebytes(b"y"),
        'Content-Disposition: attachment; filename="=?utf-8?q?Caf=C3=A9.docm?="\r\n',
    )
    assert walk(raw).parts[-1].filename == "Rechnung März.pdf"
    assert walk(encoded).parts[0].filename == "Café.docm"


def test_eml_attachment_without_message_type_is_walked() -> None:
    msg = base()
    msg.add_attachment(
        base("attached eml").as_bytes(),
        maintype="application",
        subtype="octet-stream",
        filename="fwd.eml",
    )
    texts = [p.text().strip() for p in walk(msg.as_bytes()).parts if p.content_type == "text/plain"]
    assert texts == ["hello", "attached eml"]


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@b\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nno end",
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!not*base64",
        b"\x00\xff garbage header\r\n: nameless\r\n\r\nbody",
        b"Content-Type: multipart/mixed\r\n\r\nmultipart without boundary",
        b'Content-Type: multipart/mixed; boundary=""\r\n\r\n--\r\n--',
        b"",
        b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"PK\x03\x04 truncated archive"),
    ],
)
def test_malformed_mime_is_walked_without_raising(raw: bytes) -> None:
    result = walk(raw)
    assert len(result.parts) >= 1
    assert all(isinstance(p.data, bytes) for p in result.parts)


def test_missing_final_boundary_still_yields_the_parts() -> None:
    raw = (
        b"From: a@b\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
        b"Content-Type: text/plain\r\n\r\nfirst\r\n--x\r\nContent-Type: text/plain\r\n\r\nsecond"
    )
    result = walk(raw)
    assert [p.text().strip() for p in result.parts] == ["first", "second"]
    assert any("CloseBoundaryNotFoundDefect" in d for d in result.defects)


def test_part_limit() -> None:
    msg = base()
    for index in range(30):
        msg.add_attachment(
            b"%d" % index, maintype="application", subtype="octet-stream", filename=f"{index}.bin"
        )
    result = walk(msg.as_bytes(), WalkLimits(max_parts=10))
    assert len(result.parts) == 10
    assert [f.kind for f in result.limits_exceeded] == ["parts"]


def test_depth_limit_on_nested_zips() -> None:
    msg = base()
    msg.add_attachment(nested_zip(20), maintype="application", subtype="zip", filename="deep.zip")
    result = walk(msg.as_bytes())
    assert [f.kind for f in result.limits_exceeded] == ["depth"]
    assert not result.complete


def test_decoded_bytes_limit_refuses_before_decoding() -> None:
    msg = base()
    msg.add_attachment(
        b"\0" * 300_000, maintype="application", subtype="octet-stream", filename="big.bin"
    )
    result = walk(msg.as_bytes(), WalkLimits(max_decoded_bytes=100_000))
    assert [p.path for p in result.parts] == ["1"]
    assert result.limits_exceeded[0].kind == "decoded_bytes"
    assert result.decoded_bytes < 100_000


def test_archive_member_count_limit() -> None:
    archive = zip_bytes({f"f{i}.txt": "x" for i in range(20)})
    msg = base()
    msg.add_attachment(archive, maintype="application", subtype="zip", filename="many.zip")
    result = walk(msg.as_bytes(), WalkLimits(max_archive_members=5))
    assert result.limits_exceeded[0].kind == "archive_members"


def test_zip_bomb_expansion_ratio() -> None:
    archive = zip_bytes({"zeros.bin": b"\0" * 5_000_000})
    msg = base()
    msg.add_attachment(archive, maintype="application", subtype="zip", filename="bomb.zip")
    result = walk(msg.as_bytes())
    assert result.limits_exceeded[0].kind == "expansion_ratio"
    assert result.decoded_bytes < 100_000  # the member was never inflated


def test_encrypted_archive_member_is_reported() -> None:
    archive = bytearray(zip_bytes({"secret.txt": "x"}, compression=0))
    # Set the "encrypted" flag (bit 0) in the local and central headers: the walker must not
    # try to read the member and must say it could not.
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        position = archive.find(signature)
        archive[position + offset] |= 0x01
    msg = base()
    msg.add_attachment(bytes(archive), maintype="application", subtype="zip", filename="enc.zip")
    result = walk(msg.as_bytes())
    assert [f.kind for f in result.encrypted] == ["encrypted_archive"]
    assert not result.complete


def test_five_thousand_parts_end_with_a_finding() -> None:
    msg = base()
    for index in range(5000):
        msg.add_attachment(
            b"%d" % index, maintype="application", subtype="octet-stream", filename=f"{index}.bin"
        )
    result = walk(msg.as_bytes())
    assert len(result.parts) == WalkLimits().max_parts
    assert result.limits_exceeded[0].kind == "parts"


def test_raw_message_round_trip_and_per_thread_cache() -> None:
    source = base("cached").as_bytes().replace(b"\n", b"\r\n")
    message = message_from_bytes(source, Envelope(Client(), ""))
    assert raw_message(message).endswith(b"\r\n\r\ncached\r\n")
    first = walk_message(message, WalkLimits())
    assert walk_message(message, WalkLimits()) is first
    other = message_from_bytes(source, Envelope(Client(), ""))
    assert walk_message(other, WalkLimits()) is not first


def test_every_scanner_reads_one_raw_buffer_built_once() -> None:
    """clamd, YARA and the spam check each called raw_message: three copies of a 30 MB message.
    Now the first call builds the buffer and every later one gets the same object, until the
    content checks are over (release_walk)."""
    source = base("shared").as_bytes().replace(b"\n", b"\r\n")
    message = message_from_bytes(source, Envelope(Client(), ""))
    first = raw_message(message)
    assert first == source
    assert raw_message(message) is first and message.raw() is first
    release_walk(message)
    again = raw_message(message)
    assert again == first and again is not first


def test_thirty_megabyte_attachment_is_walked() -> None:
    msg = base()
    msg.add_attachment(
        b"\xab" * (30 * 1024 * 1024),
        maintype="application",
        subtype="octet-stream",
        filename="scan.tiff",
    )
    result = walk(msg.as_bytes())
    assert result.complete
    assert result.parts[1].size == 30 * 1024 * 1024


def test_walk_is_forgotten_once_the_checks_are_done() -> None:
    message = message_from_bytes(base("released").as_bytes(), Envelope(Client(), ""))
    first = walk_message(message, WalkLimits())
    release_walk(message)
    assert walk_message(message, WalkLimits()) is not first


# --- long base64 runs bypass the email parser (memory), with the very same result ----------------

BLOB = bytes(range(256)) * 1024  # 256 KB: its base64 is well over BLOB_MIN


def crlf(message: EmailMessage) -> bytes:
    return message.as_bytes().replace(b"\n", b"\r\n")


def long_lines(text: bytes) -> bytes:
    """A run of base64-alphabet lines that is *not* a base64 part."""
    return b"\r\n".join(text[i : i + 76] for i in range(0, len(text), 76)) + b"\r\n"


def blob_messages() -> dict[str, bytes]:
    attachment = base("see attachment")
    attachment.add_attachment(BLOB, maintype="application", subtype="pdf", filename="a.pdf")
    two = base("two attachments")
    two.add_attachment(BLOB, maintype="image", subtype="png", filename="1.png")
    two.add_attachment(BLOB[::-1], maintype="application", subtype="zip", filename="2.bin")
    encoded = base64.b64encode(BLOB)
    plain_run = long_lines(encoded)
    return {
        "attachment": crlf(attachment),
        "two attachments": crlf(two),
        "text part of base64-looking lines": raw_part("text/plain", "7bit", plain_run),
        "text around the run": raw_part("text/plain", "7bit", b"before\r\n" + plain_run + b"after"),
        "quoted-printable soft breaks": raw_part(
            "text/plain", "quoted-printable", plain_run.replace(b"\r\n", b"=\r\n")
        ),
        "bad padding": raw_part("application/octet-stream", "base64", long_lines(encoded[:-3])),
        "blank lines first": raw_part("application/pdf", "base64", b"\r\n\r\n" + plain_run),
        "no final line break": raw_part("application/pdf", "base64", plain_run.rstrip(b"\r\n")),
    }


@pytest.mark.parametrize("name", list(blob_messages()))
def test_base64_runs_walk_exactly_as_the_parser_would(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = blob_messages()[name]
    fast = walk(raw)
    monkeypatch.setattr(mime, "base64_runs", lambda data: iter(()))  # none: parser only
    slow = walk(raw)
    assert [(p.path, p.content_type, p.filename, p.charset, p.data) for p in fast.parts] == [
        (p.path, p.content_type, p.filename, p.charset, p.data) for p in slow.parts
    ]
    assert (fast.defects, fast.decoded_bytes) == (slow.defects, slow.decoded_bytes)
    assert fast.parts and all(mime.Blobs().prefix[:16] not in p.text() for p in fast.parts)


# What base64_runs finds, said as one regular expression (the way it was found before): every
# maximal run of the alphabet at least BLOB_MIN long.
BASE64_RUN = re.compile(rb"(?<![A-Za-z0-9+/=\r\n])[A-Za-z0-9+/=\r\n]{%d,}" % mime.BLOB_MIN)
RUN_PIECES = st.sampled_from(
    [b"A" * 20_000, b"Zm9v\r\n" * 3_000, b" ", b"-", b"text words ", b"\r\n", b"x" * 40_000]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(RUN_PIECES, max_size=12).map(b"".join))
def test_base64_runs_are_the_maximal_runs_of_the_alphabet(data: bytes) -> None:
    expected = [found.span() for found in BASE64_RUN.finditer(data)]
    assert list(mime.base64_runs(data)) == expected


@pytest.mark.parametrize("length", [mime.BLOB_MIN - 1, mime.BLOB_MIN, mime.BLOB_MIN + 1])
@pytest.mark.parametrize("offset", [0, 1, 5_000, 16_383, 32_767, 32_768, 40_000])
def test_runs_just_long_enough_are_found_wherever_they_start(length: int, offset: int) -> None:
    """A run of BLOB_MIN bytes holds one whole step of BLOB_MIN / 2 wherever it starts."""
    data = b"t" * offset + b" " + b"A" * length + b"-end"
    expected = [found.span() for found in BASE64_RUN.finditer(data)]
    assert list(mime.base64_runs(data)) == expected


def test_attachment_run_is_kept_out_of_the_parser() -> None:
    """The point of it: the parser sees one token line, not thousands of base64 lines."""
    raw = blob_messages()["attachment"]
    blobs = mime.Blobs()
    fed = b"".join(blobs.pieces(raw))
    assert len(blobs.runs) == 1
    assert len(fed) < 2_000 < len(raw) // 100
    [run] = blobs.runs.values()
    assert base64.b64decode(bytes(run)) == BLOB
