"""The hand-off against a scripted SMTP server on loopback: where the server offers neither
PIPELINING nor CHUNKING (one command at a time, DATA with dot-stuffing, the message arriving byte
for byte), and where it drops the connection after the message (502: outcome unknown). Postfix
offers both extensions; tests/e2e/test_api.py covers that path."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from relayguard.services.api.compose import Outgoing, compose
from relayguard.services.api.errors import ApiError
from relayguard.services.api.handoff import Handoff, Relay

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0


@dataclass
class ScriptedSmtp:
    """One session at a time: EHLO offers AUTH only; DATA is answered, or the line dropped."""

    drop_after_data: bool = False
    commands: list[bytes] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    listener: socket.socket = field(default_factory=socket.socket)

    def start(self) -> int:
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        threading.Thread(target=self._serve, daemon=True).start()
        return int(self.listener.getsockname()[1])

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                conn.sendall(b"220 scripted ESMTP\r\n")
                self._session(conn, lines)

    def _session(self, conn: socket.socket, lines: object) -> None:
        assert hasattr(lines, "readline")
        while line := lines.readline():
            command = line.rstrip(b"\r\n")
            self.commands.append(command)
            verb = command.split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-scripted\r\n250-AUTH PLAIN\r\n250 SIZE 10240000\r\n")
            elif verb == b"AUTH":
                conn.sendall(b"235 2.7.0 Authentication successful\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.data.append(_read_data(lines))
                if self.drop_after_data:
                    return
                conn.sendall(b"250 2.0.0 Ok: queued as 4AbC123\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                conn.sendall(b"250 2.1.0 Ok\r\n")

    def stop(self) -> None:
        self.listener.close()


def _read_data(lines: object) -> bytes:
    assert hasattr(lines, "readline")
    chunks = []
    while (line := lines.readline()) not in (b".\r\n", b""):
        chunks.append(line)
    return b"".join(chunks)


@pytest.fixture
def server() -> Iterator[ScriptedSmtp]:
    scripted = ScriptedSmtp()
    yield scripted
    scripted.stop()


def _message(text: str) -> Outgoing:
    body = {"from": "a@example.com", "to": ["b@example.com", "c@example.com"], "text": text}
    return compose(body, frozenset(), T0)


def test_without_pipelining_or_chunking_data_is_dot_stuffed_and_arrives_whole(
    server: ScriptedSmtp,
) -> None:
    handoff = Handoff(Relay("127.0.0.1", server.start(), "relayguard-api", "secret", timeout=10))
    outgoing = _message("first\n.\n..\n.leading dot\nlast\n")
    try:
        assert handoff.send("erp", outgoing) == "4AbC123"
    finally:
        handoff.close()
    verbs = [c.split(b" ", 1)[0].upper() for c in server.commands]
    assert verbs == [b"EHLO", b"AUTH", b"MAIL", b"RCPT", b"RCPT", b"DATA", b"QUIT"]
    assert server.commands[2] == b"MAIL FROM:<a@example.com> AUTH=erp SIZE=%d BODY=8BITMIME" % (
        len(outgoing.data)
    )
    [stuffed] = server.data
    assert b"\r\n..\r\n...\r\n..leading dot\r\n" in stuffed  # RFC 5321 §4.5.2
    assert stuffed.replace(b"\r\n..", b"\r\n.") == outgoing.data


def test_a_connection_dropped_after_the_message_is_502_outcome_unknown(
    server: ScriptedSmtp,
) -> None:
    server.drop_after_data = True
    handoff = Handoff(Relay("127.0.0.1", server.start(), "relayguard-api", "secret", timeout=10))
    with pytest.raises(ApiError) as caught:
        handoff.send("erp", _message("x\n"))
    assert caught.value.status == 502
    assert caught.value.reason.startswith("the relay closed the connection after the message")
