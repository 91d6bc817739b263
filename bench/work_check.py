"""Proof that each variant of the benchmark does the work it is compared on, on every message.

A filter that skips its work is fast: Rspamd caches antivirus verdicts by body digest and by
default sends only attachments to clamd and signs only authenticated or local mail; a milter
that lost its key or its clamd socket may still pass mail. So before the timed runs, every
variant that claims to scan or sign gets a sample of identical messages (as the load is) and:

- every delivered copy must carry a valid DKIM signature of example.com for each algorithm the
  variant signs with, verified by dkimpy against the keys on disk (no DNS: a dnsfunc);
- clamd's log must show one scan more per message (identical bodies: a verdict cache shows);
- a message carrying the EICAR test string must be refused with a 5xx reply and not delivered.

A variant that fails is marked invalid in the report, loudly, and the benchmark exits non-zero.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import dkim
from tests.support.clamd import EICAR, Clamd
from tests.support.stack import ReceivedMessage, SmtpSink

from bench.peer_stacks import dkim_record

# One clamd log line per scan with LogClean, whatever the command: "instream(local): OK" for
# a stream (relayguard, Rspamd), "/path/clamav-XXXX.tmp (deleted): OK" for a file descriptor
# (clamav-milter), "NAME: SIGNATURE FOUND" for a detection.
SCAN_LINE = re.compile(r"^.+: (?:OK|\S+ FOUND)$", re.MULTILINE)
SIGNATURE_ALGORITHM = re.compile(rb"\ba=(rsa|ed25519)-sha256\b")


class ScanLoggingClamd(Clamd):
    """The tests' clamd, plus what the benchmark needs: a line per clean scan too (LogClean;
    the proof that a message was scanned), no cap on the log's size (the default 1 MB would end
    the proof mid-run), and a socket that the peers' own users (clamav, _rspamd) may open."""

    def write_config(self) -> None:
        super().write_config()
        with self.config_path.open("a") as config:
            config.write("LogClean yes\nLogFileMaxSize 0\n")

    def start(self, timeout: float = 60.0) -> Self:
        super().start(timeout)
        # Loopback-only benchmark machine; the socket's directory is the bench's own.
        self.socket_path.chmod(0o666)
        return self

    @property
    def own_log(self) -> Path:
        return self.directory / "clamd-own.log"

    def scans(self) -> int:
        """Streams clamd has scanned so far (clean or not)."""
        if not self.own_log.exists():
            return 0
        return len(SCAN_LINE.findall(self.own_log.read_text(errors="replace")))


@dataclass
class WorkClaim:
    """What a variant claims to do to every message."""

    scans: bool  # hands it to clamd
    signs: frozenset[str]  # DKIM algorithms of its signatures: {"rsa"}, {"rsa", "ed25519"}
    dkim_records: dict[bytes, bytes]  # b"sel._domainkey.example.com." -> its TXT record


@dataclass
class WorkReport:
    """What the sample showed; `problems` empty means the variant did its work."""

    claim: WorkClaim
    sent: int = 0
    delivered: int = 0
    signed: int = 0
    scans: int = 0
    eicar: str = "-"  # the reply to the EICAR message, or "-" when the variant does not scan
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems


def key_records(key_directory: Path, domain: str = "example.com") -> dict[bytes, bytes]:
    """TXT records of relayguard's keys as `relayguard dkim generate` writes them
    (KEY_DIRECTORY/DOMAIN/SELECTOR.key, PEM)."""
    return {
        f"{key.stem}._domainkey.{domain}.".encode(): dkim_record(key.read_bytes())
        for key in sorted((key_directory / domain).glob("*.key"))
    }


def signed_by(data: bytes, records: dict[bytes, bytes]) -> set[str]:
    """The algorithms of the DKIM signatures in `data` that dkimpy verifies against `records`
    (a signature that does not verify counts as absent)."""
    checker = dkim.DKIM(data)
    signatures = [v for k, v in checker.headers if k.lower() == b"dkim-signature"]

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name, b"")

    valid = set()
    for index, signature in enumerate(signatures):
        algorithm = SIGNATURE_ALGORITHM.search(signature)
        if algorithm and checker.verify(idx=index, dnsfunc=lookup):
            valid.add(algorithm.group(1).decode())
    return valid


def eicar_message(sender: str, recipient: str) -> bytes:
    """A small text message with the EICAR test string in its body (the body signature of the
    bench's clamd finds it anywhere in the stream)."""
    return (
        f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: eicar\r\n\r\n".encode()
        + EICAR
        + b"\r\n"
    )


def eicar_reply(port: int, sender: str, recipient: str) -> str:
    """The SMTP reply to the EICAR message: "554 ..." when refused, "250 accepted" otherwise."""
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
        try:
            smtp.sendmail(sender, [recipient], eicar_message(sender, recipient))
        except smtplib.SMTPResponseException as refused:
            return f"{refused.smtp_code} {refused.smtp_error.decode(errors='replace')}"[:120]
    return "250 accepted"


@dataclass
class WorkCheck:
    """Runs the sample through one variant at a time, delivering to an SmtpSink that keeps every
    message (the timed runs use smtp-sink, which keeps nothing)."""

    sink: SmtpSink
    clamd: ScanLoggingClamd | None
    sender: str
    recipient: str
    message: Path  # the benchmark's own message: identical bodies, as under load
    sample: int = 5

    def check(self, port: int, claim: WorkClaim) -> WorkReport:
        report = WorkReport(claim, sent=self.sample)
        scans_before = self.clamd.scans() if self.clamd else 0
        delivered_before = len(self.sink.messages)
        raw = self.message.read_bytes().replace(b"\n", b"\r\n")
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
            for _ in range(self.sample):
                # A refused sample message is a finding (it will not be delivered), not a crash.
                with contextlib.suppress(smtplib.SMTPResponseException):
                    smtp.sendmail(self.sender, [self.recipient], raw)
        delivered = self._wait_for(delivered_before + self.sample)[delivered_before:]
        report.delivered = len(delivered)
        records = claim.dkim_records
        for message in delivered:
            data = message.data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            report.signed += claim.signs <= signed_by(data, records)
        if self.clamd is not None:
            report.scans = self.clamd.scans() - scans_before
        if claim.scans:
            report.eicar = eicar_reply(port, self.sender, self.recipient)
            if not report.eicar.startswith(("4", "5")):
                # Accepted: let it reach this sink, not the timed runs' (nor wait in the queue).
                self._wait_for(delivered_before + report.delivered + 1)
        report.problems = self._problems(report, claim)
        return report

    def _wait_for(self, count: int, timeout: float = 60.0) -> list[ReceivedMessage]:
        deadline = time.monotonic() + timeout
        while len(self.sink.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.sink.messages)

    def _problems(self, report: WorkReport, claim: WorkClaim) -> list[str]:
        problems = []
        if report.delivered != report.sent:
            problems.append(f"{report.delivered} of {report.sent} sample messages delivered")
        if claim.signs and report.signed != report.delivered:
            algorithms = "+".join(sorted(claim.signs))
            problems.append(
                f"{report.delivered - report.signed} of {report.delivered} delivered messages"
                f" without a valid {algorithms} signature of example.com"
            )
        if claim.scans and report.scans < report.sent:
            problems.append(f"clamd scanned {report.scans} streams for {report.sent} messages")
        # Refused at SMTP time (5xx): a peer that only tags it, or holds it, fails.
        if claim.scans and not report.eicar.startswith("5"):
            problems.append(f"the EICAR message was not refused: {report.eicar}")
        return problems
