"""The pymilter class: a thin adapter between libmilter callbacks and a Transaction.

No policy lives here. Callbacks collect macros, envelope, headers and body; the Transaction decides;
this class turns the Decision into milter actions. This is the only module that imports pymilter.
"""

from __future__ import annotations

import io
import logging
from typing import Protocol

import Milter
import milter as libmilter

from relayguard.core.message import Client, header_block
from relayguard.core.safe_text import printable
from relayguard.core.verdict import Action, Decision, Reply
from relayguard.engine.runtime import RuntimeHolder
from relayguard.engine.transaction import Transaction
from relayguard.transforms import replaced_header_names

log = logging.getLogger(__name__)

MILTER_NAME = "relayguard"
# What the milter may ask of Postfix: add/change headers (trace header) and quarantine (hold queue).
FLAGS = Milter.ADDHDRS | Milter.CHGHDRS | Milter.QUARANTINE


class ConnectionGauge(Protocol):
    """Counts open connections, so the supervisor can stop a worker once it is idle."""

    def opened(self) -> None: ...
    def closed(self) -> None: ...


class RelayguardMilter(Milter.Base):  # type: ignore[misc]
    """One instance per SMTP connection (libmilter runs each connection in its own thread).

    Callbacks left to Milter.Base are @nocallback, so Postfix does not send them at all: connect,
    HELO, DATA, end of header, unknown commands. Who the client is comes from Postfix's macros at
    MAIL ({client_addr}, {client_name}: milter_mail_macros in postfix/main.cf.j2), never from
    anything the SMTP client says.
    """

    def __init__(self, holder: RuntimeHolder, gauge: ConnectionGauge) -> None:
        self.holder = holder
        self.gauge = gauge
        gauge.opened()
        self.tx: Transaction | None = None
        self._reset_message()

    def _reset_message(self) -> None:
        # Private names: Milter.Base's callbacks (header, body) must not be shadowed.
        self._headers: list[tuple[str, bytes]] = []
        # The raw message as one growing buffer: the header block, then the body chunks. The
        # scanners read it as it is (getvalue() hands it over without a copy), so a 30 MB
        # attachment is not held once as the body and once more as the raw message.
        self._buffer = io.BytesIO()
        self._body_start = -1  # where the body starts in the buffer; -1: header block not written

    def _macro(self, name: str) -> str:
        value = self.getsymval(name)
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return value or ""

    @Milter.decode("bytes")  # type: ignore[untyped-decorator]
    def envfrom(self, mail_from: bytes | str, *params: bytes | str) -> int:
        if self.tx is not None:
            self.tx.abort()  # a new MAIL FROM on the same connection ends the previous one
        self._reset_message()
        client = Client(
            address=self._macro("{client_addr}"),
            hostname=self._macro("{client_name}"),
            sasl_user=self._macro("{auth_authen}"),
            cert_subject=self._macro("{cert_subject}"),
            cert_issuer=self._macro("{cert_issuer}"),
            daemon_name=self._macro("{daemon_name}"),
            auth_author=self._macro("{auth_author}"),
        )
        self.tx = Transaction(self.holder.refresh(), client)
        return self._answer(self.tx.mail(_text(mail_from)))

    @Milter.decode("bytes")  # type: ignore[untyped-decorator]
    def envrcpt(self, recipient: bytes | str, *params: bytes | str) -> int:
        assert self.tx is not None
        self.tx.queue_id = self._macro("i") or self.tx.queue_id
        return self._answer(self.tx.rcpt(_text(recipient)))

    @Milter.noreply  # type: ignore[untyped-decorator]
    @Milter.decode("bytes")  # type: ignore[untyped-decorator]
    def header(self, name: str, value: bytes) -> int:
        self._headers.append((name, value))
        return Milter.CONTINUE  # type: ignore[no-any-return]

    @Milter.noreply  # type: ignore[untyped-decorator]
    def body(self, chunk: bytes) -> int:
        if self._body_start < 0:
            self._end_header_block()
        self._buffer.write(chunk)
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def _end_header_block(self) -> None:
        """Postfix passes every header before the body, so the block goes first in the buffer.
        Done here, not in an eoh callback: every callback left out is one packet less."""
        self._buffer.write(header_block(self._headers))
        self._body_start = self._buffer.tell()

    def _hand_over(self) -> bytes:
        """The buffer's bytes (no copy) and a fresh buffer: no local name keeps a 30 MB message
        alive here, so the Message is its only holder and lets it go after the scanners."""
        raw, self._buffer = self._buffer.getvalue(), io.BytesIO()
        return raw

    def eom(self) -> int:
        tx = self.tx
        assert tx is not None
        if self._body_start < 0:  # an empty body: no body callback came
            self._end_header_block()
        decision = tx.end_received(
            tuple(self._headers), self._hand_over(), self._body_start, queue_id=self._macro("i")
        )
        self.tx = None
        if decision.action < Action.TEMPFAIL:
            self._apply_headers(decision, tx.runtime.config.relay.trace_header)
        if decision.action is Action.QUARANTINE:
            deciding = decision.deciding
            self.quarantine(printable(deciding.reason) if deciding else "relayguard quarantine")
        self._reset_message()
        return self._answer(decision, final=True)

    def abort(self) -> int:
        if self.tx is not None:
            self.tx.abort()
        self.tx = None
        self._reset_message()
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def close(self) -> int:
        self.abort()
        self.gauge.closed()
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def _apply_headers(self, decision: Decision, trace_header: str) -> None:
        present = (name for name, _ in self._headers)
        for wanted in sorted(replaced_header_names(decision, trace_header, present)):
            copies = [name for name, _ in self._headers if name.strip().lower() == wanted]
            for index in range(len(copies), 0, -1):
                self.chgheader(copies[0].strip(), index, "")
        for name, value in decision.headers:
            self.addheader(name, value)

    def _answer(self, decision: Decision, *, final: bool = False) -> int:
        if decision.action >= Action.TEMPFAIL:
            reply = decision.reply
            if reply is not None:
                self.setreply(reply.code, reply.status, milter_text(reply))
            return Milter.REJECT if decision.action is Action.REJECT else Milter.TEMPFAIL  # type: ignore[no-any-return]
        return Milter.ACCEPT if final else Milter.CONTINUE  # type: ignore[no-any-return]


def _text(value: bytes | str) -> str:
    """Envelope values arrive as bytes from libmilter and as str from Milter.testctx."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def milter_text(reply: Reply) -> str:
    """libmilter expands '%' in reply text, and SMTP replies are printable ASCII (RFC 5321 §4.2)."""
    printable = "".join(c if " " <= c <= "~" else "?" for c in reply.text)
    return printable[:450].replace("%", "%%")


def listen(spec: str, timeout: int) -> None:
    """Register the callbacks and bind the listening socket (Milter.runmilter minus main())."""
    libmilter.set_flags(FLAGS)
    # Registered although negotiated away (P_NOCONNECT): an MTA without negotiation still works.
    libmilter.set_connect_callback(Milter.connect_callback)
    libmilter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
    libmilter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    libmilter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    libmilter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    libmilter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    libmilter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    libmilter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    libmilter.set_close_callback(Milter.close_callback)
    libmilter.settimeout(timeout)
    # An exception in a callback is a temporary failure, never an accept (design.md).
    libmilter.set_exception_policy(libmilter.TEMPFAIL)
    libmilter.register(
        MILTER_NAME,
        data=lambda ctx: ctx.getpriv().data(),
        unknown=lambda ctx, cmd: ctx.getpriv().unknown(cmd),
        negotiate=Milter.negotiate_callback,
    )
    libmilter.setconn(spec)
    libmilter.opensocket(True)


def run_worker(holder: RuntimeHolder, gauge: ConnectionGauge) -> None:
    """libmilter's accept loop on the inherited socket, one RelayguardMilter per connection."""
    Milter.factory = lambda: RelayguardMilter(holder, gauge)
    libmilter.main()
