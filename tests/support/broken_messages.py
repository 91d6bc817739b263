"""A corpus of real-world-broken and hostile messages, generated so the repository stays small.

Each entry is (name, raw bytes). They all carry an authorised From, so a refusal means the milter
judged the message, not the sender; what matters to the robustness tests is that every one gets a
definite answer and that the milter keeps serving.
"""

from __future__ import annotations

import base64
import os

FROM = b"From: Scanner <scanner@example.com>\r\nTo: alice@example.com\r\n"


def _multipart(boundary: bytes, parts: list[bytes], close: bool = True) -> bytes:
    out = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return out + (b"--" + boundary + b"--\r\n" if close else b"")


def nested_multipart(depth: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\ninnermost\r\n"
    for level in range(depth):
        boundary = f"b{level}".encode()
        body = (
            b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
            + _multipart(boundary, [body])
        )  # fmt: skip
    return FROM + b"MIME-Version: 1.0\r\n" + body


def corpus() -> list[tuple[str, bytes]]:
    attachment = base64.encodebytes(os.urandom(3000)).replace(b"\n", b"\r\n")
    mime = b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    part = b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    return [
        ("empty body", FROM + b"Subject: empty\r\n\r\n"),
        ("headers only, no blank line", FROM + b"Subject: no separator"),
        ("body only, no headers", b"\r\njust a body\r\n"),
        (
            "truncated base64 attachment",
            FROM + mime + _multipart(b"XX", [part + attachment[:777]], close=False),
        ),
        (
            "missing final boundary",
            FROM + mime + _multipart(b"XX", [b"Content-Type: text/plain\r\n\r\nhi"], close=False),
        ),
        ("boundary never used", FROM + mime + b"text without any boundary line\r\n"),
        (
            "multipart without boundary parameter",
            FROM + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\nhi\r\n",
        ),
        ("bad base64", FROM + mime + _multipart(b"XX", [part + b"!!!not*base64***\r\n===\r\n"])),
        (
            "bare LF line ends",
            FROM.replace(b"\r\n", b"\n") + b"Subject: lf\n\nline one\nline two\n",
        ),
        ("bare CR line ends", FROM + b"Subject: cr\r\n\r\nline one\rline two\r"),
        ("NUL bytes in body", FROM + b"Subject: nul\r\n\r\nbefore\x00after\x00\x00\r\n"),
        ("NUL byte in a header", FROM + b"Subject: nul\x00 here\r\n\r\nbody\r\n"),
        (
            "invalid UTF-8 in header and body",
            FROM + b"Subject: \xff\xfe\xc3\x28\r\n\r\n\xc3\x28\xa0\xa1\r\n",
        ),
        ("header garbage line", FROM + b"this line is not a header\r\nSubject: x\r\n\r\nbody\r\n"),
        ("1000-deep nested multipart", nested_multipart(1000)),
        (
            "10,000 headers",
            FROM + b"".join(b"X-H%d: v\r\n" % i for i in range(10_000)) + b"\r\nbody\r\n",
        ),
        ("60 KB header line", FROM + b"X-Long: " + b"a" * 60_000 + b"\r\n\r\nbody\r\n"),
        ("1 MB body line without line end", FROM + b"\r\n" + b"x" * 1_048_576),
        ("random binary", FROM + b"\r\n" + os.urandom(200_000)),
        (
            "5,000 parts",
            FROM + mime + _multipart(b"XX", [b"Content-Type: text/plain\r\n\r\np"] * 5000),
        ),
    ]
