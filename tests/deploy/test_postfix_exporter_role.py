"""relayguard_postfix_exporter (issue 15, item 4): the queue-growth alert reads a metric that the
deployed exporter really serves.

The role's service is rendered on this machine into a temp dir (an init script, twice: the second
run changes nothing; and a systemd unit, which relayguard_service checks with systemd-analyze).
The exact argv it records is then run, as the role's user with only Postfix's postdrop group,
against a real Postfix instance whose relayhost refuses connections, so one message sits in the
deferred queue: every postfix_* metric that the alert rules use must be served, and the deferred
queue must count that message.
"""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.playbook import run_playbook, service_vars
from tests.support.stack import (
    PostfixInstance,
    free_port,
    free_ports,
    make_dir,
    make_self_signed,
    postfix_settings,
    wait_until,
)
from tests.unit.test_alert_rules import alert_rules, metric_names

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]


def render(tmp_path: Path, **variables: Any) -> subprocess.CompletedProcess[str]:
    extra = {
        **service_vars(tmp_path, manager="sysv"),
        "relayguard_service__init_dir": str(tmp_path),
        "command_file": str(tmp_path / "command.json"),
        **variables,
    }
    return run_playbook("render_postfix_exporter.yml", extra, tmp_path)


def test_the_service_listens_on_loopback_and_reaches_showq(tmp_path: Path) -> None:
    first = render(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    second = render(tmp_path)
    assert second.returncode == 0 and re.search(r"changed=0\b", second.stdout), second.stdout
    script = (tmp_path / "relayguard-postfix-exporter").read_text()
    assert "--web.listen-address=127.0.0.1:9154" in script
    assert "USER=prometheus" in script
    unit = render(tmp_path, relayguard_service__manager="systemd")
    assert unit.returncode == 0, unit.stdout[-3000:]
    assert "Verify the unit of relayguard-postfix-exporter" in unit.stdout
    text = (tmp_path / "relayguard-postfix-exporter.service").read_text()
    assert "User=prometheus\n" in text and "SupplementaryGroups=postdrop\n" in text
    assert "--postfix.showq_path=/var/spool/postfix/public/showq" in text


@pytest.fixture
def deferring_postfix() -> Iterator[PostfixInstance]:
    """A Postfix instance on loopback whose relayhost refuses connections: mail is deferred."""
    base = make_dir("exporter-postfix-")
    smtp, submission, smtps = free_ports(3)
    settings = postfix_settings(
        base,
        tls=make_self_signed(base),
        relayhost=f"[127.0.0.1]:{free_port()}",
        ports={"smtp": smtp, "submission": submission, "smtps": smtps},
        mynetworks=["127.0.0.0/8"],
    )
    instance = PostfixInstance(settings)
    instance.write_config()
    instance.check()
    instance.start()
    try:
        with smtplib.SMTP("127.0.0.1", smtp, timeout=30) as client:
            client.sendmail("app@example.com", ["someone@example.com"], b"Subject: q\r\n\r\nx\r\n")
        assert wait_until(
            lambda: [m["queue_name"] for m in instance.queue()] == ["deferred"], 30, interval=0.2
        ), instance.queue()
        yield instance
    finally:
        instance.stop()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_the_exporter_serves_what_the_queue_alert_reads(
    deferring_postfix: PostfixInstance, tmp_path: Path
) -> None:
    port = free_port()
    run = render(
        tmp_path,
        relayguard_postfix_exporter__listen_address=f"127.0.0.1:{port}",
        relayguard_postfix_exporter__showq_path=str(
            deferring_postfix.queue_directory / "public" / "showq"
        ),
        relayguard_postfix_exporter__log_file=str(deferring_postfix.maillog_file),
    )
    assert run.returncode == 0, run.stdout[-3000:]
    command = json.loads((tmp_path / "command.json").read_text())
    # As the service runs it: user prometheus, with postdrop for Postfix's public/ directory.
    as_user = ["setpriv", "--reuid=prometheus", "--regid=prometheus", "--groups=postdrop"]
    log = (tmp_path / "exporter.log").open("wb")
    exporter = subprocess.Popen([*as_user, *command], stdout=log, stderr=subprocess.STDOUT)
    try:
        metrics: list[str] = []

        def served() -> bool:
            try:
                metrics[:] = [scrape(port)]
            except OSError:
                return False
            return True

        assert wait_until(served, 20), (tmp_path / "exporter.log").read_text()
        text = metrics[0]
        used = set().union(*(metric_names(rule["expr"]) for rule in alert_rules()))
        postfix_metrics = {name for name in used if name.startswith("postfix_")}
        assert postfix_metrics, "the alert rules read no postfix_exporter metric"
        for name in postfix_metrics:
            assert re.search(rf"^{name}\{{", text, re.MULTILINE), f"{name} not served"
        assert re.search(r'^postfix_up\{path="[^"]+"\} 1$', text, re.MULTILINE), text
        deferred = r'^postfix_showq_message_size_bytes_count\{queue="deferred"\} 1$'
        assert re.search(deferred, text, re.MULTILINE), text
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)
        log.close()
