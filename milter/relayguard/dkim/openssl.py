"""RSA signing for dkimpy through OpenSSL (the `cryptography` package).

dkimpy keeps canonicalisation and header construction; only the private-key operation moves.
Its signing path calls the module-level name `dkim.RSASSA_PKCS1_v1_5_sign(hash_object, key_dict)`
(dkim/__init__.py, DKIM.gen_header). RSASSA-PKCS1-v1_5 (RFC 8017 §8.2) is deterministic, so a
function with the same contract computed by OpenSSL returns the very same bytes, about five times
faster (bench/dkim_bench.py). `install()` puts it in place of dkimpy's pure-Python arithmetic;
tests check both that the bytes are identical and that this function is the one dkimpy calls.
It also caches dkimpy's PEM parsing (`dkim.parse_pem_private_key`, a pure-Python ASN.1 reader run
on every signature): a relay signs with the same few keys all day.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import dkim
import dkim.crypto
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

#: dkimpy's own implementation, kept for the equivalence tests and the benchmark.
PURE_PYTHON_SIGN = dkim.crypto.RSASSA_PKCS1_v1_5_sign
UNCACHED_PEM_PARSE = dkim.crypto.parse_pem_private_key
#: The key dict is only read (by rsassa_pkcs1_v1_5_sign), so one parsed copy per key is safe.
cached_pem_parse = functools.lru_cache(maxsize=64)(UNCACHED_PEM_PARSE)

_HASHES: Mapping[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
_install_lock = threading.Lock()


class HashObject(Protocol):
    """What dkimpy passes: a hashlib-like object (dkim.HashThrough) with a name and a digest."""

    name: str

    def digest(self) -> bytes: ...


def rsassa_pkcs1_v1_5_sign(hash_object: HashObject, private_key: Mapping[str, int]) -> bytes:
    """dkimpy's contract: sign the digest in `hash_object` with the key dict of
    dkim.crypto.parse_private_key (modulus, exponents, primes, CRT coefficients)."""
    algorithm = _HASHES.get(hash_object.name.lower())
    if algorithm is None:
        raise dkim.crypto.UnparsableKeyError(f"unsupported hash {hash_object.name!r}")
    key = _openssl_key(tuple(private_key[name] for name in _KEY_FIELDS))
    digest = hash_object.digest()
    # RFC 8017 §9.2: EMSA-PKCS1-v1_5 over the DigestInfo of the prehashed digest.
    return key.sign(digest, padding.PKCS1v15(), utils.Prehashed(algorithm()))


# The order of RSAPrivateNumbers' arguments (p, q, d, dmp1, dmq1, iqmp) after (n, e).
_KEY_FIELDS = (
    "modulus",
    "publicExponent",
    "prime1",
    "prime2",
    "privateExponent",
    "exponent1",
    "exponent2",
    "coefficient",
)


@functools.lru_cache(maxsize=64)
def _openssl_key(numbers: tuple[int, ...]) -> rsa.RSAPrivateKey:
    """Building an OpenSSL key checks it (about 1 ms); a relay signs with few keys: cache them."""
    n, e, p, q, d, dmp1, dmq1, iqmp = numbers
    public = rsa.RSAPublicNumbers(e, n)
    return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, public).private_key()


def install() -> None:
    """Make dkimpy sign RSA through OpenSSL. Idempotent; the result is byte-identical."""
    with _install_lock:
        dkim.RSASSA_PKCS1_v1_5_sign = rsassa_pkcs1_v1_5_sign
        dkim.parse_pem_private_key = cached_pem_parse


def installed() -> bool:
    return (
        getattr(dkim, "RSASSA_PKCS1_v1_5_sign", None) is rsassa_pkcs1_v1_5_sign
        and getattr(dkim, "parse_pem_private_key", None) is cached_pem_parse
    )


def uninstall() -> None:
    """Back to dkimpy's pure-Python RSA (the benchmark's "before")."""
    with _install_lock:
        dkim.RSASSA_PKCS1_v1_5_sign = PURE_PYTHON_SIGN
        dkim.parse_pem_private_key = UNCACHED_PEM_PARSE


def sha256(data: bytes) -> Any:
    """A hash object as dkimpy passes it, for tests and the benchmark."""
    return hashlib.sha256(data)
