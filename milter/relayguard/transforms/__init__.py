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


@dataclass(frozen=True, slots=True)
class Transform:
    name: str
    run: Callable[[Subject, Decision], Decision]
