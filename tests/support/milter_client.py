"""The MTA side of the Sendmail/Postfix milter protocol (version 6), for tests.

The protocol tier drives the real milter process through this client the way
Postfix's ``milter8`` client does. Wire format (libmilter ``mfdef.h``): every
packet is a 4-byte big-endian length, a 1-byte command and the payload; the
length counts the command byte. Strings are NUL-terminated. libmilter drops
the connection when a packet's data exceeds 65,535 bytes.

Where Postfix and Sendmail differ, this client follows Postfix 3.7:

* macros (``SMFIC_MACRO``) for a stage are sent before its command, even when
  the milter negotiated not to receive the command itself;
* header values lose exactly one leading space unless the milter negotiated
  ``SMFIP_HDR_LEADSPC``; folded lines are joined with ``\\n`` + whitespace;
* the body is sent with CRLF line ends in chunks of at most 65,535 bytes;
* a reply of SKIP stops further events of that type (recipients, headers, body
  chunks) for the message.

Every socket operation has a timeout. Anything unexpected raises a
`MilterClientError` subclass and closes the connection, since the protocol
stream cannot be resynchronised.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, NoReturn, Self

PROTOCOL_VERSION: Final = 6
MAX_DATA_SIZE: Final = 65535  # MILTER_MAX_DATA_SIZE and MILTER_CHUNK_SIZE
# A reply longer than this is treated as garbage rather than read until timeout.
MAX_REPLY_SIZE: Final = 64 * 1024 * 1024

# Commands, MTA -> milter.
SMFIC_ABORT: Final = "A"
SMFIC_BODY: Final = "B"
SMFIC_CONNECT: Final = "C"
SMFIC_MACRO: Final = "D"
SMFIC_BODYEOB: Final = "E"
SMFIC_HELO: Final = "H"
SMFIC_HEADER: Final = "L"
SMFIC_MAIL: Final = "M"
SMFIC_EOH: Final = "N"
SMFIC_OPTNEG: Final = "O"
SMFIC_QUIT: Final = "Q"
SMFIC_RCPT: Final = "R"
SMFIC_DATA: Final = "T"

# Actions the milter may request (SMFIF_*).
SMFIF_ADDHDRS: Final = 0x001
SMFIF_CHGBODY: Final = 0x002
SMFIF_ADDRCPT: Final = 0x004
SMFIF_DELRCPT: Final = 0x008
SMFIF_CHGHDRS: Final = 0x010
SMFIF_QUARANTINE: Final = 0x020
SMFIF_CHGFROM: Final = 0x040
SMFIF_ADDRCPT_PAR: Final = 0x080
SMFIF_SETSYMLIST: Final = 0x100
ALL_ACTIONS: Final = 0x1FF

# Protocol flags (SMFIP_*): steps not to send (NO*), replies not to expect (NR_*).
SMFIP_NOCONNECT: Final = 0x000001
SMFIP_NOHELO: Final = 0x000002
SMFIP_NOMAIL: Final = 0x000004
SMFIP_NORCPT: Final = 0x000008
SMFIP_NOBODY: Final = 0x000010
SMFIP_NOHDRS: Final = 0x000020
SMFIP_NOEOH: Final = 0x000040
SMFIP_NR_HDR: Final = 0x000080
SMFIP_NOUNKNOWN: Final = 0x000100
SMFIP_NODATA: Final = 0x000200
SMFIP_SKIP: Final = 0x000400
SMFIP_RCPT_REJ: Final = 0x000800
SMFIP_NR_CONN: Final = 0x001000
SMFIP_NR_HELO: Final = 0x002000
SMFIP_NR_MAIL: Final = 0x004000
SMFIP_NR_RCPT: Final = 0x008000
SMFIP_NR_DATA: Final = 0x010000
SMFIP_NR_UNKN: Final = 0x020000
SMFIP_NR_EOH: Final = 0x040000
SMFIP_NR_BODY: Final = 0x080000
SMFIP_HDR_LEADSPC: Final = 0x100000
# What Postfix offers for protocol version 6 (MILTER8_V6_PROTO_MASK).
DEFAULT_PROTOCOL: Final = 0x1FFFFF

# Stage numbers used in the SETSYMLIST part of the OPTNEG reply (SMFIM_*).
SMFIM_CONNECT: Final = 0
SMFIM_HELO: Final = 1
SMFIM_ENVFROM: Final = 2
SMFIM_ENVRCPT: Final = 3
SMFIM_DATA: Final = 4
SMFIM_EOM: Final = 5
SMFIM_EOH: Final = 6

# send_message's macro keys and the command each stage's macros precede.
MACRO_STAGES: Final = {
    "connect": SMFIC_CONNECT,
    "helo": SMFIC_HELO,
    "mail": SMFIC_MAIL,
    "rcpt": SMFIC_RCPT,
    "data": SMFIC_DATA,
    "eoh": SMFIC_EOH,
    "eom": SMFIC_BODYEOB,
}

# Replies that end a command, without payload.
_SIMPLE_REPLIES: Final = {
    "c": "continue",
    "a": "accept",
    "r": "reject",
    "t": "tempfail",
    "d": "discard",
    "s": "skip",
    "f": "conn_fail",
    "4": "shutdown",
}
_SMFIR_REPLYCODE: Final = "y"
_SMFIR_PROGRESS: Final = "p"
# Modification requests (valid only before the final reply to end of message),
# with the action flag the milter must have negotiated to send each.
_MODIFICATIONS: Final = {
    "h": ("addheader", SMFIF_ADDHDRS),
    "i": ("insheader", SMFIF_ADDHDRS),
    "m": ("chgheader", SMFIF_CHGHDRS),
    "q": ("quarantine", SMFIF_QUARANTINE),
    "+": ("addrcpt", SMFIF_ADDRCPT),
    "2": ("addrcpt_par", SMFIF_ADDRCPT_PAR),
    "-": ("delrcpt", SMFIF_DELRCPT),
    "b": ("replbody", SMFIF_CHGBODY),
    "e": ("chgfrom", SMFIF_CHGFROM),
}
# Postfix's check of a milter's SMTP reply: "4xx 4.x.x text" or "5xx 5.x.x text",
# possibly multi-line ("550-5.7.1 ...").
_REPLYCODE = re.compile(r"([45])\d\d[ -]\1")
# Postfix is_header(): a field name is printable ASCII except ":" (RFC 5322
# §2.2), optionally followed by blanks before the colon.
_HEADER_START = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


class MilterClientError(Exception):
    """Base class of every error this client raises."""


class MilterProtocolError(MilterClientError):
    """The milter sent something the protocol does not allow."""


class MilterConnectionClosed(MilterClientError):
    """The milter closed or reset the connection."""


class MilterTimeout(MilterClientError):
    """The milter did not answer (or accept data) within the timeout."""


class MilterConnectFailed(MilterClientError):
    """The milter's socket could not be connected to."""


@dataclass(frozen=True)
class Reply:
    """What the milter answered to one command."""

    action: str  # continue accept reject tempfail discard replycode skip conn_fail shutdown
    code: str | None = None  # for replycode: "550"
    text: str | None = None  # for replycode: "550 5.7.1 nope"

    @property
    def is_continue(self) -> bool:
        return self.action == "continue"


CONTINUE: Final = Reply("continue")


@dataclass
class Result:
    """One whole transaction as `MilterClient.send_message` saw it."""

    stage: str  # connect helo mail rcpt data header eoh body eom
    reply: Reply
    rcpt_replies: list[tuple[str, Reply]] = field(default_factory=list)
    added_headers: list[tuple[str, str]] = field(default_factory=list)
    changed_headers: list[tuple[int, str, str]] = field(default_factory=list)
    quarantine_reason: str | None = None
    modifications: list[tuple[str, bytes]] = field(default_factory=list)
    new_body: bytes | None = None


def split_message(
    raw: bytes, *, leading_space: bool = False
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Split a raw message into header fields and a CRLF body, as Postfix feeds a milter.

    Accepts CRLF or bare LF line ends. The header section ends at the first
    empty line, or at the first line that is neither a field nor a
    continuation (that line then starts the body, as in Postfix).
    """
    lines = re.split(rb"\r?\n", raw)
    fields: list[tuple[bytes, bytes]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line == b"":
            index += 1
            break
        if line[:1] in (b" ", b"\t") and fields:
            # RFC 5322 §2.2.3: a folded field; Postfix keeps the line break as LF.
            name, value = fields[-1]
            fields[-1] = (name, value + b"\n" + line)
            index += 1
            continue
        match = _HEADER_START.match(line)
        if match is None:
            break
        value = line[match.end() :]
        if not leading_space and value.startswith(b" "):
            value = value[1:]  # Sendmail compatibility: one space, not a tab
        fields.append((match.group(1), value))
        index += 1
    body_lines = lines[index:]
    if body_lines and body_lines[-1] == b"":
        body_lines.pop()  # the final line end, not an extra empty line
    return fields, b"".join(line + b"\r\n" for line in body_lines)


def _cstr(value: str | bytes) -> bytes:
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if b"\0" in data:
        raise ValueError(f"NUL byte in a protocol string: {data[:60]!r}")
    return data + b"\0"


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _split_strings(payload: bytes, count: int, what: str) -> list[bytes]:
    """Split a payload of exactly `count` NUL-terminated strings."""
    if not payload.endswith(b"\0"):
        raise MilterProtocolError(f"{what}: string not NUL-terminated: {payload[:60]!r}")
    parts = payload[:-1].split(b"\0")
    if len(parts) != count:
        raise MilterProtocolError(f"{what}: expected {count} strings, got {len(parts)}")
    return parts


def _parse_modification(code: str, payload: bytes) -> tuple[int, list[bytes]]:
    """Validate one modification payload; return its index (or -1) and its strings."""
    name = _MODIFICATIONS[code][0]
    if code in ("i", "m"):
        if len(payload) < 4:
            raise MilterProtocolError(f"{name}: payload too short for an index")
        (index,) = struct.unpack("!I", payload[:4])
        return index, _split_strings(payload[4:], 2, name)
    if code == "h":
        return -1, _split_strings(payload, 2, name)
    if code in ("q", "+", "-"):
        return -1, _split_strings(payload, 1, name)
    if code in ("2", "e"):
        # Optional ESMTP arguments after the address.
        strings = payload[:-1].split(b"\0") if payload.endswith(b"\0") else []
        if not 1 <= len(strings) <= 2:
            raise MilterProtocolError(f"{name}: malformed payload {payload[:60]!r}")
        return -1, strings
    return -1, [payload]  # replbody: raw body bytes


class MilterClient:
    """One MTA-to-milter connection. Not thread-safe: use one client per thread."""

    def __init__(self, socket_path: str, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.version = 0
        self.actions = 0
        self.protocol = 0
        # Macro names the milter asked for per SMFIM_* stage (informational:
        # this client sends whatever macros the caller gives).
        self.symlists: dict[int, list[str]] = {}
        self._sock: socket.socket | None = None
        self._negotiated = False

    # Connection handling ------------------------------------------------

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._sock is not None and self._negotiated:
            with contextlib.suppress(MilterClientError):
                self.quit()
        self.close()

    def open(self) -> None:
        """Connect to ``/path``, ``unix:/path`` or ``inet:port@host``."""
        if self._sock is not None:
            raise MilterClientError("already connected")
        target: str | tuple[str, int]
        if self.socket_path.startswith("inet:"):
            port, _, host = self.socket_path[5:].partition("@")
            family, target = socket.AF_INET, (host or "127.0.0.1", int(port))
        else:
            family, target = socket.AF_UNIX, self.socket_path.removeprefix("unix:")
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(target)
        except TimeoutError as exc:
            sock.close()
            raise MilterTimeout(f"connecting to {self.socket_path}: timed out") from exc
        except OSError as exc:
            sock.close()
            raise MilterConnectFailed(f"connecting to {self.socket_path}: {exc}") from exc
        self._sock = sock
        self._negotiated = False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    # Low-level steps ------------------------------------------------------

    def negotiate(
        self, actions: int = ALL_ACTIONS, protocol: int = DEFAULT_PROTOCOL
    ) -> tuple[int, int]:
        """Send SMFIC_OPTNEG; return the (actions, protocol flags) the milter chose."""
        if self._sock is None:
            self.open()
        self._send(SMFIC_OPTNEG, struct.pack("!III", PROTOCOL_VERSION, actions, protocol))
        code, payload = self._read_packet("OPTNEG")
        if code != SMFIC_OPTNEG:
            self._fail(MilterProtocolError(f"OPTNEG answered with {code!r} {payload[:60]!r}"))
        if len(payload) < 12:
            self._fail(MilterProtocolError(f"OPTNEG reply too short: {len(payload)} bytes"))
        version, got_actions, got_protocol = struct.unpack("!III", payload[:12])
        # Postfix refuses a newer version or actions it did not offer; a protocol
        # flag it did not offer would desynchronise the stream, so refuse it too.
        if version > PROTOCOL_VERSION or version < 2:
            self._fail(MilterProtocolError(f"milter speaks protocol version {version}"))
        if got_actions & ~actions:
            self._fail(MilterProtocolError(f"milter requests actions {got_actions:#x} not offered"))
        if got_protocol & ~protocol:
            self._fail(
                MilterProtocolError(f"milter requests protocol {got_protocol:#x} not offered")
            )
        try:
            self.symlists = self._parse_symlists(payload[12:])
        except MilterProtocolError as exc:
            self._fail(exc)
        self.version, self.actions, self.protocol = version, got_actions, got_protocol
        self._negotiated = True
        return got_actions, got_protocol

    def connect(
        self, hostname: str, address: str, port: int, macros: Mapping[str, str] | None = None
    ) -> Reply:
        """SMFIC_CONNECT: family 'L' for a path, '6' for IPv6, 'U' for 'unknown', else '4'."""
        if address.startswith("/"):
            family, port = "L", 0
        elif ":" in address:
            family = "6"
        elif address in ("", "unknown"):
            family = "U"
        else:
            family = "4"
        payload = _cstr(hostname) + family.encode()
        if family != "U":
            payload += struct.pack("!H", port) + _cstr(address)
        return self._event(SMFIC_CONNECT, payload, macros, SMFIP_NOCONNECT, SMFIP_NR_CONN)

    def helo(self, name: str, macros: Mapping[str, str] | None = None) -> Reply:
        return self._event(SMFIC_HELO, _cstr(name), macros, SMFIP_NOHELO, SMFIP_NR_HELO)

    def mail(
        self, sender: str, esmtp_args: Sequence[str] = (), macros: Mapping[str, str] | None = None
    ) -> Reply:
        """SMFIC_MAIL; `sender` with angle brackets as Postfix sends it: '<a@b>'."""
        payload = b"".join(_cstr(arg) for arg in (sender, *esmtp_args))
        return self._event(SMFIC_MAIL, payload, macros, SMFIP_NOMAIL, SMFIP_NR_MAIL)

    def rcpt(
        self, rcpt: str, macros: Mapping[str, str] | None = None, *, esmtp_args: Sequence[str] = ()
    ) -> Reply:
        payload = b"".join(_cstr(arg) for arg in (rcpt, *esmtp_args))
        return self._event(SMFIC_RCPT, payload, macros, SMFIP_NORCPT, SMFIP_NR_RCPT)

    def data(self, macros: Mapping[str, str] | None = None) -> Reply:
        return self._event(SMFIC_DATA, b"", macros, SMFIP_NODATA, SMFIP_NR_DATA)

    def header(self, name: str | bytes, value: bytes) -> Reply:
        """SMFIC_HEADER with `value` as given (see `split_message` for Postfix's form)."""
        return self._event(
            SMFIC_HEADER, _cstr(name) + _cstr(value), None, SMFIP_NOHDRS, SMFIP_NR_HDR
        )

    def eoh(self, macros: Mapping[str, str] | None = None) -> Reply:
        return self._event(SMFIC_EOH, b"", macros, SMFIP_NOEOH, SMFIP_NR_EOH)

    def body(self, chunk: bytes) -> Reply:
        """Send body bytes in packets of at most 65,535 bytes.

        Stops at, and returns, the first reply that is not 'continue'.
        """
        for start in range(0, len(chunk), MAX_DATA_SIZE):
            part = chunk[start : start + MAX_DATA_SIZE]
            reply = self._event(SMFIC_BODY, part, None, SMFIP_NOBODY, SMFIP_NR_BODY)
            if not reply.is_continue:
                return reply
        return CONTINUE

    def eom(self, macros: Mapping[str, str] | None = None) -> tuple[Reply, list[tuple[str, bytes]]]:
        """SMFIC_BODYEOB; return the final reply and every modification before it."""
        self._require_negotiated()
        self._send_macros(SMFIC_BODYEOB, macros)
        self._send(SMFIC_BODYEOB, b"")
        modifications: list[tuple[str, bytes]] = []
        reply = self._read_reply("BODYEOB", modifications)
        return reply, modifications

    def abort(self) -> None:
        """SMFIC_ABORT: end the current message; the milter does not answer."""
        self._require_negotiated()
        self._send(SMFIC_ABORT, b"")

    def quit(self) -> None:
        """SMFIC_QUIT, then close the connection."""
        self._require_negotiated()
        try:
            self._send(SMFIC_QUIT, b"")
        finally:
            self.close()

    # One whole transaction ------------------------------------------------

    def send_message(
        self,
        raw: bytes,
        *,
        sender: str,
        rcpts: Sequence[str],
        client_address: str = "127.0.0.1",
        macros: Mapping[str, Mapping[str, str]] | None = None,
        client_name: str | None = None,
        client_port: int = 0,
        helo_name: str = "client.test.invalid",
    ) -> Result:
        """Run one SMTP session through the milter, like Postfix, and quit.

        `macros` maps a stage ('connect', 'helo', 'mail', 'rcpt', 'data',
        'eoh', 'eom') to the macros sent just before that stage's command.
        Stops at the first stage whose answer is not 'continue'. A refused
        recipient (reject, tempfail, replycode) only refuses that recipient,
        as in SMTP (RFC 5321 §3.3); when every recipient is refused the
        transaction ends there.
        """
        stage_macros = dict(macros or {})
        unknown = set(stage_macros) - set(MACRO_STAGES)
        if unknown:
            raise ValueError(f"unknown macro stages: {sorted(unknown)}")
        if not rcpts:
            raise ValueError("at least one recipient is needed")
        if self._negotiated:
            raise MilterClientError("send_message needs a fresh connection")
        if self._sock is None:
            self.open()
        self.negotiate()
        result = Result(stage="connect", reply=CONTINUE)

        hostname = client_name if client_name is not None else f"[{client_address}]"
        reply = self.connect(hostname, client_address, client_port, stage_macros.get("connect"))
        if not reply.is_continue:
            return self._finish(result, "connect", reply, in_message=False)
        reply = self.helo(helo_name, stage_macros.get("helo"))
        if not reply.is_continue:
            return self._finish(result, "helo", reply, in_message=False)
        reply = self.mail(sender, macros=self._mail_macros(stage_macros, client_address, hostname))
        if not reply.is_continue:
            return self._finish(result, "mail", reply, in_message=True)

        accepted = 0
        skipping = False
        for rcpt in rcpts:
            # After SKIP the MTA stops sending RCPT events to the milter.
            reply = CONTINUE if skipping else self.rcpt(rcpt, stage_macros.get("rcpt"))
            result.rcpt_replies.append((rcpt, reply))
            if reply.action in ("continue", "skip"):
                accepted += 1
                skipping = skipping or reply.action == "skip"
            elif reply.action in ("reject", "tempfail", "replycode"):
                continue
            else:
                # accept, discard and connection-level answers decide the message.
                return self._finish(result, "rcpt", reply, in_message=True)
        if accepted == 0:
            return self._finish(result, "rcpt", reply, in_message=True)

        reply = self.data(stage_macros.get("data"))
        if not reply.is_continue:
            return self._finish(result, "data", reply, in_message=True)
        fields, body = split_message(raw, leading_space=bool(self.protocol & SMFIP_HDR_LEADSPC))
        for name, value in fields:
            # Postfix passes header values as C strings: a NUL ends the value.
            reply = self.header(name, value.split(b"\0", 1)[0])
            if reply.action == "skip":
                break
            if not reply.is_continue:
                return self._finish(result, "header", reply, in_message=True)
        reply = self.eoh(stage_macros.get("eoh"))
        if not reply.is_continue:
            return self._finish(result, "eoh", reply, in_message=True)
        if body:
            reply = self.body(body)
            if reply.action not in ("continue", "skip"):
                return self._finish(result, "body", reply, in_message=True)

        reply, modifications = self.eom(stage_macros.get("eom"))
        self._collect(result, modifications)
        return self._finish(result, "eom", reply, in_message=False)

    # Internals ---------------------------------------------------------------

    def _finish(self, result: Result, stage: str, reply: Reply, *, in_message: bool) -> Result:
        result.stage, result.reply = stage, reply
        # The verdict is known: a milter that already hung up changes nothing.
        with contextlib.suppress(MilterConnectionClosed):
            if in_message:
                self.abort()
            self.quit()
        self.close()
        return result

    @staticmethod
    def _collect(result: Result, modifications: list[tuple[str, bytes]]) -> None:
        codes = {name: code for code, (name, _) in _MODIFICATIONS.items()}
        result.modifications = modifications
        for name, payload in modifications:
            index, strings = _parse_modification(codes[name], payload)
            if name in ("addheader", "insheader"):
                result.added_headers.append((_decode(strings[0]), _decode(strings[1])))
            elif name == "chgheader":
                result.changed_headers.append((index, _decode(strings[0]), _decode(strings[1])))
            elif name == "quarantine":
                result.quarantine_reason = _decode(strings[0])
            elif name == "replbody":
                result.new_body = (result.new_body or b"") + payload

    def _event(
        self,
        command: str,
        payload: bytes,
        macros: Mapping[str, str] | None,
        skip_flag: int,
        noreply_flag: int,
    ) -> Reply:
        """Send one command (and its macros) honouring the negotiated NO*/NR_* flags."""
        self._require_negotiated()
        self._send_macros(command, macros)
        if self.protocol & skip_flag:
            return CONTINUE
        self._send(command, payload)
        if self.protocol & noreply_flag:
            return CONTINUE
        return self._read_reply(_COMMAND_NAMES[command], None)

    def _mail_macros(
        self, stage_macros: Mapping[str, Mapping[str, str]], address: str, hostname: str
    ) -> Mapping[str, str] | None:
        """A milter that negotiated the connect event away learns the client at MAIL, as
        relayguard's main.cf asks of Postfix (milter_mail_macros {client_addr} {client_name});
        macros the caller gives for the mail stage win."""
        given = stage_macros.get("mail")
        if not self.protocol & SMFIP_NOCONNECT:
            return given
        return {"{client_addr}": address, "{client_name}": hostname, **(given or {})}

    def _send_macros(self, command: str, macros: Mapping[str, str] | None) -> None:
        if not macros:
            return
        payload = command.encode() + b"".join(_cstr(k) + _cstr(v) for k, v in macros.items())
        self._send(SMFIC_MACRO, payload)

    def _read_reply(self, what: str, modifications: list[tuple[str, bytes]] | None) -> Reply:
        while True:
            code, payload = self._read_packet(what)
            if code == _SMFIR_PROGRESS and not payload:
                continue  # the milter asks for more time
            if code in _SIMPLE_REPLIES:
                if payload:
                    self._fail(
                        MilterProtocolError(
                            f"reply {code!r} to {what} with {len(payload)} data bytes"
                        )
                    )
                return Reply(_SIMPLE_REPLIES[code])
            if code == _SMFIR_REPLYCODE:
                text = _decode(payload.rstrip(b"\0"))
                if not payload.endswith(b"\0") or not _REPLYCODE.match(text):
                    self._fail(
                        MilterProtocolError(f"malformed reply code to {what}: {payload[:80]!r}")
                    )
                return Reply("replycode", text[:3], text)
            if code in _MODIFICATIONS and modifications is not None:
                name, needed = _MODIFICATIONS[code]
                if not self.actions & needed:
                    self._fail(
                        MilterProtocolError(f"{name} without negotiating action {needed:#x}")
                    )
                try:
                    _parse_modification(code, payload)
                except MilterProtocolError as exc:
                    self._fail(exc)
                modifications.append((name, payload))
                continue
            self._fail(
                MilterProtocolError(f"unexpected reply {code!r} to {what}: {payload[:60]!r}")
            )

    @staticmethod
    def _parse_symlists(data: bytes) -> dict[int, list[str]]:
        symlists: dict[int, list[str]] = {}
        while data:
            end = data.find(b"\0", 4)
            if len(data) < 5 or end < 0:
                raise MilterProtocolError(f"malformed macro list in OPTNEG reply: {data[:60]!r}")
            (stage,) = struct.unpack("!I", data[:4])
            symlists[stage] = _decode(data[4:end]).split()
            data = data[end + 1 :]
        return symlists

    def _require_negotiated(self) -> None:
        if self._sock is None:
            raise MilterClientError("not connected (closed after an error or QUIT?)")
        if not self._negotiated:
            raise MilterClientError("negotiate() first")

    def _fail(self, error: MilterClientError, cause: BaseException | None = None) -> NoReturn:
        """Close the out-of-sync connection and raise `error`."""
        self.close()
        raise error from cause

    def _send(self, command: str, payload: bytes) -> None:
        if self._sock is None:
            raise MilterClientError("not connected")
        packet = struct.pack("!I", len(payload) + 1) + command.encode() + payload
        try:
            self._sock.sendall(packet)
        except TimeoutError as exc:
            self._fail(MilterTimeout(f"sending {_COMMAND_NAMES[command]}: timed out"), exc)
        except OSError as exc:
            self._fail(MilterConnectionClosed(f"sending {_COMMAND_NAMES[command]}: {exc}"), exc)

    def _read_packet(self, what: str) -> tuple[str, bytes]:
        header = self._recv_exact(4, what)
        (length,) = struct.unpack("!I", header)
        if length < 1 or length > MAX_REPLY_SIZE:
            self._fail(MilterProtocolError(f"bad packet length {length} in reply to {what}"))
        data = self._recv_exact(length, what)
        return chr(data[0]), data[1:]

    def _recv_exact(self, size: int, what: str) -> bytes:
        if self._sock is None:
            raise MilterClientError("not connected")
        buf = bytearray()
        while len(buf) < size:
            try:
                chunk = self._sock.recv(min(size - len(buf), 1 << 20))
            except TimeoutError as exc:
                self._fail(MilterTimeout(f"no reply to {what} within {self.timeout} s"), exc)
            except OSError as exc:
                self._fail(MilterConnectionClosed(f"reading reply to {what}: {exc}"), exc)
            if not chunk:
                self._fail(
                    MilterConnectionClosed(
                        f"milter closed the connection while we waited for the reply to {what}"
                    )
                )
            buf += chunk
        return bytes(buf)


_COMMAND_NAMES: Final = {
    SMFIC_ABORT: "ABORT",
    SMFIC_BODY: "BODY",
    SMFIC_CONNECT: "CONNECT",
    SMFIC_MACRO: "MACRO",
    SMFIC_BODYEOB: "BODYEOB",
    SMFIC_HELO: "HELO",
    SMFIC_HEADER: "HEADER",
    SMFIC_MAIL: "MAIL",
    SMFIC_EOH: "EOH",
    SMFIC_OPTNEG: "OPTNEG",
    SMFIC_QUIT: "QUIT",
    SMFIC_RCPT: "RCPT",
    SMFIC_DATA: "DATA",
}
