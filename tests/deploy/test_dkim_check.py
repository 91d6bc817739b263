"""The milter role's daily DKIM check: with signed domains, a systemd timer + service (or a cron
file) runs `relayguard dkim verify-dns --metrics-file` per domain as the milter's user, and the
configuration names the file in [metrics] dkim_status_file.

tests/deploy/render_dkim_check.yml generates the keys, renders the configuration (checked by
the real `relayguard check`, the template's validate) and the units (checked by
`systemd-analyze verify`) into a temp dir, starting nothing.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.playbook import VENV, render_units_and_config, rendered_config

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

DOMAINS = ["example.com", "example.org"]


def render(tmp_path: Path, **variables: Any) -> subprocess.CompletedProcess[str]:
    extra = {
        "relayguard_milter__dkim_key_directory": str(tmp_path / "dkim"),
        "relayguard_milter__dkim_keys": [
            {"domain": domain, "selector": "s2026", "algorithm": "ed25519"} for domain in DOMAINS
        ],
        "relayguard_milter__dkim_status_file": str(tmp_path / "state" / "dkim-status.json"),
        "relayguard_milter__cron_dir": str(tmp_path),
        "relayguard_milter__sources": [
            {"name": "printer", "sasl_users": ["printer"], "senders": ["scan@example.com"]}
        ],
        **variables,
    }
    return render_units_and_config("render_dkim_check.yml", tmp_path, extra)


def command(tmp_path: Path, domain: str) -> str:
    return shlex.join([
        str(VENV / "bin" / "relayguard"), "dkim", "verify-dns",
        "--config", str(tmp_path / "relayguard.toml"),
        "--metrics-file", str(tmp_path / "state" / "dkim-status.json"),
        "--domain", domain,
    ])  # fmt: skip


def test_timer_runs_verify_dns_per_domain_and_the_config_names_the_file(tmp_path: Path) -> None:
    run = render(tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    assert re.search(r"Verify the DKIM check's units\] \*+\nok: \[localhost\]", run.stdout)
    config = rendered_config(tmp_path)
    assert config["metrics"] == {"dkim_status_file": str(tmp_path / "state" / "dkim-status.json")}
    service = (tmp_path / "relayguard-dkim-check.service").read_text()
    for line in ["Type=oneshot", "User=root", "NoNewPrivileges=yes",
                 f"ReadWritePaths={tmp_path / 'state'}",
                 *(f"ExecStart=-{command(tmp_path, d)}" for d in DOMAINS)]:  # fmt: skip
        assert line + "\n" in service, line
    timer = (tmp_path / "relayguard-dkim-check.timer").read_text()
    assert "OnCalendar=daily\n" in timer and "WantedBy=timers.target" in timer
    assert not (tmp_path / "relayguard-dkim-check").exists()  # no cron file under systemd


def test_without_systemd_a_cron_file_runs_it_as_the_milter_user(tmp_path: Path) -> None:
    run = render(tmp_path, relayguard_service__manager="sysv")
    assert run.returncode == 0, run.stdout[-3000:]
    lines = (tmp_path / "relayguard-dkim-check").read_text().splitlines()
    jobs = [line for line in lines if line and not line.startswith(("#", "SHELL=", "PATH="))]
    assert jobs == [f"{23 + n} 4 * * * root {command(tmp_path, d)} >/dev/null"
                    for n, d in enumerate(DOMAINS)]  # fmt: skip
    assert not (tmp_path / "relayguard-dkim-check.timer").exists()


def test_no_status_file_no_check_and_no_metrics_table(tmp_path: Path) -> None:
    run = render(tmp_path, relayguard_milter__dkim_status_file="")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "metrics" not in rendered_config(tmp_path)
