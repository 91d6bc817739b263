"""DKIM keys on disk: generation, the per-domain manifest, validation and their DNS records.

Layout under `dkim.key_directory`:

    DOMAIN/                 0700, owned by the milter's user
    DOMAIN/SELECTOR.key     the private key, PKCS#8 PEM, 0600, owned by the milter's user
    DOMAIN/keys.json        the manifest: one entry per selector with its algorithm and status

A key's status is `pending` (generated, its record must be published before it signs), `active`
(signs every message of the domain) or `retired` (no longer signs; its record stays published for
the grace period so that mail signed before the switch still verifies). Rotation moves pending to
active only once DNS serves the pending records (see dkim_cli.rotate).

This module knows nothing of the configuration (config.py calls it to load keys), so that a bad
key is a located configuration error at start, at reload and in `relayguard check`.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relayguard.core.errors import RelayguardError

ALGORITHMS = ("rsa", "ed25519")
STATUSES = ("pending", "active", "retired")
MANIFEST = "keys.json"
MIN_RSA_BITS = 2048  # RFC 8301 §3.2: at least 1024 to verify; we sign with 2048 or more
TXT_CHUNK = 255  # RFC 1035 §3.3.14: a TXT character-string holds at most 255 octets

# (domain, selector) -> the TXT record text DNS serves, or None; injected so tests use a real
# DNS server on loopback and production the system resolver.
TxtLookup = Callable[[str], str | None]


class DkimKeyError(RelayguardError):
    """A key or the manifest cannot be read, written or used."""


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One manifest line (Unix times; 0 when the event has not happened)."""

    selector: str
    algorithm: str
    status: str
    created: float
    activated: float = 0.0
    retired: float = 0.0


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key loaded for signing: `private` is what dkimpy takes (PEM for RSA, base64 seed for
    Ed25519); `public` is the base64 p= value of the DNS record."""

    domain: str
    selector: str
    algorithm: str
    private: bytes
    public: str
    path: Path

    @property
    def dkim_algorithm(self) -> bytes:
        return b"rsa-sha256" if self.algorithm == "rsa" else b"ed25519-sha256"

    def __repr__(self) -> str:  # never print key material in a traceback or log
        return f"SigningKey({self.domain!r}, {self.selector!r}, {self.algorithm!r})"


# --- paths and the manifest --------------------------------------------------------------------


def domain_directory(key_directory: Path, domain: str) -> Path:
    return key_directory / domain.lower()


def key_path(key_directory: Path, domain: str, selector: str) -> Path:
    return domain_directory(key_directory, domain) / f"{selector}.key"


def read_manifest(key_directory: Path, domain: str) -> list[KeyEntry]:
    path = domain_directory(key_directory, domain) / MANIFEST
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise DkimKeyError(f"{path}: cannot read the key manifest: {exc}") from None
    try:
        entries = [KeyEntry(**item) for item in raw["keys"]]
    except (KeyError, TypeError) as exc:
        raise DkimKeyError(f"{path}: malformed key manifest: {exc}") from None
    for entry in entries:
        if entry.algorithm not in ALGORITHMS or entry.status not in STATUSES:
            raise DkimKeyError(f"{path}: selector {entry.selector!r}: bad algorithm or status")
    return entries


def write_manifest(
    key_directory: Path, domain: str, entries: Iterable[KeyEntry], user: str = ""
) -> None:
    directory = _domain_dir_for_writing(key_directory, domain, user)
    path = directory / MANIFEST
    temporary = directory / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps({"keys": [asdict(e) for e in entries]}, indent=2) + "\n")
    temporary.chmod(0o644)  # no secret in it; the directory is 0700 anyway
    _chown(temporary, user)
    temporary.replace(path)


def _domain_dir_for_writing(key_directory: Path, domain: str, user: str) -> Path:
    directory = domain_directory(key_directory, domain)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    _chown(directory, user)
    return directory


def _chown(path: Path, user: str) -> None:
    if user and os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


# --- generation ----------------------------------------------------------------------------------


def generate(
    key_directory: Path,
    domain: str,
    selector: str,
    algorithm: str = "rsa",
    bits: int = 2048,
    *,
    user: str = "",
    status: str | None = None,
    now: float | None = None,
) -> KeyEntry:
    """Write a new private key (0600, owned by `user`) and record it in the manifest.

    Without an explicit status the key is active when the domain has no active key of this
    algorithm yet, else pending (publish it, then `relayguard dkim rotate`)."""
    if algorithm not in ALGORITHMS:
        raise DkimKeyError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if algorithm == "rsa" and bits < MIN_RSA_BITS:
        raise DkimKeyError(f"RSA keys must have at least {MIN_RSA_BITS} bits, got {bits}")
    if not _valid_label(selector):
        raise DkimKeyError(f"{selector!r} is not a valid selector (letters, digits, '-')")
    entries = read_manifest(key_directory, domain)
    if any(e.selector == selector for e in entries):
        raise DkimKeyError(f"{domain}: selector {selector!r} exists already")
    when = time.time() if now is None else now
    if status is None:
        has_active = any(e.status == "active" and e.algorithm == algorithm for e in entries)
        status = "pending" if has_active else "active"
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _domain_dir_for_writing(key_directory, domain, user)
    path = key_path(key_directory, domain, selector)
    # O_EXCL and mode 0600 at creation: there is no moment at which others could read it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    _chown(path, user)
    entry = KeyEntry(
        selector, algorithm, status, when, activated=when if status == "active" else 0.0
    )
    write_manifest(key_directory, domain, [*entries, entry], user)
    return entry


def _valid_label(text: str) -> bool:
    labels = text.split(".")
    return all(
        0 < len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c == "-") for c in label)
        for label in labels
    )


# --- loading and validating ------------------------------------------------------------------


def load_key(key_directory: Path, domain: str, entry: KeyEntry, user: str = "") -> SigningKey:
    """Read one private key; refuse one that others than the milter's user could read."""
    path = key_path(key_directory, domain, entry.selector)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DkimKeyError(f"{path}: key file missing (selector {entry.selector})") from None
    except OSError as exc:
        raise DkimKeyError(f"{path}: cannot read key: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise DkimKeyError(f"{path}: not a regular file")
    if info.st_mode & 0o077:
        raise DkimKeyError(
            f"{path}: mode {stat.S_IMODE(info.st_mode):04o} lets others read the private key;"
            " it must be 0600"
        )
    if user:
        uid = pwd.getpwnam(user).pw_uid
        if info.st_uid != uid:
            raise DkimKeyError(f"{path}: owned by uid {info.st_uid}, not by the milter user {user}")
    if not info.st_mode & stat.S_IRUSR:
        raise DkimKeyError(f"{path}: unreadable (mode {stat.S_IMODE(info.st_mode):04o})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"{path}: cannot read key: {exc.strerror}") from None
    return parse_private_key(data, domain, entry.selector, entry.algorithm, path)


def parse_private_key(
    data: bytes, domain: str, selector: str, algorithm: str, path: Path
) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise DkimKeyError(f"{path}: not a usable PEM private key: {exc}") from None
    if algorithm == "rsa":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DkimKeyError(f"{path}: the manifest says rsa but the key is not RSA")
        if key.key_size < MIN_RSA_BITS:
            raise DkimKeyError(f"{path}: RSA key of {key.key_size} bits; at least {MIN_RSA_BITS}")
        public_der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # dkimpy parses PKCS#1 and PKCS#8 PEM itself.
        return SigningKey(domain, selector, algorithm, data, _b64(public_der), path)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DkimKeyError(f"{path}: the manifest says ed25519 but the key is not Ed25519")
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public_raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    # RFC 8463 §4: p= is the bare 32-byte public key; dkimpy signs with the base64 seed.
    return SigningKey(domain, selector, algorithm, base64.b64encode(seed), _b64(public_raw), path)


def load_keys(
    key_directory: Path, domain: str, statuses: Sequence[str] = ("active",), user: str = ""
) -> tuple[SigningKey, ...]:
    entries = read_manifest(key_directory, domain)
    return tuple(load_key(key_directory, domain, e, user) for e in entries if e.status in statuses)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- DNS records -----------------------------------------------------------------------------


def record_name(domain: str, selector: str) -> str:
    """RFC 6376 §3.6.2.1: SELECTOR._domainkey.DOMAIN."""
    return f"{selector}._domainkey.{domain}"


def record_text(key: SigningKey) -> str:
    """The TXT record's text (RFC 6376 §3.6.1; k=ed25519 per RFC 8463 §4)."""
    return f"v=DKIM1; k={key.algorithm}; p={key.public}"


def txt_strings(text: str) -> list[str]:
    """Split a record into character-strings of at most 255 octets (RFC 7208 §3.3 style)."""
    return [text[i : i + TXT_CHUNK] for i in range(0, len(text), TXT_CHUNK)] or [""]


def zone_line(key: SigningKey, ttl: int = 3600) -> str:
    """One zone-file line, ready to paste: quoted strings of at most 255 octets each."""
    strings = " ".join(f'"{part}"' for part in txt_strings(record_text(key)))
    return f"{record_name(key.domain, key.selector)}. {ttl} IN TXT ( {strings} )"


def parse_tags(text: str) -> dict[str, str]:
    """RFC 6376 §3.2 tag=value list; whitespace inside values removed (base64 may be split)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip()] = "".join(value.split())
    return tags


@dataclass(frozen=True, slots=True)
class DnsCheck:
    key: SigningKey
    ok: bool
    detail: str


def check_published(key: SigningKey, lookup: TxtLookup) -> DnsCheck:
    """Does DNS serve a record whose public key is the one on disk?"""
    name = record_name(key.domain, key.selector)
    served = lookup(name)
    if served is None:
        return DnsCheck(key, False, f"{name}: no TXT record")
    tags = parse_tags(served)
    if tags.get("v", "DKIM1") != "DKIM1":
        return DnsCheck(key, False, f"{name}: v={tags['v']}, expected DKIM1")
    if tags.get("k", "rsa") != key.algorithm:
        return DnsCheck(key, False, f"{name}: k={tags.get('k', 'rsa')}, key is {key.algorithm}")
    if not tags.get("p"):
        return DnsCheck(key, False, f"{name}: p= is empty (the key is revoked)")
    if tags["p"] != key.public:
        return DnsCheck(key, False, f"{name}: p= does not match the key on disk")
    return DnsCheck(key, True, f"{name}: published and matches")


def with_status(entry: KeyEntry, status: str, now: float) -> KeyEntry:
    if status == "active":
        return replace(entry, status=status, activated=now)
    if status == "retired":
        return replace(entry, status=status, retired=now)
    return replace(entry, status=status)
