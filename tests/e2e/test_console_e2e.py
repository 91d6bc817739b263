"""The console against the real relay: Postfix + the milter + a sink, driven over HTTP.

A YARA rule puts a message on hold; the console shows it from Postfix's hold queue (postcat)
and releases it, and it arrives at the sink. The console's kill switch refuses the source's next
transaction at MAIL FROM. Both actions are audit lines with the operator's name.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from relayguard.config import load_config
from relayguard.services.console.accounts import Accounts
from relayguard.services.console.app import Console
from relayguard.services.console.audit_index import AuditIndex
from tests.e2e.conftest import DEVICE_USER, StackFactory
from tests.support.milter_process import MilterProcess
from tests.support.stack import (
    LOOPBACK,
    WAIT_SECONDS,
    RelayStack,
    free_ports,
    make_dir,
    make_message,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

YARA = Path(__file__).parents[1] / "data" / "content" / "yara"
PASSWORD = "console operator password"
CONFIG = """
[relay]
mode = "enforce"
internal_domains = ["example.com"]
audit_log = "{dir}/audit.jsonl"

[milter]
workers = 1
socket_group = "postfix"

[state]
path = "{dir}/state/state.sqlite3"

[yara]
rules_dir = "{yara}"

[console]
accounts_file = "{dir}/console/users.json"
state_directory = "{dir}/console"
postfix_config = "{postfix}"

[[sources]]
name = "printer"
sasl_users = ["{user}"]
senders = ["scanner@example.com"]
rate_limits = {{ messages_per_hour = 100 }}
"""


@pytest.fixture
def relay(e2e_dir: Path, postfix_stack: StackFactory) -> Iterator[tuple[RelayStack, Path]]:
    directory = make_dir("milter-console-", e2e_dir)
    config = directory / "relayguard.toml"
    config.write_text(
        CONFIG.format(dir=directory, yara=YARA, postfix="/etc/postfix", user=DEVICE_USER)
    )
    with MilterProcess(config, directory / "milter.sock", directory / "milter.log") as milter:
        stack = postfix_stack(milter.socket_path)
        text = CONFIG.format(
            dir=directory, yara=YARA, postfix=stack.postfix.config_directory, user=DEVICE_USER
        )
        config.write_text(text)  # the console's view: this Postfix instance's hold queue
        yield stack, config


def token(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found[1]


def test_release_from_the_console_delivers_and_the_kill_switch_refuses(
    relay: tuple[RelayStack, Path],
) -> None:
    stack, config_path = relay
    held = make_message("held by yara", sender="scanner@example.com", body="RELAYGUARD-TEST-HOLD\n")
    with stack.submission() as smtp:
        smtp.send_message(held, to_addrs=["alice@example.com"])
    config = load_config(config_path)
    assert config.console is not None and config.relay.audit_log is not None
    Accounts(config.console.accounts_file).add("alice", "operator", PASSWORD)
    index = AuditIndex(config.console.index_path, config.relay.audit_log)
    index.update()
    console = Console(config, config.console, index)
    with TestClient(console.app(), base_url="http://127.0.0.1") as client:
        client.post("/login", data={"user": "alice", "password": PASSWORD,
                                    "csrf": token(client.get("/login").text)})  # fmt: skip
        queue = stack.postfix.queue()
        assert len(queue) == 1
        queue_id = str(queue[0]["queue_id"])
        listing = client.get("/quarantine").text
        assert queue_id in listing and "YARA rule markers:Hold_Marker" in listing
        shown = client.get(f"/quarantine/{queue_id}").text
        assert "held by yara" in shown and "RELAYGUARD-TEST-HOLD" in shown
        assert "*** " not in shown  # postcat's record markers are not part of the message
        released = client.post(
            f"/quarantine/{queue_id}/release", data={"csrf": token(shown), "confirm": "yes"}
        )
        assert released.status_code == 200
        assert wait_until(
            lambda: any(m.subject == "held by yara" for m in stack.sink.messages), WAIT_SECONDS
        )

        page = client.get("/sources/printer").text
        disabled = client.post(
            "/sources/printer/disable",
            data={"reason": "compromised, ticket 17", "confirm": "yes", "csrf": token(page)},
        )
        assert disabled.status_code == 200
    with stack.submission() as smtp:
        code, text = smtp.mail("scanner@example.com")
    assert (code, text.decode()) == (
        550,
        "5.7.1 source printer is disabled: compromised, ticket 17",
    )
    assert config.relay.audit_log is not None
    lines = [json.loads(x) for x in config.relay.audit_log.read_text().splitlines()]
    acts = [(x["event"], x["actor"]) for x in lines if x.get("stage") == "admin"]
    assert ("quarantine_released", "console:alice") in acts
    assert ("source_disabled", "console:alice") in acts
    index.close()


def as_nobody(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`command` as user nobody, group nogroup, no supplementary group (setpriv, no shell)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def give_to_nobody(*paths: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    for path in paths:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)


def test_an_unprivileged_console_releases_through_the_root_helper(
    relay: tuple[RelayStack, Path],
) -> None:
    """The appliance's shape: the console as an ordinary user (here nobody), Postfix's tools
    run by `relayguard quarantine-helper` as root; a held message released from the console's
    page reaches the sink, and the helper logged who asked."""
    stack, config_path = relay
    held = make_message("held for the helper", sender="scanner@example.com",
                        body="RELAYGUARD-TEST-HOLD\n")  # fmt: skip
    with stack.submission() as smtp:
        smtp.send_message(held, to_addrs=["alice@example.com"])
    queue_id = str(stack.postfix.queue()[0]["queue_id"])

    directory = config_path.parent
    helper_socket = directory / "helper" / "helper.sock"
    (port,) = free_ports(1)
    text = config_path.read_text().replace(
        "[console]\n", f'[console]\nport = {port}\nquarantine_helper = "{helper_socket}"\n'
    )
    config_path.write_text(text)
    config = load_config(config_path)
    assert config.console is not None and config.relay.audit_log is not None
    config.console.state_directory.mkdir(mode=0o700, exist_ok=True)
    Accounts(config.console.accounts_file).add("alice", "operator", PASSWORD)
    give_to_nobody(config.console.state_directory, config.console.accounts_file)
    config.relay.audit_log.chmod(0o666)  # the console appends its admin lines

    helper_command = [sys.executable, "-m", "relayguard.cli", "quarantine-helper",
                      "--socket", str(helper_socket), "--socket-group", "nogroup",
                      "--postfix-config", str(stack.postfix.config_directory)]  # fmt: skip
    helper_log = directory / "helper.log"
    with helper_log.open("wb") as out:
        helper = subprocess.Popen(helper_command, stdout=out, stderr=subprocess.STDOUT)
    console = as_nobody(
        [sys.executable, "-m", "relayguard.cli", "console", "serve", "--config", str(config_path)],
        directory / "console.log",
    )
    url = f"http://{LOOPBACK}:{port}"
    try:
        assert wait_until(lambda: helper_socket.exists() and _answers(url), 30), (
            directory / "console.log"
        ).read_text() + helper_log.read_text()
        assert oct(helper_socket.stat().st_mode & 0o777) == "0o660"
        assert _uid(console.pid) == pwd.getpwnam("nobody").pw_uid
        with httpx.Client(base_url=url, timeout=60) as client:
            client.post("/login", data={"user": "alice", "password": PASSWORD,
                                        "csrf": token(client.get("/login").text)})  # fmt: skip
            listing = client.get("/quarantine")
            assert listing.status_code == 200 and queue_id in listing.text
            shown = client.get(f"/quarantine/{queue_id}")
            assert shown.status_code == 200 and "RELAYGUARD-TEST-HOLD" in shown.text
            released = client.post(
                f"/quarantine/{queue_id}/release",
                data={"csrf": token(shown.text), "confirm": "yes"},
            )
            assert released.status_code == 303, released.text
        assert wait_until(
            lambda: any(m.subject == "held for the helper" for m in stack.sink.messages),
            WAIT_SECONDS,
        )
        # The helper logs after its reply has gone out: wait for the line before stopping it.
        logged = f"release {queue_id} from uid {pwd.getpwnam('nobody').pw_uid}: ok"
        assert wait_until(lambda: logged in helper_log.read_text(), WAIT_SECONDS), (
            helper_log.read_text()
        )
    finally:
        for process in (console, helper):
            process.terminate()
            process.wait(10)
    assert not helper_socket.exists()  # removed on SIGTERM
    lines = [json.loads(x) for x in config.relay.audit_log.read_text().splitlines()]
    assert {
        "event": "quarantine_released",
        "actor": "console:alice",
        "queue_id": queue_id,
    }.items() <= (next(x for x in lines if x.get("event") == "quarantine_released").items())


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/login", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
