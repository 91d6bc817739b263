"""relayguard_rspamd (issue 17, part 1): Debian's Rspamd for the [spam] check, on loopback, with
the modules that need the internet off.

The role's config task renders its local.d/ and override.d/ files on this machine into a temp dir
(twice: the second run changes nothing); a real rspamd then runs Debian's stock rspamd.conf with
that directory as its LOCAL_CONFDIR, as the packaged service would with /etc/rspamd: the normal
worker answers /checkv2 on the chosen loopback address only (GTUBE is refused, a plain message is
not), the controller answers on its own port, the proxy worker does not listen, and no module
that talks to the internet is loaded.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.playbook import run_playbook
from tests.support.rspamd import GTUBE, RSPAMD, USER, Rspamd, owned_dir
from tests.support.stack import LOOPBACK, free_ports, make_dir

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

NETWORK_MODULES = ("rbl", "surbl", "emails", "fuzzy_check", "asn", "dmarc", "spf", "hfilter")


class RoleRspamd(Rspamd):
    """rspamd on Debian's stock rspamd.conf, the role's files as LOCAL_CONFDIR."""

    def __init__(self, directory: Path, local_confdir: Path, port: int) -> None:
        super().__init__(directory, port)
        self.local_confdir = local_confdir

    def argv(self) -> list[str]:
        variables = {
            "LOCAL_CONFDIR": str(self.local_confdir),
            "RUNDIR": str(owned_dir(self.work)),
            "LOGDIR": str(self.work),
            "DBDIR": str(owned_dir(self.directory / "db")),
        }
        return [
            RSPAMD, "-f", "-u", USER, "-g", USER, "-c", "/etc/rspamd/rspamd.conf",
            *(f"--var={name}={value}" for name, value in variables.items()),
        ]  # fmt: skip


def render(tmp_path: Path, confdir: Path, normal: int, controller: int) -> str:
    variables = {
        "relayguard_rspamd__config_dir": str(confdir),
        "relayguard_rspamd__normal_port": normal,
        "relayguard_rspamd__controller_port": controller,
        # No DNS here: a lookup some module still makes fails at once instead of timing out.
        "relayguard_rspamd__dns_servers": ["127.0.0.1:1"],
    }
    first = run_playbook("render_rspamd.yml", variables, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    second = run_playbook("render_rspamd.yml", variables, tmp_path)
    assert second.returncode == 0 and re.search(r"changed=0\b", second.stdout), second.stdout
    return first.stdout


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoleRspamd]:
    directory = make_dir("rspamd-role-")
    confdir = directory / "etc"
    normal, controller = free_ports(2)
    render(tmp_path_factory.mktemp("render"), confdir, normal, controller)
    server = RoleRspamd(directory, confdir, normal)
    server.controller_port = controller  # type: ignore[attr-defined]
    try:
        with server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def check(port: int, message: bytes) -> dict[str, object]:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
    try:
        connection.request("POST", "/checkv2", body=message)
        response = connection.getresponse()
        assert response.status == 200
        result = json.loads(response.read())
        assert isinstance(result, dict)
        return result
    finally:
        connection.close()


def test_the_normal_worker_scores_on_loopback_only(rspamd: RoleRspamd) -> None:
    plain = b"From: app@example.com\r\nTo: a@example.org\r\nSubject: invoice\r\n\r\nHello.\r\n"
    assert check(rspamd.port, plain)["action"] != "reject"
    gtube = plain.replace(b"Hello.", GTUBE.encode())
    assert check(rspamd.port, gtube)["action"] == "reject"
    with pytest.raises(OSError):
        socket.create_connection(("::1", rspamd.port), timeout=5).close()


def test_the_controller_listens_and_the_proxy_does_not(rspamd: RoleRspamd) -> None:
    port = rspamd.controller_port  # type: ignore[attr-defined]
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    connection.request("GET", "/ping")
    assert connection.getresponse().read().strip() == b"pong"
    connection.close()
    assert re.search(r"worker of type rspamd_proxy\(\S+\) is disabled", rspamd.log_text())


def test_no_module_that_needs_the_internet_is_loaded(rspamd: RoleRspamd) -> None:
    # surbl and emails are converted into rbl rules at load: off with rbl (their files say so too).
    log = rspamd.log_text()
    assert "converted surbl rules to rbl rules" in log
    for module in (*NETWORK_MODULES, "dkim_signing"):
        if module in ("surbl", "emails"):
            continue
        assert re.search(rf"module {module} is disabled in the configuration", log), module
