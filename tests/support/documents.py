"""Small attachments built in code: OOXML (docx, xlsx, pptx), PDF, zip and messages.

Real formats, minimal content: enough for text extraction and the MIME walker to be tested
without binary fixtures in the repository.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from xml.sax.saxutils import escape

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="xml" ContentType="application/xml"/></Types>'
)
W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
S = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
A = "http://schemas.openxmlformats.org/drawingml/2006/main"


def zip_bytes(members: dict[str, bytes | str], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def docx(paragraphs: Sequence[str]) -> bytes:
    # Each paragraph split over two runs, as Word does, so extraction must join runs.
    body = "".join(
        f"<w:p><w:r><w:t>{escape(p[: len(p) // 2])}</w:t></w:r>"
        f"<w:r><w:t>{escape(p[len(p) // 2 :])}</w:t></w:r></w:p>"
        for p in paragraphs
    )
    document = (
        f'<?xml version="1.0"?><w:document xmlns:w="{W}"><w:body>{body}</w:body></w:document>'
    )
    return zip_bytes({"[Content_Types].xml": CONTENT_TYPES, "word/document.xml": document})


def xlsx(rows: Sequence[Sequence[str | int]]) -> bytes:
    strings: list[str] = []
    cells = []
    for r, row in enumerate(rows, start=1):
        values = []
        for c, value in enumerate(row):
            ref = f"{chr(65 + c)}{r}"
            if isinstance(value, int):
                values.append(f'<c r="{ref}"><v>{value}</v></c>')
            else:
                strings.append(value)
                values.append(f'<c r="{ref}" t="s"><v>{len(strings) - 1}</v></c>')
        cells.append(f'<row r="{r}">{"".join(values)}</row>')
    shared = "".join(f"<si><t>{escape(s)}</t></si>" for s in strings)
    return zip_bytes(
        {
            "[Content_Types].xml": CONTENT_TYPES,
            "xl/sharedStrings.xml": f'<?xml version="1.0"?><sst xmlns="{S}">{shared}</sst>',
            "xl/worksheets/sheet1.xml": (
                f'<?xml version="1.0"?><worksheet xmlns="{S}"><sheetData>{"".join(cells)}'
                "</sheetData></worksheet>"
            ),
        }
    )


def pptx(texts: Sequence[str]) -> bytes:
    runs = "".join(f"<a:p><a:r><a:t>{escape(t)}</a:t></a:r></a:p>" for t in texts)
    slide = (
        f'<?xml version="1.0"?><p:sld xmlns:p="p" xmlns:a="{A}"><p:txBody>{runs}</p:txBody></p:sld>'
    )
    return zip_bytes({"[Content_Types].xml": CONTENT_TYPES, "ppt/slides/slide1.xml": slide})


def pdf(lines: Sequence[str]) -> bytes:
    """A one-page PDF 1.4 with Helvetica text, offsets computed, readable by any PDF reader."""

    def literal(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    ops = ["BT", "/F1 11 Tf", "72 720 Td", "14 TL"]
    for line in lines:
        ops.append(f"({literal(line)}) Tj T*")
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def nested_zip(levels: int, core: bytes = b"innermost") -> bytes:
    data = core
    for level in range(levels):
        data = zip_bytes({f"level{level}.zip" if level else "core.txt": data})
    return data
