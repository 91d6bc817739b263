"""Two milter processes with separate configurations sharing one state backend.

Redis: one real redis-server on loopback; SQLite: one database file on this node. The same tests
run on both: a rate limit counts what was sent through either milter, a source disabled through
one is refused by the other on its very next transaction, a backend that is gone gives
`451 4.7.0` and mail flows again once it is back.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DATA
from tests.support.milter_client import MilterClient, Result
from tests.support.milter_process import MilterProcess
from tests.support.redis_server import RedisServer
from tests.support.stack import free_ports, make_dir

pytestmark = [pytest.mark.protocol, pytest.mark.timeout(120)]

CONFIG = """
[relay]
mode = "{mode}"
internal_domains = ["example.com"]
audit_log = "{audit}"

[milter]
workers = 2
socket_group = "root"

[state]
backend = "{backend}"
path = "{database}"
redis_url = "{redis_url}"
redis_prefix = "{prefix}"
timeout_ms = 300
{metrics}

[[sources]]
name = "scanner-hq"
sasl_users = ["scanner-hq"]
senders = ["scanner@example.com"]
recipients = ["@example.com"]
rate_limits = {{ messages_per_hour = 3, recipients_per_day = 100 }}

[[sources]]
name = "erp"
sasl_users = ["erp"]
senders = ["erp@example.com"]
"""


def send(milter: MilterProcess, user: str = "scanner-hq", sender: str = "scanner@example.com",
         rcpts: tuple[str, ...] = ("alice@example.com",)) -> Result:  # fmt: skip
    raw = (DATA / "good.eml").read_bytes().replace(b"scanner@example.com", sender.encode())
    with MilterClient(str(milter.socket_path)) as client:
        return client.send_message(
            raw,
            sender=f"<{sender}>",
            rcpts=[f"<{r}>" for r in rcpts],
            client_address="198.51.100.7",
            macros={"mail": {"{auth_authen}": user}, "eom": {"i": "4XSTATE"}},
        )


def relayguard(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relayguard.cli", *map(str, args)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@dataclass
class Node:
    milter: MilterProcess
    config: Path
    audit: Path

    def audit_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


@pytest.fixture
def nodes(tmp_path: Path, redis_server: RedisServer) -> Iterator[Callable[..., tuple[Node, Node]]]:
    """Two milters (separate configs, sockets, audit logs) on one backend."""
    started: list[MilterProcess] = []

    def start(
        backend: str, redis_url: str | None = None, metrics_port: int = 0
    ) -> tuple[Node, Node]:
        pair = []
        for name in ("a", "b"):
            directory = tmp_path / name
            directory.mkdir()
            metrics = f"[metrics]\nport = {metrics_port}" if metrics_port and name == "a" else ""
            config = directory / "relayguard.toml"
            config.write_text(CONFIG.format(
                mode="enforce", audit=directory / "audit.jsonl", backend=backend,
                database=tmp_path / "state.sqlite3", redis_url=redis_url or redis_server.url,
                prefix=f"{tmp_path.name}:", metrics=metrics,
            ))  # fmt: skip
            milter = MilterProcess(config, directory / "milter.sock", directory / "milter.log")
            started.append(milter.start())
            pair.append(Node(milter, config, directory / "audit.jsonl"))
        return pair[0], pair[1]

    yield start
    for milter in started:
        milter.stop()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_rate_limit_counts_messages_through_both_milters(
    nodes: Callable[..., tuple[Node, Node]], backend: str
) -> None:
    a, b = nodes(backend)
    assert [send(a.milter).reply.action, send(b.milter).reply.action] == ["accept", "accept"]
    assert send(a.milter).reply.action == "accept"
    refused = send(b.milter)  # the 4th message this hour, whichever milter it reaches
    assert refused.stage == "mail"
    assert refused.reply.text is not None
    assert refused.reply.text.startswith(
        "451 4.7.1 source scanner-hq is over its limit of 3 messages per hour; retry in "
    )
    line = b.audit_lines()[-1]
    assert (line["stage"], line["action"], line["source"]) == ("mail", "tempfail", "scanner-hq")
    assert send(b.milter, user="erp", sender="erp@example.com").reply.action == "accept"


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_source_disabled_through_one_milter_is_refused_by_the_other(
    nodes: Callable[..., tuple[Node, Node]], backend: str
) -> None:
    a, b = nodes(backend)
    assert send(b.milter, user="erp", sender="erp@example.com").reply.action == "accept"
    done = relayguard(
        "sources", "disable", "erp", "--reason", "laptop stolen", "--config", a.config
    )
    assert done.returncode == 0, done.stderr
    # No cache: the very next transaction on the other milter (any worker) is refused.
    for _ in range(3):
        refused = send(b.milter, user="erp", sender="erp@example.com")
        assert (refused.stage, refused.reply.text) == (
            "mail",
            "550 5.7.1 source erp is disabled: laptop stolen",
        )
    assert send(b.milter).reply.action == "accept"  # other sources are not affected
    admin = a.audit_lines()[-1]
    assert (admin["stage"], admin["event"], admin["source"], admin["reason"]) == (
        "admin", "source_disabled", "erp", "laptop stolen",
    )  # fmt: skip
    assert admin["actor"]
    listed = relayguard("sources", "disabled", "--config", b.config)
    assert "erp  disabled since" in listed.stdout and "laptop stolen" in listed.stdout
    assert relayguard("sources", "enable", "erp", "--config", b.config).returncode == 0
    assert send(a.milter, user="erp", sender="erp@example.com").reply.action == "accept"
    assert b.audit_lines()[-1]["event"] == "source_enabled"


def test_redis_stopped_gives_451_and_mail_flows_once_it_is_back(
    nodes: Callable[..., tuple[Node, Node]],
) -> None:
    server = RedisServer(make_dir("relayguard-redis-")).start()
    try:
        a, b = nodes("redis", redis_url=server.url)
        assert send(a.milter).reply.action == "accept"
        server.stop()
        for node in (a, b):
            refused = send(node.milter)
            assert (refused.stage, refused.reply.text) == (
                "mail",
                "451 4.7.0 temporary failure: the relay's state backend is unavailable",
            )
            check = node.audit_lines()[-1]["checks"][1]
            assert (check["name"], check["action"], check["error"]) == (
                "kill_switch", "tempfail", True,
            )  # fmt: skip
            assert "state backend unavailable: Redis state redis://127.0.0.1" in check["reason"]
        server.start()
        assert [send(a.milter).reply.action, send(b.milter).reply.action] == ["accept", "accept"]
    finally:
        server.stop()


def test_sqlite_locked_gives_451_and_mail_flows_once_released(
    nodes: Callable[..., tuple[Node, Node]], tmp_path: Path
) -> None:
    a, b = nodes("sqlite")
    assert send(a.milter).reply.action == "accept"
    blocker = sqlite3.connect(tmp_path / "state.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # a writer that hangs: nobody else can write
    try:
        refused = send(b.milter)
        assert (refused.stage, refused.reply.text) == (
            "mail",
            "451 4.7.0 temporary failure: the relay's state backend is unavailable",
        )
        check = next(c for c in b.audit_lines()[-1]["checks"] if c["name"] == "rate_limit")
        assert (check["action"], check["error"]) == ("tempfail", True)
        assert "database is locked" in check["reason"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert send(b.milter).reply.action == "accept"


def test_metrics_endpoint_of_a_running_milter(nodes: Callable[..., tuple[Node, Node]]) -> None:
    port = free_ports(1)[0]
    a, _ = nodes("sqlite", metrics_port=port)
    assert send(a.milter).reply.action == "accept"
    assert send(a.milter).reply.action == "accept"
    assert send(a.milter, sender="ceo@example.com").reply.action == "replycode"  # refused
    assert send(a.milter).reply.action == "replycode"  # over 3 messages (attempts) per hour
    relayguard("sources", "disable", "erp", "--reason", "test", "--config", a.config)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    accepted = (("action", "accept"), ("outcome", "accept"), ("source", "scanner-hq"))
    assert samples[("relayguard_messages_total", accepted)] == 2
    rejected = (("action", "reject"), ("outcome", "reject"), ("source", "scanner-hq"))
    assert samples[("relayguard_messages_total", rejected)] == 1
    hits = (("limit", "messages_per_hour"), ("source", "scanner-hq"))
    assert samples[("relayguard_rate_limit_hits_total", hits)] == 1
    tempfailed = (("action", "tempfail"), ("outcome", "tempfail"), ("source", "scanner-hq"))
    assert samples[("relayguard_messages_total", tempfailed)] == 1
    assert samples[("relayguard_check_duration_seconds_count", (("check", "kill_switch"),))] == 4
    assert samples[("relayguard_sources_disabled", ())] == 1
    assert samples[("relayguard_source_disabled", (("source", "erp"),))] == 1
    assert samples[("relayguard_state_up", ())] == 1
