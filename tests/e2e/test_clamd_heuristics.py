"""The real clamd, configured as the appliance runs it (AlertExceedsMax, AlertEncrypted), behind the
clamav check: what clamd cannot look inside is held for a human, never "clean", never a virus.

Archives are made with the real 7z (p7zip-full) and PDFs with pypdf. RAR archives cannot be made
here (creating them needs the non-free `rar`); clamd reports them as Heuristics.Encrypted.RAR,
which the unit tests map.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from pypdf import PdfWriter

from relayguard.checks import Subject, clamav
from relayguard.config import Config, load_config
from relayguard.core.message import Client, Envelope, message_from_bytes
from relayguard.core.verdict import Action, Verdict
from relayguard.scanners.clamd import ClamdClient
from tests.support.archives import seven_zip, seven_zip_of_zeros
from tests.support.clamd import EICAR, Clamd
from tests.support.stack import make_dir

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROLE_TEMPLATE = (
    Path(__file__).parents[2] / "ansible/roles/relayguard_clamav/templates/clamd.conf.j2"
)
PASSWORD = "s3cret-Pa55"
INVOICE = {"invoice.txt": b"Invoice 4711: 120.00 EUR\n"}
CONFIG = """
[relay]
mode = "enforce"

[[sources]]
name = "erp"
sasl_users = ["erp"]
senders = ["@example.com"]

[clamav]
socket = "{socket}"
timeout = 60
"""


@pytest.fixture(scope="module")
def clamd() -> Iterator[Clamd]:
    with Clamd(make_dir("relayguard-clamd-heuristics-")) as running:
        yield running


@pytest.fixture(scope="module")
def config(clamd: Clamd) -> Config:
    path = clamd.directory / "relayguard.toml"
    path.write_text(CONFIG.format(socket=clamd.spec))
    return load_config(path)


def scan(config: Config, attachment: bytes, filename: str) -> Verdict:
    """The clamav check, talking to the real clamd, on a message carrying `attachment`."""
    msg = EmailMessage()
    msg["From"] = "erp@example.com"
    msg["To"] = "alice@example.com"
    msg["Subject"] = "scan"
    msg.set_content("Document attached.\n")
    msg.add_attachment(
        attachment, maintype="application", subtype="octet-stream", filename=filename
    )
    envelope = Envelope(Client(sasl_user="erp"), "erp@example.com", ("alice@example.com",), "Q1")
    parsed = message_from_bytes(msg.as_bytes().replace(b"\n", b"\r\n"), envelope)
    subject = Subject(config, config.source("erp"), envelope, message=parsed)
    assert config.content.clamav is not None
    client = ClamdClient(config.content.clamav.socket, config.content.clamav.timeout)
    return clamav.make_check(config.content.clamav, client.instream)(subject)


def pdf_with_passwords(user: str) -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.encrypt(user_password=user, owner_password="owner-Pa55", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("attachment", "filename", "name"),
    [
        (lambda: seven_zip(INVOICE, PASSWORD), "invoice.7z", "Heuristics.Encrypted.7Zip"),
        (lambda: seven_zip(INVOICE, PASSWORD, "zip"), "invoice.zip", "Heuristics.Encrypted.Zip"),
        (lambda: pdf_with_passwords(PASSWORD), "invoice.pdf", "Heuristics.Encrypted.PDF"),
    ],
    ids=["7z", "zip", "pdf"],
)
def test_password_protected_content_is_held(
    config: Config, attachment: Callable[[], bytes], filename: str, name: str
) -> None:
    verdict = scan(config, attachment(), filename)
    assert (verdict.action, verdict.reason) == (
        Action.QUARANTINE,
        f"content not fully scanned: clamd found encrypted content ({name})",
    )


def test_archive_past_max_file_size_is_held(config: Config) -> None:
    verdict = scan(config, seven_zip_of_zeros("disk.img", 101 * 2**20), "disk.7z")
    assert (verdict.action, verdict.reason) == (
        Action.QUARANTINE,
        "content not fully scanned: clamd limit exceeded (Heuristics.Limits.Exceeded.MaxFileSize)",
    )


def test_archive_nested_past_max_recursion_is_held(config: Config) -> None:
    data = b"innermost"
    for level in range(20):  # clamd's MaxRecursion defaults to 17
        data = seven_zip({f"level{level}.bin": data})
    verdict = scan(config, data, "deep.7z")
    assert verdict.action is Action.QUARANTINE
    assert verdict.reason.startswith("content not fully scanned: clamd limit exceeded")


@pytest.mark.parametrize(
    ("attachment", "filename"),
    [
        (lambda: seven_zip(INVOICE), "invoice.7z"),
        (lambda: pdf_with_passwords(""), "invoice.pdf"),  # owner password only: readable
    ],
    ids=["plain-7z", "owner-password-pdf"],
)
def test_readable_content_stays_clean(
    config: Config, attachment: Callable[[], bytes], filename: str
) -> None:
    verdict = scan(config, attachment(), filename)
    assert (verdict.action, verdict.reason) == (Action.ACCEPT, "clean")


def test_virus_inside_a_plain_7z_is_still_a_virus(config: Config) -> None:
    verdict = scan(config, seven_zip({"eicar.com": EICAR}), "tools.7z")
    assert verdict.action is Action.REJECT
    assert verdict.reason.startswith("virus found: Eicar-Test-Signature")


def test_fixture_alerts_as_the_appliances_clamd_does(clamd: Clamd) -> None:
    """These tests speak for the deployed clamd only while both raise the same alerts."""
    role = ROLE_TEMPLATE.read_text().splitlines()
    fixture = clamd.config_path.read_text().splitlines()

    def alerts_on(lines: list[str]) -> set[str]:
        pairs = (line.split() for line in lines if line.startswith("Alert"))
        return {key for key, value in pairs if value in ("true", "yes")}

    assert alerts_on(role) == alerts_on(fixture)
    assert {"AlertExceedsMax", "AlertEncrypted"} <= alerts_on(role)
