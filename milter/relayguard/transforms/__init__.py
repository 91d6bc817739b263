"""Changes to a message that will be delivered: added headers, routing, the DKIM signature.

Transforms run after every check, in the order of registry.TRANSFORMS, and only while the message
is still going to be delivered. DKIM signing comes last so that the signature covers exactly what
is delivered. A transform that raises is an error verdict (tempfail by default): mail never leaves
unsigned or half-transformed by accident.

Some transforms lend the organisation's authority to a message: a DKIM signature makes it pass
DMARC as the domain, a List-Unsubscribe token is a link the relay vouches for. Those run only for
mail that passed policy: the source, envelope-sender and header-identity checks accepted it and no
"would_*" outcome was relaxed by monitor mode. Monitor mode delivers would-refuse mail, but never
with the domain's signature on it (docs/direct-send-migration.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from relayguard.checks import Subject
from relayguard.core.verdict import Action, Decision

# A message may carry several signatures (RFC 6376 section 5): the sender's own ones stay.
COEXISTING = frozenset({"dkim-signature"})
# Every field of this family is relayguard's to write: a sender's copy is always removed, so that
# no downstream rule can be fooled by a forged verdict, tag or route (today's and future ones).
OWN_FAMILY_PREFIX = "x-relayguard"
# The checks whose acceptance is what "passed policy" means for authority-lending transforms.
IDENTITY_CHECKS = ("source", "envelope_sender", "header_identities")


@dataclass(frozen=True, slots=True)
class Transform:
    name: str
    run: Callable[[Subject, Decision], Decision]
    # Set for a transform that signs or vouches for the message in the organisation's name: it is
    # skipped unless policy passed, and the audit line says `<when_withheld>: <why>`.
    when_withheld: str = ""


def authority_withheld(decision: Decision) -> str | None:
    """Why the message must not carry the organisation's authority, or None when it may.

    Withheld when monitor mode relaxed a refusal (any would_* outcome) or when an identity check
    did not accept (or did not run): a spoofed From must never leave signed, whatever the mode.
    """
    if decision.action is not decision.policy_action:
        deciding = decision.deciding
        because = f" ({deciding.check}: {deciding.reason})" if deciding else ""
        return f"{decision.outcome}{because}"
    by_name = {name: [v for v in decision.verdicts if v.check == name] for name in IDENTITY_CHECKS}
    for name, verdicts in by_name.items():
        if not verdicts:
            return f"{name} was not checked"
        refusing = next((v for v in verdicts if v.action is not Action.ACCEPT), None)
        if refusing is not None:
            return f"{name} {refusing.action.label} ({refusing.reason})"
    return None


def replaced_header_names(
    decision: Decision, trace_header: str, present: Iterable[str] = ()
) -> frozenset[str]:
    """Lower-case names of the fields whose sender-supplied copies are removed before relayguard
    adds its own: a sender must not be able to forge a verdict, a trace or an unsubscribe link.
    `present` are the names in the message as received: any of relayguard's own family among them
    is removed even when relayguard adds no copy. The adapter removes them and the signer leaves
    them out of what it signs: one rule for both."""
    names = {name.lower() for name, _ in decision.headers} | {trace_header.lower()}
    names |= {
        lowered
        for name in present
        if (lowered := name.strip().lower()).startswith(OWN_FAMILY_PREFIX)
    }
    return frozenset(names - COEXISTING - {""})
