"""End to end through real Postfix: a source that bursts is locked by the anomaly detector (the
milter's observer, on the SQLite state store) and its next transaction is refused with the
automatic reason; `relayguard sources disabled` shows the lock like a manual one."""

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

# No learning period and a floor of 3 messages per 10 minutes: a new source's 4th message in a
# row is a burst (the defaults: docs/anomaly.md).
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

[anomaly]
learning_days = 0

[anomaly.volume]
min_messages = 3

[[sources]]
name = "printer"
sasl_users = ["{user}"]
senders = ["scanner@example.com"]
"""

REASON = "auto-lock: volume burst: 4 messages in 10 min, usual peak 0"


@pytest.fixture
def relay(e2e_dir: Path, postfix_stack: StackFactory) -> Iterator[tuple[RelayStack, Path]]:
    directory = make_dir("milter-anomaly-", e2e_dir)
    config = directory / "relayguard.toml"
    config.write_text(CONFIG.format(directory=directory, user=DEVICE_USER))
    with MilterProcess(config, directory / "milter.sock", directory / "milter.log") as milter:
        yield postfix_stack(milter.socket_path), config


def test_a_bursting_source_is_locked_and_refused_with_the_automatic_reason(
    relay: tuple[RelayStack, Path],
) -> None:
    stack, config = relay
    with stack.submission() as smtp:
        for number in range(1, 5):
            smtp.send_message(make_message(f"scan {number}", sender="scanner@example.com"),
                              to_addrs=["alice@example.com"])  # fmt: skip
        code, text = smtp.mail("scanner@example.com")
    assert (code, text.decode()) == (550, f"5.7.1 source printer is disabled: {REASON}")
    assert len(stack.sink.wait_for(4)) == 4  # the burst's first messages left before the lock

    listing = [sys.executable, "-m", "relayguard.cli", "sources", "disabled",
               "--config", str(config)]  # fmt: skip
    shown = subprocess.run(listing, capture_output=True, text=True, timeout=60, check=True)
    assert f"by relayguard anomaly detector: {REASON}" in shown.stdout

    audit = [json.loads(line) for line in (config.parent / "audit.jsonl").read_text().splitlines()]
    locks = [line for line in audit if line.get("event") == "source_disabled"]
    assert [(x["actor"], x["reason"], x["rule"]) for x in locks] == [
        ("relayguard anomaly detector", REASON, "volume")
    ]
    refused = [line for line in audit if line.get("stage") == "mail"]
    assert refused[-1]["reply"] == f"550 5.7.1 source printer is disabled: {REASON}"
