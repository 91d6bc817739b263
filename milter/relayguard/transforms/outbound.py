"""Outbound paths: a source's mail leaves through its own Postfix transport (docs/outbound.md).

Bulk or transactional mail gets its own sending address and HELO name (or its own relayhost), so
that a compromised source, or merely a badly received newsletter, does not spoil the reputation of
the address that carries the organisation's other mail. The milter adds ``X-Relayguard-Path:
NAME``; Postfix's milter_header_checks (postfix/main.cf.j2), which sees only milter-added headers,
turns it into the transport ``relayguard-path-NAME`` of master.cf. A sender's own copy of the
header is always removed (the X-Relayguard family, transforms/__init__.py).

A path lends the organisation's authority (a trusted address, covered by SPF): it applies only to
mail that passed policy (`Transform.when_withheld`); other mail leaves by the default path.

Mail that DLP routes over enforced TLS keeps both promises: the header becomes ``NAME;
enforced-tls``, which Postfix turns into ``relayguard-tls-NAME``, the path's own address, HELO
name and relayhost with the enforced TLS level of ``relayguard-tls``. DLP's own route header
stays and comes first: Postfix applies only the last FILTER that fired, so the path's TLS variant
wins, and a Postfix configuration without that variant still sends the message over
``relayguard-tls`` (from the default address), never in clear.
"""

from __future__ import annotations

from dataclasses import replace

from relayguard.checks import Subject
from relayguard.checks.dlp import ROUTE_HEADER, ROUTE_VALUE
from relayguard.config import Config
from relayguard.core.verdict import Action, Decision, Verdict
from relayguard.transforms import Transform

NAME = "outbound_path"
HEADER = "X-Relayguard-Path"  # postfix/main.cf.j2 matches "X-Relayguard-Path: NAME" exactly
# postfix/main.cf.j2 matches "X-Relayguard-Path: NAME; enforced-tls": ";" is in no path name, so
# no path's plain header can be read as another path's TLS variant.
TLS_SUFFIX = f"; {ROUTE_VALUE}"


def route(subject: Subject, decision: Decision) -> Decision:
    source = subject.source
    path = source.outbound_path if source is not None else ""
    if not path:
        return decision
    if _routed_over_tls(decision):
        value, note = path + TLS_SUFFIX, f"outbound path {path} over enforced TLS (DLP route)"
    else:
        value, note = path, f"outbound path {path}"
    verdict = Verdict(NAME, Action.ACCEPT, note, facts={"path": value})
    noted = replace(decision, verdicts=(*decision.verdicts, verdict))
    return replace(noted, headers=(*decision.headers, (HEADER, value)))


def _routed_over_tls(decision: Decision) -> bool:
    """Any route header counts, whatever its value: in doubt, the path keeps TLS."""
    return any(name.lower() == ROUTE_HEADER.lower() for name, _ in decision.headers)


def transforms(config: Config) -> tuple[Transform, ...]:
    if not config.outbound_paths:
        return ()
    return (Transform(NAME, route, "default outbound path"),)
