"""ClamAV through clamd's INSTREAM: the raw message, as received, in one stream.

clamd parses MIME, base64, archives and nested messages itself, so one stream covers every part.
`FOUND` refuses the message naming the signature; clamd unreachable, a timeout, a size limit or an
ERROR answer is the configured failure action (tempfail by default): never "clean".
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from relayguard.checks import Check, CheckFunction, Stage, Subject
from relayguard.clamd_client import ClamdClient, ScannerUnavailable, ScanResult
from relayguard.config import Config
from relayguard.content_settings import ClamavSettings
from relayguard.mime import raw_message
from relayguard.verdict import TEMPORARY_FAILURE, Action, Reply, Verdict

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
            return Verdict(NAME, Action.REJECT, f"virus found: {result.signature}")
        return Verdict(NAME, Action.ACCEPT, "clean")

    return check_clamav


def checks(config: Config) -> tuple[Check, ...]:
    settings = config.content.clamav
    if settings is None:
        return ()
    client = ClamdClient(settings.socket, settings.timeout)
    return (Check(NAME, Stage.END, make_check(settings, client.instream)),)
