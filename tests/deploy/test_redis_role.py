"""The relayguard_redis role (issue 15 item 3): Redis with a password, bound where chosen, and the
relays' [state] pointing at it.

The role's config task renders redis.conf on this machine into a temp dir (twice: the second run
changes nothing, and the password never shows in the play's output); a real redis-server runs on
it: without the password nothing is answered, CONFIG is off, an address it is not bound to is
refused. Two relay nodes' configurations, rendered by the milter role with the URL the Redis role
provides and the password in a file of their own (never in relayguard.toml, nor in the play's
output with --diff), share the kill switch through it: a source disabled through node A is
disabled for B.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.deploy.playbook import VENV, render_config, run_playbook
from tests.support.stack import free_port, wait_until

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

PASSWORD = "test-redis-password-0123456789abcdef"


def render(tmp_path: Path, port: int, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    extra: dict[str, Any] = {
        "relayguard_redis__bind": ["127.0.0.1"],
        "relayguard_redis__port": port,
        "relayguard_redis__password": password,
        "relayguard_redis__config_file": str(tmp_path / "redis.conf"),
        "relayguard_redis__data_dir": str(tmp_path / "data"),
        "relayguard_redis__user": "root",
        "relayguard_redis__group": "root",
        "url_file": str(tmp_path / "url"),
    }
    return run_playbook("render_redis.yml", extra, tmp_path, vars_file="redis-vars.json")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[int]:
    """redis-server on the role's rendered configuration, stopped by its PID afterwards."""
    port = free_port()
    first = render(tmp_path, port)
    assert first.returncode == 0, first.stdout[-4000:]
    second = render(tmp_path, port)
    assert second.returncode == 0 and re.search(r"changed=0\b", second.stdout), second.stdout
    assert PASSWORD not in first.stdout + first.stderr + second.stdout + second.stderr
    log = (tmp_path / "redis.log").open("wb")
    process = subprocess.Popen(
        ["redis-server", str(tmp_path / "redis.conf")], stdout=log, stderr=subprocess.STDOUT
    )
    client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        assert wait_until(answers, 15), (tmp_path / "redis.log").read_text()
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_redis_needs_the_password_and_listens_only_where_bound(redis_server: int) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=redis_server).ping()
    client = redis.Redis(host="127.0.0.1", port=redis_server, password=PASSWORD)
    assert client.ping()
    with pytest.raises(redis.ResponseError, match="unknown command"):
        client.execute_command("CONFIG", "GET", "bind")
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.2", port=redis_server, password=PASSWORD).ping()


def test_two_nodes_share_the_kill_switch_through_the_roles_redis(
    redis_server: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = (tmp_path / "url").read_text()
    assert url == f"redis://127.0.0.1:{redis_server}/0"
    monkeypatch.setenv("ANSIBLE_DIFF_ALWAYS", "1")  # as `ansible-playbook --diff` would show it
    configs = []
    for node in ("node-a", "node-b"):
        node_dir = tmp_path / node
        node_dir.mkdir()
        variables = {
            "relayguard_milter__sources": [
                {"name": "printer", "sasl_users": ["printer"], "senders": ["printer@example.com"]}
            ],
            "relayguard_milter__config": {"state": {"backend": "redis", "redis_url": url}},
            "relayguard_milter__redis_password": PASSWORD,
            "relayguard_milter__redis_password_file": str(node_dir / "redis.password"),
        }
        runs = [render_config(node_dir, variables) for _ in range(2)]
        assert runs[0].returncode == 0, runs[0].stdout[-3000:]
        assert runs[1].returncode == 0 and re.search(r"changed=0\b", runs[1].stdout)
        assert "+++ after" in runs[0].stdout  # the diff was shown: without the password
        assert PASSWORD not in "".join(run.stdout + run.stderr for run in runs)
        config = (node_dir / "relayguard.toml").read_text()
        assert PASSWORD not in config
        assert f'redis_password_file = "{node_dir / "redis.password"}"' in config
        secret = node_dir / "redis.password"
        assert secret.read_text() == PASSWORD + "\n"
        assert secret.stat().st_mode & 0o777 == 0o640
        configs.append(node_dir / "relayguard.toml")

    def relayguard(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV / "bin" / "relayguard"), "sources", *args, "--config", str(config)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    disabled = relayguard("disable", "printer", "--reason", "stolen password", config=configs[0])
    assert disabled.returncode == 0, disabled.stdout + disabled.stderr
    listed = relayguard("disabled", config=configs[1])
    assert listed.returncode == 0 and "printer" in listed.stdout, listed.stdout + listed.stderr
    assert PASSWORD not in disabled.stdout + disabled.stderr + listed.stdout + listed.stderr
