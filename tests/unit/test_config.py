"""Configuration: a good file loads frozen; a bad one names the file, the key and the problem."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest

from relayguard.config import load_config
from relayguard.core.errors import ConfigError
from relayguard.core.verdict import Action, Mode

pytestmark = pytest.mark.unit

MINIMAL = """
[[sources]]
name = "a"
sasl_users = ["a"]
senders = ["a@example.com"]
"""


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return list(info.value.problems)


def test_base_config_loads_into_frozen_snapshot(write_config: Callable[..., Path]) -> None:
    config = load_config(write_config())
    assert [s.name for s in config.sources] == ["scanner-hq", "erp", "legacy-ups"]
    assert config.relay.mode is Mode.ENFORCE
    assert config.relay.error_action is Action.TEMPFAIL
    assert config.by_sasl_user["scanner-hq"].name == "scanner-hq"
    # Postfix's {cert_subject} is the verified certificate's CN: 'CN=' is accepted and dropped.
    assert config.by_cert_subject["erp.example.com"].name == "erp"
    assert config.mode_for(config.source("legacy-ups")) is Mode.MONITOR
    assert config.mode_for(config.source("erp")) is Mode.ENFORCE
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.relay.mode = Mode.MONITOR  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.by_sasl_user["x"] = config.sources[0]  # type: ignore[index]


def test_example_config_is_valid() -> None:
    config = load_config(Path(__file__).parents[2] / "examples" / "relayguard.toml")
    assert len(config.sources) == 3


def test_defaults_for_minimal_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL)
    config = load_config(path)
    assert config.relay.trace_header == "X-Relayguard"
    assert config.milter.socket_mode == 0o660
    assert config.sources[0].recipients.is_empty


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[relay]\nmoode = "enforce"\n' + MINIMAL, "relay.moode: unknown key"),
        ('[relay]\nmode = "block"\n' + MINIMAL, "relay.mode: must be one of 'enforce', 'monitor'"),
        ("[relay]\nmode = 1\n" + MINIMAL, "relay.mode: expected a string, got integer"),
        (
            "[milter]\nworkers = true\n" + MINIMAL,
            "milter.workers: expected an integer, got boolean",
        ),
        ("[milter]\nworkers = 0\n" + MINIMAL, "milter.workers: must be between 1 and 64"),
        ('[milter]\nsocket_mode = "0666"\n' + MINIMAL, "milter.socket_mode: must not grant"),
        ('[milter]\nsocket_mode = "rw"\n' + MINIMAL, "milter.socket_mode: 'rw' is not an octal"),
        ('[milter]\nsocket = "tcp:25"\n' + MINIMAL, "milter.socket: 'tcp:25' is not"),
        (
            '[milter]\nsocket = "inet:8891@0.0.0.0"\n' + MINIMAL,
            "milter.socket: 'inet:8891@0.0.0.0': the milter listens on a unix socket or a loopback"
            " address only",
        ),
        ('[milter]\nsocket_group = "no-such-group-x"\n' + MINIMAL, "no such group"),
        ('[relay]\naudit_log = "audit.jsonl"\n' + MINIMAL, "relay.audit_log: must be an absolute"),
        ('[relay]\ntrace_header = "X Bad"\n' + MINIMAL, "relay.trace_header: 'X Bad' is not"),
        ('[relay]\ninternal_domains = ["exa mple.com"]\n' + MINIMAL, "relay.internal_domains[0]"),
        ("[relay]\n", "sources: no [[sources]] defined"),
        (MINIMAL.replace('name = "a"', 'name = "a b"'), "sources[0].name: 'a b' must be"),
        (MINIMAL.replace('name = "a"\n', ""), "sources[0].name: missing"),
        (MINIMAL.replace('senders = ["a@example.com"]', ""), "sources[0].senders: missing"),
        (MINIMAL.replace("a@example.com", "not-an-address"), "sources[0].senders[0]"),
        (MINIMAL.replace("a@example.com", "@@example.com"), "sources[0].senders[0]"),
        (MINIMAL.replace('sasl_users = ["a"]', ""), "nothing can identify it"),
        (MINIMAL + "colour = 'red'\n", "sources[0].colour: unknown key"),
        (MINIMAL + "max_recipients = 0\n", "sources[0].max_recipients: must be between"),
        (MINIMAL + "networks = ['192.0.2.300/32']\n", "sources[0].networks[0]: '192.0.2.300/32'"),
        (MINIMAL + "networks = ['192.0.2.10/24']\n", "has host bits set"),
        (MINIMAL + "networks = 'a'\n", "sources[0].networks: expected an array of strings"),
        (MINIMAL + "client_cert_subjects = ['CN=a,O=b']\n", "give the certificate's Common Name"),
        ("sources = 1\n", "sources: expected an array of tables"),
        ("[[sources]\n", "TOML syntax error"),
    ],
)
def test_invalid_files_name_file_key_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    found = problems(path)
    assert any(expected in p for p in found), found
    assert all(p.startswith(f"{path}: ") for p in found), found


@pytest.mark.parametrize(
    "socket",
    [
        "inet:8891@0.0.0.0",
        "inet:8891@192.0.2.10",
        "inet:8891@relay.example.com",
        "inet6:8891@::",
        "inet6:8891@2001:db8::1",
        "inet6:8891@[::]",
    ],
)
def test_milter_socket_reachable_by_others_is_refused(tmp_path: Path, socket: str) -> None:
    """Whoever reaches the milter sends its own {auth_authen}: a DKIM signing oracle."""
    path = tmp_path / "c.toml"
    path.write_text(f'[milter]\nsocket = "{socket}"\n' + MINIMAL)
    assert problems(path) == [
        f"{path}: milter.socket: {socket!r}: the milter listens on a unix socket or a loopback"
        " address only (127.0.0.0/8, ::1, localhost)"
    ]


@pytest.mark.parametrize(
    "socket",
    [
        "unix:/var/spool/postfix/relayguard/milter.sock",
        "local:/run/relayguard.sock",
        "inet:8891@127.0.0.1",
        "inet:8891@127.10.0.5",
        "inet:8891@localhost",
        "inet6:8891@::1",
        "inet6:8891@[::1]",
    ],
)
def test_milter_socket_on_unix_or_loopback_is_accepted(tmp_path: Path, socket: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[milter]\nsocket = "{socket}"\n' + MINIMAL)
    assert load_config(path).milter.socket == socket


@pytest.mark.parametrize(("address", "accepted"), [("localhost", True), ("192.0.2.1", False)])
def test_metrics_address_follows_the_same_loopback_rule(
    tmp_path: Path, address: str, accepted: bool
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[metrics]\naddress = "{address}"\n' + MINIMAL)
    if accepted:
        assert load_config(path).metrics.address == address
    else:
        assert problems(path) == [
            f"{path}: metrics.address: {address!r}: metrics are served on a loopback address only"
        ]


def test_identifiers_claimed_twice_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "dup.toml"
    path.write_text(
        """
[[sources]]
name = "a"
sasl_users = ["printer"]
networks = ["192.0.2.0/24"]
client_cert_subjects = ["CN=x"]
senders = ["a@example.com"]

[[sources]]
name = "a"
sasl_users = ["PRINTER"]
networks = ["192.0.2.128/25"]
client_cert_subjects = ["CN=x"]
senders = ["a@example.com"]
"""
    )
    found = "\n".join(problems(path))
    assert "sources[1].name: duplicate source name (also sources[0])" in found
    assert "sources[1].sasl_users: 'PRINTER' is already claimed by 'a'" in found
    assert "sources[1].networks: 192.0.2.128/25 overlaps 192.0.2.0/24" in found
    assert "sources[1].client_cert_subjects: 'x' is already claimed" in found


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "many.toml"
    path.write_text('[relay]\nmode = "x"\nfoo = 1\n' + MINIMAL + "bar = 2\n")
    assert len(problems(path)) == 3


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    assert "cannot read" in problems(tmp_path / "missing.toml")[0]
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[relay]\nmode = "\xe9"\n')
    assert "not UTF-8" in problems(path)[0]


def test_networks_parse_bare_addresses(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL + "networks = ['192.0.2.7', '2001:db8::1']\n")
    networks = load_config(path).sources[0].networks
    assert networks == (
        ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("2001:db8::1/128"),
    )
