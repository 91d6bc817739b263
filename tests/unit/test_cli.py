"""The `relayguard` command: exit codes, located errors, and test-message's JSON contract."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relayguard.cli import main
from relayguard.dkim import keys as dkim_keys

pytestmark = pytest.mark.unit


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The installed entry point, as a sysadmin runs it."""
    return subprocess.run(
        [sys.executable, "-m", "relayguard.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_accepts_a_good_file(write_config: Callable[..., Path]) -> None:
    result = run_cli("check", "--config", write_config())
    assert result.returncode == 0, result.stderr
    assert "OK (3 source(s), mode enforce)" in result.stdout


def test_check_rejects_a_bad_file_with_located_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[relay]\nmode = "loud"\n[[sources]]\nname = "x"\nsenders = ["x@"]\n')
    result = run_cli("check", "--config", bad)
    assert result.returncode == 1
    assert f"{bad}: relay.mode: must be one of 'enforce', 'monitor', got 'loud'" in result.stderr
    assert f"{bad}: sources[0].senders[0]" in result.stderr
    assert "Traceback" not in result.stderr


def test_milter_socket_override_must_be_unix_or_loopback(
    write_config: Callable[..., Path],
) -> None:
    # A TEST-NET address: were the override accepted, binding it fails here instead of listening.
    result = run_cli("milter", "--config", write_config(), "--socket", "inet:8891@192.0.2.10")
    assert result.returncode == 2
    assert (
        "argument --socket: 'inet:8891@192.0.2.10': the milter listens on a unix socket or a"
        " loopback address only (127.0.0.0/8, ::1, localhost)"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_sources_list(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sources", "list", "--config", str(write_config()), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["scanner-hq", "erp", "legacy-ups"]
    assert rows[2]["networks"] == ["192.0.2.0/28", "2001:db8::10/128"]
    assert rows[2]["mode"] == "monitor"
    assert rows[1]["senders"] == ["invoices@example.com", "@erp.example.com"]


def test_test_message_json_contract(write_config: Callable[..., Path], data: Path) -> None:
    config = write_config()
    result = run_cli(
        "test-message", data / "spoofed_from.eml", "--config", config,
        "--source", "scanner-hq", "--mail-from", "scanner@example.com", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["action"] == "reject"
    assert report["reply"] == (
        "550 5.7.1 From <admin@example.com> is not allowed for source scanner-hq"
    )
    assert (report["source"], report["mode"], report["stage"]) == ("scanner-hq", "enforce", "end")
    assert {c["name"] for c in report["checks"]} >= {
        "source",
        "envelope_sender",
        "header_identities",
    }
    assert all({"name", "action", "reason"} <= set(c) for c in report["checks"])
    assert report["headers_added"] == []


def test_test_message_defaults_envelope_from_headers(
    write_config: Callable[..., Path], data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["test-message", str(data / "good.eml"), "--config", str(write_config())]
    assert main([*args, "--source", "scanner-hq", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["action"] == "accept"
    assert (report["mail_from"], report["recipients"]) == (
        "scanner@example.com",
        ["alice@example.com"],
    )
    assert report["headers_added"] == [
        {"name": "X-Relayguard", "value": "source=scanner-hq; mode=enforce; verdict=accept"}
    ]


def test_test_message_refused_recipient_and_text_output(
    write_config: Callable[..., Path], data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["test-message", str(data / "good.eml"), "--config", str(write_config())]
    assert main([*args, "--source", "scanner-hq", "--rcpt", "x@elsewhere.test"]) == 0
    out = capsys.readouterr().out
    assert "action:  reject (reject, at rcpt)" in out
    assert "Recipient <x@elsewhere.test> is not allowed for source scanner-hq" in out


def test_test_message_network_source_and_monitor(
    write_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eml = tmp_path / "ups.eml"
    eml.write_bytes(b"From: admin@example.com\r\nTo: it@example.com\r\n\r\nOn battery\r\n")
    args = ["test-message", str(eml), "--config", str(write_config()), "--json"]
    assert main([*args, "--source", "legacy-ups", "--mail-from", "ups@example.com"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["action"], report["outcome"], report["mode"]) == (
        "accept",
        "would_reject",
        "monitor",
    )


def test_test_message_usage_errors(write_config: Callable[..., Path], data: Path) -> None:
    config = write_config()
    unknown = run_cli("test-message", data / "good.eml", "--config", config, "--source", "nope")
    assert unknown.returncode == 2
    assert "no source 'nope'" in unknown.stderr
    missing = run_cli("test-message", data / "absent.eml", "--config", config, "--source", "erp")
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr


# --- start-up: each command imports only what it runs ----------------------------------------

AFTER_MAIN = """
import json, sys
from relayguard.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
loaded = sorted(sys.modules)
from relayguard.dkim import openssl
print(json.dumps({"modules": loaded, "openssl": openssl.installed()}), file=sys.stderr)
"""


def run_in_fresh_interpreter(*args: str | Path) -> dict[str, Any]:
    """`relayguard ARGS` in a new interpreter: the modules it imported, and whether dkimpy
    signs RSA through OpenSSL afterwards."""
    result = subprocess.run(
        [sys.executable, "-c", AFTER_MAIN, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: dict[str, Any] = json.loads(result.stderr.splitlines()[-1])
    return found


def modules_loaded_by(*args: str | Path) -> set[str]:
    return set(run_in_fresh_interpreter(*args)["modules"])


def test_help_imports_no_command() -> None:
    """`relayguard --help` lists every command from the entry point's table alone."""
    ours = {name for name in modules_loaded_by("--help") if name.startswith("relayguard")}
    assert ours == {"relayguard", "relayguard.cli", "relayguard.core", "relayguard.core.errors"}


def test_test_message_imports_no_other_command_nor_unused_backend(
    write_config: Callable[..., Path], data: Path
) -> None:
    """The dry run of a config without [urls] or [state], on a message without a PDF: none of
    the libraries those need (each tens of milliseconds to import) is loaded."""
    loaded = modules_loaded_by(
        "test-message", data / "good.eml", "--config", write_config(),
        "--source", "scanner-hq", "--json",
    )  # fmt: skip
    assert "relayguard.engine.transaction" in loaded  # it did run the pipeline
    commands = {name for name in loaded if name.startswith("relayguard.cli.")}
    assert commands == {"relayguard.cli.test_message"}
    heavy = {"relayguard.scanners.dns", "redis", "pypdf", "aiohttp", "relayguard.daemon.server"}
    assert heavy & loaded == set()


def test_test_message_signs_through_openssl_like_a_worker(
    write_config: Callable[..., Path], data: Path, tmp_path: Path
) -> None:
    """The dry run of a config that signs installs what a worker installs at start (nothing does
    it at import); one that does not sign never even imports dkimpy."""
    keys = tmp_path / "keys"
    dkim_keys.generate(keys, "example.com", "rsa1", "rsa")
    signing = tmp_path / "signing.toml"
    dkim = f'\n[dkim]\nkey_directory = "{keys}"\ndomains = ["example.com"]\n'
    signing.write_text(write_config().read_text() + dkim)
    args = (data / "good.eml", "--source", "scanner-hq")
    signed = run_in_fresh_interpreter("test-message", args[0], "--config", signing, *args[1:])
    assert signed["openssl"] is True
    unsigned = run_in_fresh_interpreter(
        "test-message", args[0], "--config", write_config(), *args[1:]
    )
    assert unsigned["openssl"] is False and "dkim" not in unsigned["modules"]
    assert run_in_fresh_interpreter("--help")["openssl"] is False
