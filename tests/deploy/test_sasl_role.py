"""Secrets in the Ansible roles never reach a command line (readable by any local user in
/proc/PID/cmdline) nor the play's output.

Statically: no command task of any role passes a password variable in its arguments (stdin is
the way in), and every task that touches one is `no_log`. Dynamically: the relayguard_sasl role's
demo-hash step runs on this machine with a shim `doveadm` first in PATH that records its
arguments; the password is never among them, the hash it leaves verifies with the real
`doveadm pw -t`, and a second run keeps it (a new salt each run would change the passwd-file).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "ansible" / "roles"
ANSIBLE_PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"
DOVEADM = "/usr/bin/doveadm"
PASSWORD = "Demo7pass2Word9xyzQ4rT6u"  # the shape the role generates: 24 letters and digits
COMMAND_MODULES = {
    f"{prefix}{name}"
    for prefix in ("", "ansible.builtin.", "ansible.legacy.")
    for name in ("command", "shell", "raw", "script", "expect")
}
# A Jinja expression naming a password: a variable or lookup, not a path to one nor its hash.
SECRET = re.compile(r"\{\{[^}]*password(?!_file|_hash)[^}]*\}\}")

PLAYBOOK = """
- name: The relayguard_sasl demo-hash step alone, on files in a temp dir
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Hash the demo login's password
      ansible.builtin.include_role:
        name: relayguard_sasl
        tasks_from: demo_hash
    - name: Record the hash
      ansible.builtin.copy:
        content: "{{ __relayguard_sasl_demo_hash }}"
        dest: "{{ hash_file }}"
        mode: "0600"
"""


def role_task_files() -> list[Path]:
    return sorted(p for p in ROLES.glob("*/*/*.yml") if p.parent.name in ("tasks", "handlers"))


def tasks_in(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for task in items:
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks_in(task.get(key) or [])


def secrets_in(value: object) -> list[str]:
    if isinstance(value, str):
        return SECRET.findall(value)
    if isinstance(value, dict):
        return [s for v in value.values() for s in secrets_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in secrets_in(v)]
    return []


def command_line(task: dict[str, Any]) -> object:
    """What a command task puts on the command line: argv, cmd or the free-form string."""
    for module in COMMAND_MODULES & task.keys():
        args = task[module]
        if isinstance(args, dict):
            return [args.get("argv"), args.get("cmd"), args.get("_raw_params")]
        return args
    return None


def all_tasks() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in role_task_files():
        for task in tasks_in(yaml.safe_load(path.read_text()) or []):
            found.append((f"{path.relative_to(ROLES)}: {task.get('name')}", task))
    return found


def test_the_scan_sees_the_roles_password_tasks() -> None:
    touching = [where for where, task in all_tasks() if secrets_in(task)]
    assert any("relayguard_sasl/tasks/login_hash.yml" in where for where in touching), touching


def test_no_role_puts_a_password_on_a_command_line() -> None:
    offenders = [
        f"{where}: {found}"
        for where, task in all_tasks()
        for found in secrets_in(command_line(task))
    ]
    assert offenders == []


def test_every_task_touching_a_password_is_no_log() -> None:
    offenders = [
        where
        for where, task in all_tasks()
        if secrets_in({k: v for k, v in task.items() if k != "name"})
        and task.get("no_log") is not True
    ]
    assert offenders == []


# --- the demo-hash step, run ----------------------------------------------------------------


def run_demo_hash(workdir: Path, shim_dir: Path) -> tuple[str, str]:
    """Apply the step once; return (the hash it keeps, the play's output)."""
    hash_file = workdir / "hash"
    extra = {
        "relayguard_sasl__demo_user": "demo-device",
        "relayguard_sasl__demo_password_file": str(workdir / "demo.password"),
        "relayguard_sasl__passwd_file": str(workdir / "relayguard.passwd"),
        "hash_file": str(hash_file),
    }
    (workdir / "extra.json").write_text(json.dumps(extra))
    env = {
        **os.environ,
        "PATH": f"{shim_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_ROLES_PATH": str(ROLES),
        "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
    }
    result = subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            "localhost,",
            "-e",
            "ansible_python_interpreter=/usr/bin/python3",
            "-e",
            f"@{workdir / 'extra.json'}",
            str(workdir / "play.yml"),
        ],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return hash_file.read_text().strip(), output


@pytest.fixture
def demo_hash_setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A temp dir with the password file and play, and a `doveadm` shim recording its argv."""
    (tmp_path / "demo.password").write_text(PASSWORD + "\n")
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    calls = tmp_path / "doveadm-calls.log"
    shim = shim_dir / "doveadm"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >>{calls}\nexec {DOVEADM} "$@"\n')
    shim.chmod(0o755)
    return tmp_path, shim_dir, calls


def verifies(stored_hash: str, password: str) -> bool:
    result = subprocess.run(
        [DOVEADM, "pw", "-t", stored_hash],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0 and "(verified)" in result.stdout


def test_demo_hash_never_puts_the_password_on_a_command_line(
    demo_hash_setup: tuple[Path, Path, Path],
) -> None:
    workdir, shim_dir, calls = demo_hash_setup
    first, output = run_demo_hash(workdir, shim_dir)
    assert first.startswith("{SHA512-CRYPT}$6$")
    assert verifies(first, PASSWORD)
    assert not verifies(first, PASSWORD + "x")
    (workdir / "relayguard.passwd").write_text(f"demo-device:{first}::::::\n")
    second, second_output = run_demo_hash(workdir, shim_dir)
    assert second == first  # the matching hash is kept: the passwd-file does not change

    recorded = calls.read_text().splitlines()
    assert [c.split()[:2] for c in recorded] == [["pw", "-s"], ["pw", "-t"]]
    assert all(PASSWORD not in line for line in recorded)
    assert PASSWORD not in output + second_output
    assert "changed=0" in second_output
