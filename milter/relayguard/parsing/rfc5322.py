"""Strict parsing of originator fields (From, Sender, Resent-From, Resent-Sender).

Why strict: when two parsers read one header differently, a device can pass our
identity check with one address while the recipient's client shows another
("Composition Kills", Chen et al., USENIX Security 2020). So we accept exactly one
plain, unambiguous mailbox and refuse everything else instead of guessing.

Invariant the rules below keep: every '@' in the field (raw, full-width, or inside
an RFC 2047 encoded-word) is the mailbox's own '@' or sits in a display-name word
equal to the mailbox's own address.

Pure and stdlib only, so the rules are testable without an MTA.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import re
import string
import unicodedata
from dataclasses import dataclass
from itertools import pairwise
from typing import NoReturn

from relayguard.core.errors import RelayguardError

MAX_FIELD_OCTETS = 4096
MAX_LOCAL_OCTETS = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN_OCTETS = 253  # RFC 1035 §2.3.4 (255 on the wire, minus length octets)
MAX_LABEL_OCTETS = 63  # RFC 1035 §2.3.4
MAX_COMMENT_DEPTH = 2

_WSP = " \t"
# RFC 5322 §3.2.3 specials, minus '"' '(' ')' which the tokenizer consumes itself.
_SPECIALS = "<>@,;:.[]\\"
_DELIMITERS = frozenset(_WSP + _SPECIALS + '"()')
_LDH = frozenset(string.ascii_letters + string.digits + "-")
# RFC 2047 §2: charset is a token, which excludes these especials.
_TOKEN_SPECIALS = frozenset('()<>@,;:"/[]?.= ')
# RFC 2045 §6.8 base64 with exact padding; decoders disagree on anything looser.
_B_TEXT = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
# RFC 2047 §4.2 and §5(3): '_', '=XX', and the few literal characters allowed in a phrase.
_Q_TEXT = re.compile(r"(?:[A-Za-z0-9!*+/_-]|=[0-9A-Fa-f]{2})+")
# Python codecs that are not MIME charsets, or decode escape syntax a mail client would not.
_UNSAFE_CODECS = frozenset({"utf-7", "unicode-escape", "raw-unicode-escape", "idna", "punycode"})
# Characters that split an address or mailbox list when a client folds look-alikes (NFKC).
_ADDRESS_SPECIALS = frozenset('@<>()[]\\",;:')
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Category Cf covers most of these; the Hangul fillers and CGJ render as nothing too.
_INVISIBLE = frozenset("\u00ad\u034f\u115f\u1160\u200b\u200c\u200d\u2060\u3164\ufeff\uffa0")
# UTS #46 maps these to '.', so a client may split a domain label on them.
_IDNA_DOTS = frozenset("\u3002\uff0e\uff61")
_WORD_SEPARATORS = re.compile(r'[\s<>()\[\]",;:\\]+')
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


class HeaderViolation(RelayguardError, ValueError):
    """A field we refuse to trust.

    `reason` is short, ASCII printable, and never echoes input, so it is safe in an
    SMTP reply; `field` names the header it came from ('' when not a header).
    """

    reason: str
    field: str

    def __init__(self, reason: str, field: str = "") -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One mailbox, text kept as written; compare addresses with `normalized`."""

    display_name: str
    local_part: str
    domain: str

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.domain}"

    @property
    def normalized(self) -> str:
        return ascii_lower(self.address)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "atom", "quoted", "comment", or the special character itself
    text: str  # quoted: content with quoted-pairs resolved; comment: content
    spaced: bool  # whitespace precedes it
    escaped: bool = False  # quoted string held a quoted-pair


def ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only.

    str.lower() is not safe: KELVIN SIGN U+212A lowers to ASCII 'k', which would
    let an IDN look-alike match a listed domain. Look-alikes match only when listed.
    """
    return text.translate(_ASCII_LOWER)


def is_valid_field_name(name: str | bytes) -> bool:
    """RFC 5322 §3.6.8: field-name = 1*ftext, ftext = %d33-57 / %d59-126."""
    codes = name if isinstance(name, bytes) else [ord(ch) for ch in name]
    return bool(codes) and all(33 <= code <= 126 and code != 58 for code in codes)


def parse_mailbox_field(value: bytes, field: str = "From") -> Mailbox:
    """Exactly one unambiguous mailbox, or HeaderViolation naming `field`."""
    try:
        return _parse_mailbox(_unfold(value))
    except HeaderViolation as exc:
        clean = "".join(ch for ch in field if 33 <= ord(ch) <= 126)[:64]
        raise HeaderViolation(exc.reason, clean) from None


@functools.lru_cache(maxsize=4096)
def parse_envelope_address(value: str | bytes) -> Mailbox | None:
    """SMTP MAIL FROM / RCPT TO path as the MTA passes it; None for the null path '<>'.

    Angle brackets are optional. Same address rules as the header, plus no
    whitespace around the address and no '%' or '!' (the old relay-routing hacks).
    Cached: a device sends from one address to the same few recipients, and each path is read
    by the transaction and again by the checks. Mailbox is immutable; refusals are not cached.
    """
    try:
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        if len(raw) > MAX_FIELD_OCTETS:
            _refuse("field too long")
        text = raw.decode("utf-8")
    except UnicodeError:
        _refuse("invalid UTF-8")
    _check_chars(text, allow_tab=False)
    if text == "<>":  # RFC 5321 §4.1.1.2 null reverse-path
        return None
    inner = text
    if text.startswith("<") and text.endswith(">") and len(text) > 1:
        inner = text[1:-1]
    if inner != inner.strip(" "):  # RFC 5321 §4.1.2: a Path holds no whitespace
        _refuse("whitespace in address")
    if "<" in inner or ">" in inner:
        balanced = text.count("<") == text.count(">")
        _refuse("multiple angle brackets" if balanced else "unbalanced angle brackets")
    if inner.startswith("@"):  # RFC 5321 §4.1.2 A-d-l source route
        _refuse("source route")
    box = _addr_spec(_tokenize(inner))
    if "%" in box.local_part or "!" in box.local_part:
        _refuse("percent or bang routing")
    return box


def split_header_block(raw: bytes) -> tuple[list[tuple[str, bytes]], int]:
    """Split a raw message into (name, value) header fields and the body offset.

    Never drops a line: a field starting with whitespace or a line without a colon
    comes back with its raw text as the name, for the caller to refuse.
    """
    fields: list[tuple[str, list[bytes]]] = []
    pos, size = 0, len(raw)
    body = size
    while pos < size:
        newline = raw.find(b"\n", pos)
        end, after = (size, size) if newline < 0 else (newline, newline + 1)
        line = raw[pos:end]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:  # RFC 5322 §2.1: an empty line ends the header section
            body = after
            break
        if line[:1] in (b" ", b"\t") and fields:  # RFC 5322 §2.2.3 folded continuation
            fields[-1][1].append(b"\n" + line)
        else:
            name, _, rest = line.partition(b":")
            fields.append((name.decode("latin-1"), [rest.lstrip(b" \t")]))
        pos = after
    return [(name, b"".join(parts)) for name, parts in fields], body


def _refuse(reason: str) -> NoReturn:
    raise HeaderViolation(reason)


def _unfold(value: bytes) -> str:
    """RFC 5322 §3.2.2: unfolding removes each CRLF that is followed by WSP, nothing else."""
    if len(value) > MAX_FIELD_OCTETS:
        _refuse("field too long")
    if b"\0" in value:
        _refuse("NUL byte")
    lines = value.replace(b"\r\n", b"\n")
    if b"\r" in lines:
        _refuse("bare CR")
    parts = lines.split(b"\n")
    for continuation in parts[1:]:
        if continuation[:1] not in (b" ", b"\t"):
            _refuse("line break not followed by whitespace")
        if not continuation.strip(b" \t"):  # some parsers end the header block there
            _refuse("whitespace-only continuation line")
    try:
        text = b"".join(parts).decode("utf-8")  # RFC 6532 §3.2: 8-bit means UTF-8
    except UnicodeDecodeError:
        _refuse("invalid UTF-8")
    _check_chars(text, allow_tab=True)
    return text


def _check_chars(text: str, *, allow_tab: bool) -> None:
    for ch in text:
        if ch.isascii():
            if (" " <= ch < "\x7f") or (allow_tab and ch == "\t"):
                continue
            _refuse("control character")
        category = unicodedata.category(ch)
        if ch in _BIDI:
            _refuse("bidirectional control character")
        if ch in _INVISIBLE or category == "Cf":
            _refuse("invisible formatting character")
        if category in ("Cc", "Cs"):
            _refuse("control character")
        if category in ("Zl", "Zp"):
            _refuse("line separator character")


def _tokenize(text: str) -> list[_Token]:
    """One linear pass into RFC 5322 §3.2 lexical tokens; no backtracking."""
    tokens: list[_Token] = []
    pos, size, spaced = 0, len(text), False
    while pos < size:
        ch = text[pos]
        if ch in _WSP:
            spaced, pos = True, pos + 1
            continue
        if ch == '"':
            pos, token = _quoted_string(text, pos + 1, spaced)
        elif ch == "(":
            pos, token = _comment(text, pos + 1, spaced)
        elif ch == ")":
            _refuse("unbalanced parentheses")
        elif ch in _SPECIALS:
            pos, token = pos + 1, _Token(ch, ch, spaced)
        else:
            end = pos
            while end < size and text[end] not in _DELIMITERS:
                end += 1
            pos, token = end, _Token("atom", text[pos:end], spaced)
        tokens.append(token)
        spaced = False
    return tokens


def _quoted_string(text: str, pos: int, spaced: bool) -> tuple[int, _Token]:
    out: list[str] = []
    escaped = False
    while pos < len(text):
        ch = text[pos]
        if ch == '"':
            content = "".join(out)
            # RFC 2047 §5: never decoded here, but some clients do; refuse either reading.
            if "=?" in content:
                _refuse("encoded-word in quoted string")
            return pos + 1, _Token("quoted", content, spaced, escaped)
        if ch == "\\" and pos + 1 < len(text):  # RFC 5322 §3.2.1 quoted-pair
            escaped, pos = True, pos + 1
            ch = text[pos]
        out.append(ch)
        pos += 1
    _refuse("unbalanced quotes")


def _comment(text: str, pos: int, spaced: bool) -> tuple[int, _Token]:
    start, depth = pos, 1
    while pos < len(text):
        ch = text[pos]
        if ch == "\\":
            _refuse("quoted-pair in comment")
        if ch == '"':  # '"' is ctext, but a parser that honours it ends the comment elsewhere
            _refuse("quote in comment")
        if ch == "(":
            depth += 1
            if depth > MAX_COMMENT_DEPTH:
                _refuse("comments nested too deep")
        elif ch == ")":
            depth -= 1
            if depth == 0:
                content = text[start:pos]
                if "=?" in content:  # RFC 2047 §5(2) allows it; we refuse hidden text
                    _refuse("encoded-word in comment")
                if any(c in "@<>" for c in unicodedata.normalize("NFKC", content)):
                    _refuse("comment contains address characters")
                return pos + 1, _Token("comment", content, spaced)
        pos += 1
    _refuse("unbalanced parentheses")


def _parse_mailbox(text: str) -> Mailbox:
    """RFC 5322 §3.4: mailbox = name-addr / addr-spec, and nothing around it."""
    tokens = _tokenize(text)
    kinds = [token.kind for token in tokens]
    pairs = set(pairwise(kinds))
    if ("<", "@") in pairs:  # RFC 5322 §4.4 obs-route
        _refuse("source route")
    if ("@", "[") in pairs:  # RFC 5322 §3.4.1 domain-literal: a host, not a listable domain
        _refuse("domain literal")
    if ":" in kinds or ";" in kinds:  # RFC 5322 §3.4 group
        _refuse("group syntax")
    if "," in kinds:
        _refuse("multiple mailboxes")
    if kinds.count("<") > 1 or kinds.count(">") > 1:
        _refuse("multiple angle brackets")
    if kinds.count("<") != kinds.count(">"):
        _refuse("unbalanced angle brackets")
    if "<" not in kinds:
        words = [index for index, kind in enumerate(kinds) if kind != "comment"]
        if not words:
            _refuse("no mailbox")
        return _addr_spec(tokens[words[0] : words[-1] + 1])  # outer CFWS only
    opening, closing = kinds.index("<"), kinds.index(">")
    if closing < opening:
        _refuse("unbalanced angle brackets")
    if any(kind != "comment" for kind in kinds[closing + 1 :]):
        _refuse("trailing text after address")
    box = _addr_spec(tokens[opening + 1 : closing])
    name = _display_name(tokens[:opening])
    _check_display_name(name, box.normalized)
    return Mailbox(name, box.local_part, box.domain)


def _addr_spec(tokens: list[_Token]) -> Mailbox:
    """RFC 5322 §3.4.1 addr-spec without the CFWS and obsolete forms it tolerates."""
    if not tokens:
        _refuse("empty address")
    for index, token in enumerate(tokens):
        if token.kind == "comment":
            _refuse("comment inside address")
        if token.spaced and index > 0:
            _refuse("whitespace in address")
    if any(token.kind == "atom" and "=?" in token.text for token in tokens):
        _refuse("encoded-word in address")
    ats = [index for index, token in enumerate(tokens) if token.kind == "@"]
    if not ats:
        _refuse("missing '@'")
    if len(ats) > 1:
        _refuse("more than one '@'")
    local = _local_part(tokens[: ats[0]])
    domain = _domain(tokens[ats[0] + 1 :])
    return Mailbox("", local, domain)


def _local_part(tokens: list[_Token]) -> str:
    if not tokens:
        _refuse("empty local part")
    if tokens[0].kind == "quoted" and len(tokens) == 1:
        local = _quoted_local_part(tokens[0])
    else:
        local = "".join(token.text for token in tokens)
        if any(token.kind not in ("atom", ".") for token in tokens):
            _refuse("invalid character in local part")
        if local.startswith(".") or local.endswith(".") or ".." in local:
            _refuse("misplaced dot in local part")  # RFC 5322 §3.2.3 dot-atom-text
        for ch in local:
            _check_address_char(ch, domain=False)
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        _refuse("local part too long")
    return local


def _quoted_local_part(token: _Token) -> str:
    """Allow "john doe"@x; refuse quoted text that hides specials such as "a@b"@evil."""
    content = token.text
    if token.escaped:
        _refuse("quoted-pair in local part")
    if not content:
        _refuse("empty local part")
    if any(ch in _ADDRESS_SPECIALS for ch in unicodedata.normalize("NFKC", content)):
        _refuse("unsafe quoted local part")
    for ch in content:  # plain SP is the one thing quoting may add
        if ch == "\t":
            _refuse("whitespace in address")
        if ch != " ":
            _check_address_char(ch, domain=False)
    if " " not in content and all(content.split(".")):
        return content  # quoting was unnecessary: RFC 5321 §4.1.2 says use the dot-atom form
    return f'"{content}"'


def _domain(tokens: list[_Token]) -> str:
    if not tokens:
        _refuse("empty domain")
    if any(token.kind in ("[", "]") for token in tokens):
        _refuse("domain literal")
    if any(token.kind not in ("atom", ".") for token in tokens):
        _refuse("invalid character in domain")
    domain = "".join(token.text for token in tokens)
    for label in domain.split("."):
        if not label:
            _refuse("empty domain label")
        for ch in label:
            if ch.isascii():
                if ch not in _LDH:  # RFC 1123 §2.1 host names are letters, digits, hyphen
                    _refuse("invalid character in domain")
            else:
                _check_address_char(ch, domain=True)
        if label.startswith("-") or label.endswith("-"):
            _refuse("domain label starts or ends with hyphen")
        if len(label.encode("utf-8")) > MAX_LABEL_OCTETS:
            _refuse("domain label too long")
    if len(domain.encode("utf-8")) > MAX_DOMAIN_OCTETS:
        _refuse("domain too long")
    return domain


def _check_address_char(ch: str, *, domain: bool) -> None:
    """RFC 6531/6532 allow UTF-8 here; refuse what a client could read as structure."""
    if ch.isascii():
        return
    if ch.isspace():  # includes every Zs space, e.g. NO-BREAK SPACE
        _refuse("whitespace in address")
    folded = unicodedata.normalize("NFKC", ch)
    if any(c in _ADDRESS_SPECIALS or c.isspace() for c in folded) or (
        domain and (ch in _IDNA_DOTS or "." in folded)
    ):
        _refuse("look-alike character in address")


def _display_name(tokens: list[_Token]) -> str:
    """RFC 5322 §3.2.5 phrase (with obs-phrase dots), encoded-words decoded per RFC 2047 §6.2."""
    parts: list[str] = []
    gap = via_comment = previous_encoded = False
    for index, token in enumerate(tokens):
        if token.kind == "comment":
            gap = via_comment = True
            continue
        gap = gap or token.spaced
        separator = " " if gap and parts else ""
        if token.kind == "atom" and "=?" in token.text:
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            # RFC 2047 §5(3): an encoded-word must be a whole word, set off by whitespace.
            if (parts and not gap) or (
                following is not None and following.kind != "comment" and not following.spaced
            ):
                _refuse("encoded-word not separated by whitespace")
            if previous_encoded and not via_comment:
                separator = ""  # RFC 2047 §6.2: whitespace between encoded-words is dropped
            text, previous_encoded = _decode_encoded_word(token.text), True
        elif token.kind in ("atom", "quoted", ".", "@"):
            text, previous_encoded = token.text, False
        else:
            _refuse("invalid character in display name")
        parts.append(separator + text)
        gap = via_comment = False
    name = "".join(parts)
    # Adjacent words or decoded text can spell a new encoded-word; a client that
    # unquotes and then decodes (parseaddr + decode_header) would show that instead.
    if "=?" in name:
        _refuse("hidden encoded-word in display name")
    return name


def _decode_encoded_word(word: str) -> str:
    """RFC 2047 §2 encoded-word, strictly: =?charset[*lang]?B|Q?text?=."""
    pieces = word.split("?")
    if len(pieces) != 5 or pieces[0] != "=" or pieces[4] != "=" or not word.isascii():
        _refuse("malformed encoded-word")
    charset = pieces[1].partition("*")[0]  # RFC 2231 §5 language suffix
    encoding, payload = pieces[2].upper(), pieces[3]
    if not charset or not payload or any(ch in _TOKEN_SPECIALS for ch in charset):
        _refuse("malformed encoded-word")
    if encoding == "B" and _B_TEXT.fullmatch(payload):
        raw = binascii.a2b_base64(payload.encode("ascii"), strict_mode=True)
    elif encoding == "Q" and _Q_TEXT.fullmatch(payload):
        raw = binascii.a2b_qp(payload.encode("ascii"), header=True)
    else:
        _refuse("malformed encoded-word")
    try:
        codec = codecs.lookup(charset)
    except LookupError:
        _refuse("unknown charset in encoded-word")
    if codec.name in _UNSAFE_CODECS:
        _refuse("unknown charset in encoded-word")
    try:
        text = raw.decode(charset)
    except (LookupError, ValueError):  # UnicodeDecodeError, or not a text codec
        _refuse("undecodable encoded-word")
    _check_chars(text, allow_tab=False)
    return text


def _check_display_name(name: str, own: str) -> None:
    """Refuse a display name that shows an address other than the mailbox's own.

    NFKC is used only for this test, so FULLWIDTH COMMERCIAL AT counts as '@'.
    """
    folded = unicodedata.normalize("NFKC", name)
    if "@" not in folded:
        return
    if "<" in folded or ">" in folded:
        _refuse("display name looks like another address")
    for word in _WORD_SEPARATORS.split(folded):
        if "@" in word and ascii_lower(word) != own:
            _refuse("display name looks like another address")
