"""The Postfix templates do what they promise: real Postfix, Dovecot SASL, SMTP sink.

No relayguard milter runs here; these tests pin the transport-level security
of the appliance (who may relay on which port, TLS before AUTH, fail-closed
milter handling, SMTP smuggling) so that milter tests can rely on it.

Absence is proved with a sentinel: after the refused attempt the test sends
one legitimate message, waits for it and for an empty queue, and only then
counts what the sink received.
"""

from __future__ import annotations

import base64
import re
import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest

from tests.support.stack import (
    RawSmtp,
    RelayStack,
    SmtpSink,
    StackError,
    StackFactory,
    TlsFiles,
    device_tls_context,
    make_client_pki,
    make_dir,
    make_message,
    postfix_settings,
    render,
)

# A guard against hangs, not a measure: fifty TLS sessions took 26 s on a loaded 2-core machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RCPT = "someone@example.test"
SENDER = "scanner@example.test"


def send_sentinel(stack: RelayStack) -> None:
    """Send one legitimate message and wait until the relay has delivered everything."""
    with stack.submission() as client:
        client.send_message(make_message("sentinel"), SENDER, [RCPT])
    stack.postfix.wait_queue_empty()


def subjects(sink: SmtpSink) -> list[str]:
    return [message.subject for message in sink.messages]


def auth_plain(username: str, password: str) -> str:
    token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
    return f"AUTH PLAIN {token}"


# --- the rendered configuration ------------------------------------------


def test_rendered_config_passes_postfix_check_without_warnings(
    postfix_stack: StackFactory,
) -> None:
    stack = postfix_stack()
    postfix = stack.postfix

    assert postfix.check() == ""
    for args in (["-n"], ["-M"], ["-P"]):
        result = postfix.postconf(*args)
        assert result.returncode == 0
        # postconf warns on stderr about unknown or unused parameters.
        assert result.stderr == "", f"postconf {args}: {result.stderr}"


EXPECTED_MAIN_CF = {
    "compatibility_level": "3.6",
    "smtpd_sasl_type": "dovecot",
    "smtpd_sasl_path": "private/auth",
    "smtpd_sasl_security_options": "noanonymous",
    "smtpd_sasl_authenticated_header": "no",
    "smtpd_tls_auth_only": "yes",
    "smtpd_tls_protocols": ">=TLSv1.2",
    "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
    "smtpd_tls_mandatory_ciphers": "high",
    "tls_preempt_cipherlist": "yes",
    "smtpd_tls_received_header": "yes",
    "smtpd_tls_ask_ccert": "no",
    "smtpd_relay_restrictions": "reject",
    "milter_default_action": "tempfail",
    "milter_protocol": "6",
    "non_smtpd_milters": "",
    "milter_end_of_data_macros": "i",
    "smtpd_forbid_bare_newline": "normalize",
    "smtpd_forbid_bare_newline_exclusions": "",
    "smtpd_forbid_unauth_pipelining": "yes",
    "disable_vrfy_command": "yes",
    "smtpd_helo_required": "yes",
    "smtpd_delay_reject": "yes",
    "header_size_limit": "60000",
    "default_transport": "smtp",
    "local_transport": "error:local delivery disabled",
    "mydestination": "",
    "alias_maps": "",
    "local_recipient_maps": "",
    "relay_domains": "",
}


def test_effective_main_cf_values(postfix_stack: StackFactory) -> None:
    postfix = postfix_stack().postfix

    effective = {name: postfix.value(name) for name in EXPECTED_MAIN_CF}

    assert effective == EXPECTED_MAIN_CF
    assert postfix.value("smtpd_milters") == ""
    assert "\nsmtpd_milters" not in "\n" + postfix.postconf("-n").stdout
    mail_macros = postfix.value("milter_mail_macros").split()
    assert {"i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}"} <= set(mail_macros)
    # The milter negotiates the connect event away and takes the client from these at MAIL.
    assert {"{client_addr}", "{client_name}"} <= set(mail_macros)
    helo_macros = postfix.value("milter_helo_macros").split()
    assert {"{cert_subject}", "{cert_issuer}", "{tls_version}", "{cipher}"} <= set(helo_macros)
    assert "i" in postfix.value("milter_rcpt_macros").split()
    # The milter's slowest step must give up before smtpd gives up on the client.
    assert int(postfix.value("milter_content_timeout").rstrip("s")) < int(
        postfix.value("smtpd_timeout").rstrip("s")
    )


def test_listeners_carry_their_own_policy_and_nothing_is_chrooted(
    postfix_stack: StackFactory,
) -> None:
    stack = postfix_stack()
    per_service: dict[str, dict[str, str]] = {}
    for line in stack.postfix.postconf("-P").stdout.splitlines():
        key, value = line.split(" = ", 1)
        service, _type, name = key.split("/")
        per_service.setdefault(service, {})[name] = value
    smtp = per_service[f"127.0.0.1:{stack.smtp_port}"]
    submission = per_service[f"127.0.0.1:{stack.submission_port}"]
    smtps = per_service[f"127.0.0.1:{stack.smtps_port}"]

    assert smtp["smtpd_sasl_auth_enable"] == "no"
    assert smtp["smtpd_relay_restrictions"] == "permit_mynetworks,reject_unauth_destination,reject"
    # Outsiders are refused at connect time, before the milter (and its audit log) sees them.
    assert (smtp["smtpd_client_restrictions"], smtp["smtpd_delay_reject"]) == (
        "permit_mynetworks,reject",
        "no",
    )
    assert submission["smtpd_tls_security_level"] == "encrypt"
    assert submission["smtpd_sasl_auth_enable"] == "yes"
    assert (
        submission["smtpd_relay_restrictions"]
        == "permit_sasl_authenticated,reject_unauth_destination,reject"
    )
    assert smtps["smtpd_tls_wrappermode"] == "yes"
    assert smtps["smtpd_sasl_auth_enable"] == "yes"
    assert (
        smtps["smtpd_relay_restrictions"]
        == "permit_sasl_authenticated,reject_unauth_destination,reject"
    )

    services = [line.split() for line in stack.postfix.postconf("-M").stdout.splitlines()]
    assert services, "postconf -M listed no services"
    # Columns: service type private unpriv chroot wakeup maxproc command.
    assert {fields[0]: fields[4] for fields in services if fields[4] != "n"} == {}


@pytest.mark.parametrize(
    "missing",
    [
        "mynetworks",
        "tls_cert_file",
        "tls_key_file",
        "relayhost",
        "smtp_tls_security_level",
        "smtpd_client_auth_rate_limit",
        "smtpd_client_event_limit_exceptions",
        "milter_socket",
        "message_size_limit",
        "smtp_listen",
        "submission_listen",
        "smtps_listen",
        "queue_directory",
        "mail_owner",
    ],
)
def test_security_settings_have_no_silent_default(missing: str, tmp_path: Path) -> None:
    settings = _render_settings(tmp_path)
    del settings[missing]

    errors = []
    for template in ("main.cf.j2", "master.cf.j2"):
        try:
            render(template, postfix=settings)
        except jinja2.UndefinedError as error:
            errors.append(str(error))

    assert any(missing in error for error in errors), errors


def test_milter_lines_follow_the_socket_variable(tmp_path: Path) -> None:
    without = render("main.cf.j2", postfix=_render_settings(tmp_path, milter_socket=None))
    spec = "unix:/var/spool/postfix/relayguard/milter.sock"
    with_milter = render("main.cf.j2", postfix=_render_settings(tmp_path, milter_socket=spec))

    assert "\nsmtpd_milters" not in without
    assert f"\nsmtpd_milters = {spec}\n" in with_milter
    assert "\nmilter_default_action = tempfail\n" in with_milter
    assert "\nnon_smtpd_milters =\n" in with_milter


def _render_settings(base: Path, **overrides: Any) -> dict[str, Any]:
    tls = TlsFiles(base / "c.pem", base / "k.pem", "relay.test.invalid")
    ports = {"smtp": 10025, "submission": 10587, "smtps": 10465}
    return postfix_settings(base, tls=tls, relayhost="[127.0.0.1]:2525", ports=ports, **overrides)


# --- submission (587 role) -------------------------------------------------


def test_device_sends_with_starttls_and_auth_plain(postfix_stack: StackFactory) -> None:
    stack = postfix_stack()

    with stack.submission() as client:
        client.send_message(make_message("scan 1"), SENDER, [RCPT])

    [received] = stack.sink.wait_for(1)
    assert received.mail_from == SENDER
    assert received.rcpt_tos == (RCPT,)
    assert received.subject == "scan 1"
    received_header = str(received.message()["Received"])
    assert "using TLSv1.3" in received_header or "using TLSv1.2" in received_header
    assert "with ESMTPSA" in received_header
    # smtpd_sasl_authenticated_header = no: the login name is not published.
    assert stack.username is not None
    assert stack.username not in received.data.decode()
    assert "Authenticated sender" not in received.data.decode()


def test_auth_is_offered_only_inside_tls_on_submission(postfix_stack: StackFactory) -> None:
    stack = postfix_stack()

    with smtplib.SMTP(stack.host, stack.submission_port, timeout=10) as client:
        client.ehlo("device.test")
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        client.starttls(context=device_tls_context())
        client.ehlo("device.test")
        assert client.has_extn("auth")
        assert {"PLAIN", "LOGIN"} <= set(client.esmtp_features["auth"].upper().split())
        assert not client.has_extn("starttls")


def test_submission_refuses_mail_before_starttls(postfix_stack: StackFactory) -> None:
    stack = postfix_stack()

    with smtplib.SMTP(stack.host, stack.submission_port, timeout=10) as client:
        client.ehlo("device.test")
        code, text = client.mail(SENDER)

    assert code == 530, text
    assert b"STARTTLS" in text


def test_port_25_never_offers_auth(postfix_stack: StackFactory) -> None:
    stack = postfix_stack(mynetworks=["127.0.0.1/32"])

    with stack.smtp() as client:
        assert not client.has_extn("auth")
        assert client.has_extn("starttls")
        client.starttls(context=device_tls_context())
        client.ehlo("device.test")
        assert not client.has_extn("auth")
        code, _text = client.docmd(auth_plain("printer-1", "whatever"))
        assert code == 503


def test_wrong_password_is_refused_and_nothing_is_delivered(
    postfix_stack: StackFactory,
) -> None:
    stack = postfix_stack()

    with stack.submission(login=False) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            # One mechanism only: smtplib's login() would retry with LOGIN.
            client.user, client.password = stack.username or "", "wrong password"
            client.auth("PLAIN", client.auth_plain)
        assert refused.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.send_message(make_message("must not pass"), SENDER, [RCPT])

    send_sentinel(stack)
    assert subjects(stack.sink) == ["sentinel"]


def test_helo_is_required_and_vrfy_disabled(postfix_stack: StackFactory) -> None:
    stack = postfix_stack(mynetworks=["127.0.0.1/32"])

    with stack.raw(stack.smtp_port) as raw:
        assert raw.read_reply()[0] == 220
        assert raw.command(f"MAIL FROM:<{SENDER}>")[0] == 503
        assert raw.command("EHLO device.test")[0] == 250
        code, text = raw.command(f"VRFY {RCPT}")
        assert code == 502, text
        assert raw.command("QUIT")[0] == 221


# --- relay permission --------------------------------------------------------


def test_unauthenticated_relay_is_refused_on_submission(postfix_stack: StackFactory) -> None:
    stack = postfix_stack(mynetworks=["127.0.0.1/32"])

    with (
        stack.submission(login=False) as client,
        pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
    ):
        client.send_message(make_message("unauthenticated"), SENDER, [RCPT])

    code, text = refused.value.recipients[RCPT]
    assert code == 554
    assert b"Relay access denied" in text
    send_sentinel(stack)
    assert subjects(stack.sink) == ["sentinel"]


@pytest.mark.parametrize("mynetworks", [[], ["192.0.2.0/24"]], ids=["empty", "other-net"])
def test_port_25_refuses_clients_outside_mynetworks(
    postfix_stack: StackFactory, mynetworks: list[str]
) -> None:
    stack = postfix_stack(mynetworks=mynetworks)

    # Refused at connect time (smtpd_client_restrictions), before any MAIL FROM reaches a milter.
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        stack.smtp()

    assert refused.value.smtp_code == 554
    assert b"Client host rejected: Access denied" in refused.value.smtp_error
    send_sentinel(stack)
    assert subjects(stack.sink) == ["sentinel"]


def test_port_25_relays_for_mynetworks(postfix_stack: StackFactory) -> None:
    stack = postfix_stack(mynetworks=["192.0.2.0/24", "127.0.0.1/32"])

    with stack.smtp() as client:
        client.send_message(make_message("legacy scanner"), SENDER, [RCPT])

    [received] = stack.sink.wait_for(1)
    assert received.subject == "legacy scanner"
    assert received.rcpt_tos == (RCPT,)


# --- smtps (465 role) --------------------------------------------------------


def test_smtps_implicit_tls_with_auth_delivers(postfix_stack: StackFactory) -> None:
    stack = postfix_stack()

    with stack.smtps() as client:
        assert client.has_extn("auth")
        client.send_message(make_message("over 465"), SENDER, [RCPT])

    [received] = stack.sink.wait_for(1)
    assert received.subject == "over 465"
    assert "with ESMTPSA" in str(received.message()["Received"])


def test_smtps_refuses_unauthenticated_relay(postfix_stack: StackFactory) -> None:
    stack = postfix_stack(mynetworks=["127.0.0.1/32"])

    with stack.smtps(login=False) as client, pytest.raises(smtplib.SMTPRecipientsRefused):
        client.send_message(make_message("no login"), SENDER, [RCPT])

    send_sentinel(stack)
    assert subjects(stack.sink) == ["sentinel"]


# --- milter failure is a temporary failure ------------------------------------


def refusal(send: Callable[[], None]) -> tuple[int, str]:
    """Run one SMTP session; return the first refusal's code and text (fail if none)."""
    try:
        send()
    except smtplib.SMTPRecipientsRefused as refused:
        code, text = next(iter(refused.recipients.values()))
        return code, text.decode()
    except smtplib.SMTPResponseException as refused:
        error = refused.smtp_error
        return refused.smtp_code, error.decode() if isinstance(error, bytes) else error
    raise AssertionError("the relay accepted the message")


def test_unreachable_milter_tempfails_and_nothing_is_queued(
    postfix_stack: StackFactory, e2e_dir: Path
) -> None:
    nowhere = make_dir("milter-", e2e_dir) / "milter.sock"
    stack = postfix_stack(milter_socket=nowhere, mynetworks=["127.0.0.1/32"])
    assert stack.postfix.value("smtpd_milters") == f"unix:{nowhere}"

    def via_submission() -> None:
        with stack.submission() as client:
            client.send_message(make_message("milter down, 587"), SENDER, [RCPT])

    def via_smtps() -> None:
        with stack.smtps() as client:
            client.send_message(make_message("milter down, 465"), SENDER, [RCPT])

    def via_port_25() -> None:
        with stack.smtp() as client:
            client.send_message(make_message("milter down, 25"), SENDER, [RCPT])

    replies = {
        name: refusal(send)
        for name, send in [("587", via_submission), ("465", via_smtps), ("25", via_port_25)]
    }

    # Postfix 3.7 answers 454 to STARTTLS (587) and AUTH (465), 451 to MAIL (25).
    assert all(400 <= code < 500 for code, _text in replies.values()), replies
    assert stack.postfix.queue() == []
    stack.postfix.wait_for_log(r"milter-reject: MAIL from localhost\[127\.0\.0\.1\]: 451")
    # Nothing was accepted, so nothing can be in flight to the sink.
    assert stack.sink.messages == []


# --- SMTP smuggling ----------------------------------------------------------

# The published end-of-data variants (SEC Consult, 2023) and their close relatives.
SMUGGLING_ENDINGS = [
    b"\n.\n",
    b"\n.\r",
    b"\r.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
]


def _smuggling_payload(tag: str, ending: bytes) -> bytes:
    smuggled = (
        b"MAIL FROM:<smuggled@evil.test>\r\n"
        b"RCPT TO:<victim@example.test>\r\n"
        b"DATA\r\n"
        b"From: ceo@example.test\r\n"
        b"Subject: smuggled\r\n"
        b"\r\n"
        b"pay the invoice\r\n"
    )
    return (
        f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: outer {tag}\r\n\r\nfirst part".encode()
        + ending
        + smuggled
        + b"\r\n.\r\n"
    )


def _smuggle(raw: RawSmtp, tag: str, ending: bytes) -> list[int]:
    """One transaction whose DATA hides a second one; return the replies after DATA."""
    assert raw.command(f"MAIL FROM:<{SENDER}>")[0] == 250
    assert raw.command(f"RCPT TO:<{RCPT}>")[0] == 250
    assert raw.command("DATA")[0] == 354
    # End-of-data and QUIT may share a packet: PIPELINING was advertised.
    raw.send(_smuggling_payload(tag, ending) + b"QUIT\r\n")
    codes: list[int] = []
    while not codes or codes[-1] != 221:
        try:
            codes.append(raw.read_reply()[0])
        except (StackError, OSError):
            break
    return codes


@pytest.mark.parametrize("listener", ["smtps-auth", "port-25-mynetworks"])
def test_bare_newline_cannot_smuggle_a_second_message(
    postfix_stack: StackFactory, listener: str
) -> None:
    # Port 25 with the client in mynetworks proves the exclusions are empty:
    # Postfix's default would exempt exactly these clients.
    stack = postfix_stack(mynetworks=["127.0.0.1/32"])

    replies = []
    for index, ending in enumerate(SMUGGLING_ENDINGS):
        if listener == "smtps-auth":
            raw = stack.raw(stack.smtps_port, implicit_tls=True)
        else:
            raw = stack.raw(stack.smtp_port)
        with raw:
            assert raw.read_reply()[0] == 220
            assert raw.command("EHLO device.test")[0] == 250
            if listener == "smtps-auth":
                login = auth_plain(stack.username or "", stack.password or "")
                assert raw.command(login)[0] == 235
            replies.append(_smuggle(raw, str(index), ending))

    # Exactly one end of data per session, then QUIT: more replies mean
    # Postfix read the hidden lines as commands.
    assert replies == [[250, 221]] * len(SMUGGLING_ENDINGS)
    send_sentinel(stack)
    received = stack.sink.messages
    assert [m for m in received if m.mail_from == "smuggled@evil.test"] == []
    assert sorted(m.subject for m in received) == sorted(
        [f"outer {i}" for i in range(len(SMUGGLING_ENDINGS))] + ["sentinel"]
    )


def test_unauthorised_pipelining_is_refused(postfix_stack: StackFactory) -> None:
    stack = postfix_stack(mynetworks=["127.0.0.1/32"])

    with stack.raw(stack.smtp_port, timeout=3.0) as raw:
        assert raw.read_reply()[0] == 220
        # RFC 2920 §3.1: EHLO must be the last command in a group.
        raw.send(b"EHLO device.test\r\nMAIL FROM:<" + SENDER.encode() + b">\r\n")
        replies = []
        while True:
            try:
                replies.append(raw.read_reply())
            except (StackError, OSError):  # closed by the server, or silence
                break

    # smtpd_forbid_unauth_pipelining: refused and disconnected, not even EHLO answered.
    assert [code for code, _text in replies] == [554], replies
    assert "synchronization" in replies[0][1]
    stack.postfix.wait_for_log(r"improper command pipelining after EHLO")


# --- sizes -------------------------------------------------------------------


def test_header_longer_than_a_milter_packet_is_cut_below_64_kb(
    postfix_stack: StackFactory,
) -> None:
    stack = postfix_stack()
    folded = "\r\n ".join(["x" * 70] * 1000)  # about 73 KB in one header
    message = (
        f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: long header\r\n"
        f"X-Long: {folded}\r\n\r\nbody survives\r\n"
    ).encode()

    with stack.submission() as client:
        client.sendmail(SENDER, [RCPT], message)

    [received] = stack.sink.wait_for(1)
    header = re.search(rb"^X-Long:(?:.*\r\n[ \t])*.*\r\n", received.data, re.MULTILINE)
    assert header is not None
    # Postfix stores lines with LF and counts header_size_limit on that form;
    # it discards the excess, so the header fits in one milter packet.
    stored = header.group().replace(b"\r\n", b"\n")
    assert 50000 < len(stored) <= 60000
    assert received.message().get_content().strip() == "body survives"


def test_message_size_limit_is_enforced(postfix_stack: StackFactory) -> None:
    stack = postfix_stack(message_size_limit=20000)

    with stack.submission() as client:
        assert client.esmtp_features["size"] == "20000"
        with pytest.raises(smtplib.SMTPException) as refused:
            client.sendmail(SENDER, [RCPT], make_message("big", body="y" * 30000).as_bytes())

    assert "552" in str(refused.value) or "5.3.4" in str(refused.value)
    send_sentinel(stack)
    assert subjects(stack.sink) == ["sentinel"]


# --- rate limits, client certificates, IPv6 ------------------------------------


def test_auth_rate_limit_applies_even_to_mynetworks(postfix_stack: StackFactory) -> None:
    stack = postfix_stack(smtpd_client_auth_rate_limit=2, mynetworks=["127.0.0.1/32"])

    for _ in range(2):
        with stack.submission():
            pass
    with (
        stack.submission(login=False) as client,
        pytest.raises(smtplib.SMTPAuthenticationError) as refused,
    ):
        client.login(stack.username or "", stack.password or "")

    assert 400 <= refused.value.smtp_code < 500


def test_client_certificate_from_the_device_ca_may_relay(
    postfix_stack: StackFactory, e2e_dir: Path
) -> None:
    pki = make_client_pki(make_dir("device-pki-", e2e_dir))
    stack = postfix_stack(tls_client_ca_file=str(pki.ca_file))

    with stack.submission(login=False, client=pki) as client:
        client.send_message(make_message("by certificate"), SENDER, [RCPT])
    with stack.submission(login=False) as client, pytest.raises(smtplib.SMTPRecipientsRefused):
        client.send_message(make_message("no certificate"), SENDER, [RCPT])

    [received] = stack.sink.wait_for(1)
    received_header = str(received.message()["Received"])
    assert f'Client CN "{pki.subject_cn}"' in received_header
    assert "verified OK" in received_header
    stack.postfix.wait_queue_empty()
    assert subjects(stack.sink) == ["by certificate"]


def test_ipv6_loopback_listener(postfix_stack: StackFactory) -> None:
    stack = postfix_stack(listen_host="::1")

    with stack.submission() as client:
        client.send_message(make_message("over ipv6"), SENDER, [RCPT])

    [received] = stack.sink.wait_for(1)
    assert received.subject == "over ipv6"
    assert "[IPv6:::1]" in str(received.message()["Received"])


def test_fifty_wrong_passwords_are_rate_limited(postfix_stack: StackFactory) -> None:
    """A password-guessing client is cut off by Postfix before Dovecot sees most guesses."""
    stack = postfix_stack(smtpd_client_auth_rate_limit=3)
    codes = []
    for attempt in range(50):
        # Dovecot delays each failure (and more for a repeat offender): allow for it.
        with stack.submission(login=False, timeout=40) as client:
            credentials = auth_plain(stack.username or "", f"guess-{attempt}")
            codes.append(client.docmd(*credentials.split(" ", 1))[0])
    assert codes[0] == 535  # a wrong password, answered by Dovecot
    # At most the limit's worth of guesses reach Dovecot (535, or 454 when Dovecot's own
    # growing failure delay outlasts Postfix); every other one is refused by Postfix itself.
    assert codes.count(535) <= 3
    assert set(codes[3:]) <= {421, 450, 451, 454}
    stack.postfix.wait_for_log(r"AUTH command rate limit exceeded: 50 from")
