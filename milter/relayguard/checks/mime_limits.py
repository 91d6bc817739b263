"""The MIME walk's limits as a check: a message the walker could not fully decode (too deep, too
many parts, too large, an archive bomb, an encrypted archive) gets the configured action —
quarantine by default, so nothing is lost and a human decides. It runs before the scanners that
share the same walk (parsing/mime.walk_message): YARA, DLP and URLs. With ClamAV alone there is no
walk to bound: clamd applies its own limits (AlertExceedsMax, AlertEncrypted*)."""

from __future__ import annotations

from relayguard.checks import Check, Stage, Subject
from relayguard.config import Config
from relayguard.core.verdict import Action, Verdict
from relayguard.parsing.mime import walk_message

NAME = "mime_limits"


def check_limits(subject: Subject) -> Verdict:
    assert subject.message is not None
    content = subject.config.content
    result = walk_message(subject.message, content.limits)
    if result.limits_exceeded:
        first = result.limits_exceeded[0]
        kinds = sorted({f.kind for f in result.limits_exceeded})
        return Verdict(
            NAME,
            content.limit_action,
            f"content not fully scanned: limit {', '.join(kinds)} exceeded ({first})",
        )
    if result.encrypted:
        return Verdict(
            NAME,
            content.encrypted_action,
            f"content not fully scanned: {len(result.encrypted)} encrypted archive member(s)"
            f" (first at part {result.encrypted[0].path})",
        )
    defects = f"; {len(result.defects)} MIME defect(s)" if result.defects else ""
    return Verdict(NAME, Action.ACCEPT, f"{len(result.parts)} part(s) walked{defects}")


def checks(config: Config) -> tuple[Check, ...]:
    if not config.content.walks_content:
        return ()
    return (Check(NAME, Stage.END, check_limits),)
