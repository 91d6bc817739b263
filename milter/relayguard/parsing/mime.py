"""The MIME walker: one pass over a message that yields every part a content scanner should see.

Parts come out decoded (base64, quoted-printable), with their charset for text, including the parts
of nested ``message/rfc822`` messages and the members of zip archives, each with its file name,
content type, part path and size. The walk is bounded by `WalkLimits`: nesting depth, part count,
total decoded bytes, archive members and expansion ratio. What exceeds a limit is *not* decoded and
is reported as a `Finding`, so the content check can apply its own action (quarantine by default:
nothing is lost, a human decides). Encrypted archive members cannot be scanned and are reported
the same way.

Malformed MIME (a missing final boundary, bad base64, header garbage) is decoded as far as the
standard library's tolerant parser gets, recorded as a defect and never raises.

Memory: the raw message is already in memory (the milter collected it); the walker holds at most
`max_decoded_bytes` of decoded data on top of the parser's copy, and refuses a part *before*
decoding it when its estimated decoded size would exceed what is left.
"""

from __future__ import annotations

import binascii
import codecs
import contextlib
import email
import email.errors
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import io
import re
import secrets
import threading
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from relayguard.core.message import Message
from relayguard.core.safe_text import printable

ZIP_MAGIC = b"PK\x03\x04"
TEXT_EXTENSIONS = (".txt", ".csv", ".tsv", ".log", ".md", ".json", ".xml", ".htm", ".html")
OOXML_MARKER = "[Content_Types].xml"


@dataclass(frozen=True, slots=True)
class WalkLimits:
    """Hard limits of one walk. The defaults suit a relay for machine-generated mail."""

    max_depth: int = 12
    max_parts: int = 1000
    max_decoded_bytes: int = 64 * 1024 * 1024
    max_archive_members: int = 500
    max_expansion_ratio: int = 100


@dataclass(frozen=True, slots=True)
class Part:
    """One decoded leaf of the message, or one archive member.

    `path` follows IMAP's section numbers ("1", "2.1"); archive members append "/member-name",
    escaped by safe_text.printable. `filename` is the name as sent, for rules to match.
    """

    path: str
    content_type: str
    filename: str
    data: bytes
    charset: str = ""
    is_attachment: bool = False
    depth: int = 0
    in_archive: bool = False
    in_document: bool = False  # a member of an OOXML document: read as part of that document

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def extension(self) -> str:
        name = self.filename.lower()
        return name[name.rfind(".") :] if "." in name else ""

    @property
    def is_text(self) -> bool:
        if self.content_type.startswith("text/"):
            return True
        return self.extension in TEXT_EXTENSIONS

    def text(self) -> str:
        """The part as text: its declared charset, else a BOM, else UTF-8, else Windows-1252."""
        return decode_text(self.data, self.charset)


@dataclass(frozen=True, slots=True)
class Finding:
    """A limit exceeded or an archive that could not be opened; `path` names the part."""

    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} at part {self.path or 'message'}: {self.detail}"


@dataclass(slots=True)
class Walk:
    parts: list[Part] = field(default_factory=list)
    limits_exceeded: list[Finding] = field(default_factory=list)
    encrypted: list[Finding] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    decoded_bytes: int = 0

    @property
    def complete(self) -> bool:
        """True when every part was decoded: no limit cut the walk short."""
        return not self.limits_exceeded and not self.encrypted


def decode_text(data: bytes, charset: str = "") -> str:
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", "replace")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", "replace")
    if charset:
        try:
            codec = codecs.lookup(charset).name
        except LookupError:
            codec = ""
        if codec:
            return data.decode(codec, "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def raw_message(message: Message) -> bytes:
    """The message as Postfix received it, the one buffer every scanner shares (Message.raw)."""
    return message.raw()


def walk(raw: bytes, limits: WalkLimits = WalkLimits()) -> Walk:
    """Walk a raw RFC 5322 message. Never raises on malformed input."""
    return _walk(b"", raw, limits)


def _walk(head: bytes, data: bytes, limits: WalkLimits) -> Walk:
    """Walk the message `head + data`; long base64 runs in `data` bypass the parser (Blobs)."""
    walker = _Walker(limits)
    try:
        # Fed piece by piece: email.message_from_bytes would first decode the whole message into
        # one more string of its size.
        parser = email.parser.BytesFeedParser(policy=email.policy.compat32)
        parser.feed(head)
        for piece in walker.blobs.pieces(data):
            parser.feed(piece)
        walker.entity(parser.close(), "", 0, top=True)
    except RecursionError:
        walker.limit("depth", "", "nesting too deep for the parser")
    return walker.result


class Blobs:
    """Long runs of base64 lines (attachments), kept out of the email parser.

    The parser holds every line of a part as a string of its own and then the whole part as one
    more: a 30 MB attachment cost about nine times its size. Each run of at least BLOB_MIN bytes of
    whole lines of the base64 alphabet is replaced by one token line (which has a '-', so it is no
    base64 line itself); the leaf decodes the run straight from the message's bytes. Such a run
    cannot hide a boundary or a header (those need '-' or ':'), so the structure is unchanged.
    """

    def __init__(self) -> None:
        self.runs: dict[str, memoryview] = {}
        self.prefix = f"relayguard-blob-{secrets.token_hex(8)}-"

    def pieces(self, data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
        view = memoryview(data)
        at = 0
        for run_start, run_end in base64_runs(data):
            span = _whole_lines(data, run_start, run_end)
            if span is None:
                continue
            token = f"{self.prefix}{len(self.runs)}"
            self.runs[token] = view[span[0] : span[1]]
            yield from _slices(view[at : span[0]], size)
            yield token.encode("ascii") + b"\r\n"
            at = span[1]
        yield from _slices(view[at:], size)

    def run(self, payload: str) -> memoryview | None:
        """The run when the payload is exactly one token (a base64 attachment), else None."""
        return self.runs.get(payload.strip()) if payload.startswith(self.prefix) else None

    def restore(self, payload: str) -> str:
        """The payload as the parser would have seen it without tokens (the rare mixed case)."""
        for token, run in self.runs.items():
            if token in payload:
                text = bytes(run).decode("ascii")
                payload = payload.replace(token + "\r\n", text).replace(token, text[:-2])
        return payload


BLOB_MIN = 64 * 1024
BASE64_SPAN = re.compile(rb"[A-Za-z0-9+/=\r\n]*")
NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=\r\n]")


def base64_runs(data: bytes) -> Iterator[tuple[int, int]]:
    """Each maximal run of at least BLOB_MIN bytes of the base64 alphabet (CR, LF included), as
    (start, end). Looked at in steps of half that length: such a run holds a whole step, so a
    step with another byte in it (text has one within a few bytes) is passed over at once and only
    a clean step is followed to the run's two ends. One regular expression tried at every word
    cost 30 ms per MB of text; this costs nothing there and one pass over a base64 run."""
    half = BLOB_MIN // 2
    step = searched = 0  # no run starts before `searched`
    while step + half <= len(data):
        if _span_end(data, step, step + half) < step + half:
            step += half
            continue
        start = _run_start(data, max(searched, step - half), step)
        end = _span_end(data, step + half, len(data))
        if end - start >= BLOB_MIN:
            yield start, end
        step = searched = end


def _span_end(data: bytes, start: int, limit: int) -> int:
    """Where the base64-alphabet bytes from `start` end (at most `limit`)."""
    span = BASE64_SPAN.match(data, start, limit)
    assert span is not None  # `*` matches the empty string
    return span.end()


def _run_start(data: bytes, low: int, high: int) -> int:
    """Just after the last byte outside the alphabet in [low, high), else `low`: a step before a
    clean one always holds such a byte, except at the start of the data or of what is left."""
    found = NOT_BASE64.search(data[low:high][::-1])
    return high - found.start() if found else low


def _whole_lines(data: bytes, start: int, end: int) -> tuple[int, int] | None:
    """[start, end) narrowed to whole, CRLF-ended lines, the first of them not empty."""
    if start > 0 and data[start - 2 : start] != b"\r\n":
        start = data.find(b"\r\n", start, end) + 2
        if start == 1:
            return None
    while data.startswith(b"\r\n", start, end):
        start += 2
    end = data.rfind(b"\r\n", start, end) + 2
    return (start, end) if end - start >= BLOB_MIN else None


def _slices(view: memoryview, size: int) -> Iterator[bytes]:
    for start in range(0, len(view), size):
        yield bytes(view[start : start + size])


_cache = threading.local()


def release_walk(message: Message) -> None:
    """Forget the walk of `message` and its raw buffer (each can be as large as the message)."""
    cached = getattr(_cache, "entry", None)
    if cached is not None and cached[0] is message:
        _cache.entry = None
    message.release_raw()


def walk_message(message: Message, limits: WalkLimits) -> Walk:
    """The walk of `message`, done once per message and thread and shared by every content check.

    libmilter runs each connection in its own thread, so the cache is per thread; it holds the last
    message only, and goes away with the connection's thread.
    """
    cached = getattr(_cache, "entry", None)
    if cached is not None and cached[0] is message and cached[1] == limits:
        result: Walk = cached[2]
        return result
    received = message.received_buffer()
    if received is not None:  # headers and body in the one buffer the scanners share
        result = _walk(b"", received, limits)
    else:
        result = _walk(raw_message(replace(message, _body=b"")), message.body, limits)
    _cache.entry = (message, limits, result)
    return result


class _Walker:
    def __init__(self, limits: WalkLimits) -> None:
        self.limits = limits
        self.result = Walk()
        self.count = 0
        self.blobs = Blobs()

    def limit(self, kind: str, path: str, detail: str) -> None:
        self.result.limits_exceeded.append(Finding(kind, path, detail))

    def defect(self, path: str, detail: str) -> None:
        if len(self.result.defects) < 50:  # a message of garbage must not grow this list forever
            self.result.defects.append(f"part {path or 'message'}: {detail}")

    def _budget(self, path: str, needed: int) -> bool:
        left = self.limits.max_decoded_bytes - self.result.decoded_bytes
        if needed > left:
            self.limit(
                "decoded_bytes",
                path,
                f"{needed} more bytes would exceed {self.limits.max_decoded_bytes} in total",
            )
            return False
        return True

    def _count(self, path: str) -> bool:
        self.count += 1
        if self.count > self.limits.max_parts:
            if self.count == self.limits.max_parts + 1:
                self.limit("parts", path, f"more than {self.limits.max_parts} parts")
            return False
        return True

    def _depth(self, depth: int, path: str) -> bool:
        if depth > self.limits.max_depth:
            self.limit("depth", path, f"nested deeper than {self.limits.max_depth} levels")
            return False
        return True

    def entity(
        self, entity: email.message.Message, path: str, depth: int, top: bool = False
    ) -> None:
        if not self._depth(depth, path):
            return
        for defect in entity.defects:
            self.defect(path, type(defect).__name__)
        if entity.is_multipart():
            children = entity.get_payload()
            if not isinstance(children, list):
                self.defect(path, "multipart without parts")
                return
            for index, child in enumerate(children, start=1):
                if self.count >= self.limits.max_parts:
                    self._count(_child(path, index))
                    return
                if isinstance(child, email.message.Message):
                    child_path = _child(path, index)
                    if child.get_content_maintype() == "message" and child.is_multipart():
                        self._embedded(child, child_path, depth + 1)
                    else:
                        self.entity(child, child_path, depth + 1)
            return
        self.leaf(entity, path or "1", depth)

    def _embedded(self, container: email.message.Message, path: str, depth: int) -> None:
        """message/rfc822 (parsed by the library into one sub-message)."""
        if not self._count(path):
            return
        for inner in container.get_payload():
            if isinstance(inner, email.message.Message):
                self.entity(inner, path, depth + 1)

    def leaf(self, entity: email.message.Message, path: str, depth: int) -> None:
        if not self._count(path):
            return
        content_type = entity.get_content_type()
        filename = _filename(entity)
        payload = entity.get_payload()
        encoding = str(entity.get("Content-Transfer-Encoding", "")).strip().lower()
        run = self.blobs.run(payload) if isinstance(payload, str) and encoding == "base64" else None
        if run is None and isinstance(payload, str) and self.blobs.prefix in payload:
            entity.set_payload(self.blobs.restore(payload))
            payload = entity.get_payload()
        encoded_size = len(run) if run is not None else len(payload) if payload else 0
        estimate = encoded_size * 3 // 4 if encoding == "base64" else encoded_size
        if not self._budget(path, estimate):
            return
        data = self._decoded(entity, path, run)
        self.result.decoded_bytes += len(data)
        disposition = str(entity.get("Content-Disposition", "")).split(";")[0].strip().lower()
        part = Part(
            path=path,
            content_type=content_type,
            filename=filename,
            data=data,
            charset=str(entity.get_content_charset("") or ""),
            is_attachment=disposition == "attachment" or bool(filename),
            depth=depth,
        )
        self.result.parts.append(part)
        self.nested(part)

    def _decoded(self, entity: email.message.Message, path: str, run: memoryview | None) -> bytes:
        if run is not None:
            try:
                return binascii.a2b_base64(run)  # what the library would do, minus its copies
            except binascii.Error:  # bad padding: the library's lenient decoder, as usual
                entity.set_payload(self.blobs.restore(str(entity.get_payload())))
        try:
            data = entity.get_payload(decode=True)
        except (ValueError, TypeError, LookupError) as exc:
            self.defect(path, f"undecodable payload ({type(exc).__name__})")
            return b""
        return data if isinstance(data, bytes) else b""

    def nested(self, part: Part, in_archive: bool = False) -> None:
        """Look inside a part: a zip archive, or a message attached without message/rfc822."""
        if part.data.startswith(ZIP_MAGIC):
            self.archive(part)
        elif (part.content_type == "message/rfc822" or part.extension == ".eml") and self._depth(
            part.depth + 1, part.path
        ):
            inner = email.message_from_bytes(part.data, policy=email.policy.compat32)
            self.entity(inner, part.path, part.depth + 1)

    def archive(self, part: Part) -> None:
        depth = part.depth + 1
        if not self._depth(depth, part.path):
            return
        try:
            archive = zipfile.ZipFile(io.BytesIO(part.data))
            members = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
            self.defect(part.path, f"unreadable zip archive ({exc})")
            return
        is_document = any(m.filename == OOXML_MARKER for m in members)
        if len(members) > self.limits.max_archive_members:
            self.limit(
                "archive_members",
                part.path,
                f"{len(members)} members, more than {self.limits.max_archive_members}",
            )
            return
        for info in members:
            if info.is_dir():
                continue
            # The path names the member in reasons and logs: escaped, so a name cannot forge lines.
            path = f"{part.path}/{printable(info.filename)}"
            if not self._count(path):
                return
            if info.flag_bits & 0x1:
                self.result.encrypted.append(
                    Finding("encrypted_archive", path, "encrypted archive member")
                )
                continue
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > self.limits.max_expansion_ratio:
                self.limit(
                    "expansion_ratio",
                    path,
                    f"expands {ratio:.0f}x, more than {self.limits.max_expansion_ratio}x",
                )
                continue
            if not self._budget(path, info.file_size):
                return
            try:
                # zipfile stops at the declared size and checks the CRC: a lying header
                # cannot make this read more than the size the budget was checked against.
                with archive.open(info) as stream:
                    data = stream.read(info.file_size + 1)
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, OSError) as exc:
                self.defect(path, f"unreadable archive member ({type(exc).__name__})")
                continue
            self.result.decoded_bytes += len(data)
            member = Part(
                path=path,
                content_type="application/octet-stream",
                filename=info.filename.rsplit("/", 1)[-1],
                data=data,
                is_attachment=True,
                depth=depth,
                in_archive=True,
                in_document=is_document or part.in_document,
            )
            self.result.parts.append(member)
            self.nested(member)


def _child(path: str, index: int) -> str:
    return f"{path}.{index}" if path else str(index)


def _filename(entity: email.message.Message) -> str:
    """The file name (RFC 2231 parameters, RFC 2047 encoded words), '' when there is none."""
    raw = entity.get_filename() or entity.get_param("name") or ""
    if isinstance(raw, tuple):  # an RFC 2231 triple the library could not collapse
        raw = email.utils.collapse_rfc2231_value(raw)
    text = str(raw)
    if "=?" in text:
        with contextlib.suppress(email.errors.HeaderParseError, LookupError, UnicodeDecodeError):
            text = str(email.header.make_header(email.header.decode_header(text)))
    return text.replace("\x00", "")[:255]


def iter_text_parts(result: Walk) -> Iterator[Part]:
    """Parts that are text (text/*, or a member with a text file extension)."""
    return (part for part in result.parts if part.is_text)
