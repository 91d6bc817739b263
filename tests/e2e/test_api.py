"""The HTTP send API end to end: `relayguard api serve` (uvicorn) -> Postfix's loopback `api`
listener -> the real milter -> the sink, with DKIM verified against keys served by real DNS.

The API logs in to the `api` listener as its own SASL user and names the source in MAIL FROM's
AUTH= parameter; these tests also show that nobody else can use that path (docs/api.md).
"""

from __future__ import annotations

import base64
import re
import signal
import smtplib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from relayguard.dkim import keys as dkim_keys
from relayguard.state.sqlite import SqliteStore
from tests.e2e.conftest import DEVICE_PASSWORD, DEVICE_USER, StackFactory
from tests.support.api_process import ApiProcess
from tests.support.dkim_verifiers import verify_dkimpy
from tests.support.dns_server import DnsServer
from tests.support.milter_process import MilterProcess
from tests.support.stack import (
    DovecotSasl,
    RelayStack,
    free_ports,
    make_dir,
    make_message,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

RELAYGUARD = [sys.executable, "-m", "relayguard.cli"]
API_USER = "relayguard-api"
API_PASSWORD = "api secret for the tests only"

CONFIG = """
[relay]
mode = "enforce"
internal_domains = ["example.com"]
audit_log = "{audit}"

[milter]
workers = 1
socket_group = "postfix"

[state]
path = "{state}"

[dkim]
key_directory = "{keys}"
domains = ["example.com"]

[api]
port = {api_port}
relay_port = {relay_port}
sasl_user = "{api_user}"
sasl_password_file = "{password_file}"
max_message_bytes = {api_max_bytes}

[[sources]]
name = "erp"
sasl_users = ["erp-device"]
senders = ["erp@example.com"]

[[sources]]
name = "printer"
sasl_users = ["{user}"]
senders = ["scanner@example.com"]

[[sources]]
name = "bulk"
sasl_users = ["bulk-device"]
senders = ["bulk@example.com"]
rate_limits = {{ messages_per_minute = 2 }}
"""
# The API takes up to API_MAX_BYTES, Postfix (message_size_limit) only up to POSTFIX_MAX_BYTES:
# a message between the two is refused by Postfix and must still come back as 413.
API_MAX_BYTES = 600_000
POSTFIX_MAX_BYTES = 300_000


def relayguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RELAYGUARD, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def dovecot(e2e_dir: Path) -> Iterator[DovecotSasl]:
    """This module's Dovecot: the device account and the API's own account."""
    users = {DEVICE_USER: DEVICE_PASSWORD, API_USER: API_PASSWORD}
    with DovecotSasl(make_dir("dovecot-", e2e_dir), users) as server:
        server.start()
        yield server


@pytest.fixture(scope="module")
def keys(e2e_dir: Path) -> Path:
    directory = make_dir("dkim-keys-", e2e_dir)
    done = relayguard(
        "dkim", "generate", "--key-directory", str(directory), "--user", "",
        "--domain", "example.com", "--selector", "api2026", "--algorithm", "ed25519",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return directory


@pytest.fixture(scope="module")
def dns(keys: Path) -> Iterator[DnsServer]:
    found = dkim_keys.load_keys(keys, "example.com", ("active",))
    zone = "\n".join(dkim_keys.zone_line(k).replace(".example.com. ", " ", 1) for k in found)
    with DnsServer({"example.com": zone}) as server:
        yield server


@dataclass
class ApiRelay:
    stack: RelayStack
    api: ApiProcess
    config: Path
    state: Path
    relay_port: int

    def token(self, source: str) -> str:
        done = relayguard(
            "api", "token", "create", "--config", str(self.config), "--source", source
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def post(
        self, path: str, token: str, *, key: str | None = None, **kwargs: object
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        extra = kwargs.pop("headers", {})
        assert isinstance(extra, dict)
        return httpx.post(
            self.api.url + path,
            headers=headers | extra,
            timeout=30,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture
def api_relay(e2e_dir: Path, postfix_stack: StackFactory, keys: Path) -> Iterator[ApiRelay]:
    directory = make_dir("api-", e2e_dir)
    api_port, relay_port = free_ports(2)
    password_file = directory / "api-password"
    password_file.write_text(API_PASSWORD + "\n")
    password_file.chmod(0o600)
    config = directory / "relayguard.toml"
    state = directory / "state.sqlite3"
    config.write_text(
        CONFIG.format(
            audit=directory / "audit.jsonl",
            state=state,
            keys=keys,
            api_port=api_port,
            relay_port=relay_port,
            api_user=API_USER,
            password_file=password_file,
            user=DEVICE_USER,
            api_max_bytes=API_MAX_BYTES,
        )
    )
    milter = MilterProcess(config, directory / "milter.sock", directory / "milter.log").start()
    try:
        stack = postfix_stack(
            milter.socket_path,
            api_listen=f"127.0.0.1:{relay_port}",
            api_sasl_user=API_USER,
            message_size_limit=POSTFIX_MAX_BYTES,
        )
        with ApiProcess(config, api_port, directory / "api.log") as api:
            yield ApiRelay(stack, api, config, state, relay_port)
    finally:
        milter.stop()


def assert_nothing_queued_or_delivered(relay: ApiRelay) -> None:
    """Postfix writes its queue file before it answers 250 and removes it only after the sink
    answered: with the queue empty (listed twice: one listing can miss a file being moved), a
    wrongly accepted message would already be at the sink."""
    assert relay.stack.postfix.queue() == []
    assert relay.stack.postfix.queue() == []
    assert relay.stack.sink.messages == []


MESSAGE = {
    "from": "ERP <erp@example.com>",
    "to": ["alice@example.com"],
    "bcc": "audit@example.com",
    "subject": "Invoice 42",
    "text": "Your invoice is attached.\n",
    "html": "<p>Your invoice is attached.</p>",
    "headers": {"X-Priority": "1"},
    "attachments": [
        {
            "filename": "invoice-42.pdf",
            "content_type": "application/pdf",
            "content": base64.b64encode(b"%PDF-1.4 invoice 42").decode(),
        }
    ],
}


def test_json_message_is_delivered_dkim_signed(api_relay: ApiRelay, dns: DnsServer) -> None:
    token = api_relay.token("erp")
    answer = api_relay.post("/v1/messages", token, json=MESSAGE)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    [delivered] = api_relay.stack.sink.wait_for(1)
    message = delivered.message()
    assert message["Message-ID"] == body["message_id"]
    assert body["queue_id"]
    api_relay.stack.postfix.wait_for_log(re.escape(body["queue_id"]))  # postlogd writes it later
    assert message["X-Relayguard"].startswith("source=erp; mode=enforce; verdict=accept")
    assert message["X-Priority"] == "1" and message["Bcc"] is None
    assert sorted(delivered.rcpt_tos) == ["alice@example.com", "audit@example.com"]
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "invoice-42.pdf"
    assert attachment.get_content() == b"%PDF-1.4 invoice 42"
    [signature] = verify_dkimpy(delivered.data, dns)
    assert (signature.domain, signature.result) == ("example.com", "pass")


def test_lines_with_dots_and_unicode_arrive_as_sent(api_relay: ApiRelay) -> None:
    """The message goes over as one BDAT chunk (no dot-stuffing) or DATA (dot-stuffed): either
    way a line holding '.' or '..' and non-ASCII text arrive unchanged."""
    token = api_relay.token("erp")
    text = "first\n.\n..\n.leading dot\nGrüße, Jürgen\n"
    subject = "Rechnung Nr. 42 für März"
    answer = api_relay.post(
        "/v1/messages", token, json=MESSAGE | {"text": text, "html": None, "subject": subject}
    )
    assert answer.status_code == 202, answer.text
    [delivered] = api_relay.stack.sink.wait_for(1)
    message = delivered.message()
    assert message["Subject"] == subject
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().replace("\r\n", "\n") == text


def test_raw_message_is_delivered_dkim_signed(api_relay: ApiRelay, dns: DnsServer) -> None:
    token = api_relay.token("erp")
    raw = make_message("raw report", sender="erp@example.com", recipient="bob@example.com")
    answer = api_relay.post(
        "/v1/messages/raw",
        token,
        content=raw.as_bytes(),
        headers={"Content-Type": "message/rfc822"},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["message_id"] == raw["Message-ID"]
    [delivered] = api_relay.stack.sink.wait_for(1)
    assert delivered.rcpt_tos == ("bob@example.com",)
    assert delivered.subject == "raw report"
    [signature] = verify_dkimpy(delivered.data, dns)
    assert signature.result == "pass"


def test_spoofed_from_is_refused_with_the_milters_reason(api_relay: ApiRelay) -> None:
    token = api_relay.token("erp")
    answer = api_relay.post("/v1/messages", token, json=MESSAGE | {"from": "ceo@example.com"})
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert "erp" in error["reason"] and "ceo@example.com" in error["reason"]
    assert error["field"] == "from"
    assert_nothing_queued_or_delivered(api_relay)


def test_revoked_token_is_refused(api_relay: ApiRelay) -> None:
    token = api_relay.token("erp")
    token_id = token.split("_")[1]
    done = relayguard("api", "token", "revoke", "--config", str(api_relay.config), token_id)
    assert done.returncode == 0, done.stderr
    answer = api_relay.post("/v1/messages", token, json=MESSAGE)
    assert answer.status_code == 401
    assert answer.json()["error"]["reason"] == f"token {token_id} was revoked"
    listed = relayguard("api", "token", "list", "--config", str(api_relay.config), "--json")
    assert token.split("_", 2)[2] not in listed.stdout and '"digest"' not in listed.stdout


def test_disabled_sources_token_is_refused(api_relay: ApiRelay) -> None:
    token = api_relay.token("erp")
    SqliteStore(api_relay.state).disable("erp", "compromised ERP", "alice", time.time())
    answer = api_relay.post("/v1/messages", token, json=MESSAGE)
    assert answer.status_code == 403
    assert answer.json()["error"]["reason"] == "source erp is disabled (kill switch)"
    assert api_relay.stack.sink.attempts == 0


def test_idempotent_retry_sends_once(api_relay: ApiRelay) -> None:
    token = api_relay.token("erp")
    first = api_relay.post("/v1/messages", token, key="invoice-42", json=MESSAGE)
    again = api_relay.post("/v1/messages", token, key="invoice-42", json=MESSAGE)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    other = api_relay.post(
        "/v1/messages", token, key="invoice-42", json=MESSAGE | {"subject": "Invoice 43"}
    )
    assert other.status_code == 422
    assert other.json()["error"]["field"] == "Idempotency-Key"
    api_relay.stack.sink.wait_for(1)
    api_relay.stack.postfix.wait_queue_empty()  # a second copy would be at the sink by now
    assert len(api_relay.stack.sink.messages) == 1


def test_postfix_down_is_503_and_nothing_is_lost(api_relay: ApiRelay) -> None:
    token = api_relay.token("erp")
    before = api_relay.post("/v1/messages", token, json=MESSAGE | {"subject": "before"})
    assert before.status_code == 202
    api_relay.stack.postfix.stop()
    during = api_relay.post(
        "/v1/messages", token, key="during", json=MESSAGE | {"subject": "during"}
    )
    assert during.status_code == 503, during.text
    assert int(during.headers["Retry-After"]) > 0
    api_relay.stack.postfix.start()
    retried = api_relay.post(
        "/v1/messages", token, key="during", json=MESSAGE | {"subject": "during"}
    )
    assert retried.status_code == 202, retried.text
    api_relay.stack.postfix.flush()
    api_relay.stack.sink.wait_for(2)
    api_relay.stack.postfix.wait_queue_empty()  # a third copy would be at the sink by now
    subjects = Counter(m.subject for m in api_relay.stack.sink.messages)
    # The retry with the same key sent once. "before" may have been in delivery when Postfix
    # stopped: if the stop came between the sink's 250 and Postfix marking it done, Postfix
    # delivers it again (at least once, never lost), which the API cannot and need not prevent.
    assert subjects["during"] == 1 and subjects["before"] >= 1, subjects
    assert set(subjects) == {"before", "during"}


def _send_on(port: int, user: str | None, password: str, source: str) -> tuple[int, str]:
    """MAIL FROM erp@example.com AUTH=SOURCE on PORT, as USER (None: no login); the refusal."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo()
        if user is not None:
            smtp.login(user, password)
        code, text = smtp.mail("erp@example.com", [f"AUTH={source}"])
        if code == 250:
            code, text = smtp.rcpt("alice@example.com")
        return code, text.decode()


def test_only_the_api_can_name_a_source(api_relay: ApiRelay) -> None:
    """The api listener refuses anyone but the API's login, even a real device's; {auth_author}
    means nothing on the submission ports, where the API's login is no source at all."""
    port = api_relay.relay_port
    refused = [
        _send_on(port, None, "", "erp"),
        _send_on(port, DEVICE_USER, DEVICE_PASSWORD, "erp"),
    ]
    assert refused == [
        (550, "5.7.1 listener api is for the send API's login only, not an unauthenticated client"),
        (
            550,
            f"5.7.1 listener api is for the send API's login only, not SASL user '{DEVICE_USER}'",
        ),
    ]
    with api_relay.stack.submission(login=False) as smtp:
        smtp.login(DEVICE_USER, DEVICE_PASSWORD)
        code, text = smtp.mail("erp@example.com", ["AUTH=erp"])
        if code == 250:
            code, text = smtp.rcpt("alice@example.com")
        assert code == 550 and b"printer" in text, text  # still the printer, not erp
    with api_relay.stack.submission(login=False) as smtp:
        smtp.login(API_USER, API_PASSWORD)
        code, text = smtp.mail("erp@example.com", ["AUTH=erp"])
        assert (code, text.decode()) == (
            550,
            f"5.7.1 SASL user '{API_USER}' is not registered to any source",
        )
    assert_nothing_queued_or_delivered(api_relay)


def test_a_message_over_the_apis_limit_is_413(api_relay: ApiRelay) -> None:
    token = api_relay.token("erp")
    raw = make_message("big", sender="erp@example.com", recipient="bob@example.com")
    raw.set_content("x" * (API_MAX_BYTES + 1000))
    answer = api_relay.post(
        "/v1/messages/raw",
        token,
        content=raw.as_bytes(),
        headers={"Content-Type": "message/rfc822"},
    )
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["reason"] == f"the request exceeds {API_MAX_BYTES} bytes"
    assert api_relay.stack.sink.attempts == 0


def test_a_message_over_postfixs_limit_is_413_with_postfixs_reason(api_relay: ApiRelay) -> None:
    """Under the API's limit, over Postfix's message_size_limit: Postfix's 552 5.3.4 is a 413."""
    token = api_relay.token("erp")
    text = "line of a long report\n" * (POSTFIX_MAX_BYTES // 20)
    answer = api_relay.post("/v1/messages", token, json=MESSAGE | {"text": text})
    assert answer.status_code == 413, answer.text
    error = answer.json()["error"]
    assert error == {"status": 413, "reason": "Message size exceeds fixed limit", "field": "from"}
    api_relay.stack.postfix.wait_for_log(r"reject: MAIL from \S+: 552 5\.3\.4 Message size exceeds")
    assert_nothing_queued_or_delivered(api_relay)


def test_a_source_over_its_rate_limit_gets_429_with_retry_after(api_relay: ApiRelay) -> None:
    token = api_relay.token("bulk")
    message = MESSAGE | {"from": "bulk@example.com"}
    first, second, third = (
        api_relay.post("/v1/messages", token, json=message | {"subject": f"n{i}"}) for i in range(3)
    )
    assert [first.status_code, second.status_code] == [202, 202], second.text
    assert third.status_code == 429, third.text
    retry_after = int(third.headers["Retry-After"])
    reason = third.json()["error"]["reason"]
    assert reason.startswith("source bulk is over its limit of 2 messages per minute")
    assert retry_after > 0 and reason.endswith(f"retry in {retry_after} s")  # the milter's advice
    api_relay.stack.sink.wait_for(2)
    api_relay.stack.postfix.wait_queue_empty()  # a third message would be at the sink by now
    assert sorted(m.subject for m in api_relay.stack.sink.messages) == ["n0", "n1"]


def _wait_for_log(api: ApiProcess, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := api.log.read_text()):
        assert time.monotonic() < deadline, log
        time.sleep(0.1)
    return log


def test_sighup_rereads_the_config_and_a_bad_one_keeps_the_old(api_relay: ApiRelay) -> None:
    token = api_relay.token("erp")
    tagged = MESSAGE | {"headers": {"X-Campaign": "spring"}}
    assert api_relay.post("/v1/messages", token, json=tagged).status_code == 400
    original = api_relay.config.read_text()
    allowing = original.replace("[api]\n", '[api]\nheaders = ["X-Campaign"]\n', 1)
    api_relay.config.write_text(allowing)
    process = api_relay.api.process
    assert process is not None
    process.send_signal(signal.SIGHUP)
    _wait_for_log(api_relay.api, f"SIGHUP: {api_relay.config} reloaded")
    assert api_relay.post("/v1/messages", token, json=tagged).status_code == 202

    api_relay.config.write_text(allowing.replace("[api]\n", "[api]\ncolour = 1\n", 1))
    process.send_signal(signal.SIGHUP)
    log = _wait_for_log(api_relay.api, "refused, keeping the running configuration")
    assert f"{api_relay.config}: api.colour: unknown key" in log
    assert process.poll() is None
    again = api_relay.post("/v1/messages", token, json=tagged | {"subject": "after"})
    assert again.status_code == 202, again.text
    api_relay.stack.sink.wait_for(2)
