"""Issue 12 item 6: who is sending, through which listener, and header lines that hide a From.

a) a verified certificate whose CN is registered nowhere is refused (no fall-back to the address),
   and a source may pin the certificate's issuer;
b) a source identified by its address may send only on the port-25 listener unless told otherwise;
c) internal_domains cover their subdomains unless `relay.internal_subdomains = false`;
d) a folded header line that reads like a From/Sender field is refused as ambiguous.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from relayguard.checks import Subject
from relayguard.checks.sender import check_envelope_sender, check_header_identities
from relayguard.cli.test_message import client_for
from relayguard.config import Config, load_config
from relayguard.core.errors import ConfigError
from relayguard.core.message import Client, Envelope, message_from_bytes
from relayguard.core.verdict import Action
from relayguard.engine.pipeline import Pipeline
from relayguard.engine.runtime import Runtime
from relayguard.engine.transaction import Transaction

pytestmark = pytest.mark.unit

CONFIG = """
[relay]
mode = "enforce"
internal_domains = ["example.com"]
{relay_extra}

[[sources]]
name = "scanner-hq"
sasl_users = ["scanner-hq"]
senders = ["scanner@example.com"]
{scanner_extra}

[[sources]]
name = "erp"
client_cert_subjects = ["CN=erp.example.com"]
senders = ["invoices@example.com"]

[[sources]]
name = "pinned"
client_cert_subjects = ["pinned.example.com"]
client_cert_issuers = ["CN=Device CA", "Device CA 2"]
senders = ["pinned@example.com"]

[[sources]]
name = "legacy-ups"
networks = ["192.0.2.0/28"]
senders = ["ups@example.com"]
{ups_extra}
"""


@pytest.fixture
def make_config(write_config: Callable[..., Path]) -> Callable[..., Config]:
    def make(relay_extra: str = "", scanner_extra: str = "", ups_extra: str = "") -> Config:
        text = CONFIG.format(
            relay_extra=relay_extra, scanner_extra=scanner_extra, ups_extra=ups_extra
        )
        return load_config(write_config(text))

    return make


def identified(config: Config, client: Client) -> tuple[str | None, Action, str]:
    """(source name, action of the source verdict, its reason) for one client."""
    tx = Transaction(Runtime.build(config), client, audit_enabled=False)
    decision = tx.mail("<>")
    [verdict] = [v for v in decision.verdicts if v.check == "source"]
    return (tx.source.name if tx.source else None), verdict.action, verdict.reason


def problems(write_config: Callable[..., Path], text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text))
    return list(info.value.problems)


# --- a) client certificates ------------------------------------------------------------------


def test_unregistered_certificate_from_a_registered_network_is_refused(
    make_config: Callable[..., Config],
) -> None:
    """The attack: any certificate the client CA signed, sent from a legacy device's network,
    used to be identified as that device by address."""
    client = Client(address="192.0.2.5", cert_subject="intruder.example.com", daemon_name="smtp")
    name, action, reason = identified(make_config(), client)
    assert (name, action) == (None, Action.REJECT)
    assert reason == (
        "client certificate 'intruder.example.com' is not registered to any source"
        " (no fall-back to the client address)"
    )


def test_registered_certificate_still_identifies_its_source(
    make_config: Callable[..., Config],
) -> None:
    client = Client(address="192.0.2.5", cert_subject="erp.example.com", daemon_name="submission")
    assert identified(make_config(), client)[:2] == ("erp", Action.ACCEPT)


@pytest.mark.parametrize("issuer", ["Device CA", "Device CA 2"])
def test_pinned_issuer_accepted(make_config: Callable[..., Config], issuer: str) -> None:
    client = Client(address="198.51.100.8", cert_subject="pinned.example.com", cert_issuer=issuer)
    assert identified(make_config(), client)[:2] == ("pinned", Action.ACCEPT)


@pytest.mark.parametrize("issuer", ["Other CA", "device ca", "CN=Device CA", ""])
def test_certificate_from_another_issuer_is_refused(
    make_config: Callable[..., Config], issuer: str
) -> None:
    client = Client(address="192.0.2.5", cert_subject="pinned.example.com", cert_issuer=issuer)
    name, action, reason = identified(make_config(), client)
    assert (name, action) == (None, Action.REJECT)
    assert reason == (
        f"client certificate 'pinned.example.com' issued by {issuer!r}:"
        " source pinned accepts only certificates issued by 'Device CA', 'Device CA 2'"
    )


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            "client_cert_issuers = ['CN=a,O=b']",
            "sources[0].client_cert_issuers[0]: 'CN=a,O=b': give the issuer's Common Name",
        ),
        (
            "client_cert_issuers = ['Device CA']",
            "sources[0].client_cert_issuers: pins the issuer of client_cert_subjects,"
            " but the source has none",
        ),
        ("client_cert_issuers = 'Device CA'", "expected an array of strings"),
    ],
)
def test_bad_issuer_pins_are_config_errors(
    write_config: Callable[..., Path], extra: str, problem: str
) -> None:
    text = f'[[sources]]\nname = "a"\nsasl_users = ["a"]\nsenders = ["a@example.com"]\n{extra}\n'
    assert any(problem in found for found in problems(write_config, text))


# --- b) listeners ({daemon_name}) --------------------------------------------------------------


def test_network_source_accepted_on_the_port_25_listener(
    make_config: Callable[..., Config],
) -> None:
    client = Client(address="192.0.2.5", daemon_name="smtp")
    assert identified(make_config(), client)[:2] == ("legacy-ups", Action.ACCEPT)


def test_missing_client_address_macro_is_refused_and_named(
    make_config: Callable[..., Config],
) -> None:
    """The address comes only from Postfix's {client_addr} at MAIL: a main.cf that does not pass
    it must not look like an unregistered device (the operator needs the cause)."""
    source, action, reason = identified(make_config(), Client(address="", daemon_name="smtp"))
    assert (source, action) == (None, Action.REJECT)
    assert "{client_addr}" in reason and "milter_mail_macros" in reason


@pytest.mark.parametrize("listener", ["submission", "smtps", ""])
def test_network_source_refused_on_other_listeners(
    make_config: Callable[..., Config], listener: str
) -> None:
    """The attack: a client in a legacy device's network used to be that device on any port."""
    client = Client(address="192.0.2.5", daemon_name=listener)
    name, action, reason = identified(make_config(), client)
    assert (name, action) == ("legacy-ups", Action.REJECT)
    where = f"not {listener!r}" if listener else "but Postfix passed no {daemon_name}"
    assert reason.startswith(
        f"source legacy-ups (client address 192.0.2.5) may send only through listener smtp, {where}"
    )


@pytest.mark.parametrize("listener", ["smtp", "submission", "smtps", ""])
def test_sasl_source_accepted_on_any_listener_by_default(
    make_config: Callable[..., Config], listener: str
) -> None:
    client = Client(address="203.0.113.9", sasl_user="scanner-hq", daemon_name=listener)
    assert identified(make_config(), client)[:2] == ("scanner-hq", Action.ACCEPT)


def test_listeners_can_be_widened_for_a_network_source(
    make_config: Callable[..., Config],
) -> None:
    config = make_config(ups_extra='listeners = ["smtp", "submission"]')
    for listener in ("smtp", "submission"):
        client = Client(address="192.0.2.5", daemon_name=listener)
        assert identified(config, client)[:2] == ("legacy-ups", Action.ACCEPT)
    client = Client(address="192.0.2.5", daemon_name="smtps")
    assert identified(config, client)[1] is Action.REJECT


def test_listeners_can_narrow_a_sasl_source(make_config: Callable[..., Config]) -> None:
    config = make_config(scanner_extra='listeners = ["smtps"]')
    client = Client(sasl_user="scanner-hq", daemon_name="submission")
    name, action, reason = identified(config, client)
    assert (name, action) == ("scanner-hq", Action.REJECT)
    assert reason == (
        "source scanner-hq (SASL user 'scanner-hq') may send only through listener smtps,"
        " not 'submission'"
    )


def test_wrong_listener_refusal_is_a_550_at_mail_from(make_config: Callable[..., Config]) -> None:
    tx = Transaction(
        Runtime.build(make_config()),
        Client(address="192.0.2.5", daemon_name="submission"),
        audit_enabled=False,
    )
    decision = tx.mail("<ups@example.com>")
    assert decision.action is Action.REJECT
    assert str(decision.reply).startswith("550 5.7.1 source legacy-ups (client address 192.0.2.5)")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('["relay"]', "listeners[0]: 'relay' is not a listener: use 'smtp', 'submission', 'smtps'"),
        ("[]", "listeners: empty: the source could send through no listener"),
    ],
)
def test_bad_listeners_are_config_errors(
    write_config: Callable[..., Path], value: str, problem: str
) -> None:
    text = '[[sources]]\nname = "a"\nnetworks = ["192.0.2.0/24"]\nsenders = ["a@x.test"]\n'
    text += f"listeners = {value}\n"
    assert any(f"sources[0].{problem}" in found for found in problems(write_config, text))


# --- c) internal subdomains ------------------------------------------------------------------


def envelope_verdict(config: Config, mail_from: str) -> Action:
    """What the envelope-sender check says about an unregistered client using MAIL_FROM."""
    envelope = Envelope(Client(address="203.0.113.9"), mail_from)
    return check_envelope_sender(Subject(config, None, envelope)).action


@pytest.mark.parametrize(
    ("mail_from", "expected"),
    [
        ("x@example.com", Action.REJECT),
        ("x@erp.example.com", Action.REJECT),
        ("x@a.b.EXAMPLE.com", Action.REJECT),
        ("x@notexample.com", Action.ACCEPT),
        ("x@example.com.evil.test", Action.ACCEPT),
    ],
)
def test_internal_domains_cover_subdomains(
    make_config: Callable[..., Config], mail_from: str, expected: Action
) -> None:
    assert envelope_verdict(make_config(), mail_from) is expected


def test_internal_subdomains_can_be_turned_off(make_config: Callable[..., Config]) -> None:
    config = make_config(relay_extra="internal_subdomains = false")
    assert envelope_verdict(config, "x@example.com") is Action.REJECT
    assert envelope_verdict(config, "x@erp.example.com") is Action.ACCEPT


def test_internal_subdomains_must_be_a_boolean(write_config: Callable[..., Path]) -> None:
    text = CONFIG.format(relay_extra='internal_subdomains = "no"', scanner_extra="", ups_extra="")
    assert any(
        "relay.internal_subdomains: expected a boolean, got string" in found
        for found in problems(write_config, text)
    )


def test_subdomain_refusal_names_the_listed_domain(make_config: Callable[..., Config]) -> None:
    envelope = Envelope(Client(address="203.0.113.9"), "x@erp.example.com")
    verdict = check_envelope_sender(Subject(make_config(), None, envelope))
    assert verdict.reason == (
        "Envelope sender <x@erp.example.com> uses internal domain example.com"
        " but the client is not a registered source"
    )


# --- d) folded lines that read like a From --------------------------------------------------


def header_verdict(config: Config, header_block: bytes) -> tuple[Action, str]:
    raw = b"From: Scanner <scanner@example.com>\r\nTo: alice@example.com\r\n" + header_block
    raw += b"\r\nbody\r\n"
    envelope = Envelope(Client(sasl_user="scanner-hq"), "scanner@example.com")
    message = message_from_bytes(raw, envelope)
    source = config.source("scanner-hq")
    verdict = check_header_identities(Subject(config, source, envelope, message=message))
    return verdict.action, verdict.reason


@pytest.mark.parametrize(
    ("block", "name", "field"),
    [
        (b"Subject: hi\r\n From: ceo@example.com\r\n", "Subject", "From"),
        (b"Subject: hi\r\n\tFROM : ceo@example.com\r\n", "Subject", "From"),
        (b"Subject: hi\r\n  sender:ceo@example.com\r\n", "Subject", "Sender"),
        (b"X-Note: a\r\n b\r\n Resent-From: ceo@example.com\r\n", "X-Note", "Resent-From"),
        (b"Comments: a\r\n Resent-Sender: <ceo@example.com>\r\n", "Comments", "Resent-Sender"),
        (b"Subject: hi\r\n Reply-To: ceo@example.com\r\n", "Subject", "Reply-To"),
        (b"Subject: hi\rFrom: ceo@example.com\r\n", "Subject", "From"),  # bare CR
    ],
)
def test_fold_that_reads_like_an_identity_field_is_refused(
    make_config: Callable[..., Config], block: bytes, name: str, field: str
) -> None:
    action, reason = header_verdict(make_config(), block)
    assert action is Action.REJECT
    assert reason == (
        f"{name} header refused: a folded line reads like a {field} field"
        " (ambiguous: some mail clients would show it as one)"
    )


@pytest.mark.parametrize(
    "block",
    [
        b"Subject: hi\r\n there\r\n",
        b"Subject: Fwd: mail\r\n from the printer: hello\r\n",  # 'from' but no field
        b"Subject: hi\r\n Fwd: From: ceo@example.com\r\n",  # not at the start of the line
        b"Subject: From: ceo@example.com\r\n",  # first line: the value of Subject, not a fold
    ],
)
def test_ordinary_folds_pass(make_config: Callable[..., Config], block: bytes) -> None:
    assert header_verdict(make_config(), block)[0] is Action.ACCEPT


def test_identification_order_is_unchanged(make_config: Callable[..., Config]) -> None:
    """A SASL login still wins over a certificate, and is not refused because of it."""
    client = Client(
        address="192.0.2.5",
        sasl_user="scanner-hq",
        cert_subject="intruder.example.com",
        daemon_name="submission",
    )
    identification = Pipeline.for_config(make_config()).identify(client)
    assert identification.source is not None
    assert identification.source.name == "scanner-hq"


@pytest.mark.parametrize("ups_extra", ["", 'listeners = ["submission"]'])
def test_dry_run_client_is_identified_as_each_source(
    make_config: Callable[..., Config], ups_extra: str
) -> None:
    """`relayguard test-message` builds a client per source: it must pass the same rules."""
    config = make_config(ups_extra=ups_extra)
    for source in config.sources:
        assert identified(config, client_for(source))[:2] == (source.name, Action.ACCEPT)
