"""The content checks with their dependencies faked: clamd, DNS; YARA and DLP for real."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from tests.support.documents import docx, nested_zip, pdf, zip_bytes

from relayguard.checks import Stage, Subject, clamav, dlp, mime_limits, urls
from relayguard.checks import yara as yara_check
from relayguard.config import Config, load_config
from relayguard.config.scanners import ClamavSettings
from relayguard.core.message import Client, Envelope, message_from_bytes
from relayguard.core.verdict import Action
from relayguard.engine.pipeline import Pipeline
from relayguard.scanners import dnsbl
from relayguard.scanners.clamd import ScannerUnavailable, ScanResult

pytestmark = pytest.mark.unit

YARA_DIR = Path(__file__).parents[1] / "data" / "content" / "yara"
CARDS = "4111 1111 1111 1111, 5500-0000-0000-0004, 378282246310005"

CONFIG = f"""
[relay]
mode = "enforce"

[[sources]]
name = "erp"
sasl_users = ["erp"]
senders = ["@example.com"]
dlp_profile = "pci"

[[sources]]
name = "hr"
sasl_users = ["hr"]
senders = ["@example.com"]
dlp_profile = "route"

[[sources]]
name = "plain"
sasl_users = ["plain"]
senders = ["@example.com"]

[yara]
rules_dir = "{YARA_DIR}"

[[dlp_detectors]]
name = "falcon"
keywords = ["project falcon"]
context = ["confidential"]

[[dlp_profiles]]
name = "pci"
detectors = {{ card_number = 3, iban = 2, falcon = 1 }}
action = "reject"

[[dlp_profiles]]
name = "route"
detectors = {{ card_number = 1, es_dni = 1 }}
match = "all"
action = "encrypt-route"

[[url_blocklists]]
zone = "dbl.test"
action = "reject"

[[url_blocklists]]
zone = "tag.test"
action = "tag"
codes = ["127.0.0.2"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "relayguard.toml"
    path.write_text(CONFIG)
    return load_config(path)


def message(body: str = "hello", attach: tuple[bytes, str] | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "erp@example.com"
    msg["To"] = "alice@example.com"
    msg["Subject"] = "test"
    msg.set_content(body)
    if attach:
        msg.add_attachment(
            attach[0], maintype="application", subtype="octet-stream", filename=attach[1]
        )
    return msg


def subject(config: Config, msg: EmailMessage, source: str = "erp") -> Subject:
    envelope = Envelope(Client(sasl_user=source), "erp@example.com", ("alice@example.com",), "Q1")
    parsed = message_from_bytes(msg.as_bytes().replace(b"\n", b"\r\n"), envelope)
    return Subject(config, config.source(source), envelope, message=parsed)


# --- ClamAV -----------------------------------------------------------------------------


def test_clamav_found_rejects_naming_the_signature(config: Config) -> None:
    scanned: list[bytes] = []

    def scan(data: bytes) -> ScanResult:
        scanned.append(data)
        return ScanResult("Eicar-Test-Signature")

    check = clamav.make_check(ClamavSettings("unix:/x"), scan)
    verdict = check(subject(config, message("body text")))
    assert verdict.action is Action.REJECT
    assert str(verdict.smtp_reply) == "550 5.7.1 virus found: Eicar-Test-Signature"
    assert (
        scanned[0].startswith(b"From: erp@example.com\r\n") and b"\r\n\r\nbody text" in scanned[0]
    )


@pytest.mark.parametrize("action", [Action.TEMPFAIL, Action.QUARANTINE, Action.REJECT])
def test_clamav_unavailable_is_the_failure_action_never_clean(
    config: Config, action: Action
) -> None:
    def scan(data: bytes) -> ScanResult:
        raise ScannerUnavailable("clamd at unix:/x unreachable: No such file or directory")

    verdict = clamav.make_check(ClamavSettings("unix:/x", failure_action=action), scan)(
        subject(config, message())
    )
    assert (verdict.action, verdict.error) == (action, True)
    if action is Action.TEMPFAIL:
        assert str(verdict.smtp_reply) == "451 4.7.0 virus scanner unavailable, try again later"


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (
            "Heuristics.Encrypted.7Zip",
            "content not fully scanned: clamd found encrypted content (Heuristics.Encrypted.7Zip)",
        ),
        (
            "Heuristics.Limits.Exceeded.MaxFileSize",
            "content not fully scanned: clamd limit exceeded"
            " (Heuristics.Limits.Exceeded.MaxFileSize)",
        ),
    ],
)
def test_clamav_heuristic_is_held_by_default_never_clean_nor_a_virus(
    config: Config, signature: str, reason: str
) -> None:
    verdict = clamav.make_check(ClamavSettings("unix:/x"), lambda data: ScanResult(signature))(
        subject(config, message())
    )
    assert (verdict.action, verdict.reason, verdict.error) == (Action.QUARANTINE, reason, False)
    assert verdict.smtp_reply is None  # held in Postfix's queue, not refused


@pytest.mark.parametrize(
    ("signature", "action", "reply"),
    [
        ("Heuristics.Encrypted.RAR", Action.REJECT, "550 5.7.1 content not fully scanned"),
        ("Heuristics.Limits.Exceeded.MaxRecursion", Action.TEMPFAIL, "451 4.7.0 content not"),
    ],
)
def test_clamav_heuristics_follow_the_content_actions(
    tmp_path: Path, signature: str, action: Action, reply: str
) -> None:
    path = tmp_path / "relayguard.toml"
    path.write_text(
        CONFIG + '\n[content]\nlimit_action = "tempfail"\nencrypted_action = "reject"\n'
    )
    config = load_config(path)
    verdict = clamav.make_check(ClamavSettings("unix:/x"), lambda data: ScanResult(signature))(
        subject(config, message())
    )
    assert verdict.action is action
    assert str(verdict.smtp_reply).startswith(reply)


def test_clamav_clean(config: Config) -> None:
    verdict = clamav.make_check(ClamavSettings("unix:/x"), lambda data: ScanResult())(
        subject(config, message())
    )
    assert (verdict.action, verdict.reason) == (Action.ACCEPT, "clean")


# --- YARA -------------------------------------------------------------------------------


def yara_verdict(
    config: Config, msg: EmailMessage
) -> tuple[Action, str, tuple[tuple[str, str], ...]]:
    assert config.content.yara is not None
    verdict = yara_check.make_check(config.content.yara)(subject(config, msg))
    return verdict.action, verdict.reason, verdict.headers


def test_yara_action_from_rule_meta(config: Config) -> None:
    action, reason, _ = yara_verdict(config, message("x RELAYGUARD-TEST-BLOCK y"))
    assert action is Action.REJECT
    assert reason.startswith("YARA rule markers:Block_Marker matched")
    assert yara_verdict(config, message("RELAYGUARD-TEST-HOLD"))[0] is Action.QUARANTINE
    tag = yara_verdict(config, message("RELAYGUARD-TEST-TAG"))
    assert tag[0] is Action.TAG and tag[2] == (("X-Relayguard-Yara", "markers:Tag_Marker"),)


def test_yara_sees_decoded_parts_with_externals(config: Config) -> None:
    # Base64 in the raw message: only the decoded part holds the marker.
    action, reason, _ = yara_verdict(config, message(attach=(b"RELAYGUARD-TEST-BLOCK", "a.bin")))
    assert action is Action.REJECT and "in part 2" in reason
    # filename external
    assert yara_verdict(config, message(attach=(b"x", "Report.XLSM")))[2] == (
        ("X-Relayguard-Yara", "attachments:Macro_Document_Attachment"),
    )


def test_yara_part_path_external_and_default_action(config: Config) -> None:
    exe = b"MZ\x90\x00" + b"\0" * 60
    archived = yara_verdict(config, message(attach=(zip_bytes({"setup.exe": exe}), "a.zip")))
    assert archived[0] is Action.REJECT  # no meta action: yara.default_action (reject)
    assert "attachments:Executable_In_Archive matched in part 2/setup.exe" in archived[1]
    assert yara_verdict(config, message(attach=(exe, "setup.exe")))[0] is Action.ACCEPT


def test_yara_scan_failure_is_the_failure_action(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: object, **kwargs: object) -> object:
        raise yara_check.ScanFailed("YARA scan of part 1 timed out after 10s")

    monkeypatch.setattr(yara_check, "scan", failing)
    assert config.content.yara is not None
    verdict = yara_check.make_check(config.content.yara)(subject(config, message()))
    assert (verdict.action, verdict.error) == (Action.TEMPFAIL, True)
    assert str(verdict.smtp_reply) == "451 4.7.0 content scanner unavailable, try again later"


# --- DLP --------------------------------------------------------------------------------


def dlp_verdict(
    config: Config, msg: EmailMessage, source: str = "erp"
) -> tuple[Action, str, tuple[tuple[str, str], ...]]:
    verdict = dlp.make_check(config.content.dlp)(subject(config, msg, source))
    return verdict.action, verdict.reason, verdict.headers


def test_dlp_threshold_reached_rejects_with_counts_only(config: Config) -> None:
    action, reason, _ = dlp_verdict(config, message(f"cards {CARDS}"))
    assert (action, reason) == (Action.REJECT, "DLP profile pci matched: card_number=3")
    assert "4111" not in reason


def test_dlp_below_threshold_and_same_number_twice(config: Config) -> None:
    msg = message("card 4111111111111111 again 4111 1111 1111 1111")
    msg.add_alternative("<p>card 4111111111111111</p>", subtype="html")
    action, reason, _ = dlp_verdict(config, msg)
    assert action is Action.ACCEPT
    assert reason.endswith("below thresholds: card_number=1")


@pytest.mark.parametrize(
    ("data", "filename"),
    [(docx([f"Cards: {CARDS}"]), "cards.docx"), (pdf([f"Cards: {CARDS}"]), "cards.pdf")],
)
def test_dlp_reads_attachments(config: Config, data: bytes, filename: str) -> None:
    assert dlp_verdict(config, message(attach=(data, filename)))[0] is Action.REJECT


def test_dlp_custom_keyword_detector(config: Config) -> None:
    action, reason, _ = dlp_verdict(config, message("CONFIDENTIAL: Project Falcon roadmap"))
    assert (action, reason) == (Action.REJECT, "DLP profile pci matched: falcon=1")


def test_dlp_encrypt_route_adds_the_route_header(config: Config) -> None:
    action, reason, headers = dlp_verdict(
        config, message("card 4111111111111111, DNI 12345678Z"), "hr"
    )
    assert action is Action.TAG
    assert reason == "DLP profile route (card_number=1, es_dni=1): routed over enforced TLS"
    assert ("X-Relayguard-Route", "enforced-tls") in headers
    assert ("X-Relayguard-DLP", "profile=route; card_number=1, es_dni=1") in headers
    # match = "all": one detector alone does not trigger it
    assert dlp_verdict(config, message("card 4111111111111111"), "hr")[0] is Action.ACCEPT


def test_dlp_unreadable_attachment_is_reported_not_clean(config: Config) -> None:
    action, reason, _ = dlp_verdict(config, message(attach=(b"PK\x03\x04broken", "x.docx")))
    assert action is Action.TAG
    assert "not readable for DLP" in reason


def test_dlp_without_profile_accepts(config: Config) -> None:
    assert dlp_verdict(config, message(f"cards {CARDS}"), "plain")[0] is Action.ACCEPT


# --- URLs -------------------------------------------------------------------------------


def url_verdict(
    config: Config, msg: EmailMessage, lookup: Callable[[str], list[str]]
) -> tuple[Action, str, bool]:
    assert config.content.urls is not None
    verdict = urls.make_check(config.content.urls, lookup)(subject(config, msg))
    return verdict.action, verdict.reason, verdict.error


def fake_dns(
    records: dict[str, list[str]], queried: list[str] | None = None
) -> Callable[[str], list[str]]:
    def lookup(name: str) -> list[str]:
        if queried is not None:
            queried.append(name)
        return records.get(name, [])

    return lookup


def test_url_host_and_parent_domains_are_queried(config: Config) -> None:
    queried: list[str] = []
    msg = message("see https://a.b.evil.example/path?q=1 and http://192.0.2.7/x")
    action, reason, _ = url_verdict(
        config, msg, fake_dns({"evil.example.dbl.test": ["127.0.1.2"]}, queried)
    )
    assert (action, reason) == (Action.REJECT, "URL domain listed: evil.example (dbl.test)")
    assert queried[:3] == [
        "a.b.evil.example.dbl.test",
        "b.evil.example.dbl.test",
        "evil.example.dbl.test",
    ]
    assert "7.2.0.192.dbl.test" in queried


def test_url_in_html_href_and_tag_zone_with_codes(config: Config) -> None:
    msg = message("text")
    msg.add_alternative('<a href="https://shop.tagged.example/">shop</a>', subtype="html")
    records = {"tagged.example.tag.test": ["127.0.0.2"], "other.example.tag.test": ["127.0.0.9"]}
    action, reason, _ = url_verdict(config, msg, fake_dns(records))
    assert (action, reason) == (Action.TAG, "URL domain listed: tagged.example (tag.test)")
    other = message("http://other.example/")
    assert url_verdict(config, other, fake_dns(records))[0] is Action.ACCEPT  # code not listed


def test_url_dns_failure_is_its_own_outcome(config: Config) -> None:
    def broken(name: str) -> list[str]:
        raise dnsbl.LookupFailed("Timeout")

    action, reason, error = url_verdict(config, message("http://x.example/"), broken)
    assert (action, error) == (Action.TAG, True)
    assert reason == "URL block list lookup failed for dbl.test, tag.test"


def test_url_list_error_code_is_not_a_listing(config: Config) -> None:
    records = {"x.example.dbl.test": ["127.255.255.254"]}
    action, reason, error = url_verdict(config, message("http://x.example/"), fake_dns(records))
    assert (action, error) == (Action.TAG, True)
    assert reason == "URL block list lookup failed for dbl.test"


def test_no_urls(config: Config) -> None:
    assert url_verdict(config, message("no links"), fake_dns({}))[1] == "0 URL host(s), none listed"


def test_host_parsing() -> None:
    assert urls.host_of("https://user:pw@Sub.Example.COM:8443/x") == "sub.example.com"
    assert urls.host_of("www.example.org/path") == "www.example.org"
    assert urls.host_of("http://bücher.example/") == "xn--bcher-kva.example"
    assert urls.host_of("http://[2001:db8::1]/") == "2001:db8::1"
    assert urls.host_of("http://localhost/") is None
    assert dnsbl.query_names("2001:db8::1")[0].endswith(".8.b.d.0.1.0.0.2")


# --- limits and the whole pipeline ------------------------------------------------------


def test_limits_check_quarantines_what_it_could_not_walk(config: Config) -> None:
    verdict = mime_limits.check_limits(subject(config, message(attach=(nested_zip(20), "d.zip"))))
    assert verdict.action is Action.QUARANTINE
    assert verdict.reason.startswith("content not fully scanned: limit depth exceeded")


def test_pipeline_runs_content_checks_in_order(config: Config) -> None:
    names = [c.name for c in Pipeline.for_config(config).checks[Stage.END]]
    content = [n for n in names if n in ("mime_limits", "clamav", "yara", "dlp", "urls")]
    assert content == ["mime_limits", "yara", "dlp", "urls"]  # no [clamav] in this config


def test_clamav_alone_runs_no_mime_walk(tmp_path: Path) -> None:
    """clamd decodes the message itself: with no YARA, DLP or URL check there is no walk (and no
    walk-limits check) to pay for; clamd's own limits and encrypted alerts stand in for it."""
    path = tmp_path / "clamav-only.toml"
    path.write_text(
        '[[sources]]\nname = "erp"\nsasl_users = ["erp"]\nsenders = ["@example.com"]\n'
        '[clamav]\nsocket = "unix:/run/clamav/clamd.ctl"\n'
    )
    names = [c.name for c in Pipeline.for_config(load_config(path)).checks[Stage.END]]
    assert "clamav" in names and "mime_limits" not in names
