"""Who may send through which door, through real Postfix and the real milter (issue 12 item 6).

The relay of tests/e2e/conftest.py registers 127.0.0.1 as the legacy device "legacy-ups", and every
test client connects from 127.0.0.1: exactly the situation the review describes, a registered
network next to certificates and listeners that must not borrow its identity.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from relayguard.config import LISTENERS
from tests.e2e.conftest import Relay
from tests.support.stack import (
    ClientPki,
    RelayStack,
    StackFactory,
    device_tls_context,
    make_client_pki,
    make_dir,
    make_message,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PINNED = """
[[sources]]
name = "pinned"
client_cert_subjects = ["CN=pinned.devices.test"]
client_cert_issuers = ["CN=relayguard test device CA"]
senders = ["pinned@example.com"]
"""


def port_25_with_certificate(stack: RelayStack, pki: ClientPki) -> smtplib.SMTP:
    """A device on the port-25 listener that presents its certificate after STARTTLS."""
    smtp = smtplib.SMTP(stack.host, stack.smtp_port, local_hostname="device.test", timeout=10)
    smtp.ehlo()
    smtp.starttls(context=device_tls_context(pki))
    smtp.ehlo()
    return smtp


def test_templates_name_each_listener_as_the_config_expects(
    postfix_stack: StackFactory,
) -> None:
    """`sources.listeners` names are the {daemon_name} values master.cf gives the milter."""
    stack = postfix_stack()
    names = {}
    for line in stack.postfix.postconf("-P").stdout.splitlines():
        key, value = line.split(" = ", 1)
        service, _type, name = key.split("/")
        if name == "milter_macro_daemon_name":
            names[service.rpartition(":")[2]] = value
    ports = (stack.smtp_port, stack.submission_port, stack.smtps_port)
    assert names == dict(zip(map(str, ports), LISTENERS, strict=True))
    assert "{daemon_name}" in stack.postfix.value("milter_connect_macros").split()
    assert "{cert_issuer}" in stack.postfix.value("milter_helo_macros").split()


def test_network_source_only_on_the_port_25_listener(relay: Callable[..., Relay]) -> None:
    r = relay()
    refusals = []
    with r.stack.submission(login=False) as smtp:
        refusals.append(smtp.mail("ups@example.com"))
    with r.stack.smtps(login=False) as smtp:
        refusals.append(smtp.mail("ups@example.com"))
    assert [(code, text.decode()) for code, text in refusals] == [
        (550, f"5.7.1 source legacy-ups (client address 127.0.0.1) may send only through"
              f" listener smtp, not {listener!r}")
        for listener in ("submission", "smtps")
    ]  # fmt: skip
    with r.stack.smtp() as smtp:
        smtp.send_message(make_message("on battery", sender="ups@example.com"),
                          to_addrs=["it@example.com"])  # fmt: skip
    [delivered] = r.stack.sink.wait_for(1)
    assert delivered.message()["X-Relayguard"].startswith("source=legacy-ups; mode=enforce")


def test_unregistered_certificate_is_not_identified_by_address(
    relay: Callable[..., Relay], e2e_dir: Path
) -> None:
    """A certificate the client CA signed but no source lists: refused on every listener, even
    from legacy-ups's address and even where Postfix itself lets the certificate relay (587)."""
    pki = make_client_pki(make_dir("intruder-pki-", e2e_dir), client_cn="intruder.devices.test")
    r = relay(tls_client_ca_file=str(pki.ca_file))
    refusals = []
    with port_25_with_certificate(r.stack, pki) as smtp:
        refusals.append(smtp.mail("ups@example.com"))
    with r.stack.submission(login=False, client=pki) as smtp:
        refusals.append(smtp.mail("ups@example.com"))
    assert [(code, text.decode()) for code, text in refusals] == [
        (550, "5.7.1 client certificate 'intruder.devices.test' is not registered to any source"
              " (no fall-back to the client address)")
    ] * 2  # fmt: skip
    r.assert_nothing_delivered()
    with r.stack.smtp() as smtp:  # the same address without a certificate is still the UPS
        smtp.send_message(make_message("on battery", sender="ups@example.com"),
                          to_addrs=["it@example.com"])  # fmt: skip
    assert r.stack.sink.wait_for(1)[0].message()["X-Relayguard"].startswith("source=legacy-ups")


def test_certificate_from_another_trusted_ca_cannot_take_a_pinned_name(
    relay: Callable[..., Relay], e2e_dir: Path
) -> None:
    """Postfix trusts every CA in its client CA file; the issuer pin decides which one may
    vouch for this source's name."""
    device = make_client_pki(make_dir("device-pki-", e2e_dir), client_cn="pinned.devices.test")
    rogue = make_client_pki(
        make_dir("rogue-pki-", e2e_dir), client_cn="pinned.devices.test", ca_cn="rogue CA"
    )
    both = make_dir("both-cas-", e2e_dir) / "client-cas.pem"
    both.write_bytes(device.ca_file.read_bytes() + rogue.ca_file.read_bytes())
    both.chmod(0o644)
    r = relay(extra_config=PINNED, tls_client_ca_file=str(both))
    with r.stack.submission(login=False, client=rogue) as smtp:
        code, text = smtp.mail("pinned@example.com")
    assert (code, text.decode()) == (
        550,
        "5.7.1 client certificate 'pinned.devices.test' issued by 'rogue CA': source pinned"
        " accepts only certificates issued by 'relayguard test device CA'",
    )
    with r.stack.submission(login=False, client=device) as smtp:
        smtp.send_message(make_message("pinned", sender="pinned@example.com"),
                          to_addrs=["alice@example.com"])  # fmt: skip
    [delivered] = r.stack.sink.wait_for(1)
    assert delivered.message()["X-Relayguard"] == "source=pinned; mode=enforce; verdict=accept"
