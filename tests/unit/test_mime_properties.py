"""Property tests for the MIME walker: whatever the bytes, a bounded answer and never a crash."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayguard.parsing.mime import WalkLimits, walk

pytestmark = pytest.mark.unit

LIMITS = WalkLimits(max_depth=4, max_parts=20, max_decoded_bytes=64_000, max_archive_members=10)

# Pieces that steer the parser into its interesting corners.
PIECES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b'Content-Type: multipart/alternative; boundary="c"\r\n',
        b"Content-Type: message/rfc822\r\n",
        b"Content-Type: application/zip; name=a.zip\r\n",
        b"Content-Type: text/plain; charset=utf-16\r\n",
        b"Content-Type: text/html; charset=iso-8859-1\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b'Content-Disposition: attachment; filename="x.docx"\r\n',
        b"\r\n",
        b"--b\r\n",
        b"--b--\r\n",
        b"--c\r\n",
        b"UEsDBBQAAAAIAA==\r\n",
        b"=C3=A9=\r\n",
        b"\x00\xff\xfe",
        b"From: a@example.com\r\n",
    ]
)


def check(result_parts: int, decoded: int) -> None:
    assert result_parts <= LIMITS.max_parts + LIMITS.max_archive_members
    assert decoded <= LIMITS.max_decoded_bytes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    result = walk(raw, LIMITS)
    check(len(result.parts), result.decoded_bytes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PIECES, max_size=60), st.binary(max_size=300))
def test_structured_mutations_stay_within_limits(pieces: list[bytes], tail: bytes) -> None:
    result = walk(b"MIME-Version: 1.0\r\n" + b"".join(pieces) + tail, LIMITS)
    check(len(result.parts), result.decoded_bytes)
    assert all(part.path for part in result.parts) or not result.parts
    assert all(part.depth <= LIMITS.max_depth for part in result.parts)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=5, max_value=60))
def test_deep_nesting_is_cut_at_the_depth_limit(depth: int) -> None:
    body = b"Content-Type: text/plain\r\n\r\nleaf\r\n"
    for level in range(depth):
        boundary = b"n%d" % level
        body = (
            b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n--'
            + boundary + b"\r\n" + body + b"\r\n--" + boundary + b"--\r\n"
        )  # fmt: skip
    result = walk(b"MIME-Version: 1.0\r\n" + body, LIMITS)
    assert not result.complete
    assert any(f.kind for f in result.limits_exceeded)
