"""End to end: outbound paths through real Postfix and the real milter, seen by the sink.

Four devices on the port-25 role listener, told apart by their loopback address: "newsletter"
(outbound path "bulk", sending from 127.0.0.2), "billing" (path "transactional", from 127.0.0.3),
"partner-app" (path "partner", from 127.0.0.4 to its own relayhost: a second sink that offers
STARTTLS) and "printer" (no path: the default, 127.0.0.1). The sinks record the address each
delivery came from and whether it was sent over TLS. The templates render the transports from the
same list the milter's [[outbound_paths]] has.

billing and partner-app have a DLP profile that routes card numbers over enforced TLS: such mail
must keep its path and never leave in clear. The relay's default sink offers no STARTTLS, so
billing's card mail must be deferred there. The enforced level is `encrypt` here: `secure` would
also verify the sink's self-signed certificate against a name, which these loopback sinks lack.
"""

from __future__ import annotations

import smtplib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.milter_process import MilterProcess
from tests.support.stack import (
    WAIT_SECONDS,
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

DEVICES = {
    "newsletter": "127.0.0.31",
    "billing": "127.0.0.32",
    "partner-app": "127.0.0.33",
    "printer": "127.0.0.1",
}
PATHS = [
    {"name": "bulk", "bind_address": "127.0.0.2", "helo_name": "bulk.relay.test"},
    {"name": "transactional", "bind_address": "127.0.0.3", "helo_name": "tx.relay.test"},
]
PARTNER = {"name": "partner", "bind_address": "127.0.0.4", "helo_name": "partner.relay.test"}
CARD = "Card 4111 1111 1111 1111, please charge it.\n"

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
dlp_profile = "route"

[[sources]]
name = "partner-app"
networks = ["127.0.0.33/32"]
senders = ["partner@example.com"]
outbound_path = "partner"
dlp_profile = "route"

[[sources]]
name = "printer"
networks = ["127.0.0.1/32"]
senders = ["printer@example.com"]

[[dlp_profiles]]
name = "route"
action = "encrypt-route"
[dlp_profiles.detectors]
card_number = 1
"""


def paths_toml(paths: list[dict[str, str]]) -> str:
    return "\n".join(
        "[[outbound_paths]]\n" + "".join(f'{key} = "{value}"\n' for key, value in path.items())
        for path in paths
    )


@dataclass
class PathRelay:
    postfix: PostfixInstance
    sink: SmtpSink
    tls_sink: SmtpSink  # the partner path's relayhost, offering STARTTLS
    smtp_port: int

    def send(
        self,
        device: str,
        sender: str,
        subject: str,
        *,
        from_header: str = "",
        body: str = "Scanned document attached.\n",
        forged: tuple[tuple[str, str], ...] = (),
    ) -> str:
        """Send as `device`; the queue id. `forged` are headers the client adds itself."""
        message = make_message(
            subject, sender=from_header or sender, recipient="alice@example.com", body=body
        )
        for name, value in forged:
            message[name] = value
        with smtplib.SMTP(
            "127.0.0.1", self.smtp_port, local_hostname="device.test", timeout=30,
            source_address=(DEVICES[device], 0),
        ) as smtp:  # fmt: skip
            smtp.ehlo()
            assert smtp.mail(sender)[0] == 250
            assert smtp.rcpt("alice@example.com")[0] == 250
            code, reply = smtp.data(message.as_string())  # str: lines end in CRLF
        assert code == 250, reply
        return reply.decode().rsplit(" ", 1)[-1]  # "2.0.0 Ok: queued as 4Xyz..."

    def received(self, subject: str, sink: SmtpSink | None = None) -> ReceivedMessage:
        found: list[ReceivedMessage] = []

        def arrived() -> bool:
            found[:] = [m for m in (sink or self.sink).messages if m.subject == subject]
            return bool(found)

        assert wait_until(arrived, WAIT_SECONDS), f"{subject!r} not delivered"
        return found[0]


@pytest.fixture(scope="module")
def relay() -> Iterator[PathRelay]:
    base = make_dir("relayguard-paths-")
    sink_tls = make_self_signed(make_dir("sink-tls-", base), "partner-sink.test")
    with SmtpSink() as sink, SmtpSink(tls=sink_tls) as tls_sink:
        paths = [*PATHS, {**PARTNER, "relayhost": tls_sink.relayhost}]
        milter_dir = make_dir("milter-", base)
        config = milter_dir / "relayguard.toml"
        config.write_text(CONFIG.format(paths=paths_toml(paths)))
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
            outbound_paths=paths,
            dlp_tls_security_level="encrypt",
        )
        postfix = PostfixInstance(settings)
        postfix.write_config()
        postfix.check()
        postfix.start()
        try:
            yield PathRelay(postfix, sink, tls_sink, ports[0])
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
    # The delivery agent logs after the sink's reply, and postlogd writes the line later still.
    relay.postfix.wait_for_log("postfix/relayguard-path-bulk/smtp")
    relay.postfix.wait_for_log("postfix/relayguard-path-transactional/smtp")


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


def test_dlp_routed_mail_keeps_its_path_and_goes_over_tls(relay: PathRelay) -> None:
    relay.send("partner-app", "partner@example.com", "partner card", body=CARD)
    relay.send("partner-app", "partner@example.com", "partner plain")
    card = relay.received("partner card", relay.tls_sink)
    plain = relay.received("partner plain", relay.tls_sink)
    # Both from the path's own address and name, to the path's relayhost...
    assert (peer_address(card), card.helo) == ("127.0.0.4", "partner.relay.test")
    assert (peer_address(plain), plain.helo) == ("127.0.0.4", "partner.relay.test")
    # ...but only the card mail had to go over TLS (the relay's own level here is "none").
    assert card.tls
    assert not plain.tls
    # The delivery agent logs after the sink's reply, and postlogd writes the line later still.
    relay.postfix.wait_for_log(
        r"postfix/relayguard-tls-partner/smtp\[\d+\]: \w+: to=<alice@example.com>,.* status=sent"
    )
    relay.postfix.wait_for_log(
        r"postfix/relayguard-path-partner/smtp\[\d+\]: \w+: to=<alice@example.com>,.* status=sent"
    )


def test_dlp_routed_mail_is_deferred_rather_than_sent_in_clear_through_its_path(
    relay: PathRelay,
) -> None:
    # billing's path leads to the default sink, which offers no STARTTLS.
    queue_id = relay.send("billing", "billing@example.com", "billing card", body=CARD)
    relay.postfix.wait_for_log(
        rf"postfix/relayguard-tls-transactional/smtp\[\d+\]: {queue_id}: to=<alice@example.com>,"
        rf" relay=127\.0\.0\.1\[127\.0\.0\.1\]:{relay.sink.port},.* status=deferred"
        r" \(TLS is required, but was not offered",
        timeout=20,
    )
    assert not [m for m in relay.sink.messages if m.subject == "billing card"]
    assert any(m["queue_id"] == queue_id for m in relay.postfix.queue())


def test_a_sender_cannot_pick_its_plain_path_for_dlp_routed_mail(relay: PathRelay) -> None:
    forged = (("X-Relayguard-Path", "transactional"), ("X-Relayguard-Route", "none"))
    queue_id = relay.send(
        "billing", "billing@example.com", "billing forged", body=CARD, forged=forged
    )
    relay.postfix.wait_for_log(
        rf"postfix/relayguard-tls-transactional/smtp\[\d+\]: {queue_id}: .* status=deferred"
        r" \(TLS is required, but was not offered",
        timeout=20,
    )
    assert not [m for m in relay.sink.messages if m.subject == "billing forged"]


def test_a_sender_cannot_pick_a_path_or_its_tls_variant(relay: PathRelay) -> None:
    forged = (
        ("X-Relayguard-Path", "partner; enforced-tls"),
        ("X-Relayguard-Route", "enforced-tls"),
    )
    relay.send("printer", "printer@example.com", "printer forged", forged=forged)
    delivered = relay.received("printer forged")  # the default sink: not the partner's
    assert peer_address(delivered) == "127.0.0.1"
    assert delivered.helo == "relay.test.invalid"
    assert not delivered.tls
    assert "X-Relayguard-Path" not in delivered.message()
    assert "X-Relayguard-Route" not in delivered.message()
    assert not [m for m in relay.tls_sink.messages if m.subject == "printer forged"]
