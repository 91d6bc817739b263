"""End to end through real Postfix: the kill switch and a rate limit on the SQLite state store,
the replies a device really gets, and the message that really is (or is not) delivered."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import DEVICE_USER, StackFactory
from tests.support.milter_process import MilterProcess
from tests.support.stack import RelayStack, make_dir, make_message

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CONFIG = """
[relay]
mode = "enforce"
internal_domains = ["example.com"]
audit_log = "{directory}/audit.jsonl"

[milter]
workers = 2
socket_group = "postfix"

[state]
path = "{directory}/state/state.sqlite3"

[[sources]]
name = "printer"
sasl_users = ["{user}"]
senders = ["scanner@example.com"]
rate_limits = {{ messages_per_hour = 2 }}
"""


@pytest.fixture
def relay(e2e_dir: Path, postfix_stack: StackFactory) -> Iterator[tuple[RelayStack, Path]]:
    directory = make_dir("milter-state-", e2e_dir)
    config = directory / "relayguard.toml"
    config.write_text(CONFIG.format(directory=directory, user=DEVICE_USER))
    with MilterProcess(config, directory / "milter.sock", directory / "milter.log") as milter:
        yield postfix_stack(milter.socket_path), config


def test_kill_switch_and_rate_limit_through_postfix(relay: tuple[RelayStack, Path]) -> None:
    stack, config = relay
    with stack.submission() as smtp:
        smtp.send_message(make_message("scan 1", sender="scanner@example.com"),
                          to_addrs=["alice@example.com"])  # fmt: skip
    assert len(stack.sink.wait_for(1)) == 1

    disable = [sys.executable, "-m", "relayguard.cli", "sources", "disable", "printer",
               "--reason", "device compromised, ticket 4711", "--config", str(config)]  # fmt: skip
    assert subprocess.run(disable, capture_output=True, timeout=60, check=False).returncode == 0
    with stack.submission() as smtp:
        code, text = smtp.mail("scanner@example.com")
    assert (code, text.decode()) == (
        550, "5.7.1 source printer is disabled: device compromised, ticket 4711",
    )  # fmt: skip

    enable = [*disable[:4], "enable", "printer", "--config", str(config)]
    assert subprocess.run(enable, capture_output=True, timeout=60, check=False).returncode == 0
    with stack.submission() as smtp:
        smtp.send_message(make_message("scan 2", sender="scanner@example.com"),
                          to_addrs=["alice@example.com"])  # fmt: skip
        code, text = smtp.mail("scanner@example.com")  # the 3rd this hour
    assert code == 451
    assert text.decode().startswith(
        "4.7.1 source printer is over its limit of 2 messages per hour; retry in "
    )
    assert len(stack.sink.wait_for(2)) == 2
    audit = config.parent / "audit.jsonl"
    events = [json.loads(line).get("event") for line in audit.read_text().splitlines()]
    assert events.count("source_disabled") == 1 and events.count("source_enabled") == 1
