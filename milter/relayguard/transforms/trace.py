"""The trace header: which source sent the message, what relayguard decided, and whether the
message was left unsigned because it did not pass policy."""

from __future__ import annotations

from dataclasses import replace

from relayguard.checks import Subject
from relayguard.config import Config
from relayguard.core.verdict import Decision
from relayguard.transforms import Transform, authority_withheld

NAME = "trace_header"


def add_trace_header(subject: Subject, decision: Decision) -> Decision:
    name = subject.config.relay.trace_header
    source = subject.source
    value = (
        f"source={source.name if source else 'none'}; mode={decision.mode.value};"
        f" verdict={decision.outcome}"
    )
    deciding = decision.deciding
    if deciding is not None:
        value += f"; check={deciding.check}"
    if subject.config.dkim.domains and authority_withheld(decision) is not None:
        value += "; dkim=withheld"  # policy did not pass: delivered unsigned, whatever the mode
    return replace(decision, headers=(*decision.headers, (name, value)))


def transforms(config: Config) -> tuple[Transform, ...]:
    """None when the sysadmin turned the header off (trace_header = "")."""
    return (Transform(NAME, add_trace_header),) if config.relay.trace_header else ()
