"""End to end: outbound paths through real Postfix and the real milter, seen by the sink.

Three devices on the port-25 role listener, told apart by their loopback address: "newsletter"
(outbound path "bulk", sending from 127.0.0.2), "billing" (path "transactional", from 127.0.0.3)
and "printer" (no path: the default, 127.0.0.1). The sink records the address each delivery came
from. The templates render the transports from the same list the milter's [[outbound_paths]] has.
"""

from __future__ import annotations

import smtplib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.milter_process import MilterProcess
from tests.support.stack import (
    PostfixInstance,
    ReceivedMessage,
    SmtpSink,
    free_ports,
    make_dir,
    make_message,
    make_self_signed,
    postfix_settings,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DEVICES = {"newsletter": "127.0.0.31", "billing": "127.0.0.32", "printer": "127.0.0.1"}
PATHS = [
    {"name": "bulk", "bind_address": "127.0.0.2", "helo_name": "bulk.relay.test"},
    {"name": "transactional", "bind_address": "127.0.0.3", "helo_name": "tx.relay.test"},
]

CONFIG = """
[relay]
mode = "enforce"
internal_domains = ["example.com"]

[milter]
workers = 1
socket_group = "postfix"

{paths}

[[sources]]
name = "newsletter"
networks = ["127.0.0.31/32"]
senders = ["news@example.com"]
outbound_path = "bulk"
mode = "monitor"

[[sources]]
name = "billing"
networks = ["127.0.0.32/32"]
senders = ["billing@example.com"]
outbound_path = "transactional"

[[sources]]
name = "printer"
networks = ["127.0.0.1/32"]
senders = ["printer@example.com"]
"""


def paths_toml() -> str:
    return "\n".join(
        "[[outbound_paths]]\n" + "".join(f'{key} = "{value}"\n' for key, value in path.items())
        for path in PATHS
    )


@dataclass
class PathRelay:
    postfix: PostfixInstance
    sink: SmtpSink
    smtp_port: int

    def send(self, device: str, sender: str, subject: str, from_header: str = "") -> None:
        message = make_message(subject, sender=from_header or sender, recipient="alice@example.com")
        with smtplib.SMTP(
            "127.0.0.1", self.smtp_port, local_hostname="device.test", timeout=30,
            source_address=(DEVICES[device], 0),
        ) as smtp:  # fmt: skip
            smtp.send_message(message, from_addr=sender, to_addrs=["alice@example.com"])

    def received(self, subject: str) -> ReceivedMessage:
        found: list[ReceivedMessage] = []

        def arrived() -> bool:
            found[:] = [m for m in self.sink.messages if m.subject == subject]
            return bool(found)

        assert wait_until(arrived, 15), f"{subject!r} not delivered"
        return found[0]


@pytest.fixture(scope="module")
def relay() -> Iterator[PathRelay]:
    base = make_dir("relayguard-paths-")
    with SmtpSink() as sink:
        milter_dir = make_dir("milter-", base)
        config = milter_dir / "relayguard.toml"
        config.write_text(CONFIG.format(paths=paths_toml()))
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
            outbound_paths=PATHS,
        )
        postfix = PostfixInstance(settings)
        postfix.write_config()
        postfix.check()
        postfix.start()
        try:
            yield PathRelay(postfix, sink, ports[0])
        finally:
            postfix.stop()
            milter.stop()
    subprocess.run(["rm", "-rf", str(base)], check=False)


def peer_address(received: ReceivedMessage) -> str:
    """The sink's peer is "('127.0.0.2', 41234)": the address the relay sent from."""
    return received.peer.strip("()").split(",")[0].strip("'")


def test_each_source_leaves_from_its_paths_address(relay: PathRelay) -> None:
    relay.send("newsletter", "news@example.com", "bulk news")
    relay.send("billing", "billing@example.com", "invoice 4711")
    relay.send("printer", "printer@example.com", "scan")
    bulk, invoice, scan = (relay.received(s) for s in ("bulk news", "invoice 4711", "scan"))
    assert peer_address(bulk) == "127.0.0.2"
    assert peer_address(invoice) == "127.0.0.3"
    assert peer_address(scan) == "127.0.0.1"
    log = relay.postfix.log_text()
    assert "postfix/relayguard-path-bulk/smtp" in log
    assert "postfix/relayguard-path-transactional/smtp" in log


def test_mail_that_did_not_pass_policy_leaves_by_the_default_path(relay: PathRelay) -> None:
    # The newsletter source is in monitor mode: a spoofed From is delivered, but without the
    # organisation's trusted sending address.
    relay.send("newsletter", "news@example.com", "spoof", from_header="CEO <ceo@example.com>")
    spoof = relay.received("spoof")
    assert peer_address(spoof) == "127.0.0.1"
    assert "X-Relayguard-Path" not in spoof.message()


def test_a_senders_own_path_header_chooses_nothing(relay: PathRelay) -> None:
    message = make_message(
        "forged path", sender="printer@example.com", recipient="alice@example.com"
    )
    message["X-Relayguard-Path"] = "bulk"
    with smtplib.SMTP(
        "127.0.0.1", relay.smtp_port, local_hostname="device.test", timeout=30,
        source_address=(DEVICES["printer"], 0),
    ) as smtp:  # fmt: skip
        smtp.send_message(message, to_addrs=["alice@example.com"])
    forged = relay.received("forged path")
    assert peer_address(forged) == "127.0.0.1"
    assert "X-Relayguard-Path" not in forged.message()


def test_each_path_announces_its_own_helo_name(relay: PathRelay) -> None:
    relay.send("newsletter", "news@example.com", "helo bulk")
    relay.send("billing", "billing@example.com", "helo tx")
    relay.send("printer", "printer@example.com", "helo default")
    assert relay.received("helo bulk").helo == "bulk.relay.test"
    assert relay.received("helo tx").helo == "tx.relay.test"
    assert relay.received("helo default").helo == "relay.test.invalid"  # myhostname
