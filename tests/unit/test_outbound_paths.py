"""Outbound paths: the configuration, the X-Relayguard-Path header only for mail that passed
policy (in both modes), DLP's enforced-TLS route kept on the source's path, and the Postfix
templates' rendering."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.support.stack import render

from relayguard.config import Config, load_config
from relayguard.core.errors import ConfigError
from relayguard.core.message import Client, message_from_bytes
from relayguard.core.verdict import Action, Decision
from relayguard.engine.runtime import Runtime
from relayguard.engine.transaction import Transaction

pytestmark = pytest.mark.unit

CONFIG = """
[relay]
mode = "{mode}"
internal_domains = ["example.com"]

[[outbound_paths]]
name = "bulk"
bind_address = "192.0.2.25"
helo_name = "bulk.example.com"

[[outbound_paths]]
name = "partner"
relayhost = "[smtp.partner.example]:587"

[[sources]]
name = "newsletter"
sasl_users = ["newsletter"]
senders = ["news@example.com"]
outbound_path = "bulk"

[[sources]]
name = "erp"
sasl_users = ["erp"]
senders = ["erp@example.com"]
"""

CARD_PROFILE = """
[[dlp_profiles]]
name = "route"
detectors = { card_number = 1 }
action = "encrypt-route"
"""


def raw(from_value: str, body: str = "The news.") -> bytes:
    return (
        f"From: {from_value}\r\nTo: alice@example.com\r\nSubject: news\r\n"
        f"Message-ID: <n-1@example.com>\r\nDate: Mon, 23 Nov 2026 15:00:00 +0000\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture
def config(tmp_path: Path) -> Callable[..., Config]:
    def make(mode: str = "enforce", extra: str = "", source_extra: str = "") -> Config:
        path = tmp_path / f"{mode}.toml"
        text = CONFIG.format(mode=mode).replace(
            'outbound_path = "bulk"\n', f'outbound_path = "bulk"\n{source_extra}'
        )
        path.write_text(text + extra)
        return load_config(path)

    return make


def send(config: Config, user: str, message: bytes, mail_from: str) -> Decision:
    tx = Transaction(
        Runtime.build(config), Client("198.51.100.7", sasl_user=user), audit_enabled=False
    )
    assert tx.mail(f"<{mail_from}>").action < Action.TEMPFAIL
    assert tx.rcpt("<alice@example.com>").action < Action.TEMPFAIL
    parsed = message_from_bytes(message, tx.envelope)
    return tx.end(parsed.headers, parsed.body, parsed.size)


def path_header(decision: Decision) -> list[str]:
    return [value for name, value in decision.headers if name == "X-Relayguard-Path"]


def note(decision: Decision) -> str:
    return next(v.reason for v in decision.verdicts if v.check == "outbound_path")


def test_config_reads_paths_and_each_source_names_one(config: Callable[..., Config]) -> None:
    loaded = config()
    assert set(loaded.outbound_paths) == {"bulk", "partner"}
    assert loaded.outbound_paths["bulk"].bind_address == "192.0.2.25"
    assert loaded.outbound_paths["partner"].relayhost == "[smtp.partner.example]:587"
    assert [s.outbound_path for s in loaded.sources] == ["bulk", ""]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (('outbound_path = "bulk"', 'outbound_path = "bluk"'),
         "sources[0].outbound_path: no [[outbound_paths]] entry named 'bluk'"),
        (('relayhost = "[smtp.partner.example]:587"', 'relayhost = "x} FILTER smtp:[evil]"'),
         "outbound_paths[1].relayhost: 'x} FILTER smtp:[evil]' is not a next hop"),
        (('bind_address = "192.0.2.25"', 'bind_address = "192.0.2.300"'),
         "outbound_paths[0].bind_address: '192.0.2.300' is not an IP address"),
        (('name = "partner"\nrelayhost = "[smtp.partner.example]:587"', 'name = "partner"'),
         "outbound_paths[1].name: path 'partner' sets none of bind_address, helo_name, relayhost"),
        (('name = "bulk"', 'name = "Bulk path"'),
         "outbound_paths[0].name: 'Bulk path' must be 1-32 of a-z 0-9 -"),
    ],
)  # fmt: skip
def test_config_problems_are_located(tmp_path: Path, change: tuple[str, str], problem: str) -> None:
    path = tmp_path / "relayguard.toml"
    path.write_text(CONFIG.format(mode="enforce").replace(*change))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert any(problem in line for line in raised.value.problems), raised.value.problems


@pytest.mark.parametrize("mode", ["enforce", "monitor"])
def test_mail_that_passed_policy_takes_its_sources_path(
    config: Callable[..., Config], mode: str
) -> None:
    decision = send(config(mode), "newsletter", raw("news@example.com"), "news@example.com")
    assert path_header(decision) == ["bulk"]
    assert note(decision) == "outbound path bulk"
    other = send(config(mode), "erp", raw("erp@example.com"), "erp@example.com")
    assert path_header(other) == []


def test_spoofed_mail_in_monitor_mode_leaves_by_the_default_path(
    config: Callable[..., Config],
) -> None:
    decision = send(
        config("monitor"), "newsletter", raw("CEO <ceo@example.com>"), "news@example.com"
    )
    assert decision.outcome == "would_reject"
    assert path_header(decision) == []
    assert note(decision).startswith("default outbound path: would_reject (header_identities")


def test_dlp_enforced_tls_route_keeps_the_sources_path(config: Callable[..., Config]) -> None:
    loaded = config(extra=CARD_PROFILE, source_extra='dlp_profile = "route"\n')
    decision = send(
        loaded,
        "newsletter",
        raw("news@example.com", "Card 4111 1111 1111 1111"),
        "news@example.com",
    )
    assert path_header(decision) == ["bulk; enforced-tls"]
    assert note(decision) == "outbound path bulk over enforced TLS (DLP route)"
    # DLP's own route header stays, before the path's: Postfix applies the last FILTER that fired
    # (the path's TLS variant); a Postfix without that variant still uses relayguard-tls.
    names = [name for name, _ in decision.headers]
    route = names.index("X-Relayguard-Route")
    assert decision.headers[route] == ("X-Relayguard-Route", "enforced-tls")
    assert route < names.index("X-Relayguard-Path")


def test_dlp_route_without_a_path_is_left_to_relayguard_tls(
    config: Callable[..., Config],
) -> None:
    loaded = config(extra='\n[dlp]\ndefault_profile = "route"\n' + CARD_PROFILE)
    card = raw("erp@example.com", "Card 4111 1111 1111 1111")
    decision = send(loaded, "erp", card, "erp@example.com")
    assert ("X-Relayguard-Route", "enforced-tls") in decision.headers
    assert path_header(decision) == []


# --- the Postfix templates ------------------------------------------------------------------

PATHS = [
    {"name": "bulk", "bind_address": "127.0.0.2", "helo_name": "bulk.example.com", "relayhost": ""},
    {"name": "v6", "bind_address": "::1", "relayhost": "[smtp.partner.example]:587"},
]


def settings(**overrides: object) -> dict[str, object]:
    from tests.support.stack import TlsFiles, postfix_settings

    tls = TlsFiles(Path("/c.pem"), Path("/k.pem"), "relay.test")
    ports = {"smtp": 2525, "submission": 2587, "smtps": 2465}
    return postfix_settings(
        Path("/x"), tls=tls, relayhost="[127.0.0.1]:2500", ports=ports, **overrides
    )


def test_master_cf_renders_one_transport_per_path() -> None:
    master = render("master.cf.j2", postfix=settings(outbound_paths=PATHS))
    assert (
        "relayguard-path-bulk unix - - n - - smtp\n"
        "  -o syslog_name=postfix/relayguard-path-bulk\n"
        "  -o smtp_bind_address=127.0.0.2\n"
        "  -o smtp_helo_name=bulk.example.com\n"
    ) in master
    assert "relayguard-path-v6 unix - - n - - smtp\n" in master
    assert "  -o smtp_bind_address6=::1\n" in master


def test_master_cf_renders_each_paths_enforced_tls_variant() -> None:
    master = render("master.cf.j2", postfix=settings(outbound_paths=PATHS))
    assert (
        "relayguard-tls-bulk unix - - n - - smtp\n"
        "  -o syslog_name=postfix/relayguard-tls-bulk\n"
        "  -o smtp_tls_security_level=secure\n"
        "  -o smtp_bind_address=127.0.0.2\n"
        "  -o smtp_helo_name=bulk.example.com\n"
    ) in master
    assert (
        "relayguard-tls-v6 unix - - n - - smtp\n"
        "  -o syslog_name=postfix/relayguard-tls-v6\n"
        "  -o smtp_tls_security_level=secure\n"
        "  -o smtp_bind_address6=::1\n"
    ) in master
    # The plain path keeps the relay's opportunistic level.
    plain = master.split("relayguard-path-bulk unix", 1)[1].split("relayguard-tls-bulk", 1)[0]
    assert "smtp_tls_security_level" not in plain


def test_main_cf_maps_each_path_header_to_its_transport_and_next_hop() -> None:
    main = render("main.cf.j2", postfix=settings(outbound_paths=PATHS))
    line = next(x for x in main.splitlines() if x.startswith("milter_header_checks"))
    assert (
        "{/^X-Relayguard-Path:[[:space:]]*bulk$$/ FILTER relayguard-path-bulk:[127.0.0.1]:2500}"
        in line
    )
    partner = "FILTER relayguard-path-v6:[smtp.partner.example]:587}"
    assert "{/^X-Relayguard-Path:[[:space:]]*v6$$/ " + partner in line
    assert "FILTER relayguard-tls:[127.0.0.1]:2500" in line


def test_main_cf_maps_each_paths_tls_header_to_its_tls_variant() -> None:
    main = render("main.cf.j2", postfix=settings(outbound_paths=PATHS))
    line = next(x for x in main.splitlines() if x.startswith("milter_header_checks"))
    assert (
        "{/^X-Relayguard-Path:[[:space:]]*bulk;[[:space:]]*enforced-tls$$/"
        " FILTER relayguard-tls-bulk:[127.0.0.1]:2500}"
    ) in line
    assert (
        "{/^X-Relayguard-Path:[[:space:]]*v6;[[:space:]]*enforced-tls$$/"
        " FILTER relayguard-tls-v6:[smtp.partner.example]:587}"
    ) in line


def test_without_paths_the_templates_render_as_before() -> None:
    main = render("main.cf.j2", postfix=settings())
    assert "X-Relayguard-Path" not in main.split("milter_header_checks =", 1)[1]
    master = render("master.cf.j2", postfix=settings())
    assert "relayguard-path-" not in master
    assert "relayguard-tls-" not in master
