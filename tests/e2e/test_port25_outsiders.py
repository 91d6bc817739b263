"""Issue 12 item 2: a client outside the allowed networks on the port-25 listener is refused by
Postfix itself, before the milter sees it, so it cannot write to the audit log."""

from __future__ import annotations

import smtplib
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Relay
from tests.support.stack import make_message

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

OUTSIDER = "127.0.0.9"  # loopback, but outside mynetworks (127.0.0.1/32) and every source


def test_client_outside_mynetworks_is_refused_by_postfix_with_no_audit_line(
    relay: Callable[..., Relay],
) -> None:
    r = relay()
    since = r.stack.postfix.log_position()
    client = smtplib.SMTP(timeout=10)
    client.source_address = (OUTSIDER, 0)
    code, banner = client.connect(r.stack.host, r.stack.smtp_port)
    try:
        code, _ = client.ehlo("outsider.test") if code == 220 else (code, banner)
        replies = [code, client.mail("x@evil.example")[0]]
    finally:
        client.close()
    assert all(500 <= reply < 600 for reply in replies), replies
    r.stack.postfix.wait_for_log(rf"reject: CONNECT from \S+\[{OUTSIDER}\]", since=since)
    r.stack.postfix.wait_for_log(r"Client host rejected: Access denied", since=since)
    assert r.audit_lines() == []  # the milter never saw the client
    # A client inside mynetworks still relays on the same listener.
    with r.stack.smtp() as smtp:
        smtp.send_message(make_message("on battery", sender="ups@example.com"),
                          to_addrs=["it@example.com"])  # fmt: skip
    assert r.stack.sink.wait_for(1)[0].message()["X-Relayguard"].startswith("source=legacy-ups")
    assert [line["source"] for line in r.audit_lines()] == ["legacy-ups"]
