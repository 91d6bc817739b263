"""Running one of the deploy tier's small playbooks (tests/deploy/render_*.yml) on this machine
with the project's ansible.cfg, its variables passed as one JSON file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"


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
