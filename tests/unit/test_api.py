"""The send API's parts without Postfix: the JSON composer, SMTP-to-HTTP mapping, tokens, the
[api] section, the source check on the `api` listener and the OpenAPI description."""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import logging
import os
import signal
from pathlib import Path

import jsonschema
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from relayguard.checks import source as source_check
from relayguard.cli.api import expiry
from relayguard.config import Config, load_config
from relayguard.core.errors import ConfigError
from relayguard.core.message import Client
from relayguard.services.api import tokens
from relayguard.services.api.app import SendApi
from relayguard.services.api.compose import compose, parse_raw
from relayguard.services.api.errors import ApiError
from relayguard.services.api.handoff import Handoff, Relay, refusal_error
from relayguard.services.api.openapi import MESSAGE, document
from relayguard.services.http import reload_on_sighup
from relayguard.state.sqlite import SqliteStore

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0
HEADERS = frozenset({"x-priority"})
CONFIG = """
[state]
path = "{state}"
[api]
sasl_user = "relayguard-api"
[[sources]]
name = "erp"
sasl_users = ["erp-device"]
senders = ["erp@example.com"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "relayguard.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state.sqlite3"))
    return load_config(path)


def field_error(body: object) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as caught:
        compose(body, HEADERS, T0)
    return caught.value.status, caught.value.field, caught.value.reason


def test_compose_builds_the_message_and_keeps_bcc_in_the_envelope_only() -> None:
    outgoing = compose(
        {
            "from": "ERP <erp@example.com>",
            "to": "alice@example.com",
            "bcc": ["audit@example.com"],
            "subject": "Invoice",
            "text": "plain",
            "html": "<p>html</p>",
            "headers": {"X-Priority": "1"},
            "attachments": [{"filename": "a.pdf", "content": base64.b64encode(b"pdf").decode()}],
        },
        HEADERS,
        T0,
    )
    assert outgoing.mail_from == "erp@example.com"
    assert outgoing.recipients == ("alice@example.com", "audit@example.com")
    message = email.message_from_bytes(outgoing.data, policy=email.policy.default)
    assert message["Bcc"] is None and message["X-Priority"] == "1"
    assert message["Message-ID"] == outgoing.message_id
    assert outgoing.message_id.endswith("@example.com>")
    kinds = [part.get_content_type() for part in message.walk()]
    assert kinds == ["multipart/mixed", "multipart/alternative", "text/plain", "text/html",
                     "application/octet-stream"]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([], (400, "", "the body must be a JSON object")),
        ({"from": "a@example.com", "to": "b@example.com", "text": "x", "sender": "c"},
         (400, "sender", "unknown field")),
        ({"from": "a@example.com", "text": "x"},
         (400, "to", "at least one recipient in to, cc or bcc")),
        ({"from": "a@example.com", "to": "b@example.com"},
         (400, "text", "give text, html or both")),
        ({"from": "a@example.com", "to": ["b@example.com", 7], "text": "x"},
         (400, "to[1]", "must be a mailbox such as 'Name <user@example.com>'")),
        ({"from": "a@example.com", "to": "b@example.com", "subject": "x\r\nBcc: e@evil.test",
          "text": "x"}, (400, "subject", "control characters (CR, LF …) are not allowed")),
        ({"from": "a@example.com", "to": "b@example.com", "text": "x",
          "headers": {"Sender": "c@example.com"}},
         (400, "headers.Sender", "not an allowed custom header ([api] headers)")),
        ({"from": "a@example.com", "to": "b@example.com", "text": "x",
          "attachments": [{"filename": "a", "content": "***"}]},
         (400, "attachments[0].content", "is not valid base64")),
    ],
)  # fmt: skip
def test_compose_names_the_field_at_fault(body: object, expected: tuple[int, str, str]) -> None:
    assert field_error(body) == expected


def test_compose_refuses_two_mailboxes_in_from() -> None:
    status, field, _ = field_error(
        {"from": "a@example.com, b@example.com", "to": "c@example.com", "text": "x"}
    )
    assert (status, field) == (400, "from")


def test_raw_message_gets_a_message_id_and_its_envelope_from_the_header() -> None:
    raw = b"From: erp@example.com\r\nTo: A <alice@example.com>\r\nSubject: x\r\n\r\nbody\r\n"
    outgoing = parse_raw(raw, "", [], T0)
    assert (outgoing.mail_from, outgoing.recipients) == ("erp@example.com", ("alice@example.com",))
    assert outgoing.data.startswith(f"Message-ID: {outgoing.message_id}\r\n".encode())
    with pytest.raises(ApiError, match="no empty line"):
        parse_raw(b"From: erp@example.com", "", [], T0)


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (550, "5.7.1 source erp may not use From ceo@example.com", (403, None)),
        (451, "4.7.1 source erp is over 10 messages per minute: retry in 17 s", (429, 17)),
        (451, "4.7.0 clamd unavailable", (503, 30)),
        (552, "5.3.4 message too big", (413, None)),
        (553, "5.1.7 bad sender address", (400, None)),
    ],
)
def test_smtp_refusals_become_http_errors(
    code: int, text: str, expected: tuple[int, int | None]
) -> None:
    error = refusal_error(code, text, "from")
    assert (error.status, error.retry_after) == expected
    assert not error.reason[0].isdigit()  # the enhanced status code is not the reason


def test_postfix_unreachable_is_503_with_retry_after() -> None:
    handoff = Handoff(Relay("127.0.0.1", 1, "u", "p", timeout=1))
    outgoing = compose({"from": "a@example.com", "to": "b@example.com", "text": "x"}, HEADERS, T0)
    with pytest.raises(ApiError) as caught:
        handoff.send("erp", outgoing)
    assert (caught.value.status, caught.value.retry_after) == (503, 30)


def test_tokens_are_hashed_and_stop_when_revoked_expired_or_disabled(
    config: Config, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "state.sqlite3")
    text, record = tokens.create(store, "erp", "alice", T0, T0 + 60)
    assert text.split("_", 2)[2] not in record.digest and len(record.digest) == 64
    header = f"Bearer {text}"
    assert tokens.authenticate(store, config, header, T0) == tokens.Caller("erp", record.token_id)
    wrong = text[:-1] + ("A" if text[-1] != "A" else "B")
    for bad, reason in (
        ("Basic x", "send 'Authorization: Bearer rgapi_…' with a token"),
        (f"Bearer {wrong}", "the token is not valid"),
    ):
        with pytest.raises(ApiError) as caught:
            tokens.authenticate(store, config, bad, T0)
        assert (caught.value.status, caught.value.reason) == (401, reason)
    with pytest.raises(ApiError, match="has expired"):
        tokens.authenticate(store, config, header, T0 + 60)
    store.disable("erp", "test", "alice", T0)
    with pytest.raises(ApiError, match=r"source erp is disabled \(kill switch\)"):
        tokens.authenticate(store, config, header, T0)
    store.enable("erp", "alice")
    store.revoke_api_token(record.token_id, T0 + 1)
    with pytest.raises(ApiError, match="was revoked"):
        tokens.authenticate(store, config, header, T0 + 2)


def test_expiry_takes_durations_and_dates() -> None:
    assert expiry("90d", now=T0) == T0 + 90 * 86400
    assert expiry("30m", now=T0) == T0 + 1800
    with pytest.raises(argparse.ArgumentTypeError, match="in the past"):
        expiry("2020-01-01", now=T0)
    with pytest.raises(argparse.ArgumentTypeError, match="give a duration"):
        expiry("soon", now=T0)


def test_api_section_problems_are_located(tmp_path: Path) -> None:
    path = tmp_path / "relayguard.toml"
    wrong = 'sasl_user = "erp-device"\nrelay_host = "192.0.2.1"\naddress = "0.0.0.0"\n'
    wrong += 'headers = ["From"]'
    path.write_text(
        CONFIG.format(state=tmp_path / "s").replace('sasl_user = "relayguard-api"', wrong)
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = "\n".join(caught.value.problems)
    assert "api.relay_host: '192.0.2.1': Postfix's api listener must be on loopback" in text
    assert "api.address: '0.0.0.0' is not loopback: set tls_certificate and tls_key" in text
    assert "api.headers[0]: 'From' is set by the API or the relay only" in text
    assert "api.sasl_user: 'erp-device' is also a sasl_users entry of source 'erp'" in text


def test_on_the_api_listener_only_the_apis_login_names_the_source(config: Config) -> None:
    def identify(**client: str) -> str:
        found = source_check.identify(config, Client(address="127.0.0.1", **client))
        return f"{found.source.name if found.source else None}: {found.reason}"

    api = {"daemon_name": "api", "sasl_user": "relayguard-api"}
    assert identify(**api, auth_author="erp") == "erp: send API token"
    assert identify(**api, auth_author="nobody") == (
        "None: the send API named 'nobody', which is not a registered source"
    )
    assert identify(daemon_name="api", sasl_user="erp-device", auth_author="erp") == (
        "None: listener api is for the send API's login only, not SASL user 'erp-device'"
    )
    # Elsewhere {auth_author} means nothing: the login decides.
    assert identify(daemon_name="submission", sasl_user="erp-device", auth_author="x").startswith(
        "erp: SASL user 'erp-device'"
    )


def test_openapi_describes_every_route_and_its_schemas_hold(config: Config, tmp_path: Path) -> None:
    doc = document()
    app = SendApi(config, SqliteStore(tmp_path / "s"), Handoff(Relay("127.0.0.1", 1, "", ""))).app()
    routes = {route.path for route in app.routes if isinstance(route, Route)}
    assert routes == set(doc["paths"])
    with TestClient(app) as client:
        assert client.get("/v1/openapi.json").json() == doc
        unauthorized = client.post("/v1/messages", json={})
    assert unauthorized.status_code == 401
    jsonschema.Draft202012Validator.check_schema(MESSAGE)
    jsonschema.validate(
        {"from": "a@example.com", "to": ["b@example.com"], "text": "x",
         "attachments": [{"filename": "a", "content": "eA=="}]},
        MESSAGE,
    )  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"from": "a@example.com", "sender": "x"}, MESSAGE)
    refs = set()

    def collect(node: object) -> None:
        if isinstance(node, dict):
            refs.update(v for k, v in node.items() if k == "$ref")
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(doc)
    assert refs == {f"#/components/schemas/{name}" for name in doc["components"]["schemas"]}


def test_reload_swaps_the_config_and_refuses_one_without_api(
    config: Config, tmp_path: Path
) -> None:
    api = SendApi(config, SqliteStore(tmp_path / "s"), Handoff(Relay("127.0.0.1", 1, "", "")))
    path = tmp_path / "no-api.toml"
    path.write_text(
        CONFIG.format(state=tmp_path / "s").replace('[api]\nsasl_user = "relayguard-api"\n', "")
    )
    with pytest.raises(ConfigError, match="api: the send API needs"):
        api.reload(load_config(path))
    assert api.config is config
    newer = load_config(config.path)
    api.reload(newer)
    assert api.config is newer


def test_sighup_applies_a_valid_file_and_keeps_the_old_on_a_bad_one(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    applied: list[Config] = []
    previous = signal.getsignal(signal.SIGHUP)
    try:
        reload_on_sighup(config.path, applied.append)
        # Keys the API's user cannot read are not its business: the milter signs.
        keys = config.path.parent / "no-keys"
        dkim = f'[dkim]\nkey_directory = "{keys}"\ndomains = ["example.com"]\n'
        config.path.write_text(config.path.read_text() + dkim)
        os.kill(os.getpid(), signal.SIGHUP)
        assert [c.path for c in applied] == [config.path]
        assert applied[0].dkim is not None
        config.path.write_text(config.path.read_text() + "[api.extra]\n")
        with caplog.at_level(logging.INFO, logger="relayguard.services.http"):
            os.kill(os.getpid(), signal.SIGHUP)
        assert len(applied) == 1
        assert f"SIGHUP: {config.path} refused, keeping the running configuration" in caplog.text
        assert f"{config.path}: api.extra: unknown key" in caplog.text
    finally:
        signal.signal(signal.SIGHUP, previous)
