"""The pymilter class driven by Milter.testctx.TestCtx: macros in, milter actions out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import Milter
import pytest
from Milter import testctx

from relayguard.config import load_config
from relayguard.core.verdict import Reply
from relayguard.daemon.adapter import RelayguardMilter, milter_text
from relayguard.engine.runtime import Runtime, RuntimeHolder
from relayguard.parsing.rfc5322 import split_header_block
from tests.conftest import BASE_CONFIG

pytestmark = pytest.mark.adapter


NO_REPLY_FLAGS = (
    Milter.P_NR_CONN | Milter.P_NR_HELO | Milter.P_NR_MAIL | Milter.P_NR_RCPT | Milter.P_NR_DATA
    | Milter.P_NR_UNKN | Milter.P_NR_EOH | Milter.P_NR_BODY | Milter.P_NR_HDR
)  # fmt: skip


class Recorder(testctx.TestCtx):  # type: ignore[misc]
    """TestCtx that records header changes and quarantine instead of editing a message.

    It offers an MTA without "no reply" support: TestCtx treats NOREPLY as a refusal, and the
    protocol tier covers the no-reply negotiation with real libmilter.
    """

    def _negotiate(self) -> int:
        self._body = None
        self._priv = None
        self._stage = -1
        self._opts = [Milter.CURR_ACTS, 0x1FFFFF & ~NO_REPLY_FLAGS, 0, 0]
        rc: int = Milter.negotiate_callback(self, self._opts)
        self._protocol = self._opts[1]
        return rc

    def __init__(self) -> None:
        super().__init__()
        self.added: list[tuple[str, str]] = []
        self.changed: list[tuple[str, int, str]] = []
        self.quarantined: str | None = None

    def addheader(self, field: str, value: str, idx: int) -> None:
        self.added.append((field, value))

    def chgheader(self, field: str, idx: int, value: str) -> None:
        self.changed.append((field, idx, value))

    def quarantine(self, reason: str) -> None:
        self.quarantined = reason


@pytest.fixture
def milter_ctx(
    write_config: Callable[..., Path], tmp_path: Path
) -> Iterator[Callable[..., Recorder]]:
    def make(mode: str = "enforce", text: str | None = None) -> Recorder:
        audit = tmp_path / "audit.jsonl"
        config = load_config(write_config(text, mode=mode, audit=audit))
        holder = RuntimeHolder(config.path, Runtime.build(config))
        Milter.factory = lambda: RelayguardMilter(holder, Gauge())
        return Recorder()

    previous = Milter.factory
    yield make
    Milter.factory = previous


class Gauge:
    def __init__(self) -> None:
        self.open = 0

    def opened(self) -> None:
        self.open += 1

    def closed(self) -> None:
        self.open -= 1


def send(
    ctx: Recorder,
    raw: bytes,
    *,
    sasl_user: str = "scanner-hq",
    ip: str = "198.51.100.7",
    sender: str = "scanner@example.com",
    rcpts: tuple[str, ...] = ("alice@example.com",),
    listener: str = "smtp",
) -> tuple[str, int]:
    """Feed one message the way libmilter calls the callbacks; return (stage, result code)."""
    if sasl_user:
        ctx._setsymval("{auth_authen}", sasl_user)
    # Postfix names every listener of master.cf.j2 (milter_macro_daemon_name).
    ctx._setsymval("{daemon_name}", listener)
    ctx._setsymval("i", "4XTESTQID")
    # Postfix passes the client at MAIL (milter_mail_macros); the connect event is negotiated away.
    ctx._setsymval("{client_addr}", ip)
    assert ctx._connect(ip=ip) == Milter.CONTINUE
    rc = ctx._envfrom(f"<{sender}>")
    if rc != Milter.CONTINUE:
        return "mail", rc
    for rcpt in rcpts:
        rc = ctx._envrcpt(f"<{rcpt}>")
    if rc != Milter.CONTINUE:
        return "rcpt", rc
    headers, offset = split_header_block(raw)
    for name, value in headers:
        ctx._priv.header_bytes(name, value)  # raw bytes, as libmilter passes them
    ctx._eoh()
    ctx._priv.body(raw[offset:])
    return "eom", ctx._eom()


def test_accepted_message_gets_trace_header(
    milter_ctx: Callable[..., Recorder], data: Path
) -> None:
    ctx = milter_ctx()
    assert send(ctx, (data / "good.eml").read_bytes()) == ("eom", Milter.ACCEPT)
    assert ctx.added == [("X-Relayguard", "source=scanner-hq; mode=enforce; verdict=accept")]
    assert ctx._reply is None


def test_forged_trace_header_is_removed(milter_ctx: Callable[..., Recorder], data: Path) -> None:
    ctx = milter_ctx()
    assert send(ctx, (data / "forged_trace_header.eml").read_bytes())[1] == Milter.ACCEPT
    assert ctx.changed == [("X-Relayguard", 1, "")]
    assert ctx.added[-1][1].startswith("source=scanner-hq")


def test_spoofed_from_rejected_with_reply(milter_ctx: Callable[..., Recorder], data: Path) -> None:
    ctx = milter_ctx()
    assert send(ctx, (data / "spoofed_from.eml").read_bytes()) == ("eom", Milter.REJECT)
    assert ctx._reply == (
        "550",
        "5.7.1",
        "From <admin@example.com> is not allowed for source scanner-hq",
    )
    assert ctx.added == []


def test_unknown_client_rejected_at_mail(milter_ctx: Callable[..., Recorder], data: Path) -> None:
    ctx = milter_ctx()
    stage, rc = send(ctx, (data / "good.eml").read_bytes(), sasl_user="", ip="203.0.113.9")
    assert (stage, rc) == ("mail", Milter.REJECT)
    assert ctx._reply[:2] == ("550", "5.7.1")
    assert "203.0.113.9 is not a registered source" in ctx._reply[2]


def test_network_source_identified_by_address(
    milter_ctx: Callable[..., Recorder], tmp_path: Path
) -> None:
    ctx = milter_ctx()
    raw = b"From: UPS <ups@example.com>\r\nTo: it@example.com\r\n\r\nOn battery\r\n"
    stage, rc = send(ctx, raw, sasl_user="", ip="192.0.2.3", sender="ups@example.com")
    assert (stage, rc) == ("eom", Milter.ACCEPT)
    assert ctx.added == [("X-Relayguard", "source=legacy-ups; mode=monitor; verdict=accept")]


def test_connect_and_other_unused_events_are_negotiated_away(
    milter_ctx: Callable[..., Recorder],
) -> None:
    """One packet less per event Postfix does not send: connect, HELO, DATA, EOH, unknown."""
    ctx = milter_ctx()
    ctx._connect()
    skipped = Milter.P_NOCONNECT | Milter.P_NOHELO | Milter.P_NODATA | Milter.P_NOEOH
    assert ctx._protocol & (skipped | Milter.P_NOUNKNOWN) == skipped | Milter.P_NOUNKNOWN
    needed = Milter.P_NOMAIL | Milter.P_NORCPT | Milter.P_NOHDRS | Milter.P_NOBODY
    assert ctx._protocol & needed == 0


def test_client_address_is_the_postfix_macro_not_the_connect_event(
    milter_ctx: Callable[..., Recorder],
) -> None:
    """Only {client_addr} at MAIL counts: a registered address anywhere else identifies nobody."""
    ctx = milter_ctx()
    ctx._setsymval("{daemon_name}", "smtp")
    ctx._setsymval("{client_addr}", "203.0.113.9")
    ctx._connect(ip="192.0.2.3")  # legacy-ups's network, but not what Postfix says at MAIL
    assert ctx._envfrom("<ups@example.com>") == Milter.REJECT
    assert ctx._reply[2] == "client 203.0.113.9 is not a registered source (not authenticated)"


def test_network_source_on_another_listener_is_refused(
    milter_ctx: Callable[..., Recorder],
) -> None:
    """{daemon_name} reaches the source check: legacy-ups (monitor mode) would be refused."""
    ctx = milter_ctx()
    raw = b"From: UPS <ups@example.com>\r\nTo: it@example.com\r\n\r\nOn battery\r\n"
    stage, rc = send(
        ctx, raw, sasl_user="", ip="192.0.2.3", sender="ups@example.com", listener="submission"
    )
    assert (stage, rc) == ("eom", Milter.ACCEPT)
    assert ctx.added == [
        ("X-Relayguard", "source=legacy-ups; mode=monitor; verdict=would_reject; check=source")
    ]


@pytest.mark.parametrize(("issuer", "expected"), [("Device CA", "eom"), ("Rogue CA", "mail")])
def test_certificate_issuer_reaches_the_source_check(
    milter_ctx: Callable[..., Recorder], data: Path, issuer: str, expected: str
) -> None:
    pinned = BASE_CONFIG.format(mode="enforce", audit="").replace(
        'client_cert_subjects = ["CN=erp.example.com"]',
        'client_cert_subjects = ["CN=erp.example.com"]\nclient_cert_issuers = ["Device CA"]',
    )
    ctx = milter_ctx(text=pinned)
    ctx._setsymval("{cert_subject}", "erp.example.com")
    ctx._setsymval("{cert_issuer}", issuer)
    raw = b"From: ERP <invoices@example.com>\r\nTo: alice@example.com\r\n\r\nInvoice\r\n"
    stage, _ = send(ctx, raw, sasl_user="", ip="203.0.113.9", sender="invoices@example.com")
    assert stage == expected


def test_refused_recipient_is_per_recipient(
    milter_ctx: Callable[..., Recorder], data: Path
) -> None:
    ctx = milter_ctx()
    ctx._setsymval("{auth_authen}", "scanner-hq")
    ctx._setsymval("{client_addr}", "198.51.100.7")
    ctx._connect(ip="198.51.100.7")
    assert ctx._envfrom("<scanner@example.com>") == Milter.CONTINUE
    assert ctx._envrcpt("<x@elsewhere.test>") == Milter.REJECT
    assert ctx._reply[2] == "Recipient <x@elsewhere.test> is not allowed for source scanner-hq"
    assert ctx._envrcpt("<alice@example.com>") == Milter.CONTINUE


def test_monitor_mode_accepts_and_audits_would_reject(
    milter_ctx: Callable[..., Recorder], data: Path, tmp_path: Path
) -> None:
    ctx = milter_ctx(mode="monitor")
    assert send(ctx, (data / "spoofed_from.eml").read_bytes())[1] == Milter.ACCEPT
    assert "verdict=would_reject" in ctx.added[-1][1]
    line = (tmp_path / "audit.jsonl").read_text().splitlines()[-1]
    assert '"outcome":"would_reject"' in line
    assert '"queue_id":"4XTESTQID"' in line


def test_reply_text_is_safe_for_libmilter() -> None:
    text = milter_text(Reply("550", "5.7.1", "From <a\u202e@x> 100% bad\r\nInjected: yes"))
    assert text == "From <a?@x> 100%% bad??Injected: yes"


def test_forged_copies_of_every_added_header_are_removed(
    milter_ctx: Callable[..., Recorder],
) -> None:
    ctx = milter_ctx()
    raw = (
        b"From: Scanner <scanner@example.com>\r\nx-relayguard: verdict=accept\r\n"
        b"DKIM-Signature: v=1; d=example.com; s=app; b=abc\r\nTo: a@example.com\r\n\r\nhi\r\n"
    )
    assert send(ctx, raw)[1] == Milter.ACCEPT
    assert ctx.changed == [("x-relayguard", 1, "")]  # the sender's own signature stays
