"""Two relay nodes sharing one Redis, end to end through real SMTP.

Each node is its own Postfix instance (own config, queue and data directories, own loopback
ports) with its own relayguard milter process and configuration; both point `[state]` at ONE
password-protected redis-server on loopback. What one node or the CLI changes in the shared state
is what the other node enforces on its very next transaction (docs/state.md, "Several nodes").
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import DEVICE_USER, StackFactory
from tests.support.milter_process import MilterProcess
from tests.support.redis_server import RedisServer
from tests.support.stack import RelayStack, make_dir, make_message

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

REDIS_PASSWORD = "two-nodes-shared-secret"  # a throwaway test server's password
SENDER = "scanner@example.com"
UNAVAILABLE = "4.7.0 temporary failure: the relay's state backend is unavailable"

CONFIG = """
[relay]
mode = "enforce"
internal_domains = ["example.com"]
audit_log = "{directory}/audit.jsonl"

[milter]
workers = 2
socket_group = "postfix"

[state]
backend = "redis"
redis_url = "{redis_url}"
redis_prefix = "{prefix}"
timeout_ms = 300

[[sources]]
name = "printer"
sasl_users = ["{user}"]
senders = ["{sender}"]
rate_limits = {{ messages_per_hour = {limit} }}
"""


@dataclass
class Node:
    """One relay node: its Postfix stack, its milter and the milter's configuration."""

    name: str
    stack: RelayStack
    milter: MilterProcess
    config: Path

    def send(self, subject: str) -> None:
        """Submit one message as the printer; smtplib raises unless Postfix accepts it."""
        with self.stack.submission() as smtp:
            smtp.send_message(make_message(subject, sender=SENDER),
                              to_addrs=["alice@example.com"])  # fmt: skip

    def mail_reply(self) -> tuple[int, str]:
        """The reply to the printer's next MAIL FROM (where the milter's state checks answer)."""
        with self.stack.submission() as smtp:
            code, text = smtp.mail(SENDER)
        return code, text.decode()


@pytest.fixture
def redis(e2e_dir: Path) -> Iterator[RedisServer]:
    with RedisServer(make_dir("redis-", e2e_dir), password=REDIS_PASSWORD) as server:
        yield server


@pytest.fixture
def two_nodes(
    e2e_dir: Path, postfix_stack: StackFactory, redis: RedisServer
) -> Iterator[Callable[[int], tuple[Node, Node]]]:
    """Factory: `two_nodes(messages_per_hour)` starts node A and node B on the shared Redis."""
    milters: list[MilterProcess] = []
    prefix = f"{e2e_dir.name}:{redis.port}:"

    def start(limit: int) -> tuple[Node, Node]:
        nodes = []
        for name in ("A", "B"):
            directory = make_dir(f"node-{name}-", e2e_dir)
            config = directory / "relayguard.toml"
            config.write_text(CONFIG.format(
                directory=directory, redis_url=redis.url, prefix=prefix, user=DEVICE_USER,
                sender=SENDER, limit=limit,
            ))  # fmt: skip
            milter = MilterProcess(config, directory / "milter.sock", directory / "milter.log")
            milters.append(milter.start())
            nodes.append(Node(name, postfix_stack(milter.socket_path), milter, config))
        return nodes[0], nodes[1]

    yield start
    for milter in milters:
        milter.stop()


def relayguard(*args: str | Path) -> None:
    """Run the relayguard CLI and require success."""
    done = subprocess.run([sys.executable, "-m", "relayguard.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_source_disabled_by_the_cli_is_refused_on_both_nodes(
    two_nodes: Callable[[int], tuple[Node, Node]],
) -> None:
    a, b = two_nodes(100)
    a.send("before, via A")
    b.send("before, via B")
    relayguard("sources", "disable", "printer", "--reason", "device compromised, ticket 4711",
               "--config", a.config)  # fmt: skip
    refused = (550, "5.7.1 source printer is disabled: device compromised, ticket 4711")
    assert [a.mail_reply(), b.mail_reply()] == [refused, refused]
    relayguard("sources", "enable", "printer", "--config", b.config)
    a.send("after, via A")
    b.send("after, via B")
    subjects = sorted(m.subject for m in a.stack.sink.wait_for(4))
    assert subjects == ["after, via A", "after, via B", "before, via A", "before, via B"]


def test_rate_limit_counts_messages_through_both_nodes(
    two_nodes: Callable[[int], tuple[Node, Node]],
) -> None:
    a, b = two_nodes(3)
    a.send("1 via A")
    a.send("2 via A")
    b.send("3 via B")
    for node in (b, a):  # the 4th this hour, whichever node it reaches
        code, text = node.mail_reply()
        assert code == 451, node.name
        assert text.startswith(
            "4.7.1 source printer is over its limit of 3 messages per hour; retry in "
        ), node.name
    assert len(a.stack.sink.wait_for(3)) == 3
    a.stack.postfix.wait_queue_empty()
    b.stack.postfix.wait_queue_empty()
    assert len(a.stack.sink.messages) == 3


def test_redis_gone_tempfails_on_both_nodes_and_mail_flows_once_it_is_back(
    two_nodes: Callable[[int], tuple[Node, Node]], redis: RedisServer
) -> None:
    a, b = two_nodes(100)
    a.send("before, via A")
    redis.stop()
    assert [a.mail_reply(), b.mail_reply()] == [(451, UNAVAILABLE), (451, UNAVAILABLE)]
    redis.start()  # same port, same password
    a.send("after, via A")
    b.send("after, via B")
    subjects = sorted(m.subject for m in a.stack.sink.wait_for(3))
    assert subjects == ["after, via A", "after, via B", "before, via A"]
    for node in (a, b):
        audit = (node.config.parent / "audit.jsonl").read_text()
        log = node.milter.log.read_text()
        assert "state backend unavailable" in audit
        assert REDIS_PASSWORD not in audit + log, node.name
