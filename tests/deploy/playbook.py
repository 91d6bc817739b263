"""Running one of the deploy tier's small playbooks (tests/deploy/render_*.yml) on this machine
with the project's ansible.cfg, its variables passed as one JSON file; and the variables every
render playbook shares, so that a test names only what is its own."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
ANSIBLE_PLAYBOOK = VENV / "bin" / "ansible-playbook"
CONFIG_NAME = "relayguard.toml"


def run_playbook(
    name: str, variables: dict[str, Any], workdir: Path, *, vars_file: str = "vars.json"
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook tests/deploy/NAME against localhost; VARIABLES as extra vars."""
    (workdir / vars_file).write_text(json.dumps(variables))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1"}  # fmt: skip
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(ROOT / "tests" / "deploy" / name),
         "-e", f"@{workdir / vars_file}"],
        cwd=ROOT / "ansible", env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip


def service_vars(workdir: Path, manager: str = "systemd") -> dict[str, Any]:
    """relayguard_service under MANAGER, starting nothing; systemd units go into WORKDIR (where
    the role verifies them)."""
    return {
        "relayguard_service__manager": manager,
        "relayguard_service__unit_dir": str(workdir),
        "relayguard_service__start": False,
    }


def milter_vars(workdir: Path, config_file: Path | None = None) -> dict[str, Any]:
    """The milter role's config task as root, its files in WORKDIR (the configuration in
    CONFIG_FILE if given), checked by this checkout's `relayguard check`."""
    return {
        "relayguard_milter__venv": str(VENV),
        "relayguard_milter__config_file": str(config_file or workdir / CONFIG_NAME),
        "relayguard_milter__audit_log": str(workdir / "audit.jsonl"),
        "relayguard_milter__socket_path": str(workdir / "milter.sock"),
        "relayguard_milter__socket_group": "root",
        "relayguard_milter__user": "root",
        "relayguard_milter__group": "root",
    }


def render_units_and_config(
    name: str, workdir: Path, variables: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """tests/deploy/NAME: a role's systemd units and the milter's configuration into WORKDIR
    (service_vars and milter_vars), VARIABLES over them."""
    shared = {**service_vars(workdir), **milter_vars(workdir)}
    return run_playbook(name, {**shared, **variables}, workdir)


def render_config(workdir: Path, variables: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """tests/deploy/render_config.yml: the milter's configuration alone, into WORKDIR."""
    return run_playbook("render_config.yml", {**milter_vars(workdir), **variables}, workdir)


def rendered_config(workdir: Path) -> dict[str, Any]:
    """The relayguard.toml that milter_vars(WORKDIR) had the role write."""
    return tomllib.loads((workdir / CONFIG_NAME).read_text())
