"""Secrets and DLP matches never reach a log or a reply: checked by grepping everything written."""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import DEVICE_PASSWORD, DEVICE_USER, Relay
from tests.support.stack import make_message

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

# Valid card numbers (Luhn + IIN) and a valid IBAN: the DLP profile below must see them.
CARDS = ["4111 1111 1111 1111", "5555 5555 5555 4444", "3782 822463 10005"]
IBAN = "DE89370400440532013000"
WRONG_PASSWORD = "Tr0ub4dor&3-guess"

DLP = """
[[sources]]
name = "billing"
networks = ["127.0.0.2/32"]
senders = ["billing@example.com"]
dlp_profile = "cards"

[[dlp_profiles]]
name = "cards"
detectors = { card_number = 3 }
action = "reject"
"""


def every_log(relay: Relay) -> str:
    """All the files the milter, Postfix and Dovecot wrote for this test."""
    roots = [relay.milter.log.parent, relay.stack.base_dir, relay.stack.postfix.maillog_file.parent]
    texts = []
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and path.suffix not in (".sqlite3", ".key", ".pem", ".crt"):
                texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


def test_dlp_values_and_passwords_never_logged_or_echoed(
    relay: Callable[..., Relay], dovecot: object
) -> None:
    r = relay(extra_config=DLP, mynetworks=["127.0.0.1/32", "127.0.0.2/32"])
    body = "Card numbers on file:\n" + "\n".join(CARDS) + f"\nIBAN {IBAN}\n"
    replies = []
    with r.stack.submission() as smtp:
        smtp.send_message(
            make_message("ok", sender="scanner@example.com"), to_addrs=["a@example.com"]
        )
    with smtplib.SMTP(r.stack.host, r.stack.smtp_port, source_address=("127.0.0.2", 0)) as smtp:
        smtp.ehlo("billing.test")
        leaky = make_message("invoices", sender="billing@example.com", body=body)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.send_message(leaky, to_addrs=["a@example.com"])
        replies.append(refused.value.smtp_error.decode())
    with (
        r.stack.submission(login=False) as smtp,
        pytest.raises(smtplib.SMTPAuthenticationError) as bad,
    ):
        smtp.login(DEVICE_USER, WRONG_PASSWORD)
    replies.append(str(bad.value))
    assert "card_number" in replies[0]  # the reply names the detector...
    # The grep covers the real logs: both events are in them (postlogd writes Postfix's lines
    # after the replies), only without the secrets.
    r.stack.postfix.wait_for_log("milter-reject: END-OF-MESSAGE")
    r.stack.postfix.wait_for_log("authentication failed")
    written = every_log(r) + "\n".join(replies)
    for secret in [
        *CARDS,
        *(c.replace(" ", "") for c in CARDS),
        IBAN,
        DEVICE_PASSWORD,
        WRONG_PASSWORD,
    ]:
        assert secret not in written  # ...never the value, and no password anywhere
