"""The [spam] check with Rspamd faked (thresholds, verdicts, failures), and the Rspamd client
against a scripted HTTP server on loopback (request headers, answers, timeouts)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from relayguard.checks import Subject, spam
from relayguard.config import Config, load_config
from relayguard.config.spam import SpamSettings, SpamThresholds
from relayguard.core.errors import ConfigError
from relayguard.core.message import Client, Envelope, message_from_bytes
from relayguard.core.verdict import Action
from relayguard.engine import registry
from relayguard.scanners.rspamd import (
    RspamdClient,
    RspamdUnavailable,
    ScanRequest,
    SpamResult,
    Symbol,
    parse_answer,
)

pytestmark = pytest.mark.unit

CONFIG = """
[[sources]]
name = "erp"
sasl_users = ["erp"]
senders = ["@example.com"]

[[sources]]
name = "newsletter"
sasl_users = ["newsletter"]
senders = ["@example.com"]
"""

SYMBOLS = (Symbol("BAD_SUBJECT", 4.0), Symbol("PHISHING", 3.5), Symbol("MIME_GOOD", -0.1))


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "relayguard.toml"
    path.write_text(CONFIG)
    return load_config(path)


def subject(config: Config, source: str = "erp") -> Subject:
    msg = EmailMessage()
    msg["From"] = "erp@example.com"
    msg["To"] = "alice@example.com"
    msg["Subject"] = "invoice"
    msg.set_content("Invoice attached.")
    client = Client(address="192.0.2.7", sasl_user=source)
    envelope = Envelope(client, "erp@example.com", ("alice@example.com", "bob@example.net"), "Q1")
    parsed = message_from_bytes(msg.as_bytes().replace(b"\n", b"\r\n"), envelope)
    return Subject(config, config.source(source), envelope, message=parsed)


def scanner(score: float, seen: list[tuple[bytes, ScanRequest]] | None = None) -> spam.Scanner:
    def scan(data: bytes, request: ScanRequest) -> SpamResult:
        if seen is not None:
            seen.append((data, request))
        return SpamResult(score, SYMBOLS, "add header")

    return scan


# --- the check ------------------------------------------------------------------------------


def test_rspamd_is_told_source_user_client_and_envelope(config: Config) -> None:
    seen: list[tuple[bytes, ScanRequest]] = []
    spam.make_check(SpamSettings(), scanner(0.0, seen))(subject(config))
    data, request = seen[0]
    assert data.startswith(b"From: erp@example.com\r\n") and b"\r\n\r\nInvoice attached." in data
    assert request == ScanRequest(
        source="erp",
        client_address="192.0.2.7",
        sasl_user="erp",
        mail_from="erp@example.com",
        recipients=("alice@example.com", "bob@example.net"),
        queue_id="Q1",
    )


def test_score_above_reject_threshold_is_refused_with_the_score(config: Config) -> None:
    verdict = spam.make_check(SpamSettings(), scanner(16.25))(subject(config))
    assert verdict.action is Action.REJECT
    assert str(verdict.smtp_reply) == "550 5.7.1 message looks like spam (score 16.25/15)"
    assert verdict.facts == {"score": 16.25, "symbols": ("BAD_SUBJECT", "PHISHING", "MIME_GOOD")}
    assert "BAD_SUBJECT(4), PHISHING(3.5)" in verdict.reason


def test_score_above_tag_threshold_adds_the_spam_header(config: Config) -> None:
    verdict = spam.make_check(SpamSettings(), scanner(7.5))(subject(config))
    assert verdict.action is Action.TAG
    assert verdict.headers == (
        ("X-Relayguard-Spam", "score=7.5; symbols=BAD_SUBJECT,PHISHING,MIME_GOOD"),
    )


def test_low_score_is_accepted_and_still_audited(config: Config) -> None:
    verdict = spam.make_check(SpamSettings(), scanner(1.2))(subject(config))
    assert (verdict.action, verdict.headers) == (Action.ACCEPT, ())
    assert verdict.facts["score"] == 1.2
    assert verdict.reason.startswith("score 1.2 (tag threshold 6)")


def test_thresholds_are_per_source(config: Config) -> None:
    strict = SpamThresholds(tag_score=2.0, quarantine_score=5.0, reject_score=8.0)
    settings = SpamSettings(by_source={"newsletter": strict})
    check = spam.make_check(settings, scanner(7.5))
    assert check(subject(config, "erp")).action is Action.TAG
    held = check(subject(config, "newsletter"))
    assert held.action is Action.QUARANTINE
    assert held.reason.startswith("spam score 7.5 reaches the quarantine threshold 5")


@pytest.mark.parametrize("action", [Action.TAG, Action.TEMPFAIL, Action.QUARANTINE])
def test_rspamd_unavailable_is_the_failure_action_never_clean(
    config: Config, action: Action
) -> None:
    def scan(data: bytes, request: ScanRequest) -> SpamResult:
        raise RspamdUnavailable("Rspamd at http://127.0.0.1:1 unreachable: Connection refused")

    verdict = spam.make_check(SpamSettings(failure_action=action), scan)(subject(config))
    assert (verdict.action, verdict.error) == (action, True)
    assert verdict.reason.startswith("spam scanner unavailable (Rspamd at http://127.0.0.1:1")
    if action is Action.TAG:
        assert verdict.headers == (("X-Relayguard-Spam", "unscored; scanner unavailable"),)
    if action is Action.TEMPFAIL:
        assert str(verdict.smtp_reply) == "451 4.7.0 spam scanner unavailable, try again later"


# --- Rspamd's answer ------------------------------------------------------------------------


def test_answer_keeps_score_and_symbol_names_only() -> None:
    body = json.dumps(
        {
            "score": 9.0,
            "action": "add header",
            "symbols": {
                "PHISHED_URL": {"score": 5.0, "options": ["http://secret.example/token"]},
                "R_BAD\r\nX-Injected": {"score": 4.0},
                "ZERO": {"score": 0.0},
            },
        }
    ).encode()
    result = parse_answer(body)
    assert result.score == 9.0
    assert [s.name for s in result.top()] == ["PHISHED_URL", "R_BADX-Injected", "ZERO"]
    assert "secret" not in repr(result)


@pytest.mark.parametrize(
    "body",
    [
        b"<html>busy</html>",
        b"[]",
        b'{"action": "no action"}',
        b'{"score": "high"}',
        b'{"score": 3.0, "action": "soft reject"}',
    ],
)
def test_unusable_answer_is_unavailable_not_clean(body: bytes) -> None:
    with pytest.raises(RspamdUnavailable):
        parse_answer(body)


def test_request_headers_drop_control_characters() -> None:
    request = ScanRequest(source="erp", sasl_user="erp\r\nPass: all", recipients=("a@x\n",))
    headers = dict(request.headers())
    assert headers["User"] == b"erpPass: all"
    assert headers["Rcpt"] == b"a@x"
    assert headers["From"] == b"<>"
    assert headers["Relayguard-Source"] == b"erp"


# --- the client against a scripted server ---------------------------------------------------

Script = Callable[[socket.socket], None]


@pytest.fixture
def http_server() -> Iterator[Callable[[Script], str]]:
    """A one-connection-at-a-time HTTP server on loopback running `script` per connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    threads: list[threading.Thread] = []

    def serve(script: Script) -> str:
        def loop() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    script(conn)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        threads.append(thread)
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield serve
    listener.close()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        ).split(b":")[1]
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head


def test_client_posts_to_checkv2_with_headers(http_server: Callable[[Script], str]) -> None:
    heads: list[bytes] = []

    def answer(conn: socket.socket) -> None:
        heads.append(read_request(conn))
        payload = b'{"score": 1.5, "action": "no action", "symbols": {}}'
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (len(payload), payload)
        )

    client = RspamdClient(http_server(answer), timeout=5)
    request = ScanRequest(source="erp", client_address="192.0.2.7", recipients=("a@x", "b@y"))
    assert client.check(b"Subject: x\r\n\r\nbody", request).score == 1.5
    assert client.check(b"Subject: y\r\n\r\nbody", request).score == 1.5  # a fresh connection
    lines = heads[0].split(b"\r\n")
    assert lines[0] == b"POST /checkv2 HTTP/1.1"
    assert {b"Relayguard-Source: erp", b"IP: 192.0.2.7", b"Rcpt: a@x", b"Rcpt: b@y"} <= set(lines)


def test_client_timeout_is_unavailable(http_server: Callable[[Script], str]) -> None:
    done = threading.Event()

    def stall(conn: socket.socket) -> None:
        read_request(conn)
        done.wait(5)

    client = RspamdClient(http_server(stall), timeout=0.5)
    try:
        with pytest.raises(RspamdUnavailable, match=r"timed out after 0\.5s"):
            client.check(b"Subject: x\r\n\r\nbody", ScanRequest())
    finally:
        done.set()


def test_client_http_error_is_unavailable(http_server: Callable[[Script], str]) -> None:
    def fail(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 500 Internal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    with pytest.raises(RspamdUnavailable, match="HTTP 500"):
        RspamdClient(http_server(fail), timeout=5).check(b"x", ScanRequest())


def test_client_refused_connection_is_unavailable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(RspamdUnavailable, match="unreachable"):
        RspamdClient(f"http://127.0.0.1:{port}", timeout=2).check(b"x", ScanRequest())


# --- configuration and registration --------------------------------------------------------

SPAM_CONFIG = """
[spam]
url = "http://127.0.0.1:11333"
timeout = 5
quarantine_score = 9.5

[[spam_policies]]
name = "bulk"
tag_score = 2
reject_score = 8

[[sources]]
name = "newsletter"
sasl_users = ["newsletter"]
senders = ["@example.com"]
spam_policy = "bulk"

[[sources]]
name = "erp"
sasl_users = ["erp"]
senders = ["@example.com"]
"""


def test_spam_config_gives_each_source_its_policy(tmp_path: Path) -> None:
    path = tmp_path / "relayguard.toml"
    path.write_text(SPAM_CONFIG)
    config = load_config(path)
    assert config.spam is not None
    assert (config.spam.timeout, config.spam.failure_action) == (5, Action.TAG)
    default = config.spam.thresholds_for("erp")
    assert (default.tag_score, default.quarantine_score, default.reject_score) == (6.0, 9.5, 15.0)
    bulk = config.spam.thresholds_for("newsletter")
    assert (bulk.tag_score, bulk.quarantine_score, bulk.reject_score) == (2.0, None, 8.0)
    names = [check.name for check in registry.build_checks(config)]
    assert names[-1] == "spam"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            SPAM_CONFIG.replace('"bulk"\ntag', '"other"\ntag'),
            "sources[0].spam_policy: no [[spam_policies]] entry named 'bulk'",
        ),
        (
            SPAM_CONFIG.replace("http://127.0.0.1:11333", "127.0.0.1:11333"),
            "spam.url: must be an http:// or https:// URL of Rspamd, got '127.0.0.1:11333'",
        ),
        (
            SPAM_CONFIG.replace("tag_score = 2", 'tag_score = "2"'),
            "spam_policies[0].tag_score: expected a number, got string",
        ),
        (
            SPAM_CONFIG.replace("[spam]\n", "[unused]\n")
            .replace("[unused]", "", 1)
            .replace('url = "http://127.0.0.1:11333"\ntimeout = 5\nquarantine_score = 9.5\n', ""),
            "spam: missing: spam policies need a [spam] section (Rspamd's url)",
        ),
        (
            SPAM_CONFIG.replace("failure_action", "x").replace(
                "timeout = 5", 'failure_action = "accept"'
            ),
            "spam.failure_action: must be one of",
        ),
    ],
)
def test_spam_config_problems_are_located(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "relayguard.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert any(problem in line for line in raised.value.problems), raised.value.problems
