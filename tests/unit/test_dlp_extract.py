"""Text extraction for DLP: HTML, CSV/TXT, OOXML (docx, xlsx, pptx), PDF; unsafe or broken files."""

from __future__ import annotations

import pytest
from tests.support.documents import CONTENT_TYPES, docx, pdf, pptx, xlsx, zip_bytes

from relayguard.dlp.detectors import BUILTIN, scan_text
from relayguard.dlp.extract import ExtractionError, extract_text, html_content, ooxml_text
from relayguard.parsing.mime import Part

pytestmark = pytest.mark.unit

CARD = "4111 1111 1111 1111"


def part(data: bytes, content_type: str = "application/octet-stream", filename: str = "") -> Part:
    return Part("2", content_type, filename, data, is_attachment=bool(filename))


def cards(text: str | None) -> list[str]:
    assert text is not None
    return [m.value for m in scan_text(text, [BUILTIN["card_number"]]).get("card_number", [])]


def test_html_text_skips_script_style_and_inline_images() -> None:
    html = (
        "<html><style>.x{}</style><script>var c='4111111111111111';</script>"
        f"<p>Card&nbsp;<b>{CARD}</b></p><img src='data:image/png;base64,AAAA4111111111111111'>"
        "<a href='https://portal.example/x'>portal</a></html>"
    )
    content = html_content(html)
    assert cards(content.text) == ["4111111111111111"]
    assert content.links == ["https://portal.example/x"]


@pytest.mark.parametrize(
    ("data", "content_type", "filename"),
    [
        (f"name;card\nA;{CARD}\n".encode(), "text/csv", "export.csv"),
        (f"card {CARD}".encode(), "application/octet-stream", "notes.txt"),
        (f"<p>{CARD}</p>".encode(), "text/html", ""),
        (docx(["Invoice", f"Card {CARD}"]), "application/octet-stream", "Invoice.docx"),
        (
            xlsx([["name", "card"], ["A", CARD]]),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "x.bin",
        ),
        (pptx([f"slide {CARD}"]), "application/octet-stream", "deck.pptx"),
        (pdf(["Statement", f"Card {CARD}"]), "application/pdf", "statement.pdf"),
        (pdf([f"Card {CARD}"]), "application/octet-stream", "scan"),  # found by its %PDF magic
    ],
)
def test_each_attachment_kind_is_read(data: bytes, content_type: str, filename: str) -> None:
    assert cards(extract_text(part(data, content_type, filename))) == ["4111111111111111"]


def test_xlsx_numbers_stored_as_values_are_read() -> None:
    text = extract_text(part(xlsx([["card"], [4012888888881881]]), filename="n.xlsx"))
    assert cards(text) == ["4012888888881881"]


def test_binary_parts_have_no_text() -> None:
    assert extract_text(part(b"\x89PNG\r\n\x1a\n4111111111111111", "image/png", "a.png")) is None


def test_members_of_an_ooxml_document_are_read_through_the_document() -> None:
    member = Part(
        "2/word/document.xml",
        "application/octet-stream",
        "document.xml",
        b"<w:t>4111111111111111</w:t>",
        in_archive=True,
        in_document=True,
    )
    assert extract_text(member) is None


def test_xml_entity_expansion_is_refused() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><w:document><w:t>&b;</w:t></w:document>'
    )
    package = zip_bytes({"[Content_Types].xml": CONTENT_TYPES, "word/document.xml": bomb})
    with pytest.raises(ExtractionError, match="unreadable document"):
        ooxml_text(package)


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"PK\x03\x04 not really a zip", "broken.docx"),
        (zip_bytes({"word/document.xml": "<x/>"}), "no-content-types.docx"),
        (
            zip_bytes({"[Content_Types].xml": CONTENT_TYPES, "word/document.xml": "<unclosed>"}),
            "malformed.docx",
        ),
        (b"%PDF-1.4\n garbage without objects", "broken.pdf"),
    ],
)
def test_unreadable_documents_raise(data: bytes, filename: str) -> None:
    with pytest.raises(ExtractionError):
        extract_text(part(data, filename=filename))
