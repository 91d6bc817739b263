"""ClamAV through clamd's INSTREAM: the raw message, as received, in one stream.

clamd parses MIME, base64, archives and nested messages itself, so one stream covers every part.
`FOUND` refuses the message naming the signature; clamd unreachable, a timeout, a size limit or an
ERROR answer is the configured failure action (tempfail by default): never "clean".

clamd runs with AlertExceedsMax and AlertEncrypted, so content it could not look inside (a
password-protected 7z/RAR/zip/PDF, an archive past MaxFileSize/MaxRecursion...) is a FOUND too.
That is not malware but unscanned content: it gets the same [content] limit_action /
encrypted_action as the milter's own MIME walk (quarantine by default), which opens only zip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from relayguard.checks import Check, CheckFunction, Stage, Subject
from relayguard.config import Config
from relayguard.config.content import ContentSettings
from relayguard.config.scanners import ClamavSettings
from relayguard.core.verdict import TEMPORARY_FAILURE, Action, Reply, Verdict
from relayguard.parsing.mime import raw_message
from relayguard.scanners.clamd import ClamdClient, Detection, ScannerUnavailable, ScanResult

NAME = "clamav"
log = logging.getLogger(__name__)

Scanner = Callable[[bytes], ScanResult]


def make_check(settings: ClamavSettings, scan: Scanner) -> CheckFunction:
    def check_clamav(subject: Subject) -> Verdict:
        assert subject.message is not None
        try:
            result = scan(raw_message(subject.message))
        except ScannerUnavailable as exc:
            queue_id = subject.envelope.queue_id or "NOQUEUE"
            log.error("%s: virus scan failed: %s", queue_id, exc)
            reason = f"virus scanner unavailable ({exc})"
            reply = None
            if settings.failure_action is Action.TEMPFAIL:
                reply = Reply(*TEMPORARY_FAILURE, "virus scanner unavailable, try again later")
            return Verdict(NAME, settings.failure_action, reason, reply=reply, error=True)
        if result.signature is not None:
            return found(result, subject.config.content)
        return Verdict(NAME, Action.ACCEPT, "clean")

    return check_clamav


def found(result: ScanResult, content: ContentSettings) -> Verdict:
    """A virus is refused; what clamd could not scan gets the [content] action, as the walk's."""
    signature = result.signature
    detection = result.detection or Detection.MALWARE
    facts = {"signature": signature or "", "detection": detection.value}
    if detection is Detection.LIMIT_EXCEEDED:
        return Verdict(
            NAME,
            content.limit_action,
            f"content not fully scanned: clamd limit exceeded ({signature})",
            facts=facts,
        )
    if detection is Detection.ENCRYPTED:
        return Verdict(
            NAME,
            content.encrypted_action,
            f"content not fully scanned: clamd found encrypted content ({signature})",
            facts=facts,
        )
    return Verdict(NAME, Action.REJECT, f"virus found: {signature}", facts=facts)


def checks(config: Config) -> tuple[Check, ...]:
    settings = config.content.clamav
    if settings is None:
        return ()
    client = ClamdClient(settings.socket, settings.timeout)
    return (Check(NAME, Stage.END, make_check(settings, client.instream)),)
