"""The DKIM signer itself (RFC 6376, Ed25519 per RFC 8463): from delivered headers, a body and
keys to DKIM-Signature fields. dkimpy builds and folds the header part and signs through the
module-level functions relayguard.dkim.openssl.install() replaces; the relaxed body hash is ours,
computed once for every key (dkim/canonical.py). The policy of what is signed and when lives in
transforms/signing.py, which imports this module only when a message is signed: dkimpy and the
dnspython it pulls in cost ~90 ms to import, which a relay without [dkim] never pays.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dkim
import dkim.crypto
import nacl.encoding
import nacl.exceptions
import nacl.signing
from dkim.canonicalization import CanonicalizationPolicy

from relayguard.core.errors import RelayguardError
from relayguard.dkim import canonical as dkim_canonical
from relayguard.dkim.keys import SigningKey


class SigningError(RelayguardError):
    """dkimpy could not sign (bad key, bad message); the pipeline makes it a tempfail."""


def render(headers: Iterable[tuple[bytes, bytes]], body: bytes) -> bytes:
    """A CRLF message from (name, value) pairs as libmilter passes them (folds may be bare LF)."""
    lines = []
    for name, raw in headers:
        value = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").lstrip(b" \t")
        lines.append(name + b": " + value + b"\r\n")
    return b"".join(lines) + b"\r\n" + body


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """What every key of one message signs: dkimpy's parse of the header section (for the h=
    fields) and the relaxed body hash, computed once for all keys (dkim/canonical.py)."""

    headers: dkim.DKIM
    body_hash: bytes  # bh=, base64


def prepare(headers: Iterable[tuple[bytes, bytes]], body: bytes) -> PreparedMessage:
    """dkimpy parses only the header section: the (possibly 40 MB) body is never rendered into a
    message for dkimpy to split into lines again, nor canonicalised by it once per key."""
    parsed = dkim.DKIM(render(headers, b""), linesep=b"\n")
    return PreparedMessage(parsed, dkim_canonical.relaxed_body_hash(body))


def sign(
    message: PreparedMessage, keys: Sequence[SigningKey], include: Sequence[bytes]
) -> list[tuple[str, str]]:
    """One DKIM-Signature field per key, as (name, value) for addheader (folds as LF + TAB)."""
    fields = []
    for key in keys:
        try:
            header = _signature(message, key, tuple(include))
        except (
            dkim.DKIMException,
            dkim.crypto.UnparsableKeyError,
            nacl.exceptions.ValueError,
        ) as exc:
            raise SigningError(f"cannot sign with {key.domain}/{key.selector}: {exc}") from exc
        name, _, value = header.decode("ascii").partition(":")
        fields.append((name, value.strip().replace("\n ", "\n\t").rstrip("\n")))
    return fields


def _signature(message: PreparedMessage, key: SigningKey, include: tuple[bytes, ...]) -> bytes:
    """The field dkimpy's DKIM.sign writes (c=relaxed/relaxed, no l=), from the shared body hash.
    dkimpy still builds, folds and hashes the header part, and signs through the module-level
    functions relayguard.dkim.openssl.install() replaces; tests compare the bytes with its sign."""
    signer = message.headers
    algorithm = key.dkim_algorithm
    private = _private_key(key)
    if b"from" not in include:  # RFC 6376 §5.4: From MUST be signed
        raise dkim.ParameterError("The From header field MUST be signed")
    for name in signer.should_not_sign.intersection(include):
        raise dkim.ParameterError(f"The {name!r} header field SHOULD NOT be signed")
    domain = key.domain.encode("ascii")
    signer.signature_algorithm = algorithm
    signer.hasher = hashlib.sha256
    fields = [
        (b"v", b"1"),
        (b"a", algorithm),
        (b"c", b"relaxed/relaxed"),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", key.selector.encode("ascii")),
        (b"t", str(int(time.time())).encode("ascii")),
        (b"h", b" : ".join(include)),
        (b"bh", message.body_hash),
        # dkimpy's placeholder: b= folds onto its own line, so the value does not refold.
        (b"b", b"0" * 60),
    ]
    value: bytes = signer.gen_header(fields, include, RELAXED, b"DKIM-Signature", private)
    return b"DKIM-Signature: " + value


RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")


def _private_key(key: SigningKey) -> object:
    """The key as dkimpy's gen_header takes it. RSA goes through the module-level name
    relayguard.dkim.openssl.install() replaces with its per-key cache, as dkimpy's sign does."""
    if key.dkim_algorithm == b"rsa-sha256":
        return dkim.parse_pem_private_key(key.private)
    return nacl.signing.SigningKey(key.private, encoder=nacl.encoding.Base64Encoder)
