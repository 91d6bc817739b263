"""The console rereads its configuration on SIGHUP (as the send API does): new sources, accounts
file and login limits take effect for the next request; a configuration that cannot be used is
refused, logged, and the running one stays."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from tests.support.stack import LOOPBACK, free_ports, wait_until

from relayguard.config import load_config
from relayguard.core.errors import ConfigError
from relayguard.services.console.accounts import Accounts
from relayguard.services.console.app import Console

pytestmark = pytest.mark.unit

PASSWORD = "correct horse battery"
CONFIG = """
[relay]
mode = "enforce"
audit_log = "{dir}/audit.jsonl"

[console]
accounts_file = "{dir}/console-users.json"
state_directory = "{dir}/console"
port = {port}
login_attempts = 3

[[sources]]
name = "printer"
sasl_users = ["printer-1"]
senders = ["scanner@example.com"]
"""
NEW_SOURCE = """
[[sources]]
name = "erp-after-reload"
networks = ["192.0.2.0/24"]
senders = ["@erp.example.com"]
"""


def write_config(directory: Path, port: int, extra: str = "") -> Path:
    path = directory / "relayguard.toml"
    path.write_text(CONFIG.format(dir=directory, port=port) + extra)
    return path


def login(client: httpx.Client | TestClient) -> None:
    page = client.get("/login").text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    answer = client.post("/login", data={"user": "alice", "password": PASSWORD, "csrf": csrf})
    assert answer.status_code == 200, answer.text


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[Console, TestClient, Path]]:
    path = write_config(tmp_path, 8443)
    config = load_config(path)
    assert config.console is not None
    Accounts(config.console.accounts_file).add("alice", "operator", PASSWORD)
    console = Console(config, config.console, None)
    with TestClient(console.app(), base_url="http://127.0.0.1") as client:
        yield console, client, path


def test_reload_shows_new_sources_and_applies_new_login_limits(
    console: tuple[Console, TestClient, Path], caplog: pytest.LogCaptureFixture
) -> None:
    running, client, path = console
    login(client)
    assert "erp-after-reload" not in client.get("/sources").text
    text = path.read_text().replace("login_attempts = 3", "login_attempts = 7")
    path.write_text(text.replace("port = 8443", "port = 8444") + NEW_SOURCE)
    with caplog.at_level(logging.WARNING):
        running.reload(load_config(path, signing_keys=False))
    assert "erp-after-reload" in client.get("/sources").text  # the same session goes on
    assert "console.port: changed, used at the next restart" in caplog.text
    assert running.listener.port == 8443
    client.cookies.clear()
    csrf = client.get("/login").text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    wrong = {"user": "alice", "password": "wrong password!!", "csrf": csrf}
    assert [client.post("/login", data=wrong).status_code for _ in range(3)] == [401] * 3
    login(client)  # three failures no longer lock: the limit is 7 now


def test_reload_without_a_console_section_is_refused_and_changes_nothing(
    console: tuple[Console, TestClient, Path],
) -> None:
    running, client, path = console
    before = running.config
    path.write_text(path.read_text().split("[console]")[0] + NEW_SOURCE)
    with pytest.raises(ConfigError, match=r"console: the running console needs \[console\]"):
        running.reload(load_config(path, signing_keys=False))
    assert running.config is before
    login(client)
    assert "erp-after-reload" not in client.get("/sources").text


def wait_for_log(log: Path, text: str) -> str:
    assert wait_until(lambda: text in log.read_text(), 30), log.read_text()
    return log.read_text()


def test_sighup_to_console_serve_rereads_the_config_and_a_bad_one_keeps_the_old(
    tmp_path: Path,
) -> None:
    (port,) = free_ports(1)
    path = write_config(tmp_path, port)
    config = load_config(path)
    assert config.console is not None
    Accounts(config.console.accounts_file).add("alice", "operator", PASSWORD)
    log = tmp_path / "console.log"
    command = [sys.executable, "-m", "relayguard.cli", "console", "serve", "--config", str(path)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_for_log(log, "Uvicorn running")
        with httpx.Client(base_url=url, timeout=60, follow_redirects=True) as client:
            login(client)
            assert "erp-after-reload" not in client.get("/sources").text

            path.write_text(path.read_text() + NEW_SOURCE)
            process.send_signal(signal.SIGHUP)
            wait_for_log(log, f"SIGHUP: {path} reloaded")
            assert "erp-after-reload" in client.get("/sources").text

            path.write_text(path.read_text().replace("[console]\n", "[console]\ncolour = 1\n"))
            process.send_signal(signal.SIGHUP)
            text = wait_for_log(log, "refused, keeping the running configuration")
            assert f"{path}: console.colour: unknown key" in text
            assert process.poll() is None
            assert "erp-after-reload" in client.get("/sources").text
    finally:
        process.terminate()
        process.wait(10)
