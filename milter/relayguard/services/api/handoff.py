"""Handing a message to Postfix's send-API listener over SMTP, and reading its answer.

The API logs in with its own SASL account and names the source in MAIL FROM's AUTH= parameter
(RFC 4954 §5): Postfix passes it to the milter as {auth_author}, which the milter believes only on
the `api` listener and only from this login (checks/source.py). All recipients or none: one refused
RCPT ends the transaction (RSET) and the caller gets the refusal, never a partial send it cannot
see. Connections are pooled; a connection found dead before DATA is replaced and the transaction
retried once (nothing was sent); after DATA the outcome is reported as it is.

Two round trips a message where Postfix offers them (it does): MAIL FROM and every RCPT TO in
one write (RFC 2920 PIPELINING), then, only if all were accepted, the message as one
`BDAT n LAST` chunk (RFC 3030 CHUNKING: no dot-stuffing, no 354 round trip). A 202 still waits
for Postfix's 250 to that last command: the message is in its queue.
"""

from __future__ import annotations

import contextlib
import queue
import re
import smtplib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from relayguard.services.api.compose import Outgoing
from relayguard.services.api.errors import ApiError

QUEUED_AS = re.compile(r"queued as ([0-9A-Za-z]+)")
RETRY_IN = re.compile(r"retry in (\d+) s")
UNAVAILABLE_RETRY = 30  # seconds suggested when Postfix or a scanner is unavailable


@dataclass(frozen=True, slots=True)
class Relay:
    """The Postfix `api` listener and the API's login there."""

    host: str
    port: int
    user: str
    password: str
    timeout: float = 30.0
    pool_size: int = 8


class _Refused(Exception):
    def __init__(self, code: int, text: str, where: str) -> None:
        super().__init__(code, text)
        self.code, self.text, self.where = code, text, where


class Handoff:
    """Thread-safe: each send borrows one pooled connection."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._idle: queue.LifoQueue[smtplib.SMTP] = queue.LifoQueue()

    def send(self, source: str, outgoing: Outgoing) -> str:
        """The Postfix queue id, or ApiError with the HTTP answer for what Postfix said."""
        try:
            return self._send_once_retrying_dead(source, outgoing)
        except _Refused as refused:
            raise refusal_error(refused.code, refused.text, refused.where) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise ApiError(
                503, f"the relay is unavailable ({type(exc).__name__})", "", UNAVAILABLE_RETRY
            ) from None

    def _send_once_retrying_dead(self, source: str, outgoing: Outgoing) -> str:
        for attempt in (1, 2):
            with self._connection() as conn:
                try:
                    self._envelope(conn, source, outgoing)
                except smtplib.SMTPServerDisconnected:
                    conn.close()
                    if attempt == 2:
                        raise
                    continue
                return self._data(conn, outgoing)
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[smtplib.SMTP]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
        healthy = False
        try:
            yield conn
            healthy = True
        except _Refused:
            healthy = True  # a refused transaction was reset: the connection is reusable
            raise
        finally:
            if healthy and conn.sock is not None and self._idle.qsize() < self.relay.pool_size:
                self._idle.put(conn)
            else:
                with contextlib.suppress(OSError, smtplib.SMTPException):
                    conn.close()

    def _connect(self) -> smtplib.SMTP:
        conn = smtplib.SMTP(
            self.relay.host,
            self.relay.port,
            local_hostname="relayguard-api.localhost",
            timeout=self.relay.timeout,
        )
        try:
            conn.ehlo()
            conn.login(self.relay.user, self.relay.password)
        except BaseException:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                conn.close()
            raise
        return conn

    def _envelope(self, conn: smtplib.SMTP, source: str, outgoing: Outgoing) -> None:
        options = f"AUTH={source} SIZE={len(outgoing.data)} BODY=8BITMIME"
        commands = [f"MAIL FROM:<{outgoing.mail_from}> {options}"]
        commands += [f"RCPT TO:<{recipient}>" for recipient in outgoing.recipients]
        if conn.has_extn("pipelining"):
            conn.send("".join(f"{command}\r\n" for command in commands))
            replies = [conn.getreply() for _ in commands]
        else:
            replies = [conn.docmd(command) for command in commands]
        for index, (code, text) in enumerate(replies):
            if code not in (250, 251):
                self._reset(conn)
                where = "from" if index == 0 else f"recipients[{index - 1}]"
                raise _Refused(code, _text(text), where)

    def _data(self, conn: smtplib.SMTP, outgoing: Outgoing) -> str:
        try:
            if conn.has_extn("chunking"):
                conn.send(f"BDAT {len(outgoing.data)} LAST\r\n".encode() + outgoing.data)
                code, text = conn.getreply()
            else:
                code, text = conn.data(outgoing.data)
        except smtplib.SMTPServerDisconnected:
            conn.close()
            raise ApiError(
                502,
                "the relay closed the connection after the message was sent: it may or may not"
                " have been queued; retry with the same Idempotency-Key only after checking",
            ) from None
        reply = _text(text)
        if code != 250:
            raise _Refused(code, reply, "")
        found = QUEUED_AS.search(reply)
        return found.group(1) if found else ""

    @staticmethod
    def _reset(conn: smtplib.SMTP) -> None:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            conn.rset()

    def close(self) -> None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(OSError, smtplib.SMTPException, socket.error):
                conn.quit()


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").replace("\n", " ")


def refusal_error(code: int, text: str, field: str) -> ApiError:
    """What an SMTP refusal means over HTTP. The text is the relay's reason (the milter's reasons
    name rules and sources, never matched data), without the enhanced status code."""
    reason = re.sub(r"^\d\.\d{1,3}\.\d{1,3}\s+", "", text)
    enhanced = text.split(" ", 1)[0]
    if code == 552 or enhanced == "5.3.4":
        return ApiError(413, reason, field)
    if 400 <= code < 500:
        retry = RETRY_IN.search(text)
        if retry is not None or enhanced == "4.7.1":
            return ApiError(429, reason, field, int(retry.group(1)) if retry else 60)
        return ApiError(503, reason, field, UNAVAILABLE_RETRY)
    if enhanced.startswith("5.1.") or code in (501, 553):
        return ApiError(400, reason, field)
    return ApiError(403, reason, field)
