"""Text out of message parts for DLP and URL scanning: plain text, HTML, CSV/TXT attachments,
OOXML documents (docx, xlsx, pptx) and PDF.

XML is parsed with defusedxml (no entity expansion, no external entities); PDF with pypdf, page
count bounded. A part that cannot be read raises ExtractionError so the caller can report it as
unscanned instead of treating it as clean.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from xml.etree.ElementTree import Element

import defusedxml.ElementTree
from defusedxml import DefusedXmlException

from relayguard.core.errors import RelayguardError
from relayguard.parsing.mime import OOXML_MARKER, Part

MAX_PDF_PAGES = 200
MAX_XML_MEMBER = 32 * 1024 * 1024
OOXML_TYPES = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
}
OOXML_EXTENSIONS = {
    ".docx": "docx",
    ".docm": "docx",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".pptx": "pptx",
    ".pptm": "pptx",
}
# Members of an OOXML package that hold the document's text.
OOXML_TEXT_MEMBERS = re.compile(
    r"^(word/(document|header\d*|footer\d*|footnotes|endnotes|comments)\.xml"
    r"|xl/sharedStrings\.xml|xl/worksheets/sheet\d+\.xml"
    r"|ppt/slides/slide\d+\.xml|ppt/notesSlides/notesSlide\d+\.xml)$"
)
BLOCK_TAGS = frozenset(
    {"p", "div", "br", "tr", "td", "th", "li", "ul", "ol", "table", "section", "article"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "header", "footer", "blockquote", "pre", "hr", "title"}
)

logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns about every odd PDF it reads


class ExtractionError(RelayguardError):
    """A part that should hold text could not be read (corrupt document, unsafe XML)."""


@dataclass(slots=True)
class HtmlContent:
    text: str
    links: list[str] = field(default_factory=list)


class _HtmlText(HTMLParser):
    """Visible text and link targets; script, style and data: URIs (inline images) are skipped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.links: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        if tag in BLOCK_TAGS:
            self.chunks.append("\n")
        for name, value in attrs:
            if name in ("href", "src", "action") and value and not value.startswith("data:"):
                self.links.append(value.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self.skip:
            self.skip -= 1
        if tag in BLOCK_TAGS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.chunks.append(data)


def html_content(markup: str) -> HtmlContent:
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    return HtmlContent("".join(parser.chunks), parser.links)


def document_kind(part: Part) -> str:
    """'html', 'text', 'docx', 'xlsx', 'pptx', 'pdf', or '' for parts without text to read."""
    if part.content_type == "text/html" or part.extension in (".html", ".htm"):
        return "html"
    kind = OOXML_TYPES.get(part.content_type) or OOXML_EXTENSIONS.get(part.extension)
    if kind:
        return kind
    if part.content_type == "application/pdf" or part.extension == ".pdf":
        return "pdf"
    if part.data.startswith(b"%PDF-"):
        return "pdf"
    if part.is_text:
        return "text"
    return ""


def extract_text(part: Part) -> str | None:
    """The readable text of `part`, None for parts without text (images, binaries)."""
    if part.in_document:
        return None  # read as part of its document (a docx), not member by member
    kind = document_kind(part)
    if kind == "text":
        return part.text()
    if kind == "html":
        return html_content(part.text()).text
    if kind in ("docx", "xlsx", "pptx"):
        return ooxml_text(part.data)
    if kind == "pdf":
        return pdf_text(part.data)
    return None


def _xml_text(root: Element) -> str:
    out: list[str] = []
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag in ("p", "br", "tr", "row", "si", "c", "tab", "cr"):
            out.append("\n" if tag in ("p", "br", "tr", "row", "si", "cr") else "\t")
        if element.text and tag in ("t", "v", "is"):
            out.append(element.text)
    return "".join(out)


def ooxml_text(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            names = package.namelist()
            if OOXML_MARKER not in names:
                raise ExtractionError("not an OOXML package")
            texts = []
            for info in package.infolist():
                if not OOXML_TEXT_MEMBERS.match(info.filename):
                    continue
                if info.file_size > MAX_XML_MEMBER:
                    raise ExtractionError(f"{info.filename} larger than {MAX_XML_MEMBER} bytes")
                root = defusedxml.ElementTree.fromstring(package.read(info))
                texts.append(_xml_text(root))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, DefusedXmlException) as exc:
        raise ExtractionError(f"unreadable document: {type(exc).__name__}") from None
    except SyntaxError as exc:  # xml.etree's ParseError
        raise ExtractionError(f"malformed XML: {exc.msg}") from None
    return "\n".join(texts)


def pdf_text(data: bytes) -> str:
    # Imported here, not at the top: pypdf takes ~50 ms to import and only mail with a PDF needs
    # it, while every `relayguard` command that reads the configuration imports this module.
    from pypdf import PdfReader  # noqa: PLC0415
    from pypdf.errors import PyPdfError  # noqa: PLC0415

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ExtractionError("encrypted PDF")
        pages = []
        for index, page in enumerate(reader.pages):
            if index >= MAX_PDF_PAGES:
                raise ExtractionError(f"more than {MAX_PDF_PAGES} pages")
            pages.append(page.extract_text() or "")
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise ExtractionError(f"unreadable PDF: {type(exc).__name__}") from None
    return "\n".join(pages)
