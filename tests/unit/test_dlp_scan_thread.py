"""The DLP check's trips to the Hyperscan scan thread (dlp/prefilter.py, on_scan_thread): one per
text part, for the built-ins and every keyword dictionary together; and the built-in prefilter
compiled by the supervisor before it forks workers, only when a DLP profile uses it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import TypeVar

import pytest

from relayguard.checks import Subject, dlp
from relayguard.config import Config, load_config
from relayguard.core.message import Client, Envelope, message_from_bytes
from relayguard.core.verdict import Action
from relayguard.dlp import prefilter

pytestmark = pytest.mark.unit

T = TypeVar("T")

DLP_CONFIG = """
[[sources]]
name = "erp"
sasl_users = ["erp"]
senders = ["@example.com"]
dlp_profile = "pci"

[[dlp_detectors]]
name = "falcon"
keywords = ["project falcon"]

[[dlp_detectors]]
name = "payroll"
keywords = ["salary", "payroll"]

[[dlp_profiles]]
name = "pci"
detectors = { card_number = 2, iban = 1, us_ssn = 1, falcon = 1, payroll = 1 }
action = "tag"
"""
NO_DLP_CONFIG = """
[[sources]]
name = "erp"
sasl_users = ["erp"]
senders = ["@example.com"]
"""
TEXT = "card 4111 1111 1111 1111 for project Falcon, payroll 5500-0000-0000-0004\n"


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "relayguard.toml"
    path.write_text(text)
    return load_config(path)


def subject(config: Config, msg: EmailMessage) -> Subject:
    envelope = Envelope(Client(sasl_user="erp"), "erp@example.com", ("alice@example.com",), "Q1")
    parsed = message_from_bytes(msg.as_bytes().replace(b"\n", b"\r\n"), envelope)
    return Subject(config, config.source("erp"), envelope, message=parsed)


def jobs_of_one_check(
    config: Config, msg: EmailMessage, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    """The jobs the DLP check of MSG submits to the scan thread, and its verdict's reason."""
    jobs: list[object] = []
    submit = prefilter.on_scan_thread

    def counted(work: Callable[[], T]) -> T:
        jobs.append(work)
        return submit(work)

    monkeypatch.setattr(prefilter, "on_scan_thread", counted)
    verdict = dlp.make_check(config.content.dlp)(subject(config, msg))
    assert verdict.action is Action.TAG
    return len(jobs), verdict.reason


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "erp@example.com"
    msg["To"] = "alice@example.com"
    msg["Subject"] = "test"
    msg.set_content(TEXT)
    return msg


def test_one_scan_thread_job_per_text_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in prefilter and both dictionaries were three jobs per part. A message is one
    job per text part, not one in all: its parts are read one at a time (dlp/profiles.py,
    scan_parts), and one job would need every part's text held at once."""
    config = load(tmp_path, DLP_CONFIG)
    jobs, reason = jobs_of_one_check(config, message(), monkeypatch)
    assert jobs == 1
    assert reason == "DLP profile pci matched: card_number=2, falcon=1, payroll=1"
    two_parts = message()
    two_parts.add_alternative(f"<p>{TEXT}</p>", subtype="html")
    assert jobs_of_one_check(config, two_parts, monkeypatch) == (
        2,
        "DLP profile pci matched: card_number=2, falcon=2, payroll=2",  # keywords: occurrences
    )


# In a fresh interpreter: the supervisor's preparation for CONFIG, then a forked worker's first
# DLP check, where compiling the database would fail (so it can only use the inherited one).
FORK_SCRIPT = """
import json, os, sys
from pathlib import Path
from relayguard.config import load_config
from relayguard.dlp import prefilter
from relayguard.engine.runtime import prepare_supervisor

prepare_supervisor(load_config(Path(sys.argv[1])))
report = {"hyperscan": "hyperscan" in sys.modules, "compiled": prefilter.BUILTIN.compiled,
          "scan_thread": prefilter._scanner is not None}
if report["compiled"]:
    import hyperscan
    def refused(*args, **kwargs):
        raise AssertionError("compiled in the worker")
    hyperscan.Database = refused
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        text = "card 4111 1111 1111 1111\\nnothing\\n"
        lines = prefilter.locate(text, {prefilter.BUILTIN: ["card_number"]}, ()).lines
        os.write(write, json.dumps(lines).encode())
        os._exit(0)
    os.close(write)
    report["worker"] = json.loads(os.read(read, 4096))
    report["worker_status"] = os.waitpid(pid, 0)[1]
print(json.dumps(report))
"""


def supervisor_then_worker(tmp_path: Path, text: str) -> dict[str, object]:
    path = tmp_path / "relayguard.toml"
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_supervisor_compiles_the_prefilter_before_workers_fork(tmp_path: Path) -> None:
    assert supervisor_then_worker(tmp_path, DLP_CONFIG) == {
        "hyperscan": True,
        "compiled": True,
        "scan_thread": False,  # compiled off the scan thread: nothing was scanned yet
        "worker": {"card_number": [[0, 25]]},
        "worker_status": 0,
    }


def test_without_dlp_hyperscan_is_not_even_imported(tmp_path: Path) -> None:
    assert supervisor_then_worker(tmp_path, NO_DLP_CONFIG) == {
        "hyperscan": False,
        "compiled": False,
        "scan_thread": False,
    }
