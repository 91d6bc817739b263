"""The milter role's logrotate file (issue 12 item 2): valid for logrotate, idempotent, and a real
rotation of the audit log while the milter writes loses no line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from relayguard.core.audit_record import AdminRecord
from relayguard.engine.audit import AuditLog
from tests.deploy.playbook import run_playbook

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]


def render(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    extra = {
        "relayguard_milter__logrotate_dir": str(tmp_path),
        "relayguard_milter__audit_log": str(tmp_path / "audit.jsonl"),
        "__relayguard_milter_service_log": str(tmp_path / "relayguard-milter.log"),
        "relayguard_milter__user": "root",
        "relayguard_milter__group": "root",
    }
    return run_playbook("render_logrotate.yml", extra, tmp_path)


def test_rendered_logrotate_file_is_valid_idempotent_and_loses_no_line(tmp_path: Path) -> None:
    first = render(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    conf = tmp_path / "relayguard"
    text = conf.read_text()
    assert f"{tmp_path}/audit.jsonl {{" in text and "copytruncate" in text
    check = subprocess.run(
        ["logrotate", "-d", str(conf)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    assert "error" not in check.stderr.lower(), check.stderr
    second = render(tmp_path)
    assert second.returncode == 0 and "changed=0" in second.stdout, second.stdout[-3000:]

    audit = AuditLog(tmp_path / "audit.jsonl")

    def line(n: int) -> AdminRecord:
        return AdminRecord("2026-11-23T10:00:00.000Z", "test", "logrotate", reason=str(n))

    for n in range(100):
        audit.write(line(n))
    rotate = subprocess.run(
        ["logrotate", "-f", "-s", str(tmp_path / "state"), str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rotate.returncode == 0, rotate.stderr
    for n in range(100, 150):
        audit.write(line(n))
    rotated = (tmp_path / "audit.jsonl.1").read_text().splitlines()
    current = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert [json.loads(row)["reason"] for row in rotated + current] == [str(n) for n in range(150)]
    assert len(current) == 50  # the milter reopened the new file logrotate created
