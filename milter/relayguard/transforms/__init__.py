"""Changes to a message that will be delivered: added headers, routing, the DKIM signature.

Transforms run after every check, in the order of registry.TRANSFORMS, and only while the message
is still going to be delivered. DKIM signing comes last so that the signature covers exactly what
is delivered. A transform that raises is an error verdict (tempfail by default): mail never leaves
unsigned or half-transformed by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from relayguard.checks import Subject
from relayguard.verdict import Decision

# A message may carry several signatures (RFC 6376 section 5): the sender's own ones stay.
COEXISTING = frozenset({"dkim-signature"})


@dataclass(frozen=True, slots=True)
class Transform:
    name: str
    run: Callable[[Subject, Decision], Decision]


def replaced_header_names(decision: Decision, trace_header: str) -> frozenset[str]:
    """Lower-case names of the fields whose sender-supplied copies are removed before relayguard
    adds its own: a sender must not be able to forge a verdict, a trace or an unsubscribe link.
    The adapter removes them and the signer leaves them out of what it signs: one rule for both."""
    names = {name.lower() for name, _ in decision.headers} | {trace_header.lower()}
    return frozenset(names - COEXISTING - {""})
