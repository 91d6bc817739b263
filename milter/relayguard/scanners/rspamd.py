"""A small client for Rspamd's HTTP protocol: POST the raw message to ``/checkv2``, read the score.

Rspamd's normal worker (port 11333) and its controller (11334) both answer ``/checkv2``. The
request headers tell Rspamd what it cannot see in the message (Rspamd's protocol documentation):
``IP`` (the client address), ``User`` (the SASL login: Rspamd treats the mail as authenticated),
``From`` and one ``Rcpt`` per recipient (the envelope), ``Queue-Id``, plus ``Relayguard-Source``
(the relayguard source name) for Rspamd rules and settings (``task:get_request_header``,
``request_header`` in settings.conf).

The answer is JSON: ``score``, ``action`` and ``symbols`` (name -> {score, options...}). Only the
score, the action word and the symbol *names* are kept: symbol options can quote message content
(URLs, addresses), which must not reach logs. Anything but a clear answer (unreachable, timeout, an
HTTP error, unparsable JSON, a "soft reject" such as Rspamd's own task timeout) raises
RspamdUnavailable: the caller must never treat it as clean.

One HTTP connection per thread (the milter runs each SMTP connection in its own thread), reused
while Rspamd keeps it open (Rspamd 3.4's workers close it after each reply; later ones keep it).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from relayguard.core.errors import RelayguardError

SOURCE_HEADER = "Relayguard-Source"
MAX_ANSWER = 4 * 1024 * 1024  # a JSON answer with every symbol is a few KB
# Rspamd's action words (actions.conf) that mean "this scan did not finish": never clean.
UNFINISHED_ACTIONS = frozenset({"soft reject"})
SYMBOL_NAME = re.compile(r"[^A-Za-z0-9_.-]")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

RequestHeaders = list[tuple[str, bytes]]


class RspamdUnavailable(RelayguardError):
    """Rspamd was unreachable, timed out or gave no usable answer: the message is unscored."""


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    score: float


@dataclass(frozen=True, slots=True)
class SpamResult:
    """Rspamd's score and the symbols that made it, highest contribution first."""

    score: float
    symbols: tuple[Symbol, ...] = ()
    # Rspamd's own action word, for the reason only: relayguard's thresholds decide.
    action: str = ""

    def top(self, limit: int = 20) -> tuple[Symbol, ...]:
        """The symbols that added most, at most `limit` of them. Zero-score symbols stay: some
        decide alone (GTUBE forces Rspamd's reject score and scores 0 itself)."""
        return self.symbols[:limit]


@dataclass(frozen=True, slots=True)
class ScanRequest:
    """What Rspamd is told about the message besides its content."""

    source: str = ""
    client_address: str = ""
    sasl_user: str = ""
    mail_from: str = ""
    recipients: tuple[str, ...] = ()
    queue_id: str = ""

    def headers(self) -> RequestHeaders:
        """Rspamd's request headers; values are client data, so control characters are dropped
        (no header injection) and empty values are left out."""
        pairs = [
            (SOURCE_HEADER, self.source),
            ("IP", self.client_address),
            ("User", self.sasl_user),
            # RFC 5321 null path: Rspamd reads an empty From header as no sender.
            ("From", self.mail_from or "<>"),
            ("Queue-Id", self.queue_id),
            *(("Rcpt", recipient) for recipient in self.recipients),
        ]
        return [(name, _header_value(value)) for name, value in pairs if value]


class RspamdClient:
    """POSTs messages to ``URL/checkv2``; `url` is ``http://host:port`` (optionally a path
    prefix, e.g. behind a proxy) or ``https://…``."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        self.url = url
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = parts.path.rstrip("/") + "/checkv2"
        self._local = threading.local()

    def check(self, message: bytes, request: ScanRequest) -> SpamResult:
        """Score `message`; raise RspamdUnavailable for anything that is not a clear answer."""
        try:
            status, body = self._post(message, request.headers())
        except TimeoutError:
            self._drop()
            raise RspamdUnavailable(
                f"Rspamd at {self.url} timed out after {self.timeout:g}s"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            detail = getattr(exc, "strerror", None) or type(exc).__name__
            raise RspamdUnavailable(f"Rspamd at {self.url} unreachable: {detail}") from None
        if status != 200:
            raise RspamdUnavailable(f"Rspamd at {self.url} answered HTTP {status}")
        return parse_answer(body)

    def _post(self, message: bytes, headers: RequestHeaders) -> tuple[int, bytes]:
        """One request; once more on a fresh connection when a reused one turns out closed."""
        connection = self._connection()
        reused = connection.sock is not None
        try:
            return self._exchange(connection, message, headers)
        except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest):
            if not reused:
                raise
            self._drop()
            return self._exchange(self._connection(), message, headers)

    def _exchange(
        self, connection: http.client.HTTPConnection, message: bytes, headers: RequestHeaders
    ) -> tuple[int, bytes]:
        connection.putrequest("POST", self._path, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(message)))
        connection.endheaders(message)
        response = connection.getresponse()
        body = response.read(MAX_ANSWER + 1)
        if len(body) > MAX_ANSWER:
            self._drop()
            raise RspamdUnavailable(f"Rspamd at {self.url} answered more than {MAX_ANSWER} bytes")
        if response.will_close:
            self._drop()
        return response.status, body

    def _connection(self) -> http.client.HTTPConnection:
        """This thread's connection; a forked worker never reuses its parent's socket."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid() or local.connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            local.connection = kind(self._host, self._port, timeout=self.timeout)
            local.pid = os.getpid()
        connection: http.client.HTTPConnection = local.connection
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = None


def parse_answer(body: bytes) -> SpamResult:
    """The score, action and symbol names of a /checkv2 answer, or RspamdUnavailable."""
    try:
        answer = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RspamdUnavailable("Rspamd's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise RspamdUnavailable("Rspamd's answer is not a JSON object")
    score = answer.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise RspamdUnavailable("Rspamd's answer has no score")
    action = str(answer.get("action", ""))
    if action in UNFINISHED_ACTIONS:
        raise RspamdUnavailable(f"Rspamd did not finish the scan (action {action!r})")
    return SpamResult(float(score), _symbols(answer.get("symbols")), action)


def _symbols(raw: Any) -> tuple[Symbol, ...]:
    if not isinstance(raw, Mapping):
        return ()
    symbols = []
    for name, fields in raw.items():
        value = fields.get("score", 0.0) if isinstance(fields, Mapping) else 0.0
        score = float(value) if isinstance(value, (int, float)) else 0.0
        # A symbol name comes from Rspamd's rules, but it goes into headers and logs: keep it tame.
        symbols.append(Symbol(SYMBOL_NAME.sub("", str(name))[:64], score))
    return tuple(sorted(symbols, key=lambda s: (-s.score, s.name)))


def _header_value(text: str) -> bytes:
    return CONTROL.sub("", text).encode("utf-8", "replace")
