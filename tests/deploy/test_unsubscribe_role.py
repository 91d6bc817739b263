"""The relayguard_unsubscribe role: off by default, its own user, a hardened unit.

The role's service definition and the milter role's config task run on this machine into a temp
dir (tests/deploy/render_unsubscribe.yml): the configuration, with the site's [unsubscribe] table
given through relayguard_milter__config, is checked by the real `relayguard check` (the template's
validate) and the unit by `systemd-analyze verify`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.playbook import VENV, render_units_and_config, rendered_config

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

UNSUBSCRIBE = {
    "sources": ["newsletter"],
    "base_url": "https://unsubscribe.example.com",
    "secrets": ["a-test-secret-of-32-characters!!"],
}


def render(tmp_path: Path, **variables: Any) -> subprocess.CompletedProcess[str]:
    extra = {
        "relayguard_unsubscribe__command": str(VENV / "bin" / "relayguard"),
        "relayguard_unsubscribe__config_file": str(tmp_path / "relayguard.toml"),
        "relayguard_milter__sources": [
            {"name": "newsletter", "sasl_users": ["news"], "senders": ["news@example.com"]}
        ],
        **variables,
    }
    return render_units_and_config("render_unsubscribe.yml", tmp_path, extra)


def test_off_by_default_renders_no_unit(tmp_path: Path) -> None:
    run = render(tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    assert not (tmp_path / "relayguard-unsubscribe.service").exists()
    assert "unsubscribe" not in rendered_config(tmp_path)


def test_enabled_renders_a_hardened_unit_and_a_checked_config(tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "the deploy tier needs systemd-analyze"
    state = str(tmp_path / "state.sqlite3")
    run = render(
        tmp_path,
        relayguard_unsubscribe__enabled=True,
        relayguard_unsubscribe__sqlite_state=state,
        relayguard_milter__config={"unsubscribe": UNSUBSCRIBE, "state": {"path": state}},
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert "Verify the unit of relayguard-unsubscribe" in run.stdout
    config = rendered_config(tmp_path)
    assert config["unsubscribe"] == UNSUBSCRIBE
    unit = (tmp_path / "relayguard-unsubscribe.service").read_text()
    for line in (
        "User=relayguard-unsubscribe",
        "Group=relayguard-unsubscribe",
        "SupplementaryGroups=relayguard",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "AmbientCapabilities=\n",
        "ProtectSystem=strict",
        f"ReadWritePaths={tmp_path}\n",
        f"ExecStart={VENV}/bin/relayguard unsubscribe-server --config {tmp_path}/relayguard.toml",
    ):
        assert line in unit, line
    assert "ExecReload" not in unit  # it reads its configuration at start only


def test_redis_state_leaves_the_system_read_only(tmp_path: Path) -> None:
    run = render(
        tmp_path,
        relayguard_unsubscribe__enabled=True,
        relayguard_unsubscribe__sqlite_state="",
        relayguard_milter__config={
            "unsubscribe": UNSUBSCRIBE,
            "state": {"backend": "redis", "redis_url": "redis://127.0.0.1:6379/0"},
        },
    )
    assert run.returncode == 0, run.stdout[-3000:]
    unit = (tmp_path / "relayguard-unsubscribe.service").read_text()
    assert "ProtectSystem=strict" in unit
    assert "ReadWritePaths" not in unit
