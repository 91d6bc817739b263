"""Keyword dictionaries kept in files: a security team's word lists live in its rules repository
(docs/rules.md), next to its YARA rules, instead of inline in the TOML file.

The format: UTF-8, one keyword or phrase per line, surrounding spaces ignored; blank lines and
lines starting with "#" are skipped. "#" elsewhere is part of the keyword ("ss#"). A file is read
once, when the configuration is loaded; every problem names the file and the line.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from relayguard.core.errors import RelayguardError

MAX_BYTES = 4 * 1024 * 1024
MAX_KEYWORDS = 10_000  # Hyperscan compiles 10,000 keywords in about 2 s, once per load


class DictionaryError(RelayguardError, ValueError):
    """A dictionary file that cannot be used; the message names the file (and line)."""


def read_keywords(path: Path) -> tuple[str, ...]:
    """The keywords of PATH, in file order, duplicates kept once."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise DictionaryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise DictionaryError(f"{path}: larger than {MAX_BYTES} bytes")
    keywords: dict[str, None] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        keyword = _keyword(raw, f"{path} line {number}")
        if keyword:
            keywords[keyword] = None
    if not keywords:
        raise DictionaryError(f"{path}: no keywords (only blank lines and comments)")
    if len(keywords) > MAX_KEYWORDS:
        raise DictionaryError(f"{path}: more than {MAX_KEYWORDS} keywords")
    return tuple(keywords)


def _keyword(raw: bytes, where: str) -> str:
    """The keyword on one line, "" for a blank or comment line."""
    try:
        line = raw.decode("utf-8").removeprefix("\ufeff").strip()
    except UnicodeDecodeError as exc:
        raise DictionaryError(f"{where}: not UTF-8 (byte {exc.start + 1})") from None
    if not line or line.startswith("#"):
        return ""
    for char in line:
        if unicodedata.category(char) in ("Cc", "Cs"):  # a tab, NUL, a lone "\r": a broken file
            raise DictionaryError(f"{where}: control character U+{ord(char):04X}")
    return line
