"""The relaxed body hash of DKIM (RFC 6376 §3.4.4, §3.7), over the whole body in a few C passes.

dkimpy canonicalises with two `re.sub` over the body, once per key; the second replaces every
single space by itself, so a 2 MB text body took about 100 ms per key (bench/dkim_bench.py). Here
each step is a `bytes` method (memchr / fast search), the usual body needs no copy at all, and
the digest is computed once for every key of the message. The result is byte-identical to
dkimpy's `Relaxed.canonicalize_body` on a body split as dkimpy splits a message (bare LF read
as a line end): tests/unit/test_dkim_signing.py checks it on random bodies.
"""

from __future__ import annotations

import base64
import hashlib
import re

# Passes of "two spaces -> one" before a regular expression takes the rest: each pass halves
# every run, so four passes settle runs of up to 16 spaces (indentation, tables) and a hostile
# run of a million spaces costs one linear regex pass, not twenty whole-body passes.
HALVING_PASSES = 4
SPACE_RUN = re.compile(rb" {2,}")
CRLF = b"\r\n"


def crlf_lines(body: bytes) -> bytes:
    """Every line end as CRLF: a bare LF ends a line (as dkimpy's parser reads it); a lone CR
    is data. The usual body (CRLF throughout, as Postfix passes it) is returned as is."""
    if body.count(b"\n") == body.count(CRLF):
        return body
    return body.replace(CRLF, b"\n").replace(b"\n", CRLF)


def compress_whitespace(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 a and b: each run of WSP as one SP, none at the end of a line."""
    body = body.replace(b"\t", b" ")
    for _ in range(HALVING_PASSES):
        if b"  " not in body:
            break
        body = body.replace(b"  ", b" ")
    else:
        body = SPACE_RUN.sub(b" ", body)
    return body.replace(b" " + CRLF, CRLF)


def trailing_empty_lines(body: bytes) -> int:
    """How many CRLFs end the body: a galloping search with `endswith`, so a body of a million
    empty lines costs no Python loop over them and no copy larger than twice its tail."""
    found, step = 0, 1
    while body.endswith(CRLF * (found + step)):
        found += step
        step *= 2
    while step > 1:
        step //= 2
        if body.endswith(CRLF * (found + step)):
            found += step
    return found


def relaxed_body_digest(body: bytes) -> bytes:
    """SHA-256 of the relaxed canonical form of `body` (RFC 6376 §3.4.4, §3.4.3 for the end)."""
    canonical = compress_whitespace(crlf_lines(body))
    # §3.4.4 c: empty lines at the end are ignored; a non-empty body ends with one CRLF, and an
    # empty one (nothing but empty lines) is hashed as nothing at all.
    end = len(canonical) - 2 * trailing_empty_lines(canonical)
    digest = hashlib.sha256(memoryview(canonical)[:end])
    if end:
        digest.update(CRLF)
    return digest.digest()


def relaxed_body_hash(body: bytes) -> bytes:
    """The bh= value: base64 of relaxed_body_digest."""
    return base64.b64encode(relaxed_body_digest(body))
