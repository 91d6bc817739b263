"""The real milter process counts an unregistered client's refusals, per worker, and writes every
count before it stops (issue 12 item 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import BASE_CONFIG, DATA
from tests.support.milter_client import MilterClient
from tests.support.milter_process import MilterProcess

pytestmark = [pytest.mark.protocol, pytest.mark.timeout(120)]

ATTEMPTS = 30
WORKERS = 2


def test_refusals_are_counted_per_worker_and_none_is_lost_at_stop(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    config = tmp_path / "relayguard.toml"
    text = BASE_CONFIG.format(mode="enforce", audit=f'audit_log = "{audit}"')
    config.write_text(text.replace("workers = 1", f'workers = {WORKERS}\nsocket_group = "root"'))
    raw = (DATA / "good.eml").read_bytes()
    with MilterProcess(config, tmp_path / "m.sock", tmp_path / "m.log") as milter:
        for _ in range(ATTEMPTS):
            with MilterClient(str(milter.socket_path)) as client:
                result = client.send_message(
                    raw, sender="<x@evil.example>", rcpts=["<a@example.com>"],
                    client_address="203.0.113.66", macros={},
                )  # fmt: skip
            assert result.reply.text.startswith("550 5.7.1 client 203.0.113.66 is not a regist")
        # While running: at most one line per worker (each writes its first refusal at once).
        assert 1 <= len(audit.read_text().splitlines()) <= WORKERS
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert sum(line.get("count", 1) for line in lines) == ATTEMPTS  # the stop wrote the counts
    assert len(lines) <= 2 * WORKERS
    assert {line["client_address"] for line in lines} == {"203.0.113.66"}
