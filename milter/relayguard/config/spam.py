"""[spam] and [[spam_policies]]: outbound spam scoring through Rspamd (checks/spam.py).

[spam] says where Rspamd is and holds the default thresholds; a [[spam_policies]] entry is another
set of thresholds that a source names with `spam_policy` (a newsletter may be held at a lower
score than an ERP's invoices). Which policy names exist is a cross-reference: `link_spam`.
The choices are explained in docs/spam.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from relayguard.config.declare import FAILURE_ACTIONS, Place, actions, number, real, text
from relayguard.core.verdict import Action

if TYPE_CHECKING:
    from relayguard.config.sources import Source

# Scores are Rspamd's: a few points per symbol, its stock reject action at 15.
LOWEST, HIGHEST = -1000, 1000


def rspamd_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ValueError(f"must be an http:// or https:// URL of Rspamd, got {url!r}")
    return url


def policy_name(name: str) -> str:
    if not name:
        raise ValueError("missing: every spam policy needs a name")
    return name


@dataclass(frozen=True, slots=True)
class SpamThresholds:
    """Rspamd scores at which a message is tagged, quarantined or refused; unset = never.
    The defaults are Rspamd's own stock actions ("add header" at 6, "reject" at 15)."""

    tag_score: float | None = real(6.0, LOWEST, HIGHEST)
    quarantine_score: float | None = real(None, LOWEST, HIGHEST)
    reject_score: float | None = real(15.0, LOWEST, HIGHEST)

    def action_for(self, score: float) -> tuple[Action, float | None]:
        """The most severe action whose threshold the score reaches, and that threshold; below
        every threshold: accept, with the tag threshold for the reason."""
        for action, threshold in (
            (Action.REJECT, self.reject_score),
            (Action.QUARANTINE, self.quarantine_score),
            (Action.TAG, self.tag_score),
        ):
            if threshold is not None and score >= threshold:
                return action, threshold
        return Action.ACCEPT, self.tag_score


@dataclass(frozen=True, slots=True)
class SpamPolicy(SpamThresholds):
    """[[spam_policies]]: thresholds of their own for the sources that name them."""

    name: str = text("", parse=policy_name)


@dataclass(frozen=True, slots=True)
class SpamSettings(SpamThresholds):
    """[spam]: Rspamd's address, its timeout and failure action, and the default thresholds."""

    url: str = text("http://127.0.0.1:11333", parse=rspamd_url)
    timeout: int = number(15, 1, 600)
    # Rspamd down: tag and log by default (docs/spam.md says why not tempfail).
    failure_action: Action = actions("tag", FAILURE_ACTIONS)
    # Filled by link_spam from [[spam_policies]] and the sources' spam_policy.
    by_source: Mapping[str, SpamThresholds] = field(default_factory=lambda: MappingProxyType({}))

    def thresholds_for(self, source: str | None) -> SpamThresholds:
        return self.by_source.get(source or "", self)


def link_spam(
    spam: SpamSettings | None,
    policies: tuple[SpamPolicy, ...],
    sources: tuple[Source, ...],
    root: Place,
) -> SpamSettings | None:
    """Each source's policy by name; a policy or spam_policy without [spam] is a mistake."""
    named: dict[str, SpamPolicy] = {}
    for index, policy in enumerate(policies):
        if policy.name in named:
            root.key("spam_policies").item(index).key("name").problem(
                f"duplicate spam policy {policy.name!r}"
            )
        named.setdefault(policy.name, policy)
    by_source: dict[str, SpamThresholds] = {}
    for index, source in enumerate(sources):
        if not source.spam_policy:
            continue
        at = root.key("sources").item(index).key("spam_policy")
        if source.spam_policy not in named:
            at.problem(f"no [[spam_policies]] entry named {source.spam_policy!r}")
        else:
            by_source[source.name] = named[source.spam_policy]
    if spam is None:
        if policies or by_source:
            root.key("spam").problem("missing: spam policies need a [spam] section (Rspamd's url)")
        return None
    return replace(spam, by_source=MappingProxyType(by_source))
