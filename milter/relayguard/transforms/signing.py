"""DKIM signing (RFC 6376, Ed25519 per RFC 8463): the last transform, over what is delivered.

The message signed is the one Postfix will deliver: the headers the client sent (less the
sender's copies of relayguard's own fields, which the adapter deletes: see
transforms.replaced_header_names), then `decision.headers` in order, as the adapter appends them
with addheader, then the body. The DKIM-Signature fields are themselves appended to
`decision.headers`, so nothing is added after the signature is computed.

c=relaxed/relaxed (whitespace and folding may change in transit without breaking anything), no
l= (RFC 6376 §8.2: a length limit lets anyone append content), SHA-256 only. Every header name in
SIGNED_HEADERS is oversigned: h= lists it once more than the message has it, so a copy added in
transit breaks the signature (RFC 6376 §5.4.2, §8.15). Headers the pipeline added are signed too.

The signing domain is the From domain, or its nearest configured parent (DMARC relaxed alignment,
RFC 7489 §3.1.1). Each active key of the domain signs, RSA and Ed25519 side by side. An error while
signing raises: the pipeline turns it into a temporary failure, so mail never leaves unsigned by
accident. A From domain without a key is refused, or passed unsigned with the reason in the
audit line, as `dkim.missing_key` says.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace

from relayguard.checks import Subject
from relayguard.config import Config
from relayguard.core.verdict import Action, Decision, Facts, Mode, Verdict
from relayguard.parsing.rfc5322 import HeaderViolation, ascii_lower, parse_mailbox_field
from relayguard.transforms import Transform, replaced_header_names

log = logging.getLogger(__name__)

NAME = "dkim"

SIGNED_HEADERS = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    # Identities and threading a client displays, and how the body is decoded: each could be
    # added or changed in transit to make a signed message say something else.
    "Sender",
    "Resent-From",
    "Resent-Sender",
    "References",
    "In-Reply-To",
    "Content-Transfer-Encoding",
)
# Postfix's cleanup adds Date, Message-ID and (with no To/Cc/Bcc) To when a message from one of
# its local_header_rewrite_clients lacks them, after the milter signed: signing an *absent*
# instance of these would break the signature in transit. They are signed whenever present.
ADDED_BY_POSTFIX_WHEN_MISSING = frozenset({"date", "message-id", "to"})


def delivered_headers(subject: Subject, decision: Decision) -> list[tuple[bytes, bytes]]:
    """The header section Postfix will deliver, in order (Received aside, which is not signed)."""
    assert subject.message is not None
    # The adapter deletes the sender's copies of these before adding relayguard's own.
    present = (name for name, _ in subject.message.headers)
    replaced = replaced_header_names(decision, subject.config.relay.trace_header, present)
    original = [
        (name.encode("latin-1"), value)
        for name, value in subject.message.headers
        if name.strip().lower() not in replaced
    ]
    added = [(name.encode("ascii"), value.encode("utf-8")) for name, value in decision.headers]
    return original + added


def header_list(headers: Sequence[tuple[bytes, bytes]], extra: Iterable[str] = ()) -> list[bytes]:
    """h= for this message: each name once per present copy plus once more (oversigning)."""
    names: list[str] = list(SIGNED_HEADERS)
    for name in extra:
        if name.lower() not in (n.lower() for n in names):
            names.append(name)
    present = [name.strip().lower() for name, _ in headers]
    include: list[bytes] = []
    for name in names:
        lower = name.lower().encode("ascii")
        count = present.count(lower)
        if count == 0 and lower.decode() in ADDED_BY_POSTFIX_WHEN_MISSING:
            continue
        include.extend([lower] * (count + 1))
    return include


def signing_domain(config: Config, from_domain: str) -> str | None:
    """The From domain, or its nearest parent that has keys (relaxed DMARC alignment)."""
    labels = ascii_lower(from_domain).rstrip(".").split(".")
    for start in range(len(labels) - 1):
        candidate = ".".join(labels[start:])
        if config.dkim.keys.get(candidate):
            return candidate
    return None


def sign_delivered(subject: Subject, decision: Decision) -> Decision:
    message = subject.message
    assert message is not None
    config = subject.config
    from_values = message.header_values("From")
    try:
        from_domain = parse_mailbox_field(from_values[0]).domain if len(from_values) == 1 else ""
    except HeaderViolation:
        from_domain = ""
    domain = signing_domain(config, from_domain) if from_domain else None
    if domain is None:
        reason = f"no DKIM key for From domain {from_domain or '(none)'}"
        if config.dkim.missing_key == "unsigned":
            return _note(decision, Verdict(NAME, Action.ACCEPT, f"not signed: {reason}"))
        refusal = Verdict(NAME, Action.REJECT, f"{reason}; the relay signs every message it sends")
        return _note(decision, refusal)
    keys = config.dkim.keys[domain]
    headers = delivered_headers(subject, decision)
    include = header_list(headers, (name for name, _ in decision.headers))
    # Imported here: only a relay that signs pays for dkimpy's import (dkim/signer.py).
    from relayguard.dkim import signer  # noqa: PLC0415

    fields = signer.sign(signer.prepare(headers, message.body), keys, include)
    selectors = ",".join(f"{k.selector}({k.algorithm})" for k in keys)
    signed = replace(decision, headers=(*decision.headers, *fields))
    facts: Facts = {
        "domain": domain,
        "selectors": tuple(k.selector for k in keys),
        "algorithms": tuple(k.algorithm for k in keys),  # one per signature, for metrics
    }
    verdict = Verdict(NAME, Action.ACCEPT, f"signed d={domain} s={selectors}", facts=facts)
    return _note(signed, verdict)


def _note(decision: Decision, verdict: Verdict) -> Decision:
    """Add this transform's verdict (so the audit line names the selectors or the warning)."""
    verdicts = (*decision.verdicts, verdict)
    if verdict.action < Action.TEMPFAIL:
        return replace(decision, verdicts=verdicts)
    policy = max(decision.policy_action, verdict.action)
    if decision.mode is Mode.MONITOR:  # audited as would_reject; mail flows, headers kept
        return replace(decision, policy_action=policy, verdicts=verdicts)
    return Decision(verdict.action, policy, decision.mode, verdicts, verdict.smtp_reply)


def transforms(config: Config) -> tuple[Transform, ...]:
    """Signing is on when [dkim] names at least one domain."""
    return (Transform(NAME, sign_delivered, "not signed"),) if config.dkim.domains else ()
