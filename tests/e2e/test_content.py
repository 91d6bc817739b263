"""End to end: content scanning through real Postfix, the real milter, real clamd and real NSD.

One relay for the module: clamd with a generated signature database, NSD serving a test block
list, the milter with YARA rules from tests/data/content/yara and four DLP profiles, and Postfix
delivering to an aiosmtpd sink. Devices are told apart by their loopback source address (each
127.0.0.x is a registered source on the port-25 role listener), so each DLP action has its source.
"""

from __future__ import annotations

import io
import json
import smtplib
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from relayguard.core.safe_text import UNSAFE, printable
from tests.support.archives import seven_zip, seven_zip_of_zeros
from tests.support.clamd import EICAR, Clamd
from tests.support.dns_server import DnsServer
from tests.support.milter_process import MilterProcess
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

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DATA = Path(__file__).parents[1] / "data" / "content"
CARDS = "4111 1111 1111 1111, 5500-0000-0000-0004 and 378282246310005"

SOURCES = {
    "device": "127.0.0.1",
    "dlp-reject": "127.0.0.11",
    "dlp-quarantine": "127.0.0.12",
    "dlp-tag": "127.0.0.13",
    "dlp-route": "127.0.0.14",
}
PROFILE_ACTIONS = {
    "dlp-reject": "reject",
    "dlp-quarantine": "quarantine",
    "dlp-tag": "tag",
    "dlp-route": "encrypt-route",
}

CONFIG = """
[relay]
mode = "enforce"
internal_domains = ["example.com"]
audit_log = "{audit}"

[milter]
workers = 2
socket_group = "postfix"

[clamav]
socket = "{clamd}"
timeout = 20

[yara]
rules_dir = "{yara}"

[urls]
nameservers = ["127.0.0.1"]
port = {dns_port}
timeout = 2

[[url_blocklists]]
zone = "dbl.test"
action = "reject"

[content]
max_decoded_bytes = 67108864

{sources}
{profiles}
"""

BLOCKLIST = """
evil.example A 127.0.1.2
"""


@dataclass
class ContentRelay:
    postfix: PostfixInstance
    sink: SmtpSink
    clamd: Clamd
    milter: MilterProcess
    audit: Path
    smtp_port: int

    def send(
        self, message: EmailMessage, source: str = "device", rcpt: str = "alice@example.com"
    ) -> None:
        with smtplib.SMTP(
            "127.0.0.1",
            self.smtp_port,
            local_hostname="device.test",
            timeout=60,
            source_address=(SOURCES[source], 0),
        ) as smtp:
            smtp.send_message(message, to_addrs=[rcpt])

    def refused(self, message: EmailMessage, source: str = "device") -> tuple[int, str]:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            self.send(message, source)
        return refused.value.smtp_code, refused.value.smtp_error.decode()

    def delivered(self, subject: str, timeout: float = WAIT_SECONDS) -> EmailMessage:
        found: list[EmailMessage] = []

        def arrived() -> bool:
            found[:] = [m.message() for m in self.sink.messages if m.subject == subject]
            return bool(found)

        assert wait_until(arrived, timeout), f"{subject!r} not delivered"
        return found[0]

    def not_delivered(self, subject: str) -> bool:
        self.postfix.flush()
        time.sleep(0.5)
        return all(m.subject != subject for m in self.sink.messages)

    def audit_for(self, subject_marker: str) -> dict[str, object]:
        """The end-of-data audit line of the message whose Message-ID holds the marker."""
        lines = [json.loads(line) for line in self.audit.read_text().splitlines()]
        return next(
            line
            for line in reversed(lines)
            if line["stage"] == "end" and subject_marker in str(line.get("message_id"))
        )

    def held(self) -> list[dict[str, object]]:
        return [m for m in self.postfix.queue() if m["queue_name"] == "hold"]

    def relayguard(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "relayguard.cli", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )


def _sources() -> str:
    blocks = []
    for name, address in SOURCES.items():
        profile = f'dlp_profile = "{name}"' if name in PROFILE_ACTIONS else ""
        blocks.append(
            f'[[sources]]\nname = "{name}"\nnetworks = ["{address}/32"]\n'
            f'senders = ["@example.com"]\n{profile}\n'
        )
    return "\n".join(blocks)


def _profiles() -> str:
    return "\n".join(
        f'[[dlp_profiles]]\nname = "{name}"\ndetectors = {{ card_number = 3, iban = 1 }}\n'
        f'action = "{action}"\n'
        for name, action in PROFILE_ACTIONS.items()
    )


@pytest.fixture(scope="module")
def relay() -> Iterator[ContentRelay]:
    base = make_dir("relayguard-content-")
    with (
        Clamd(make_dir("clamd-", base)) as clamd,
        DnsServer({"dbl.test": BLOCKLIST}, directory=make_dir("dns-", base)) as dns,
        SmtpSink() as sink,
    ):
        milter_dir = make_dir("milter-", base)
        audit = milter_dir / "audit.jsonl"
        config = milter_dir / "relayguard.toml"
        config.write_text(
            CONFIG.format(
                audit=audit,
                clamd=clamd.spec,
                yara=DATA / "yara",
                dns_port=dns.port,
                sources=_sources(),
                profiles=_profiles(),
            )
        )
        milter = MilterProcess(config, milter_dir / "milter.sock", milter_dir / "milter.log")
        milter.start()
        postfix_dir = make_dir("postfix-", base)
        ports = free_ports(3)
        settings = postfix_settings(
            postfix_dir,
            tls=make_self_signed(make_dir("tls-", base)),
            relayhost=sink.relayhost,
            ports=dict(zip(("smtp", "submission", "smtps"), ports, strict=True)),
            milter_socket=f"unix:{milter.socket_path}",
            mynetworks=["127.0.0.0/8"],
            message_size_limit=52428800,
            milter_content_timeout="60s",
            smtpd_timeout="120s",
        )
        postfix = PostfixInstance(settings)
        postfix.write_config()
        postfix.check()
        postfix.start()
        try:
            yield ContentRelay(postfix, sink, clamd, milter, audit, ports[0])
        finally:
            postfix.stop()
            milter.stop()
    if not _keep():
        subprocess.run(["rm", "-rf", str(base)], check=False)


def _keep() -> bool:
    import os

    return bool(os.environ.get("RELAYGUARD_KEEP_TMP"))


def message(subject: str, body: str = "Scanned document attached.\n") -> EmailMessage:
    return make_message(
        subject, sender="scanner@example.com", recipient="alice@example.com", body=body
    )


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def eicar_message(form: str) -> EmailMessage:
    if form == "plain":
        return message(f"eicar {form}", f"Test file follows:\n{EICAR.decode()}\nend\n")
    msg = message(f"eicar {form}")
    if form == "base64":
        msg.add_attachment(
            EICAR, maintype="application", subtype="octet-stream", filename="eicar.com"
        )
    elif form == "zip":
        msg.add_attachment(
            zipped("eicar.com", EICAR), maintype="application", subtype="zip", filename="scan.zip"
        )
    elif form == "nested":
        inner = message("forwarded")
        inner.add_attachment(
            EICAR, maintype="application", subtype="octet-stream", filename="eicar.com"
        )
        msg.add_attachment(inner)
    return msg


# --- ClamAV ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["plain", "base64", "zip", "nested"])
def test_eicar_is_refused_naming_the_signature(relay: ContentRelay, form: str) -> None:
    code, text = relay.refused(eicar_message(form))
    assert code == 550
    assert text.startswith("5.7.1 virus found: Eicar-Test-Signature")
    assert relay.not_delivered(f"eicar {form}")


def test_clean_message_passes_every_scanner(relay: ContentRelay) -> None:
    msg = message("clean", "Monthly meter reading: 4711 kWh. See https://www.example.org/meter\n")
    relay.send(msg)
    delivered = relay.delivered("clean")
    assert delivered["X-Relayguard"] == "source=device; mode=enforce; verdict=accept"
    checks = {c["name"]: c["action"] for c in relay.audit_for(msg["Message-ID"])["checks"]}  # type: ignore[index, union-attr]
    assert {k: checks[k] for k in ("mime_limits", "clamav", "yara", "urls")} == {
        "mime_limits": "accept",
        "clamav": "accept",
        "yara": "accept",
        "urls": "accept",
    }


def test_clamd_down_is_a_temporary_failure_until_it_returns(relay: ContentRelay) -> None:
    relay.clamd.kill()
    try:
        msg = message("while clamd is down")
        code, text = relay.refused(msg)
        assert (code, text) == (451, "4.7.0 virus scanner unavailable, try again later")
        assert relay.not_delivered("while clamd is down")
        assert relay.postfix.queue() == []
    finally:
        relay.clamd.start()
    relay.send(msg)  # the device retries
    assert relay.delivered("while clamd is down")["X-Relayguard"].endswith("verdict=accept")


def _held_by_clamd(relay: ContentRelay, msg: EmailMessage) -> str:
    """Send `msg`; assert clamd's verdict (not the walk's) put it on hold; return its reason."""
    relay.send(msg)
    line = relay.audit_for(msg["Message-ID"])
    checks = {c["name"]: c for c in line["checks"]}  # type: ignore[union-attr]
    assert line["action"] == "quarantine"
    assert checks["mime_limits"]["action"] == "accept"  # the walker does not open 7z
    assert checks["clamav"]["action"] == "quarantine"
    assert any(m["queue_id"] == line["queue_id"] for m in relay.held())
    return str(checks["clamav"]["reason"])


def test_password_protected_7z_is_held_not_clean_nor_a_virus(relay: ContentRelay) -> None:
    msg = message("encrypted 7z")
    archive = seven_zip({"invoice.txt": b"Invoice 4711\n"}, password="s3cret-Pa55")
    msg.add_attachment(archive, maintype="application", subtype="x-7z-compressed", filename="a.7z")
    reason = _held_by_clamd(relay, msg)
    assert (
        reason
        == "content not fully scanned: clamd found encrypted content (Heuristics.Encrypted.7Zip)"
    )
    assert relay.not_delivered("encrypted 7z")


def test_7z_past_clamds_file_size_limit_is_held(relay: ContentRelay) -> None:
    msg = message("7z bomb")
    archive = seven_zip_of_zeros("disk.img", 101 * 2**20)  # the fixture's MaxFileSize is 100M
    assert len(archive) < 100_000
    msg.add_attachment(archive, maintype="application", subtype="x-7z-compressed", filename="b.7z")
    reason = _held_by_clamd(relay, msg)
    assert reason == (
        "content not fully scanned: clamd limit exceeded (Heuristics.Limits.Exceeded.MaxFileSize)"
    )


def test_virus_beside_an_encrypted_7z_is_still_refused_as_a_virus(relay: ContentRelay) -> None:
    msg = message("eicar and encrypted 7z")
    archive = seven_zip({"invoice.txt": b"Invoice 4712\n"}, password="s3cret-Pa55")
    msg.add_attachment(archive, maintype="application", subtype="x-7z-compressed", filename="a.7z")
    msg.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="e.com")
    code, text = relay.refused(msg)
    assert code == 550
    assert text.startswith("5.7.1 virus found: Eicar-Test-Signature")


# --- YARA -----------------------------------------------------------------------------------


def test_yara_reject_names_the_rule_not_the_data(relay: ContentRelay) -> None:
    code, text = relay.refused(message("yara reject", "status RELAYGUARD-TEST-BLOCK\n"))
    assert code == 550
    assert text.startswith("5.7.1 YARA rule markers:Block_Marker matched")
    assert "RELAYGUARD-TEST-BLOCK" not in text


def test_yara_quarantine_puts_the_message_on_hold(relay: ContentRelay) -> None:
    msg = message("yara hold", "status RELAYGUARD-TEST-HOLD\n")
    relay.send(msg)
    line = relay.audit_for(msg["Message-ID"])
    assert line["action"] == "quarantine"
    assert any(m["queue_id"] == line["queue_id"] for m in relay.held())
    assert relay.not_delivered("yara hold")


def test_yara_tag_adds_a_header_and_delivers(relay: ContentRelay) -> None:
    msg = message("yara tag")
    msg.add_attachment(
        b"macro doc", maintype="application", subtype="octet-stream", filename="Invoice.DOCM"
    )
    relay.send(msg)
    delivered = relay.delivered("yara tag")
    assert delivered["X-Relayguard-Yara"] == "attachments:Macro_Document_Attachment"
    assert delivered["X-Relayguard"].endswith("verdict=tag; check=yara")


# --- DLP ------------------------------------------------------------------------------------


def test_dlp_reject_profile(relay: ContentRelay) -> None:
    code, text = relay.refused(message("dlp reject", f"Cards: {CARDS}\n"), "dlp-reject")
    assert (code, text) == (550, "5.7.1 DLP profile dlp-reject matched: card_number=3")
    assert relay.not_delivered("dlp reject")


def test_dlp_quarantine_profile_holds_the_message(relay: ContentRelay) -> None:
    msg = message("dlp hold")
    msg.add_attachment(
        f"name,card\nA,{CARDS}\n".encode(), maintype="text", subtype="csv", filename="cards.csv"
    )
    relay.send(msg, "dlp-quarantine")
    line = relay.audit_for(msg["Message-ID"])
    assert line["action"] == "quarantine"
    assert any(m["queue_id"] == line["queue_id"] for m in relay.held())
    assert "4111" not in json.dumps(line)  # counts in the audit line, never the numbers


def test_dlp_tag_profile_adds_counts_only(relay: ContentRelay) -> None:
    relay.send(message("dlp tag", "IBAN DE89 3704 0044 0532 0130 00 for the refund\n"), "dlp-tag")
    delivered = relay.delivered("dlp tag")
    assert delivered["X-Relayguard-DLP"] == "profile=dlp-tag; iban=1"


def test_dlp_encrypt_route_uses_the_enforced_tls_transport(relay: ContentRelay) -> None:
    msg = message("dlp route", f"Cards: {CARDS}\n")
    relay.send(msg, "dlp-route")
    queue_id = str(relay.audit_for(msg["Message-ID"])["queue_id"])
    # The sink offers no STARTTLS: the relayguard-tls transport defers rather than send in clear.
    relay.postfix.wait_for_log(
        rf"postfix/relayguard-tls/smtp\[\d+\]: {queue_id}: to=<alice@example.com>,"
        rf" relay=127\.0\.0\.1\[127\.0\.0\.1\]:{relay.sink.port},.* status=deferred"
        r" \(TLS is required, but was not offered",
    )
    assert relay.not_delivered("dlp route")
    # not_delivered's flush has the queue manager move it from deferred to active: one listing
    # (active before deferred) can miss it on the way.
    assert wait_until(
        lambda: any(m["queue_id"] == queue_id for m in relay.postfix.queue()), WAIT_SECONDS
    )


def test_dlp_below_threshold_and_invalid_numbers_pass(relay: ContentRelay) -> None:
    body = (
        "Order 4111 1111 1111 1112 (bad check digit), 2024-01-15,"
        " id 550e8400-e29b-41d4-a716-446655440000, one card 4111111111111111\n"
    )
    relay.send(message("dlp below", body), "dlp-reject")
    assert relay.delivered("dlp below")["X-Relayguard"].endswith("verdict=accept")


# --- URL block lists ------------------------------------------------------------------------


def test_listed_url_domain_is_refused(relay: ContentRelay) -> None:
    msg = message("url listed")
    msg.set_content("Login here: http://www.evil.example/login")
    msg.add_alternative(
        '<p><a href="https://www.evil.example/login">portal</a></p>', subtype="html"
    )
    code, text = relay.refused(msg)
    assert (code, text) == (550, "5.7.1 URL domain listed: evil.example (dbl.test)")


# --- limits ---------------------------------------------------------------------------------


def test_five_thousand_parts_are_held_for_a_human(relay: ContentRelay) -> None:
    msg = message("many parts")
    for index in range(5000):
        msg.add_attachment(
            b"x%d" % index, maintype="application", subtype="octet-stream", filename=f"{index}.bin"
        )
    relay.send(msg)
    line = relay.audit_for(msg["Message-ID"])
    assert line["action"] == "quarantine"
    reasons = {c["name"]: c["reason"] for c in line["checks"]}  # type: ignore[union-attr]
    assert "limit parts exceeded" in reasons["mime_limits"]


def test_twenty_level_nested_zip_is_held(relay: ContentRelay) -> None:
    data = b"innermost"
    for level in range(20):
        data = zipped(f"level{level}.zip" if level else "core.txt", data)
    msg = message("nested zip")
    msg.add_attachment(data, maintype="application", subtype="zip", filename="deep.zip")
    relay.send(msg)
    line = relay.audit_for(msg["Message-ID"])
    assert line["action"] == "quarantine"
    assert "limit depth exceeded" in str(line["checks"])


def test_thirty_megabyte_attachment_gets_a_definite_answer(relay: ContentRelay) -> None:
    msg = message("thirty megabytes")
    msg.add_attachment(
        bytes(range(256)) * (30 * 1024 * 1024 // 256),
        maintype="application",
        subtype="octet-stream",
        filename="scan.tiff",
    )
    relay.send(msg)  # accepted: no timeout, no tempfail
    line = relay.audit_for(msg["Message-ID"])
    assert line["action"] == "accept"
    checks = {c["name"]: c["reason"] for c in line["checks"]}  # type: ignore[union-attr]
    assert (checks["clamav"], checks["yara"]) == ("clean", "no rule matched")
    assert checks["mime_limits"] == "2 part(s) walked"
    # (The aiosmtpd sink itself refuses messages over 32 MiB, so delivery is not asserted.)


# --- the quarantine commands ----------------------------------------------------------------


def test_quarantine_list_show_release_delete(relay: ContentRelay) -> None:
    config_dir = str(relay.postfix.config_directory)
    config = str(relay.milter.config)
    first = message("held one", "RELAYGUARD-TEST-HOLD\n")
    second = message("held two", "RELAYGUARD-TEST-HOLD\n")
    relay.send(first)
    relay.send(second)
    first_id = str(relay.audit_for(first["Message-ID"])["queue_id"])
    second_id = str(relay.audit_for(second["Message-ID"])["queue_id"])

    listed = relay.relayguard(
        "quarantine", "list", "--postfix-config", config_dir, "--config", config, "--json"
    )
    assert listed.returncode == 0, listed.stderr
    rows = {row["queue_id"]: row for row in json.loads(listed.stdout)}
    assert rows[first_id]["reason"] == (
        "yara: YARA rule markers:Hold_Marker matched in the raw message"
    )
    shown = relay.relayguard(
        "quarantine", "show", first_id, "--postfix-config", config_dir, "--config", config
    )
    assert "*** quarantined: yara: YARA rule markers:Hold_Marker" in shown.stdout
    assert "Subject: held one" in shown.stdout
    assert "RELAYGUARD-TEST-HOLD" not in shown.stdout  # the body only with --body

    released = relay.relayguard("quarantine", "release", first_id, "--postfix-config", config_dir)
    assert released.returncode == 0, released.stderr
    assert relay.delivered("held one")["Subject"] == "held one"

    deleted = relay.relayguard("quarantine", "delete", second_id, "--postfix-config", config_dir)
    assert deleted.returncode == 0, deleted.stderr
    assert all(m["queue_id"] != second_id for m in relay.postfix.queue())
    again = relay.relayguard("quarantine", "delete", second_id, "--postfix-config", config_dir)
    assert again.returncode == 1
    assert "not in the hold queue" in again.stderr


def test_quarantine_commands_escape_what_the_sender_wrote(relay: ContentRelay) -> None:
    """A zip member name with a forged line and terminal escapes, a Subject with ESC sequences
    and a byte that is not UTF-8: the audit reason, `quarantine list` and `show` hold them as
    visible escapes (an escape sequence must not rewrite the sysadmin's terminal)."""
    member = 'r.txt\n[[sources]]\nname="evil"\x1b[2J\r\u202eexe.txt'
    archive = zipped(member, b"status RELAYGUARD-TEST-HOLD")
    msg = message("hostile hold")
    msg.add_attachment(archive, maintype="application", subtype="zip", filename="scan.zip")
    raw = msg.as_bytes().replace(
        b"Subject: hostile hold", b"Subject: hostile hold \x1b]0;owned\x07\x1b[2J\xff"
    )
    with smtplib.SMTP("127.0.0.1", relay.smtp_port, local_hostname="device.test") as smtp:
        smtp.sendmail("scanner@example.com", ["alice@example.com"], raw)
    line = relay.audit_for(msg["Message-ID"])
    queue_id = str(line["queue_id"])
    escaped = 'part 2/r.txt\\n[[sources]]\\nname="evil"\\x1b[2J\\r\\u202eexe.txt'
    assert line["action"] == "quarantine"
    reasons = {c["name"]: c["reason"] for c in line["checks"]}  # type: ignore[union-attr]
    assert reasons["yara"] == f"YARA rule markers:Hold_Marker matched in {escaped}"

    config_dir = str(relay.postfix.config_directory)
    config = str(relay.milter.config)
    listed = relay.relayguard(
        "quarantine", "list", "--postfix-config", config_dir, "--config", config
    )
    assert listed.returncode == 0, listed.stderr
    assert (
        f"    yara: YARA rule markers:Hold_Marker matched in {printable(escaped)}" in listed.stdout
    )
    shown = relay.relayguard(
        "quarantine", "show", queue_id, "--postfix-config", config_dir, "--config", config
    )
    assert shown.returncode == 0, shown.stderr
    assert "Subject: hostile hold \\x1b]0;owned\\x07\\x1b[2J\ufffd" in shown.stdout
    for output in (listed.stdout, shown.stdout):
        assert UNSAFE.search(output.replace("\n", "")) is None, output
    deleted = relay.relayguard("quarantine", "delete", queue_id, "--postfix-config", config_dir)
    assert deleted.returncode == 0, deleted.stderr
