"""Checks and pipeline on parsed .eml fixtures: identification, senders, recipients, modes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from relayguard.checks import Check, Stage
from relayguard.config import Config, load_config
from relayguard.core.message import Client, message_from_bytes
from relayguard.core.verdict import Action, Decision, Mode, Verdict
from relayguard.engine import registry
from relayguard.engine.pipeline import Pipeline, combine
from relayguard.engine.runtime import Runtime
from relayguard.engine.transaction import Transaction
from relayguard.transforms import Transform

pytestmark = pytest.mark.unit

SCANNER = Client(address="198.51.100.7", sasl_user="scanner-hq")
ERP = Client(address="198.51.100.8", cert_subject="erp.example.com")
UPS = Client(address="192.0.2.5")
STRANGER = Client(address="203.0.113.9")


@pytest.fixture
def config(write_config: Callable[..., Path]) -> Config:
    return load_config(write_config())


def run(
    config: Config,
    client: Client,
    eml: Path,
    mail_from: str = "<scanner@example.com>",
    rcpts: tuple[str, ...] = ("<alice@example.com>",),
) -> tuple[Transaction, Decision]:
    """Drive one transaction like the adapter does; stop where an MTA would stop."""
    tx = Transaction(Runtime.build(config), client, audit_enabled=False)
    decision = tx.mail(mail_from)
    if decision.action >= Action.TEMPFAIL:
        return tx, decision
    for rcpt in rcpts:
        decision = tx.rcpt(rcpt)
    if not tx.recipients:
        return tx, decision
    message = message_from_bytes(eml.read_bytes(), tx.envelope)
    return tx, tx.end(message.headers, message.body, message.size)


# --- identification ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        (SCANNER, "scanner-hq"),
        (Client(address="198.51.100.7", sasl_user="SCANNER-HQ"), "scanner-hq"),
        (ERP, "erp"),
        (UPS, "legacy-ups"),
        (Client(address="::ffff:192.0.2.5"), "legacy-ups"),
        (Client(address="2001:db8::10"), "legacy-ups"),
        (Client(address="192.0.2.16"), None),  # just outside 192.0.2.0/28
        (STRANGER, None),
        (Client(address="192.0.2.5", sasl_user="unknown-user"), None),  # no fallback to address
        (Client(address="203.0.113.9", cert_subject="CN=other"), None),
    ],
)
def test_identification(config: Config, client: Client, expected: str | None) -> None:
    identification = Pipeline.for_config(config).identify(client)
    assert (identification.source.name if identification.source else None) == expected


def test_unknown_sasl_user_reason_names_the_login(config: Config) -> None:
    identification = Pipeline.for_config(config).identify(
        Client(address="192.0.2.5", sasl_user="mallory")
    )
    assert identification.reason == "SASL user 'mallory' is not registered to any source"


# --- whole transactions on fixtures ---------------------------------------------------------


def test_good_message_accepted_with_trace_header(config: Config, data: Path) -> None:
    _tx, decision = run(config, SCANNER, data / "good.eml")
    assert decision.action is Action.ACCEPT
    assert decision.headers == (
        ("X-Relayguard", "source=scanner-hq; mode=enforce; verdict=accept"),
    )
    assert [v.check for v in decision.verdicts] == [
        "source",
        "envelope_sender",
        "header_identities",
    ]


@pytest.mark.parametrize(
    "eml", ["good.eml", "good_folded_display_name.eml", "good_encoded_display_name.eml"]
)
def test_positive_controls_pass(config: Config, data: Path, eml: str) -> None:
    assert run(config, SCANNER, data / eml)[1].action is Action.ACCEPT


@pytest.mark.parametrize(
    ("eml", "reason"),
    [
        ("spoofed_from.eml", "From <admin@example.com> is not allowed for source scanner-hq"),
        ("spoofed_display_name.eml", "From header refused"),
        ("duplicate_from.eml", "duplicate From header"),
        ("two_mailboxes.eml", "From header refused"),
        ("no_from.eml", "no From header"),
        ("malformed_field_name.eml", "malformed header field name 'From '"),
        ("spoofed_sender.eml", "Sender <admin@example.com> is not allowed for source scanner-hq"),
        ("spoofed_resent_from.eml", "Resent-From <admin@example.com> is not allowed"),
        ("folded_from_in_subject.eml", "Subject header refused: a folded line reads like a From"),
    ],
)
def test_spoofing_refused_at_end_of_data(config: Config, data: Path, eml: str, reason: str) -> None:
    _, decision = run(config, SCANNER, data / eml)
    assert decision.action is Action.REJECT
    assert decision.reply is not None
    assert (decision.reply.code, decision.reply.status) == ("550", "5.7.1")
    assert reason in decision.reply.text
    assert decision.headers == ()  # nothing is added to a refused message


def test_reply_format_matches_the_issue(config: Config, data: Path) -> None:
    _, decision = run(config, SCANNER, data / "spoofed_from.eml")
    assert str(decision.reply) == (
        "550 5.7.1 From <admin@example.com> is not allowed for source scanner-hq"
    )


def test_unauthorised_envelope_sender_refused_at_mail(config: Config, data: Path) -> None:
    tx, decision = run(config, SCANNER, data / "good.eml", mail_from="<ceo@example.com>")
    assert decision.action is Action.REJECT
    assert str(decision.reply) == (
        "550 5.7.1 Envelope sender <ceo@example.com> is not allowed for source scanner-hq"
    )
    assert tx.recipients == []


def test_envelope_sender_domain_case_insensitive(config: Config, data: Path) -> None:
    assert run(config, SCANNER, data / "good.eml", "<Scanner@EXAMPLE.com>")[1].action is (
        Action.ACCEPT
    )


def test_null_sender_passes_mail_but_from_still_checked(config: Config, data: Path) -> None:
    assert run(config, SCANNER, data / "good.eml", mail_from="<>")[1].action is Action.ACCEPT
    _, decision = run(config, SCANNER, data / "spoofed_from.eml", mail_from="<>")
    assert decision.action is Action.REJECT


def test_domain_pattern_and_certificate_source(config: Config, tmp_path: Path) -> None:
    eml = tmp_path / "erp.eml"
    eml.write_bytes(b"From: ERP <billing@ERP.example.com>\r\nTo: x@example.org\r\n\r\nhi\r\n")
    _, decision = run(config, ERP, eml, "<billing@erp.example.com>", ("<x@example.org>",))
    assert decision.action is Action.ACCEPT
    eml.write_bytes(b"From: ERP <billing@sub.erp.example.com>\r\n\r\nhi\r\n")
    _, decision = run(config, ERP, eml, "<billing@erp.example.com>", ("<x@example.org>",))
    assert decision.action is Action.REJECT  # '@domain' does not cover subdomains


def test_idn_lookalike_domain_does_not_match(config: Config, tmp_path: Path) -> None:
    eml = tmp_path / "idn.eml"
    # CYRILLIC SMALL LETTER A (U+0430) in place of the Latin 'a' of example.com.
    eml.write_bytes("From: <scanner@ex\u0430mple.com>\r\n\r\nx\r\n".encode())
    assert run(config, SCANNER, eml)[1].action is Action.REJECT


def test_no_source_refused_at_mail_in_enforce(config: Config, data: Path) -> None:
    _tx, decision = run(config, STRANGER, data / "good.eml")
    assert decision.action is Action.REJECT
    assert str(decision.reply) == (
        "550 5.7.1 client 203.0.113.9 is not a registered source (not authenticated)"
    )


def test_recipient_policy(config: Config, data: Path) -> None:
    tx = Transaction(Runtime.build(config), SCANNER, audit_enabled=False)
    tx.mail("<scanner@example.com>")
    refused = tx.rcpt("<bob@example.org>")
    assert refused.action is Action.REJECT
    assert str(refused.reply) == (
        "550 5.7.1 Recipient <bob@example.org> is not allowed for source scanner-hq"
    )
    for rcpt in ("<a@example.com>", "<partner@EXAMPLE.net>", "<c@example.com>"):
        assert tx.rcpt(rcpt).action is Action.ACCEPT
    over = tx.rcpt("<d@example.com>")
    assert over.action is Action.TEMPFAIL
    assert str(over.reply).startswith("452 4.5.3 too many recipients for source scanner-hq")
    assert tx.recipients == ["a@example.com", "partner@EXAMPLE.net", "c@example.com"]


# --- monitor mode ---------------------------------------------------------------------------


def test_monitor_mode_lets_refusals_pass_and_says_would_reject(
    write_config: Callable[..., Path], data: Path
) -> None:
    config = load_config(write_config(mode="monitor"))
    _tx, decision = run(config, STRANGER, data / "spoofed_from.eml", "<admin@example.com>")
    assert decision.action is Action.ACCEPT
    assert decision.outcome == "would_reject"
    reasons = [v.reason for v in decision.verdicts if v.action is Action.REJECT]
    assert "client 203.0.113.9 is not a registered source (not authenticated)" in reasons
    # The Direct Send pattern: an unregistered client using an internal domain is called out.
    assert any("uses internal domain example.com" in r for r in reasons)
    assert ("X-Relayguard", "source=none; mode=monitor; verdict=would_reject; check=source") in (
        decision.headers
    )


def test_per_source_monitor_override(config: Config, tmp_path: Path) -> None:
    eml = tmp_path / "ups.eml"
    eml.write_bytes(b"From: admin@example.com\r\n\r\nx\r\n")
    _, decision = run(config, UPS, eml, "<ups@example.com>")
    assert decision.mode is Mode.MONITOR
    assert (decision.action, decision.outcome) == (Action.ACCEPT, "would_reject")


def test_monitor_recipient_refusal_recorded_not_applied(
    write_config: Callable[..., Path], data: Path
) -> None:
    config = load_config(write_config(mode="monitor"))
    tx, decision = run(config, SCANNER, data / "good.eml", rcpts=("<x@elsewhere.test>",))
    assert tx.recipients == ["x@elsewhere.test"]
    assert decision.outcome == "would_reject"
    assert [(r, applied) for r, _, applied in tx.recipient_refusals] == [
        ("x@elsewhere.test", False)
    ]


# --- failure handling -----------------------------------------------------------------------


def test_exception_in_check_is_tempfail_not_accept(config: Config, data: Path) -> None:
    def broken(subject: object) -> Verdict:
        raise RuntimeError("boom")

    pipeline = Pipeline(config, (Check("broken", Stage.END, broken),))
    message = message_from_bytes(
        (data / "good.eml").read_bytes(), run(config, SCANNER, data / "good.eml")[0].envelope
    )
    decision = pipeline.at_end(config.source("scanner-hq"), message)
    assert decision.action is Action.TEMPFAIL
    assert str(decision.reply) == "451 4.7.0 internal error in check broken; see the milter log"
    assert decision.verdicts[0].error


def test_errors_are_not_relaxed_by_monitor_mode() -> None:
    verdicts = [
        Verdict("a", Action.REJECT, "policy"),
        Verdict("b", Action.TEMPFAIL, "scanner down", error=True),
    ]
    decision = combine(verdicts, Mode.MONITOR)
    assert decision.action is Action.TEMPFAIL
    assert decision.reply is not None and decision.reply.text == "scanner down"


def test_enforce_stops_after_a_rejection(config: Config, data: Path) -> None:
    calls: list[str] = []

    def spy(subject: object) -> Verdict:
        calls.append("called")
        return Verdict("spy", Action.ACCEPT)

    pipeline = Pipeline(config, (Check("spy", Stage.MAIL, spy),))
    identification = pipeline.identify(STRANGER)
    tx = Transaction(Runtime.build(config), STRANGER, audit_enabled=False)
    decision = pipeline.at_mail(identification, tx.envelope)
    assert decision.action is Action.REJECT
    assert calls == []


def test_failing_transform_is_tempfail_so_mail_never_leaves_half_done(
    config: Config, data: Path
) -> None:
    def unsignable(subject: object, decision: Decision) -> Decision:
        raise OSError("key unreadable")

    tx, _ = run(config, SCANNER, data / "good.eml")
    message = message_from_bytes((data / "good.eml").read_bytes(), tx.envelope)
    pipeline = Pipeline(config, (), (Transform("dkim", unsignable),))
    decision = pipeline.at_end(config.source("scanner-hq"), message)
    assert decision.action is Action.TEMPFAIL
    assert str(decision.reply) == "451 4.7.0 internal error in dkim; see the milter log"
    assert decision.headers == ()


def test_transforms_skip_messages_that_are_refused(config: Config, data: Path) -> None:
    calls: list[str] = []

    def spy(subject: object, decision: Decision) -> Decision:
        calls.append("called")
        return decision

    tx, _ = run(config, SCANNER, data / "spoofed_from.eml")
    message = message_from_bytes((data / "spoofed_from.eml").read_bytes(), tx.envelope)
    pipeline = Pipeline(config, registry.build_checks(config), (Transform("spy", spy),))
    assert pipeline.at_end(config.source("scanner-hq"), message).action is Action.REJECT
    assert calls == []


def test_failing_observer_does_not_change_the_decision(config: Config, data: Path) -> None:
    seen: list[str] = []

    def broken(record: object) -> None:
        raise RuntimeError("metrics backend gone")

    runtime = replace(Runtime.build(config), observers=(broken, lambda r: seen.append(r.outcome)))
    tx = Transaction(runtime, SCANNER)
    tx.mail("<scanner@example.com>")
    tx.rcpt("<alice@example.com>")
    message = message_from_bytes((data / "good.eml").read_bytes(), tx.envelope)
    assert tx.end(message.headers, message.body, message.size).action is Action.ACCEPT
    assert seen == ["accept"]
