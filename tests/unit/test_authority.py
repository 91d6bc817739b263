"""Authority only for mail that passed policy: no DKIM signature, no unsubscribe token, in any mode.

The review found monitor mode delivering a registered device's `From: CEO <ceo@example.com>` with a
valid DKIM-Signature for example.com. These tests drive the transaction (the code the milter and
`test-message` run) over a spoof corpus in both modes: whatever enforce mode refuses leaves monitor
mode unsigned, and every accepted control is still signed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.unit.test_rfc5322 import NEGATIVE

from relayguard.config import Config, load_config
from relayguard.core.message import Client, message_from_bytes
from relayguard.core.verdict import Action, Decision
from relayguard.dkim import keys as dkim_keys
from relayguard.engine.runtime import Runtime
from relayguard.engine.transaction import Transaction

pytestmark = pytest.mark.unit

CONFIG = """
[relay]
mode = "{mode}"
internal_domains = ["example.com"]
[dkim]
key_directory = "{keys}"
domains = ["example.com"]
[state]
path = "{state}"
[unsubscribe]
sources = ["scanner-hq"]
base_url = "https://relay.example.com"
secrets = ["0123456789abcdef0123456789abcdef"]
[[sources]]
name = "scanner-hq"
sasl_users = ["scanner-hq"]
senders = ["scanner@example.com"]
"""

SCANNER = Client(address="198.51.100.7", sasl_user="scanner-hq")
STRANGER = Client(address="203.0.113.9")

HEADERS = (
    b"To: Alice <alice@example.com>\r\n"
    b"Subject: report\r\n"
    b"Date: Mon, 23 Nov 2026 15:00:00 +0000\r\n"
    b"Message-ID: <a-1@scanner.example.com>\r\n"
)
BODY = b"\r\nThe report.\r\n"


def message(from_value: bytes, extra: bytes = b"") -> bytes:
    return b"From: " + from_value + b"\r\n" + extra + HEADERS + BODY


SPOOFS = [
    pytest.param(message(b"CEO <ceo@example.com>"), id="another-internal-mailbox"),
    pytest.param(message(b"scanner@example.com <ceo@example.com>"), id="address-as-name"),
    pytest.param(message(b"<scanner@example.com>, <ceo@example.com>"), id="two-mailboxes"),
    pytest.param(
        message(b"<scanner@example.com>", b"From: <ceo@example.com>\r\n"), id="duplicate-from"
    ),
    pytest.param(
        message(b"<scanner@example.com>", b"Sender: <ceo@example.com>\r\n"), id="sender-field"
    ),
    pytest.param(
        message(b"<scanner@example.com>", b"Resent-From: <ceo@example.com>\r\n"), id="resent"
    ),
    pytest.param(HEADERS + BODY, id="no-from"),
    *(
        pytest.param(message(raw), id=f"rfc5322-{reason}-{i}")
        for i, (raw, reason) in enumerate(NEGATIVE)
    ),
]
CONTROLS = [
    pytest.param(message(b"Scanner HQ <scanner@example.com>"), id="plain"),
    pytest.param(message(b"=?utf-8?q?Sc=C3=A4nner?= <scanner@example.com>"), id="encoded-name"),
    pytest.param(message(b"scanner@example.com"), id="bare-address"),
]


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    dkim_keys.generate(directory, "example.com", "rsa1", "rsa")
    return directory


@pytest.fixture
def config(tmp_path: Path, key_dir: Path) -> Callable[[str], Config]:
    def make(mode: str) -> Config:
        path = tmp_path / f"{mode}.toml"
        path.write_text(CONFIG.format(mode=mode, keys=key_dir, state=tmp_path / "state.db"))
        return load_config(path)

    return make


def send(
    config: Config, raw: bytes, client: Client = SCANNER, mail_from: str = "<scanner@example.com>"
) -> Decision | None:
    """One transaction as the adapter drives it; None when refused before end of data."""
    tx = Transaction(Runtime.build(config), client, audit_enabled=False)
    if tx.mail(mail_from).action >= Action.TEMPFAIL:
        return None
    if tx.rcpt("<alice@example.com>").action >= Action.TEMPFAIL:
        return None
    parsed = message_from_bytes(raw, tx.envelope)
    return tx.end(parsed.headers, parsed.body, parsed.size)


def added(decision: Decision, name: str) -> list[str]:
    return [value for field, value in decision.headers if field.lower() == name.lower()]


def note(decision: Decision, check: str) -> str:
    return next(v.reason for v in decision.verdicts if v.check == check)


@pytest.mark.parametrize("raw", SPOOFS)
def test_what_enforce_refuses_monitor_delivers_unsigned(
    config: Callable[[str], Config], raw: bytes
) -> None:
    enforced = send(config("enforce"), raw)
    assert enforced is not None and enforced.action is Action.REJECT
    monitored = send(config("monitor"), raw)
    assert monitored is not None
    assert (monitored.action, monitored.outcome) == (Action.ACCEPT, "would_reject")
    assert added(monitored, "DKIM-Signature") == []
    assert added(monitored, "List-Unsubscribe") == []
    assert note(monitored, "dkim").startswith("not signed: would_reject (header_identities: ")
    assert note(monitored, "unsubscribe").startswith("no List-Unsubscribe: would_reject")
    assert added(monitored, "X-Relayguard")[0].endswith("; dkim=withheld")


@pytest.mark.parametrize("mode", ["enforce", "monitor"])
@pytest.mark.parametrize("raw", CONTROLS)
def test_accepted_controls_are_still_signed(
    config: Callable[[str], Config], mode: str, raw: bytes
) -> None:
    decision = send(config(mode), raw)
    assert decision is not None and decision.outcome == "accept"
    assert len(added(decision, "DKIM-Signature")) == 1
    assert len(added(decision, "List-Unsubscribe")) == 1
    assert note(decision, "dkim").startswith("signed d=example.com")
    assert "dkim=withheld" not in added(decision, "X-Relayguard")[0]


def test_unregistered_client_in_monitor_mode_is_not_signed(config: Callable[[str], Config]) -> None:
    decision = send(config("monitor"), CONTROLS[0].values[0], client=STRANGER)  # type: ignore[arg-type]
    assert decision is not None and decision.outcome == "would_reject"
    assert added(decision, "DKIM-Signature") == []
    assert note(decision, "dkim").startswith("not signed: would_reject (source: ")


def test_unauthorised_envelope_sender_in_monitor_mode_is_not_signed(
    config: Callable[[str], Config],
) -> None:
    raw = CONTROLS[0].values[0]
    decision = send(config("monitor"), raw, mail_from="<ceo@example.com>")  # type: ignore[arg-type]
    assert decision is not None and decision.outcome == "would_reject"
    assert added(decision, "DKIM-Signature") == []
    assert "envelope_sender" in note(decision, "dkim")
