"""Shared fixtures: a known-good configuration every tier starts from."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.rspamd import Rspamd

DATA = Path(__file__).parent / "data"

BASE_CONFIG = """
[relay]
mode = "{mode}"
internal_domains = ["example.com"]
{audit}

[milter]
workers = 1

[[sources]]
name = "scanner-hq"
sasl_users = ["scanner-hq"]
senders = ["scanner@example.com"]
recipients = ["@example.com", "partner@example.net"]
max_recipients = 3

[[sources]]
name = "erp"
client_cert_subjects = ["CN=erp.example.com"]
senders = ["@erp.example.com", "invoices@example.com"]

[[sources]]
name = "legacy-ups"
networks = ["192.0.2.0/28", "2001:db8::10/128"]
senders = ["ups@example.com"]
mode = "monitor"
"""


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write BASE_CONFIG (or given text) to a file and return its path."""

    def write(text: str | None = None, *, mode: str = "enforce", audit: Path | None = None) -> Path:
        audit_line = f'audit_log = "{audit}"' if audit else ""
        body = text if text is not None else BASE_CONFIG.format(mode=mode, audit=audit_line)
        path = tmp_path / "relayguard.toml"
        path.write_text(body)
        return path

    return write


@pytest.fixture
def data() -> Path:
    return DATA


@pytest.fixture(scope="session")
def rspamd() -> Iterator[Rspamd]:
    """One real Rspamd for the whole run (a cold start compiles for ~20 s, see
    tests/support/rspamd.py). A test that stops it must start it again before it returns."""
    from tests.support.rspamd import Rspamd
    from tests.support.stack import make_dir

    directory = make_dir("relayguard-rspamd-")
    with Rspamd(directory) as server:
        yield server
    shutil.rmtree(directory, ignore_errors=True)
