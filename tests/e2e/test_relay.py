"""End to end: a device sends through real Postfix + Dovecot SASL + the relayguard milter.

Everything runs on loopback: the device is smtplib, the smarthost is an aiosmtpd sink, and the
milter is the real `relayguard milter` process on a unix socket that Postfix's smtpd connects to.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import DEVICE_PASSWORD, DEVICE_USER, Relay
from tests.support.stack import make_client_pki, make_dir, make_message

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_device_sends_over_submission_and_message_arrives_with_trace_header(
    relay: Callable[..., Relay],
) -> None:
    r = relay()
    message = make_message("scan 1", sender="Scanner <scanner@example.com>")
    with r.stack.submission() as smtp:
        smtp.send_message(message, to_addrs=["alice@example.com"])
    received = r.stack.sink.wait_for(1)[0]
    parsed = received.message()
    assert parsed["X-Relayguard"] == "source=printer; mode=enforce; verdict=accept"
    assert parsed["Message-ID"] == message["Message-ID"]
    assert received.mail_from == "scanner@example.com"
    line = r.audit_lines()[-1]
    assert (line["source"], line["sasl_user"], line["action"]) == ("printer", DEVICE_USER, "accept")
    assert line["queue_id"]  # Postfix's real queue id, to correlate with its log
    r.stack.postfix.wait_for_log(re.escape(str(line["queue_id"])))  # postlogd writes it later


def test_implicit_tls_port_works_too(relay: Callable[..., Relay]) -> None:
    r = relay()
    with r.stack.smtps() as smtp:
        smtp.send_message(make_message("scan 465", sender="scanner@example.com"),
                          to_addrs=["alice@example.com"])  # fmt: skip
    assert r.stack.sink.wait_for(1)[0].message()["X-Relayguard"].startswith("source=printer")


def test_spoofed_from_is_refused_and_nothing_delivered(relay: Callable[..., Relay]) -> None:
    r = relay()
    spoofed = make_message("urgent wire transfer", sender="CEO <ceo@example.com>")
    with r.stack.submission() as smtp, pytest.raises(smtplib.SMTPDataError) as refused:
        smtp.send_message(spoofed, from_addr="scanner@example.com", to_addrs=["alice@example.com"])
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.decode() == (
        "5.7.1 From <ceo@example.com> is not allowed for source printer"
    )
    r.assert_nothing_delivered()
    assert r.audit_lines()[-1]["outcome"] == "reject"


def test_unauthorised_envelope_sender_refused_at_mail_from(relay: Callable[..., Relay]) -> None:
    r = relay()
    with r.stack.submission() as smtp:
        code, text = smtp.mail("ceo@example.com")
    assert code == 550
    assert (
        text.decode() == "5.7.1 Envelope sender <ceo@example.com> is not allowed for source printer"
    )


def test_wrong_password_fails_auth(relay: Callable[..., Relay]) -> None:
    r = relay()
    with r.stack.submission(login=False) as smtp, pytest.raises(smtplib.SMTPAuthenticationError):
        smtp.login(DEVICE_USER, DEVICE_PASSWORD + "x")
    r.assert_nothing_delivered()


def test_legacy_device_identified_by_address_on_port_25(relay: Callable[..., Relay]) -> None:
    r = relay()
    with r.stack.smtp() as smtp:
        smtp.send_message(make_message("on battery", sender="ups@example.com"),
                          to_addrs=["it@example.com"])  # fmt: skip
        code, _ = smtp.mail("scanner@example.com")  # the printer's identity, not the UPS's
        assert code == 550
    assert r.stack.sink.wait_for(1)[0].message()["X-Relayguard"].startswith("source=legacy-ups")


def test_milter_down_means_temporary_failure_and_nothing_delivered(
    relay: Callable[..., Relay],
) -> None:
    r = relay()
    r.milter.stop()
    # Postfix applies milter_default_action=tempfail at the first stage it needs the milter.
    with pytest.raises(smtplib.SMTPResponseException) as failed, r.stack.submission() as smtp:
        smtp.send_message(make_message("scan 2", sender="scanner@example.com"),
                          to_addrs=["alice@example.com"])  # fmt: skip
    assert 400 <= failed.value.smtp_code < 500
    r.assert_nothing_delivered()


def test_monitor_mode_delivers_and_audits_would_reject(relay: Callable[..., Relay]) -> None:
    r = relay(mode="monitor")
    spoofed = make_message("invoice", sender="CEO <ceo@example.com>")
    with r.stack.submission() as smtp:
        smtp.send_message(spoofed, from_addr="scanner@example.com", to_addrs=["alice@example.com"])
    parsed = r.stack.sink.wait_for(1)[0].message()
    assert parsed["X-Relayguard"] == (
        "source=printer; mode=monitor; verdict=would_reject; check=header_identities"
    )
    line = r.audit_lines()[-1]
    assert (line["action"], line["outcome"]) == ("accept", "would_reject")
    assert DEVICE_PASSWORD not in r.audit.read_text()


HEADER_TRICKS = [
    b"From: Scanner <scanner@example.com>\r\nFrom : CEO <ceo@example.com>\r\n",
    b"From: Scanner <scanner@example.com>\r\nFROM: CEO <ceo@example.com>\r\n",
    b"From: Scanner <scanner@example.com>, CEO <ceo@example.com>\r\n",
    b'From: "ceo@example.com" <scanner@example.com>\r\n',
    b"From: =?utf-8?b?Y2VvQGV4YW1wbGUuY29t?= <scanner@example.com>\r\n",
    b"From: Scanner <scanner@example.com>\r\nSender: ceo@example.com\r\n",
    b"From: scanner@example.com (ceo@example.com)\r\n",
    b"From: <@example.com:ceo@example.com>\r\n",
    b"From: Scanner\r\n <ceo@example.com>\r\n",
    b"From: Scanner <scanner@example.com>\r\nComments: hi\r\n From: CEO <ceo@example.com>\r\n",
]


@pytest.mark.parametrize("header", HEADER_TRICKS)
def test_header_tricks_refused_through_real_postfix(
    relay: Callable[..., Relay], header: bytes
) -> None:
    r = relay()
    raw = header + b"To: alice@example.com\r\nSubject: tricks\r\n\r\nbody\r\n"
    with r.stack.submission() as smtp, pytest.raises(smtplib.SMTPDataError) as refused:
        smtp.sendmail("scanner@example.com", ["alice@example.com"], raw)
    assert refused.value.smtp_code == 550
    r.assert_nothing_delivered()


def test_positive_controls_delivered_through_real_postfix(relay: Callable[..., Relay]) -> None:
    r = relay()
    controls = [
        b'From: "Scanner HQ,\r\n 2nd floor" <scanner@example.com>\r\n',
        b"From: =?utf-8?q?Sc=C3=A4nner?= <scanner@example.com>\r\n",
        b"From: scanner@example.com (Scanner HQ)\r\n",
    ]
    with r.stack.submission() as smtp:
        for header in controls:
            smtp.sendmail(
                "scanner@example.com",
                ["alice@example.com"],
                header + b"To: alice@example.com\r\nSubject: ok\r\n\r\nbody\r\n",
            )
    assert len(r.stack.sink.wait_for(len(controls))) == len(controls)


def test_device_identified_by_verified_client_certificate(
    relay: Callable[..., Relay], e2e_dir: Path
) -> None:
    """Postfix verifies the certificate and passes its CN as {cert_subject}; no password needed."""
    pki = make_client_pki(make_dir("erp-pki-", e2e_dir), client_cn="erp.devices.test")
    r = relay(tls_client_ca_file=str(pki.ca_file))
    with r.stack.submission(login=False, client=pki) as smtp:
        smtp.send_message(make_message("invoice 42", sender="erp@example.com"),
                          to_addrs=["alice@example.com"])  # fmt: skip
        code, text = smtp.mail("scanner@example.com")
        assert (code, text.decode()) == (
            550, "5.7.1 Envelope sender <scanner@example.com> is not allowed for source erp"
        )  # fmt: skip
    parsed = r.stack.sink.wait_for(1)[0].message()
    assert parsed["X-Relayguard"] == "source=erp; mode=enforce; verdict=accept"
    assert r.audit_lines()[0]["cert_subject"] == "erp.devices.test"


def test_header_longer_than_a_milter_packet_gets_a_definite_answer(
    relay: Callable[..., Relay],
) -> None:
    """header_size_limit (60,000) keeps every header below libmilter's 64 KB packet limit, so
    Postfix truncates the header instead of retrying a message the milter can never read."""
    r = relay()
    raw = (
        b"From: scanner@example.com\r\nTo: alice@example.com\r\nSubject: long\r\n"
        b"X-Long: " + b"a" * 70_000 + b"\r\n\r\nbody\r\n"
    )
    with r.stack.submission() as smtp:
        smtp.sendmail("scanner@example.com", ["alice@example.com"], raw)
        smtp.send_message(make_message("next one", sender="scanner@example.com"),
                          to_addrs=["alice@example.com"])  # fmt: skip
    delivered = r.stack.sink.wait_for(2)
    assert len(delivered[0].data) < 65_000
    assert all(m.message()["X-Relayguard"].endswith("verdict=accept") for m in delivered)
