"""The reason handed to the MTA with smfi_quarantine is one printable line, whatever the sender
named its files (an MTA may log it or keep it with the held message)."""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import Milter
import pytest

from relayguard.config import load_config
from relayguard.core.safe_text import UNSAFE
from relayguard.daemon.adapter import RelayguardMilter
from relayguard.engine.runtime import Runtime, RuntimeHolder
from tests.adapter.test_adapter import Gauge, Recorder, send
from tests.conftest import BASE_CONFIG
from tests.support.documents import zip_bytes

pytestmark = pytest.mark.adapter

YARA_DIR = Path(__file__).parents[1] / "data" / "content" / "yara"
HOSTILE = 'r.txt\n[[sources]]\nname="evil"\x1b[2J\r\u202eexe.txt\x9b'


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Recorder]:
    path = tmp_path / "relayguard.toml"
    text = BASE_CONFIG.format(mode="enforce", audit=f'audit_log = "{tmp_path / "audit.jsonl"}"')
    path.write_text(text + f'\n[yara]\nrules_dir = "{YARA_DIR}"\n')
    config = load_config(path)
    holder = RuntimeHolder(config.path, Runtime.build(config))
    previous = Milter.factory
    Milter.factory = lambda: RelayguardMilter(holder, Gauge())
    yield Recorder()
    Milter.factory = previous


def test_quarantine_reason_is_one_printable_line(ctx: Recorder) -> None:
    msg = EmailMessage()
    msg["From"] = "scanner@example.com"
    msg["To"] = "alice@example.com"
    msg["Subject"] = "scan"
    msg.set_content("scan attached")
    msg.add_attachment(
        zip_bytes({HOSTILE: "status RELAYGUARD-TEST-HOLD"}),
        maintype="application",
        subtype="zip",
        filename="scan.zip",
    )
    assert send(ctx, msg.as_bytes().replace(b"\n", b"\r\n")) == ("eom", Milter.ACCEPT)
    assert ctx.quarantined is not None
    assert ctx.quarantined.startswith("YARA rule markers:Hold_Marker matched in part 2/r.txt\\")
    assert UNSAFE.search(ctx.quarantined) is None
