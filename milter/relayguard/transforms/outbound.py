"""Outbound paths: a source's mail leaves through its own Postfix transport (docs/outbound.md).

Bulk or transactional mail gets its own sending address and HELO name (or its own relayhost), so
that a compromised source, or merely a badly received newsletter, does not spoil the reputation of
the address that carries the organisation's other mail. The milter adds ``X-Relayguard-Path:
NAME``; Postfix's milter_header_checks (postfix/main.cf.j2), which sees only milter-added headers,
turns it into the transport ``relayguard-path-NAME`` of master.cf. A sender's own copy of the
header is always removed (the X-Relayguard family, transforms/__init__.py).

A path lends the organisation's authority (a trusted address, covered by SPF): it applies only to
mail that passed policy (`Transform.when_withheld`); other mail leaves by the default path. DLP's
enforced-TLS route takes precedence over a path: Postfix applies only the last FILTER that fired,
and mail that must not travel in clear must not lose that guarantee to a path.
"""

from __future__ import annotations

from dataclasses import replace

from relayguard.checks import Subject
from relayguard.checks.dlp import ROUTE_HEADER
from relayguard.config import Config
from relayguard.core.verdict import Action, Decision, Verdict
from relayguard.transforms import Transform

NAME = "outbound_path"
HEADER = "X-Relayguard-Path"  # postfix/main.cf.j2 matches "X-Relayguard-Path: NAME" exactly


def route(subject: Subject, decision: Decision) -> Decision:
    source = subject.source
    path = source.outbound_path if source is not None else ""
    if not path:
        return decision
    if any(name.lower() == ROUTE_HEADER.lower() for name, _ in decision.headers):
        note = f"outbound path {path} not used: DLP's enforced-TLS route takes precedence"
        return _noted(decision, Verdict(NAME, Action.ACCEPT, note, facts={"path": ""}))
    verdict = Verdict(NAME, Action.ACCEPT, f"outbound path {path}", facts={"path": path})
    return replace(_noted(decision, verdict), headers=(*decision.headers, (HEADER, path)))


def _noted(decision: Decision, verdict: Verdict) -> Decision:
    return replace(decision, verdicts=(*decision.verdicts, verdict))


def transforms(config: Config) -> tuple[Transform, ...]:
    if not config.outbound_paths:
        return ()
    return (Transform(NAME, route, "default outbound path"),)
