"""The relayguard_console role: off by default, its own user, a hardened unit, [console] rendered.

The role's service definition and the milter role's config task run on this machine into a
temp dir (tests/deploy/render_console.yml), the configuration checked by the real
`relayguard check` (the template's validate) and the unit by `systemd-analyze verify`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.playbook import VENV, render_units_and_config, rendered_config

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]


def render(tmp_path: Path, **variables: Any) -> subprocess.CompletedProcess[str]:
    extra = {
        "relayguard_console__venv": str(VENV),
        "relayguard_console__config_file": str(tmp_path / "relayguard.toml"),
        "relayguard_milter__sources": [
            {"name": "printer", "sasl_users": ["printer"], "senders": ["scan@example.com"]}
        ],
        **variables,
    }
    return render_units_and_config("render_console.yml", tmp_path, extra)


def test_off_by_default_no_console_table(tmp_path: Path) -> None:
    run = render(tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "console" not in rendered_config(tmp_path)


def test_enabled_renders_the_table_and_a_hardened_unit(tmp_path: Path) -> None:
    run = render(tmp_path, relayguard_console__enabled=True)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "Verify the unit of relayguard-console" in run.stdout
    console = rendered_config(tmp_path)["console"]
    assert console == {
        "address": "127.0.0.1",
        "port": 8443,
        "accounts_file": "/var/lib/relayguard/console/users.json",
        "state_directory": "/var/lib/relayguard/console",
        "postfix_config": "/etc/postfix",
        "session_minutes": 480,
        "quarantine_helper": "/run/relayguard-quarantine/helper.sock",
    }
    unit = (tmp_path / "relayguard-console.service").read_text()
    for line in (
        "User=relayguard-console",
        "SupplementaryGroups=relayguard",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        f"ExecStart={VENV}/bin/relayguard console serve --config {tmp_path}/relayguard.toml",
        "ExecReload=/bin/kill -HUP $MAINPID\n",  # systemctl reload rereads the config
    ):
        assert line in unit, line
    assert "Verify the unit of relayguard-quarantine-helper" in run.stdout
    helper = (tmp_path / "relayguard-quarantine-helper.service").read_text()
    for line in (
        "User=root",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE"
        " CAP_DAC_READ_SEARCH\n",
        "RestrictAddressFamilies=AF_UNIX\n",
        "ReadWritePaths=/var/spool/postfix\n",
        "RuntimeDirectory=relayguard-quarantine\n",
        f"ExecStart={VENV}/bin/relayguard quarantine-helper --socket"
        " /run/relayguard-quarantine/helper.sock --socket-group relayguard-console"
        " --postfix-config /etc/postfix\n",
    ):
        assert line in helper, line


def test_off_loopback_without_tls_is_refused(tmp_path: Path) -> None:
    run = render(tmp_path, relayguard_console__enabled=True, relayguard_console__address="0.0.0.0")
    assert run.returncode != 0
    assert "address" in run.stdout and "not loopback" in run.stdout
    assert not (tmp_path / "relayguard.toml").exists()
