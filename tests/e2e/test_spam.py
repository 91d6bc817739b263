"""End to end: outbound spam scoring through real Postfix, the real milter and a real Rspamd.

Rspamd is the session's (tests/conftest.py: one normal worker on a loopback port, stock rules,
network modules off). Two devices on the port-25 role listener, told apart by their loopback
address: "device" with [spam]'s default thresholds, "strict" with a policy that tags everything.
"""

from __future__ import annotations

import json
import smtplib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.support.milter_process import MilterProcess
from tests.support.rspamd import GTUBE, Rspamd
from tests.support.stack import (
    WAIT_SECONDS,
    PostfixInstance,
    SmtpSink,
    free_ports,
    make_dir,
    make_message,
    make_self_signed,
    postfix_settings,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SOURCES = {"device": "127.0.0.1", "strict": "127.0.0.21"}

CONFIG = """
[relay]
mode = "enforce"
internal_domains = ["example.com"]
audit_log = "{audit}"

[milter]
workers = 1
socket_group = "postfix"

[spam]
url = "{url}"
timeout = 5

[[spam_policies]]
name = "tag-everything"
tag_score = -100

[[sources]]
name = "device"
networks = ["127.0.0.1/32"]
senders = ["@example.com"]

[[sources]]
name = "strict"
networks = ["127.0.0.21/32"]
senders = ["@example.com"]
spam_policy = "tag-everything"
"""


@dataclass
class SpamRelay:
    postfix: PostfixInstance
    sink: SmtpSink
    rspamd: Rspamd
    audit: Path
    smtp_port: int

    def send(self, message: EmailMessage, source: str = "device") -> None:
        with smtplib.SMTP(
            "127.0.0.1", self.smtp_port, local_hostname="device.test", timeout=60,
            source_address=(SOURCES[source], 0),
        ) as smtp:  # fmt: skip
            smtp.send_message(message, to_addrs=["alice@example.com"])

    def delivered(self, subject: str) -> EmailMessage:
        found: list[EmailMessage] = []

        def arrived() -> bool:
            found[:] = [m.message() for m in self.sink.messages if m.subject == subject]
            return bool(found)

        assert wait_until(arrived, WAIT_SECONDS), f"{subject!r} not delivered"
        return found[0]

    def spam_entry(self, message: EmailMessage) -> dict[str, Any]:
        """The spam check's entry in the message's end-of-data audit line."""
        lines = [json.loads(line) for line in self.audit.read_text().splitlines()]
        line = next(
            x
            for x in reversed(lines)
            if x["stage"] == "end" and x["message_id"] == message["Message-ID"]
        )
        return next(c for c in line["checks"] if c["name"] == "spam")


@pytest.fixture(scope="module")
def relay(rspamd: Rspamd) -> Iterator[SpamRelay]:
    base = make_dir("relayguard-spam-")
    with SmtpSink() as sink:
        milter_dir = make_dir("milter-", base)
        audit = milter_dir / "audit.jsonl"
        config = milter_dir / "relayguard.toml"
        config.write_text(CONFIG.format(audit=audit, url=rspamd.url))
        milter = MilterProcess(config, milter_dir / "milter.sock", milter_dir / "milter.log")
        milter.start()
        ports = free_ports(3)
        settings = postfix_settings(
            make_dir("postfix-", base),
            tls=make_self_signed(make_dir("tls-", base)),
            relayhost=sink.relayhost,
            ports=dict(zip(("smtp", "submission", "smtps"), ports, strict=True)),
            milter_socket=f"unix:{milter.socket_path}",
            mynetworks=["127.0.0.0/8"],
        )
        postfix = PostfixInstance(settings)
        postfix.write_config()
        postfix.check()
        postfix.start()
        try:
            yield SpamRelay(postfix, sink, rspamd, audit, ports[0])
        finally:
            postfix.stop()
            milter.stop()
    subprocess.run(["rm", "-rf", str(base)], check=False)


def message(subject: str, body: str = "Meter reading for November: 4711 kWh.\n") -> EmailMessage:
    return make_message(
        subject, sender="meter@example.com", recipient="alice@example.com", body=body
    )


def test_gtube_is_refused_with_the_score(relay: SpamRelay) -> None:
    msg = message("gtube", f"Test follows:\n{GTUBE}\n")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        relay.send(msg)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.decode() == "5.7.1 message looks like spam (score 15/15)"
    entry = relay.spam_entry(msg)
    assert entry["action"] == "reject"
    assert entry["facts"]["score"] == 15.0 and "GTUBE" in entry["facts"]["symbols"]
    assert GTUBE not in relay.audit.read_text()  # the score and symbol names, never content
    relay.postfix.flush()
    assert all(m.subject != "gtube" for m in relay.sink.messages)


def test_normal_message_passes_untagged_with_its_score_audited(relay: SpamRelay) -> None:
    msg = message("meter reading")
    relay.send(msg)
    delivered = relay.delivered("meter reading")
    assert delivered["X-Relayguard-Spam"] is None
    assert delivered["X-Relayguard"] == "source=device; mode=enforce; verdict=accept"
    entry = relay.spam_entry(msg)
    assert entry["action"] == "accept"
    assert entry["facts"]["score"] < 6 and entry["facts"]["symbols"]


def test_source_policy_tags_with_score_and_symbols(relay: SpamRelay) -> None:
    msg = message("strict tag")
    relay.send(msg, "strict")
    header = relay.delivered("strict tag")["X-Relayguard-Spam"]
    assert header is not None and header.startswith("score=") and "; symbols=" in header
    assert relay.spam_entry(msg)["action"] == "tag"


def test_rspamd_stopped_is_the_failure_action_tag_and_log(relay: SpamRelay) -> None:
    relay.rspamd.stop()
    try:
        msg = message("while rspamd is down")
        relay.send(msg)
        delivered = relay.delivered("while rspamd is down")
        assert delivered["X-Relayguard-Spam"] == "unscored; scanner unavailable"
        entry = relay.spam_entry(msg)
        assert (entry["action"], entry.get("error")) == ("tag", True)
        assert entry["reason"].startswith(f"spam scanner unavailable (Rspamd at {relay.rspamd.url}")
    finally:
        relay.rspamd.start()
    again = message("after rspamd is back")
    relay.send(again)
    assert relay.delivered("after rspamd is back")["X-Relayguard-Spam"] is None
