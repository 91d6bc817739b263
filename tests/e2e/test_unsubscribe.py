"""End to end: RFC 8058 one-click unsubscribe through real Postfix, the aiohttp endpoint and the
SQLite state store: delivered with the headers -> POST -> the next message refused at RCPT."""

from __future__ import annotations

import re
import smtplib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from relayguard.state.sqlite import SqliteStore
from relayguard.transforms.unsubscribe import Target, read_token
from tests.e2e.conftest import DEVICE_USER, StackFactory
from tests.support.milter_process import MilterProcess
from tests.support.stack import RelayStack, free_port, make_dir, make_message

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CONFIG = """
[relay]
internal_domains = ["example.com"]
audit_log = "{directory}/audit.jsonl"

[milter]
workers = 1
socket_group = "postfix"

[state]
path = "{directory}/state.sqlite3"

[unsubscribe]
sources = ["newsletter"]
base_url = "https://relay.example.com"
mailto = "unsubscribe@example.com"
secrets = ["a-new-secret-0123456789", "the-old-secret-0123456789"]
address = "127.0.0.1"
port = {port}

[[sources]]
name = "newsletter"
sasl_users = ["{user}"]
senders = ["news@example.com"]
"""


class Bulk:
    def __init__(self, stack: RelayStack, port: int, state: Path) -> None:
        self.stack = stack
        self.port = port
        self.state = state

    def send(self, recipient: str) -> None:
        with self.stack.submission() as smtp:
            smtp.send_message(
                make_message("news", sender="news@example.com", recipient=recipient),
                to_addrs=[recipient],
            )

    def http(self, method: str, path: str, body: bytes | None = None) -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, method=method
        )
        if body is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def suppressed(self, recipient: str) -> bool:
        store = SqliteStore(self.state)
        try:
            return store.is_suppressed("newsletter", recipient)
        finally:
            store.close()


@pytest.fixture
def bulk(e2e_dir: Path, postfix_stack: StackFactory) -> Iterator[Callable[[], Bulk]]:
    processes: list[tuple[MilterProcess, subprocess.Popen[bytes]]] = []

    def start() -> Bulk:
        directory = make_dir("unsubscribe-", e2e_dir)
        port = free_port()
        config = directory / "relayguard.toml"
        config.write_text(CONFIG.format(directory=directory, port=port, user=DEVICE_USER))
        milter = MilterProcess(config, directory / "milter.sock", directory / "milter.log")
        milter.start()
        with (directory / "unsubscribe.log").open("ab") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "relayguard.cli", "unsubscribe-server", "--config",
                 str(config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        processes.append((milter, server))
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, (directory / "unsubscribe.log").read_text()
            assert time.monotonic() < deadline, "unsubscribe-server did not listen"
            time.sleep(0.05)
        return Bulk(postfix_stack(milter.socket_path), port, directory / "state.sqlite3")

    yield start
    for milter, server in processes:
        server.terminate()
        server.wait(timeout=10)
        milter.stop()


def test_one_click_unsubscribe_refuses_the_next_message_at_rcpt(
    bulk: Callable[[], Bulk],
) -> None:
    relay = bulk()
    relay.send("bob@example.com")
    delivered = relay.stack.sink.wait_for(1)[0].message()
    assert delivered["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    header = str(delivered["List-Unsubscribe"])
    match = re.fullmatch(
        r"<https://relay\.example\.com(/u/([\w.-]+))>, <mailto:unsubscribe@example\.com"
        r"\?subject=unsubscribe%20([\w.-]+)>",
        header,
    )
    assert match is not None, header
    path, token = match.group(1), match.group(2)
    assert match.group(3) == token

    # A link scanner's GET shows the button and changes nothing.
    status, page = relay.http("GET", path)
    assert status == 200 and '<form method="post">' in page
    assert not relay.suppressed("bob@example.com")

    # A forged token and a POST without the RFC 8058 body are refused.
    forged = path[:-2] + ("AA" if not path.endswith("AA") else "BB")
    assert relay.http("POST", forged, b"List-Unsubscribe=One-Click")[0] == 400
    assert relay.http("POST", path, b"unsubscribe=yes")[0] == 400
    assert not relay.suppressed("bob@example.com")

    # The one click, twice: idempotent.
    for _ in range(2):
        status, page = relay.http("POST", path, b"List-Unsubscribe=One-Click")
        assert status == 200 and "will get no more mail" in page
    assert relay.suppressed("bob@example.com")
    # The token names the recipient: neither may reach the endpoint's log (no access log).
    log = (relay.state.parent / "unsubscribe.log").read_text()
    assert token not in log and "bob@example.com" not in log

    with relay.stack.submission() as smtp:
        assert smtp.mail("news@example.com")[0] == 250
        code, text = smtp.rcpt("bob@example.com")
        assert (code, text.decode()) == (
            550,
            "5.7.1 <bob@example.com> unsubscribed from source newsletter",
        )
        assert smtp.rcpt("carol@example.com")[0] == 250  # others still get it


def test_bulk_message_takes_one_recipient_per_transaction(bulk: Callable[[], Bulk]) -> None:
    relay = bulk()
    message = make_message("news", sender="news@example.com", recipient="a@example.com")
    with relay.stack.submission() as smtp:
        refused = smtp.send_message(message, to_addrs=["a@example.com", "b@example.com"])
    assert refused == {
        "b@example.com": (
            452,
            b"4.5.3 one recipient per message for bulk source newsletter (unsubscribe link)",
        )
    }
    (delivered,) = relay.stack.sink.wait_for(1)
    assert delivered.rcpt_tos == ("a@example.com",)
    token = str(delivered.message()["List-Unsubscribe"]).split("/u/")[1].split(">")[0]
    secrets = ("a-new-secret-0123456789",)
    assert read_token(token, secrets) == Target("newsletter", "", "a@example.com")


def test_refused_recipient_raises_for_a_single_recipient_message(
    bulk: Callable[[], Bulk],
) -> None:
    relay = bulk()
    store = SqliteStore(relay.state)
    try:
        store.suppress("newsletter", "Dave@Example.com", "test", time.time())
    finally:
        store.close()
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        relay.send("dave@example.com")
