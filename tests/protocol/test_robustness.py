"""Broken and hostile messages over the milter protocol: a definite answer for every one, the
process stays up, and the next normal message is accepted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.protocol.test_milter_process import SCANNER_MACROS, config_text, send
from tests.support.broken_messages import corpus
from tests.support.milter_client import MilterClient, MilterConnectionClosed
from tests.support.milter_process import MilterProcess

pytestmark = [pytest.mark.protocol, pytest.mark.timeout(300)]

DEFINITE = {"accept", "replycode", "reject", "tempfail", "discard"}


@pytest.fixture(scope="module")
def milter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilterProcess]:
    directory = tmp_path_factory.mktemp("robustness")
    config = directory / "relayguard.toml"
    config.write_text(config_text(audit=directory / "audit.jsonl"))
    with MilterProcess(config, directory / "milter.sock", directory / "milter.log") as process:
        yield process


@pytest.mark.parametrize(("name", "raw"), corpus(), ids=[name for name, _ in corpus()])
def test_every_broken_message_gets_a_definite_answer(
    milter: MilterProcess, name: str, raw: bytes
) -> None:
    workers = sorted(milter.workers())
    with MilterClient(str(milter.socket_path), timeout=60) as client:
        result = client.send_message(
            raw,
            sender="<scanner@example.com>",
            rcpts=["<alice@example.com>"],
            client_address="198.51.100.7",
            macros=SCANNER_MACROS,
        )
    assert result.stage == "eom"
    assert result.reply.action in DEFINITE
    if result.reply.action == "replycode":
        assert result.reply.text is not None
        assert result.reply.text[:1] in ("4", "5")
    assert sorted(milter.workers()) == workers  # no worker died on it
    assert send(milter, "good.eml").reply.action == "accept"


def test_header_over_libmilters_packet_limit_costs_only_that_connection(
    milter: MilterProcess,
) -> None:
    """Postfix's header_size_limit (60,000) keeps real traffic below this; here we go past it."""
    raw = (
        (DATA / "good.eml")
        .read_bytes()
        .replace(b"\r\n\r\n", b"\r\nX-Big: " + b"b" * 1_048_576 + b"\r\n\r\n", 1)
    )
    with pytest.raises(MilterConnectionClosed):
        send(milter, raw)
    assert send(milter, "good.eml").reply.action == "accept"


def test_audit_line_for_every_decision_and_no_body_content(milter: MilterProcess) -> None:
    audit = Path(milter.config.parent / "audit.jsonl").read_text()
    assert "innermost" not in audit and "line two" not in audit
