"""End to end: DKIM signatures on what real Postfix delivers, checked by three implementations
against keys served by a real DNS server (NSD) on loopback."""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dkim.util
import pytest

from relayguard.dkim import keys as dkim_keys
from tests.e2e.conftest import DEVICE_USER, StackFactory
from tests.support.dkim_verifiers import (
    Result,
    verify_dkimpy,
    verify_mail_dkim,
    verify_opendkim,
)
from tests.support.dns_server import DnsServer
from tests.support.milter_process import MilterProcess
from tests.support.stack import RelayStack, make_dir, make_message

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

RELAYGUARD = [sys.executable, "-m", "relayguard.cli"]

CONFIG = """
[relay]
mode = "{mode}"
internal_domains = ["example.com"]
audit_log = "{audit}"

[milter]
workers = 1
socket_group = "postfix"

[dkim]
key_directory = "{keys}"
domains = ["example.com"]
missing_key = "refuse"

[[sources]]
name = "printer"
sasl_users = ["{user}"]
senders = ["scanner@example.com", "scanner@elsewhere.test"]
"""


def relayguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RELAYGUARD, *args], capture_output=True, text=True, timeout=60, check=False
    )


def zone_for(key_directory: Path, domain: str) -> str:
    keys = dkim_keys.load_keys(key_directory, domain, ("active", "pending", "retired"))
    return "\n".join(dkim_keys.zone_line(k).replace(f".{domain}. ", " ", 1) for k in keys)


class SignedRelay:
    def __init__(self, stack: RelayStack, dns: DnsServer, config: Path, keys: Path) -> None:
        self.stack = stack
        self.dns = dns
        self.config = config
        self.keys = keys

    def send(self, subject: str, sender: str = "Scanner <scanner@example.com>") -> bytes:
        before = len(self.stack.sink.messages)
        message = make_message(subject, sender=sender, recipient="alice@example.com")
        message["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
        message["Cc"] = "bob@example.com"
        with self.stack.submission() as smtp:
            smtp.send_message(
                message, from_addr="scanner@example.com", to_addrs=["alice@example.com"]
            )
        return self.stack.sink.wait_for(before + 1)[before].data


@pytest.fixture(scope="module")
def keys(e2e_dir: Path) -> Path:
    """One RSA-2048 and one Ed25519 key for example.com, made with the CLI."""
    directory = make_dir("dkim-keys-", e2e_dir)
    for selector, algorithm in (("rsa2026", "rsa"), ("ed2026", "ed25519")):
        done = relayguard(
            "dkim", "generate", "--key-directory", str(directory), "--user", "",
            "--domain", "example.com", "--selector", selector, "--algorithm", algorithm,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    return directory


@pytest.fixture(scope="module")
def dns(keys: Path) -> Iterator[DnsServer]:
    with DnsServer({"example.com": zone_for(keys, "example.com")}) as server:
        yield server


@pytest.fixture
def signed_relay(
    e2e_dir: Path, postfix_stack: StackFactory, keys: Path, dns: DnsServer
) -> Iterator[Callable[..., SignedRelay]]:
    milters: list[MilterProcess] = []

    def start(mode: str = "enforce") -> SignedRelay:
        directory = make_dir("milter-", e2e_dir)
        config = directory / "relayguard.toml"
        audit = directory / "audit.jsonl"
        config.write_text(CONFIG.format(mode=mode, audit=audit, keys=keys, user=DEVICE_USER))
        milter = MilterProcess(config, directory / "milter.sock", directory / "milter.log")
        milters.append(milter.start())
        stack = postfix_stack(milter.socket_path)
        return SignedRelay(stack, dns, config, keys)

    yield start
    for milter in milters:
        milter.stop()


def by_algorithm(results: list[Result]) -> dict[str, str]:
    return {r.algorithm: r.result for r in results if r.domain == "example.com"}


def test_delivered_mail_carries_rsa_and_ed25519_signatures_that_verify(
    signed_relay: Callable[[], SignedRelay],
) -> None:
    relay = signed_relay()
    delivered = relay.send("scan 1")
    both = {"rsa-sha256": "pass", "ed25519-sha256": "pass"}
    assert by_algorithm(verify_dkimpy(delivered, relay.dns)) == both
    assert by_algorithm(verify_opendkim(delivered, relay.dns, ["example.com"])) == both
    # Debian 12's Mail::DKIM predates Ed25519: it checks the RSA signature only.
    assert by_algorithm(verify_mail_dkim(delivered, relay.dns))["rsa-sha256"] == "pass"
    # What the signatures cover: oversigned names and the header the pipeline added.
    signature = re.search(rb"DKIM-Signature:(.*?)\r\n(?=\S)", delivered, re.DOTALL)
    assert signature is not None
    tags = dkim.util.parse_tag_value(signature.group(1).replace(b"\r\n", b""))
    signed = b"".join(tags[b"h"].split()).lower().split(b":")
    assert signed.count(b"from") == 2 and signed.count(b"cc") == 2
    assert signed.count(b"list-unsubscribe") == 1 and signed.count(b"list-unsubscribe-post") == 1
    assert b"x-relayguard" in signed
    # Absent identity, threading and encoding fields are oversigned: adding one breaks it.
    for name in (b"sender", b"resent-from", b"resent-sender", b"references", b"in-reply-to"):
        assert signed.count(name) == 1, name
    assert tags[b"c"] == b"relaxed/relaxed" and b"l" not in tags


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Subject: scan 2", b"Subject: scan 3"),  # a signed header changed
        (b"verdict=accept", b"verdict=reject"),  # the header the pipeline added
        (b"Scanned document", b"Forged document"),  # the body
    ],
)
def test_tampered_copy_fails_verification(
    signed_relay: Callable[[], SignedRelay], old: bytes, new: bytes
) -> None:
    relay = signed_relay()
    delivered = relay.send("scan 2")
    assert old in delivered
    tampered = delivered.replace(old, new, 1)
    assert set(by_algorithm(verify_dkimpy(tampered, relay.dns)).values()) == {"fail"}
    opendkim = by_algorithm(verify_opendkim(tampered, relay.dns, ["example.com"]))
    assert set(opendkim.values()) == {"fail"}


def test_added_from_header_breaks_the_oversigned_signature(
    signed_relay: Callable[[], SignedRelay],
) -> None:
    relay = signed_relay()
    delivered = relay.send("scan 4")
    head, body = delivered.split(b"\r\n\r\n", 1)
    forged = head + b"\r\nFrom: CEO <ceo@example.com>\r\n\r\n" + body
    assert set(by_algorithm(verify_dkimpy(forged, relay.dns)).values()) == {"fail"}


def test_from_domain_without_key_is_refused(signed_relay: Callable[[], SignedRelay]) -> None:
    relay = signed_relay()
    message = make_message("unsigned", sender="scanner@elsewhere.test")
    with relay.stack.submission() as smtp, pytest.raises(smtplib.SMTPDataError) as refused:
        smtp.send_message(message, to_addrs=["alice@example.com"])
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.decode().startswith(
        "5.7.1 no DKIM key for From domain elsewhere.test"
    )
    assert relay.stack.sink.messages == []


def test_key_readable_by_others_fails_relayguard_check(
    signed_relay: Callable[[], SignedRelay],
) -> None:
    relay = signed_relay()
    key = dkim_keys.key_path(relay.keys, "example.com", "rsa2026")
    assert relayguard("check", "--config", str(relay.config)).returncode == 0
    key.chmod(0o644)
    try:
        done = relayguard("check", "--config", str(relay.config))
    finally:
        key.chmod(0o600)
    assert done.returncode == 1
    assert f"{key}: mode 0644 lets others read the private key" in done.stderr


def test_monitor_mode_delivers_a_spoofed_from_unsigned_and_says_so(
    signed_relay: Callable[..., SignedRelay],
) -> None:
    relay = signed_relay("monitor")
    spoofed = relay.send("monitor spoof", sender="CEO <ceo@example.com>")
    assert b"DKIM-Signature" not in spoofed
    assert re.search(rb"X-Relayguard: [^\r]*verdict=would_reject[^\r]*; dkim=withheld", spoofed)
    audit = (relay.config.parent / "audit.jsonl").read_text().splitlines()
    dkim_note = [c for c in json.loads(audit[-1])["checks"] if c["name"] == "dkim"]
    assert dkim_note[0]["reason"].startswith("not signed: would_reject (header_identities: ")
    control = relay.send("monitor control")
    assert by_algorithm(verify_dkimpy(control, relay.dns)) == {
        "rsa-sha256": "pass",
        "ed25519-sha256": "pass",
    }


def test_a_senders_copy_of_any_relayguard_header_is_removed(
    signed_relay: Callable[..., SignedRelay],
) -> None:
    relay = signed_relay()
    before = len(relay.stack.sink.messages)
    message = make_message("forged verdicts", sender="scanner@example.com")
    message["X-Relayguard-DLP"] = "profile=none; clean"
    message["X-Relayguard-Route"] = "enforced-tls"
    message["X-Relayguard-Future"] = "trusted"
    with relay.stack.submission() as smtp:
        smtp.send_message(message, to_addrs=["alice@example.com"])
    delivered = relay.stack.sink.wait_for(before + 1)[before].data
    assert b"X-Relayguard-" not in delivered
    assert set(by_algorithm(verify_dkimpy(delivered, relay.dns)).values()) == {"pass"}
