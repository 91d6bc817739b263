"""What a check says about a transaction, and what the pipeline makes of all of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

# What a check found, as data for metrics and reports (docs/configuration.md, "The audit line"):
# names chosen by code or configuration (rules, detectors, selectors, zones) and counts, never
# message content or a DLP match. Readers count these, never the wording of a reason.
FactValue = str | int | float | bool | tuple[str, ...] | Mapping[str, int]
Facts = Mapping[str, FactValue]


class Action(IntEnum):
    """Ordered by severity, so the pipeline's result is simply the maximum."""

    ACCEPT = 0
    TAG = 1
    QUARANTINE = 2
    TEMPFAIL = 3
    REJECT = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def named(cls, label: str) -> Action:
        """The action a configuration or rule names by its label ('tempfail'); KeyError if none.
        The one map from words to actions: each config key declares the subset it allows."""
        return cls[label.upper()]


class Mode(StrEnum):
    ENFORCE = "enforce"
    MONITOR = "monitor"


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: basic code, enhanced status code (RFC 3463) and text."""

    code: str
    status: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"


POLICY_REFUSAL = ("550", "5.7.1")
TEMPORARY_FAILURE = ("451", "4.7.0")


def default_reply(action: Action, reason: str) -> Reply | None:
    """The reply design.md assigns to each refusing action."""
    if action is Action.REJECT:
        return Reply(*POLICY_REFUSAL, reason)
    if action is Action.TEMPFAIL:
        return Reply(*TEMPORARY_FAILURE, reason)
    return None


@dataclass(frozen=True, slots=True)
class Verdict:
    """One check's answer. `reason` is actionable by a sysadmin and never holds message content."""

    check: str
    action: Action
    reason: str = ""
    reply: Reply | None = None
    headers: tuple[tuple[str, str], ...] = ()
    error: bool = False
    elapsed_ms: float = 0.0
    # Applies in monitor mode too: an operator's decision (the kill switch), not a policy under
    # evaluation.
    binding: bool = False
    facts: Facts = field(default_factory=dict, hash=False)

    @property
    def smtp_reply(self) -> Reply | None:
        return self.reply or default_reply(self.action, self.reason)


def accept(check: str, reason: str = "") -> Verdict:
    return Verdict(check, Action.ACCEPT, reason)


def reject(check: str, reason: str) -> Verdict:
    return Verdict(check, Action.REJECT, reason)


@dataclass(frozen=True, slots=True)
class Decision:
    """The pipeline's combined answer for one stage of one transaction.

    `action` is what happens; `policy_action` is what enforce mode would have done, so monitor
    mode can audit "would_reject" while mail flows.
    """

    action: Action
    policy_action: Action
    mode: Mode
    verdicts: tuple[Verdict, ...]
    reply: Reply | None = None
    headers: tuple[tuple[str, str], ...] = field(default=())

    @property
    def outcome(self) -> str:
        """The word for the audit log: 'reject', or 'would_reject' when monitor mode let it pass."""
        if self.action is not self.policy_action:
            return f"would_{self.policy_action.label}"
        return self.action.label

    @property
    def deciding(self) -> Verdict | None:
        """The most severe verdict, whose reason explains the outcome."""
        worst = max(self.verdicts, key=lambda v: v.action, default=None)
        if worst is None or worst.action is Action.ACCEPT:
            return None
        return worst
