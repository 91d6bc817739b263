"""YARA over the raw message and every decoded MIME part.

Each scan sets the externals `filename`, `content_type`, `source`, `is_attachment` and
`part_path`, so a rule can say `filename matches /\\.docm$/` or `is_attachment`. A rule's action
comes from its meta (`action = "reject" | "quarantine" | "tag"`), else `yara.default_action`. The
reply names the rule, never the matched bytes. A scan that times out or fails is the configured
failure action.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import yara

from relayguard.checks import Check, CheckFunction, Stage, Subject
from relayguard.config import Config
from relayguard.config.scanners import YaraSettings
from relayguard.core.errors import RelayguardError
from relayguard.core.verdict import TEMPORARY_FAILURE, Action, Facts, Reply, Verdict
from relayguard.parsing.mime import Part, raw_message, walk_message
from relayguard.scanners.yara_rules import RULE_ACTIONS

NAME = "yara"
HEADER = "X-Relayguard-Yara"
log = logging.getLogger(__name__)


class ScanFailed(RelayguardError):
    """A YARA scan timed out or failed: the part was not scanned."""


@dataclass(frozen=True, slots=True)
class Hit:
    rule: str  # namespace:identifier
    action: Action
    part_path: str  # '' for the raw message
    strings: tuple[tuple[int, str, bytes], ...] = ()  # offset, identifier, data (--show-matches)


def externals(part: Part | None, source: str) -> dict[str, str | bool]:
    if part is None:
        return {
            "filename": "",
            "content_type": "message/rfc822",
            "source": source,
            "is_attachment": False,
            "part_path": "",
        }
    return {
        "filename": part.filename,
        "content_type": part.content_type,
        "source": source,
        "is_attachment": part.is_attachment,
        "part_path": part.path,
    }


def scan(settings: YaraSettings, raw: bytes, parts: list[Part], source: str) -> Iterator[Hit]:
    """Every (rule, part) hit over the raw message and each part; raises ScanFailed."""
    targets: list[tuple[Part | None, bytes]] = [(None, raw)]
    targets += [(part, part.data) for part in parts if part.data]
    for part, data in targets:
        try:
            matches = settings.compiled.rules.match(
                data=data, externals=externals(part, source), timeout=settings.timeout
            )
        except yara.TimeoutError:
            where = part.path if part else "message"
            raise ScanFailed(
                f"YARA scan of part {where} timed out after {settings.timeout}s"
            ) from None
        except yara.Error as exc:
            raise ScanFailed(f"YARA scan failed: {exc}") from None
        for match in matches:
            action = str(match.meta.get("action", "")).lower()
            strings = tuple(
                (instance.offset, found.identifier, bytes(instance.matched_data))
                for found in match.strings
                for instance in found.instances
            )
            yield Hit(
                f"{match.namespace}:{match.rule}",
                Action.named(action) if action in RULE_ACTIONS else settings.default_action,
                part.path if part else "",
                strings,
            )


def make_check(settings: YaraSettings) -> CheckFunction:
    def check_yara(subject: Subject) -> Verdict:
        assert subject.message is not None
        walked = walk_message(subject.message, subject.config.content.limits)
        source = subject.source.name if subject.source else ""
        try:
            hits = list(scan(settings, raw_message(subject.message), walked.parts, source))
        except ScanFailed as exc:
            log.error("%s: %s", subject.envelope.queue_id or "NOQUEUE", exc)
            reply = None
            if settings.failure_action is Action.TEMPFAIL:
                reply = Reply(*TEMPORARY_FAILURE, "content scanner unavailable, try again later")
            return Verdict(NAME, settings.failure_action, str(exc), reply=reply, error=True)
        return verdict_for(hits)

    return check_yara


def verdict_for(hits: list[Hit]) -> Verdict:
    if not hits:
        return Verdict(NAME, Action.ACCEPT, "no rule matched")
    worst = max(hits, key=lambda h: h.action)
    rules = sorted({h.rule for h in hits})
    where = f"part {worst.part_path}" if worst.part_path else "the raw message"
    reason = f"YARA rule {worst.rule} matched in {where}"
    if len(rules) > 1:
        reason += f"; {len(rules)} rules matched: {', '.join(rules)}"
    headers = ((HEADER, ", ".join(rules)),) if worst.action is Action.TAG else ()
    facts: Facts = {"rule": worst.rule, "rules": tuple(rules)}
    return Verdict(NAME, worst.action, reason, headers=headers, facts=facts)


def checks(config: Config) -> tuple[Check, ...]:
    settings = config.content.yara
    if settings is None:
        return ()
    return (Check(NAME, Stage.END, make_check(settings)),)
