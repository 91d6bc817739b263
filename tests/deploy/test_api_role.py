"""The relayguard_api role: off by default, its own user, a hardened unit, [api] rendered.

The role's service definition and the milter role's config task run on this machine into a temp
dir (tests/deploy/render_api.yml): the configuration is checked by the real `relayguard check`
(the template's validate) and the unit by `systemd-analyze verify` when it is installed.
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
        "relayguard_api__command": str(VENV / "bin" / "relayguard"),
        "relayguard_api__config_file": str(tmp_path / "relayguard.toml"),
        "relayguard_milter__sources": [
            {"name": "erp", "sasl_users": ["erp-device"], "senders": ["erp@example.com"]}
        ],
        "relayguard_milter__config": {"state": {"path": str(tmp_path / "state.sqlite3")}},
        **variables,
    }
    return render_units_and_config("render_api.yml", tmp_path, extra)


def test_off_by_default_no_api_table(tmp_path: Path) -> None:
    run = render(tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "api" not in rendered_config(tmp_path)


def test_enabled_renders_the_table_and_a_hardened_unit(tmp_path: Path) -> None:
    run = render(
        tmp_path,
        relayguard_api__enabled=True,
        relayguard_api__settings={"connections": 16, "headers": ["X-Priority"]},
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert "Verify the unit of relayguard-api" in run.stdout
    api = rendered_config(tmp_path)["api"]
    assert api == {
        "address": "127.0.0.1",
        "port": 8580,
        "relay_host": "127.0.0.1",
        "relay_port": 10587,
        "sasl_user": "relayguard-api",
        "sasl_password_file": "/etc/relayguard/api-sasl-password",
        "connections": 16,
        "headers": ["X-Priority"],
    }
    unit = (tmp_path / "relayguard-api.service").read_text()
    for line in (
        "User=relayguard-api",
        "Group=relayguard-api",
        "SupplementaryGroups=relayguard",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "ReadWritePaths=/var/lib/relayguard",
        f"ExecStart={VENV}/bin/relayguard api serve --config {tmp_path}/relayguard.toml",
    ):
        assert line in unit, line
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit  # systemctl reload rereads the config


def test_tls_files_reach_the_table(tmp_path: Path) -> None:
    run = render(
        tmp_path,
        relayguard_api__enabled=True,
        relayguard_api__address="0.0.0.0",
        relayguard_api__tls_certificate="/etc/relayguard/api.crt",
        relayguard_api__tls_key="/etc/relayguard/api.key",
    )
    assert run.returncode == 0, run.stdout[-3000:]
    api = rendered_config(tmp_path)["api"]
    assert (api["address"], api["tls_certificate"], api["tls_key"]) == (
        "0.0.0.0", "/etc/relayguard/api.crt", "/etc/relayguard/api.key",
    )  # fmt: skip
