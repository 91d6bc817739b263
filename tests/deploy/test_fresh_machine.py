"""What `make appliance` needs on a fresh Debian 12 that this machine happens to have already.

Found by running it in a fresh debootstrap root under a real systemd (lab/systemd-lab.sh,
docs/appliance-systemd.md): `ansible.builtin.pip` imports `packaging` on the target, which a
fresh Debian lacks (the play failed at the milter's install); and a play that fails after a
configuration changed lost its notified reloads, so the next run (nothing changed any more) left
Dovecot on Debian's default configuration: no SASL socket, every login refused.
"""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "ansible" / "roles"
PIP_MODULES = {"pip", "ansible.builtin.pip", "ansible.legacy.pip"}
APT_MODULES = {"apt", "ansible.builtin.apt", "ansible.legacy.apt"}


def _tasks(role: Path) -> list[dict[str, Any]]:
    """Every task of a role's task files, blocks flattened."""
    found: list[dict[str, Any]] = []
    pending: list[Any] = []
    for path in sorted((role / "tasks").glob("*.yml")):
        pending.extend(yaml.safe_load(path.read_text()) or [])
    while pending:
        task = pending.pop()
        found.append(task)
        for key in ("block", "rescue", "always"):
            pending.extend(task.get(key) or [])
    return found


def _apt_packages(tasks: list[dict[str, Any]]) -> set[str]:
    names: set[str] = set()
    for task in tasks:
        for module in APT_MODULES & task.keys():
            listed = task[module].get("name", [])
            names.update([listed] if isinstance(listed, str) else listed)
    return names


def _uses_pip(role: Path) -> bool:
    return any(PIP_MODULES & task.keys() for task in _tasks(role))


def test_roles_that_use_pip_install_what_the_pip_module_imports() -> None:
    pip_roles = [role for role in sorted(ROLES.iterdir()) if _uses_pip(role)]
    assert pip_roles, "no role uses the pip module any more: drop this test"
    for role in pip_roles:
        assert "python3-packaging" in _apt_packages(_tasks(role)), role.name


def test_a_failed_run_still_runs_the_notified_handlers() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "ansible" / "ansible.cfg")
    assert config.getboolean("defaults", "force_handlers", fallback=False)
