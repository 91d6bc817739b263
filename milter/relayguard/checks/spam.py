"""Outbound spam scoring: the raw message to Rspamd's /checkv2, its score against the source's
thresholds ([spam], docs/spam.md).

A compromised device or a stolen application password must not spam or phish in the
organisation's name: a score at or above the thresholds tags the message (an
``X-Relayguard-Spam`` header with the score and symbols), holds it in the quarantine, or refuses it
with ``550 5.7.1 message looks like spam (score S/T)``. The score and the names of the symbols that
made it go into the audit line (the verdict's facts and reason), never the message's content.

Rspamd unreachable, slow or without a usable answer is the configured failure action (tag and log
by default), never "clean": the tag header says the message went out unscored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from relayguard.checks import Check, CheckFunction, Stage, Subject
from relayguard.config import Config
from relayguard.config.spam import SpamSettings
from relayguard.core.verdict import TEMPORARY_FAILURE, Action, Facts, Reply, Verdict
from relayguard.parsing.mime import raw_message
from relayguard.scanners.rspamd import RspamdClient, RspamdUnavailable, ScanRequest, SpamResult

NAME = "spam"
HEADER = "X-Relayguard-Spam"  # of relayguard's own family: a sender's copy is always removed
log = logging.getLogger(__name__)

Scanner = Callable[[bytes, ScanRequest], SpamResult]


def make_check(settings: SpamSettings, scan: Scanner) -> CheckFunction:
    def check_spam(subject: Subject) -> Verdict:
        assert subject.message is not None
        try:
            result = scan(raw_message(subject.message), scan_request(subject))
        except RspamdUnavailable as exc:
            return unscored(settings, subject, exc)
        return scored(result, settings, subject)

    return check_spam


def scan_request(subject: Subject) -> ScanRequest:
    envelope = subject.envelope
    return ScanRequest(
        source=subject.source.name if subject.source else "",
        client_address=envelope.client.address,
        sasl_user=envelope.client.sasl_user,
        mail_from=envelope.mail_from,
        recipients=envelope.recipients,
        queue_id=envelope.queue_id,
    )


def scored(result: SpamResult, settings: SpamSettings, subject: Subject) -> Verdict:
    source = subject.source.name if subject.source else None
    action, threshold = settings.thresholds_for(source).action_for(result.score)
    symbols = tuple(symbol.name for symbol in result.top())
    facts: Facts = {"score": result.score, "symbols": symbols}
    listed = ", ".join(f"{s.name}({number(s.score)})" for s in result.top(10)) or "none"
    if action is Action.ACCEPT:
        below = f" (tag threshold {number(threshold)})" if threshold is not None else ""
        reason = f"score {number(result.score)}{below}; symbols {listed}"
        return Verdict(NAME, Action.ACCEPT, reason, facts=facts)
    assert threshold is not None
    header = (HEADER, f"score={number(result.score)}; symbols={','.join(symbols) or 'none'}")
    if action is Action.REJECT:
        text = f"message looks like spam (score {number(result.score)}/{number(threshold)})"
        return Verdict(
            NAME,
            action,
            f"{text}; symbols {listed}",
            reply=Reply("550", "5.7.1", text),
            facts=facts,
        )
    reason = (
        f"spam score {number(result.score)} reaches the {action.label} threshold"
        f" {number(threshold)}; symbols {listed}"
    )
    return Verdict(NAME, action, reason, headers=(header,), facts=facts)


def unscored(settings: SpamSettings, subject: Subject, problem: RspamdUnavailable) -> Verdict:
    """Rspamd gave no score: the failure action, logged, and visible on a tagged message."""
    queue_id = subject.envelope.queue_id or "NOQUEUE"
    log.error("%s: spam scoring failed: %s", queue_id, problem)
    action = settings.failure_action
    reply = None
    if action is Action.TEMPFAIL:
        reply = Reply(*TEMPORARY_FAILURE, "spam scanner unavailable, try again later")
    headers = ((HEADER, "unscored; scanner unavailable"),) if action is Action.TAG else ()
    return Verdict(
        NAME,
        action,
        f"spam scanner unavailable ({problem})",
        reply=reply,
        headers=headers,
        error=True,
        facts={"unscored": True},
    )


def number(value: float | None) -> str:
    """A score as Rspamd prints it, without trailing zeros: 15, 7.2, -0.1."""
    if value is None:
        return "none"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def checks(config: Config) -> tuple[Check, ...]:
    settings = config.spam
    if settings is None:
        return ()
    client = RspamdClient(settings.url, settings.timeout)
    return (Check(NAME, Stage.END, make_check(settings, client.check)),)
