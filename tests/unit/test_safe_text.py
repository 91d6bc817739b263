"""Control characters from messages never reach a terminal, a log line or generated config.

The escaping itself (safe_text.printable), reasons built from message data by the content checks
(zip member names), and the sinks that print what the audit log or the queue holds: quarantine
list, test-message, the text and HTML report, rules test.
"""

from __future__ import annotations

import json
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from tests.support.documents import CONTENT_TYPES, zip_bytes

from relayguard.checks import Subject, dlp, mime_limits
from relayguard.checks import yara as yara_check
from relayguard.cli import report, rules
from relayguard.cli import test_message as testmessage
from relayguard.config import Config, load_config
from relayguard.core.message import Client, Envelope, message_from_bytes
from relayguard.core.safe_text import UNSAFE, printable
from relayguard.core.verdict import Action
from relayguard.dlp.extract import MAX_XML_MEMBER
from relayguard.engine import quarantine

pytestmark = pytest.mark.unit

YARA_DIR = Path(__file__).parents[1] / "data" / "content" / "yara"
# A forged config block, a terminal escape (clear screen), CR, backspace, a bidi override, a C1
# control, DEL and a line separator: everything a hostile file name can carry.
HOSTILE = 'r.txt\n[[sources]]\nname="evil"\x1b[2J\r\x08\u202eexe.txt\x9b\x7f\u2028'
HOSTILE_ESCAPED = 'r.txt\\n[[sources]]\\nname="evil"\\x1b[2J\\r\\x08\\u202eexe.txt\\x9b\\x7f\\u2028'

CONFIG = f"""
[relay]
mode = "enforce"

[[sources]]
name = "erp"
sasl_users = ["erp"]
senders = ["@example.com"]
dlp_profile = "pci"

[yara]
rules_dir = "{YARA_DIR}"

[[dlp_profiles]]
name = "pci"
detectors = {{ card_number = 3 }}
action = "reject"
"""


def assert_safe_line(text: str) -> None:
    assert UNSAFE.search(text) is None, text
    assert len(text.splitlines()) <= 1, text


# --- the escaping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\nb", "a\\nb"),
        ("a\r\nb\tc", "a\\r\\nb\\tc"),
        ("\x00\x08\x1b[31m\x7f", "\\x00\\x08\\x1b[31m\\x7f"),
        ("\x85\x9b", "\\x85\\x9b"),  # C1: NEL, CSI
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\u202a\u202b\u202c\u202d\u202e", "\\u202a\\u202b\\u202c\\u202d\\u202e"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
        ("bad\udcff", "bad\\udcff"),  # undecodable byte kept by surrogateescape
        ("C:\\temp\\n", "C:\\\\temp\\\\n"),  # a backslash is escaped: "\\n" is not "\n"
    ],
)  # fmt: skip
def test_printable_escapes_what_can_forge_lines_or_rewrite_a_terminal(
    text: str, shown: str
) -> None:
    assert printable(text) == shown


def test_printable_keeps_ordinary_text() -> None:
    text = 'Grüße from 日本 🙂 "quoted" <a@example.com> 50% [ok]'
    assert printable(text) == text


def test_printable_is_one_safe_line_for_every_character() -> None:
    everything = "".join(chr(code) for code in range(0x3100))
    escaped = printable(everything)
    assert_safe_line(escaped)
    assert escaped.encode("utf-8")  # no lone surrogate left


def test_printable_is_unambiguous() -> None:
    assert printable("a\nb") != printable("a\\nb")
    assert printable("\x1b") != printable("\\x1b")


# --- reasons built from message data --------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "relayguard.toml"
    path.write_text(CONFIG)
    return load_config(path)


def with_attachment(data: bytes, filename: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "erp@example.com"
    msg["To"] = "alice@example.com"
    msg["Subject"] = "test"
    msg.set_content("see attachment")
    msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=filename)
    return msg


def subject(config: Config, msg: EmailMessage) -> Subject:
    envelope = Envelope(Client(sasl_user="erp"), "erp@example.com", ("alice@example.com",), "Q1")
    parsed = message_from_bytes(msg.as_bytes().replace(b"\n", b"\r\n"), envelope)
    return Subject(config, config.source("erp"), envelope, message=parsed)


def test_zip_member_name_is_escaped_in_the_yara_reason(config: Config) -> None:
    archive = zip_bytes({HOSTILE: "status RELAYGUARD-TEST-HOLD"})
    assert config.content.yara is not None
    verdict = yara_check.make_check(config.content.yara)(
        subject(config, with_attachment(archive, "scan.zip"))
    )
    assert verdict.action is Action.QUARANTINE
    assert verdict.reason == f"YARA rule markers:Hold_Marker matched in part 2/{HOSTILE_ESCAPED}"
    assert_safe_line(verdict.reason)


def test_zip_member_name_is_escaped_in_the_limits_reason(config: Config) -> None:
    bomb = zip_bytes({HOSTILE: b"\0" * 200_000})  # expands far more than 100x
    verdict = mime_limits.check_limits(subject(config, with_attachment(bomb, "scan.zip")))
    assert verdict.action is Action.QUARANTINE
    assert f"(expansion_ratio at part 2/{HOSTILE_ESCAPED}: expands" in verdict.reason
    assert_safe_line(verdict.reason)


def test_document_member_name_is_escaped_in_the_dlp_reason(config: Config) -> None:
    # '$' in the member pattern also matches before a final newline: the name reaches the error.
    name = "word/document.xml\n"
    document = zip_bytes({"[Content_Types].xml": CONTENT_TYPES, name: b"\0" * (MAX_XML_MEMBER + 1)})
    verdict = dlp.make_check(config.content.dlp)(
        subject(config, with_attachment(document, "r.docx"))
    )
    assert verdict.action is Action.TAG  # dlp.unreadable_action's default
    assert "(2: word/document.xml\\n larger than" in verdict.reason
    assert_safe_line(verdict.reason)


# --- sinks: what the audit log, the queue or a sample holds, printed -------------------------


def hostile_audit_line(path: Path) -> None:
    """A quarantine decision as an older relayguard wrote it: the member name raw in the reason."""
    record = {
        "time": "2026-11-20T10:00:00.000Z", "stage": "end", "mode": "enforce",
        "queue_id": "4XHOLD1", "source": f"erp{HOSTILE}", "client_address": "192.0.2.1",
        "sasl_user": None, "cert_subject": None, "mail_from": f"a{HOSTILE}@example.com",
        "recipients": ["alice@example.com"], "from": None, "size": 10,
        "checks": [{"name": "yara", "action": "quarantine",
                    "reason": f"YARA rule markers:Hold_Marker matched in part 2/{HOSTILE}"}],
        "action": "quarantine", "outcome": "quarantine",
    }  # fmt: skip
    path.write_text(json.dumps(record) + "\n")


def test_quarantine_list_escapes_reason_sender_and_recipients(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    hostile_audit_line(audit)
    reasons = quarantine.audit_reasons(audit, ["4XHOLD1"])
    held = quarantine.Held("4XHOLD1", 0, 10, f"a{HOSTILE}@example.com", (f"b{HOSTILE}@x.test",))
    listing = quarantine.format_list([held], reasons)
    lines = listing.splitlines()
    assert len(lines) == 3, listing
    for line in lines:
        assert_safe_line(line)
    assert lines[0] == (
        f"4XHOLD1         10  <a{HOSTILE_ESCAPED}@example.com> -> b{HOSTILE_ESCAPED}@x.test"
    )
    assert (
        lines[1] == f"    yara: YARA rule markers:Hold_Marker matched in part 2/{HOSTILE_ESCAPED}"
    )


def test_quarantine_show_escapes_every_line_and_keeps_the_layout() -> None:
    # One header line as postcat prints it: no LF inside, but CR, ESC, NEL and U+2028.
    postcat = "*** HEADER EXTRACTED ***\nSubject: x\x1b[2J\r\x08\u202eexe\x85\u2028y\n\tfolded\n"
    shown = quarantine.format_show(f"yara: part 2/{HOSTILE}", postcat)
    assert shown.split("\n") == [
        f"*** quarantined: yara: part 2/{HOSTILE_ESCAPED}",
        "*** HEADER EXTRACTED ***",
        "Subject: x\\x1b[2J\\r\\x08\\u202eexe\\x85\\u2028y",
        "\\tfolded",
        "",
    ]
    assert UNSAFE.search(shown.replace("\n", "")) is None


def test_test_message_text_output_escapes_reasons_and_values() -> None:
    result = {
        "action": "quarantine", "outcome": "quarantine", "reply": None, "stage": "end",
        "source": "erp", "mode": "enforce",
        "checks": [{"name": "yara", "action": "quarantine", "reason": f"part 2/{HOSTILE}"}],
        "recipient_refusals": [{"recipient": f"x{HOSTILE}@example.com", "reason": "no",
                                "applied": True}],
        "headers_added": [{"name": "X-Relayguard-Yara", "value": HOSTILE}],
    }  # fmt: skip
    text = testmessage.format_result(result)
    for line in text.splitlines():
        assert_safe_line(line)
    assert len(text.splitlines()) == 6
    assert f"part 2/{HOSTILE_ESCAPED}" in text
    assert f"recipient x{HOSTILE_ESCAPED}@example.com: no" in text
    assert f"adds:    X-Relayguard-Yara: {HOSTILE_ESCAPED}" in text


def test_report_text_and_html_escape_audit_values(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    hostile_audit_line(audit)
    built = report.build(audit)
    text = report.format_text(built)
    assert f"yara: YARA rule markers:Hold_Marker matched in part 2/{HOSTILE_ESCAPED}" in text
    assert f"erp{HOSTILE_ESCAPED}" in text
    for line in text.splitlines():
        assert_safe_line(line)
    page = report.format_html(built)
    assert UNSAFE.search(page.replace("\n", "")) is None
    assert "r.txt\\n[[sources]]\\nname=&quot;evil&quot;\\x1b[2J" in page


def test_rules_test_output_escapes_file_names(config: Config) -> None:
    sample = with_attachment(zip_bytes({HOSTILE: "RELAYGUARD-TEST-HOLD"}), f"{HOSTILE}.zip")
    result = rules.evaluate(config, sample.as_bytes(), "sample.eml", config.source("erp"), True)
    text = rules.format_result(result)
    for line in text.splitlines():
        assert_safe_line(line)
    name = HOSTILE_ESCAPED
    assert f"part 2/{name} ({name}): yara:markers:Hold_Marker" in text
    assert f"YARA rule markers:Hold_Marker matched in part 2/{name}\n" in text


def test_zip_fixture_really_holds_the_raw_name() -> None:
    """The tests above would prove nothing if zipfile cleaned the name on the way."""
    names = zipfile.ZipFile(__import__("io").BytesIO(zip_bytes({HOSTILE: "x"}))).namelist()
    assert names == [HOSTILE]
