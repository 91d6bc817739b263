"""The anomaly rules, applied to each decision of a source against its own baseline.

`Detector.observe` learns from one decision and returns what fired. A `lock` pulls the kill switch
in the state store at once (`auto_disable`, which never replaces a lock already in force), so the
source's next MAIL FROM is refused on every node, with a reason naming the rule and the figures.

The profile is read, updated and written back by compare-and-set: two processes (or nodes) that
observe the same source at once both count, the second one retrying on the fresh profile. The
first read comes with learning the recipient domains, in one round trip (bench/anomaly_cost.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from relayguard.anomaly.baseline import Profile
from relayguard.config.anomaly import AnomalyRules as Rules
from relayguard.config.anomaly import AnomalySettings, RuleAction
from relayguard.parsing.rfc5322 import ascii_lower
from relayguard.state import StateStore

log = logging.getLogger(__name__)

ACTOR = "relayguard anomaly detector"
LOCK_PREFIX = "auto-lock: "
# The rules that compare a source with its history: they cannot lock while it is learning.
HISTORY_RULES = frozenset({"volume", "new_domains", "hours"})
# A rule alerts at most once per interval (at least this long) and source.
MIN_QUIET = 3600.0
CAS_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class Traffic:
    """What one decision says about a source's behaviour (nothing of the message's content)."""

    source: str
    messages: int = 1  # 1 for a message (delivered or refused), 0 for a refusal at MAIL FROM
    recipients: tuple[str, ...] = ()  # every recipient it tried, accepted or refused
    refusals: frozenset[str] = frozenset()  # the checks that refused (or quarantined) it
    monitor: bool = False  # monitor mode: nothing is locked, a lock is reported as an alert


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule that fired, with what was done: `action` is `lock` only when this call locked."""

    source: str
    rule: str
    action: RuleAction
    reason: str  # names the rule and the figures; the lock's reason is LOCK_PREFIX + reason
    expires: float | None = None  # when the lock lifts itself


def recipient_domains(recipients: Iterable[str]) -> set[str]:
    domains = {ascii_lower(r.rpartition("@")[2]).strip("[].") for r in recipients if "@" in r}
    domains.discard("")
    return domains


def span(seconds: float) -> str:
    """600 -> '10 min', 3600 -> '1 h', 86400 -> '24 h'."""
    if seconds < 3600 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    return f"{seconds:g} s"


def usual(value: float) -> int:
    return math.ceil(value - 1e-9)


class Detector:
    def __init__(
        self,
        store: StateStore,
        settings: AnomalySettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    def observe(self, traffic: Traffic) -> list[Finding]:
        """Learn from one decision; lock when a `lock` rule fires. Raises StateUnavailable."""
        now = self.clock()
        rules = self.settings.for_source(traffic.source)
        domains = recipient_domains(traffic.recipients)
        # Learning the domains and reading the profile is one round trip on Redis: with the
        # write below, two per message (the milter waits for them before it replies).
        new, stored = self.store.learn_domains_and_baseline(
            traffic.source, domains, now, now - rules.domain_memory
        )
        for attempt in range(CAS_ATTEMPTS):
            if attempt:
                stored = self.store.baseline(traffic.source)
            profile = self._profile(stored.data if stored else None, now, rules)
            fired = _evaluate(profile, traffic, len(new), now, rules)
            if self.store.replace_baseline(
                traffic.source, profile.dump(), stored.version if stored else 0
            ):
                acted = (self._act(finding, now, rules) for finding in fired)
                return [finding for finding in acted if finding is not None]
        log.warning("anomaly baseline of %s: too busy, one decision not learnt", traffic.source)
        return []

    def _profile(self, data: str | None, now: float, rules: Rules) -> Profile:
        intervals = (rules.volume.interval, rules.new_domains.interval, rules.refusals.interval)
        if data is None:
            return Profile.new(now, *intervals)
        profile = Profile.load(data)
        profile.fit(*intervals)
        return profile

    def _act(self, finding: Finding, now: float, rules: Rules) -> Finding | None:
        """Pull the kill switch for a lock; None when the source is locked already (by an
        operator, another node or an earlier message): nothing new to report."""
        if finding.action is not RuleAction.LOCK:
            return finding
        expiry: float = getattr(rules, finding.rule).lock_expiry
        expires = now + expiry if expiry > 0 else None
        reason = LOCK_PREFIX + finding.reason
        if self.store.auto_disable(finding.source, reason, ACTOR, now, expires):
            return Finding(finding.source, finding.rule, RuleAction.LOCK, finding.reason, expires)
        return None


@dataclass(frozen=True, slots=True)
class _Step:
    """One decision being learnt: the profile it updates and what the rules compare."""

    profile: Profile
    traffic: Traffic
    new_domains: int
    now: float
    rules: Rules
    learning: bool


def _evaluate(
    profile: Profile, traffic: Traffic, new_domains: int, now: float, rules: Rules
) -> list[Finding]:
    """Update the profile with this decision; the rules that fired (before de-duplication)."""
    profile.age(now, rules.memory)
    learning = now < profile.first_seen + rules.learning
    step = _Step(profile, traffic, new_domains, now, rules, learning)
    found = [_volume(step), _new_domains(step), _refusals(step), _hours(step)]
    effective = [_effective(f, traffic, learning) for f in found if f is not None]
    return [finding for finding in effective if _not_repeated(profile, finding, now, rules)]


def _volume(step: _Step) -> Finding | None:
    rule, profile, traffic = step.rules.volume, step.profile, step.traffic
    for slot in (profile.message_peak, profile.recipient_peak):
        slot.roll(step.now, learn_from=-math.inf)
    messages = profile.messages.add(traffic.messages, step.now)
    recipients = profile.recipients.add(len(traffic.recipients), step.now)
    profile.message_peak.count += traffic.messages
    profile.recipient_peak.count += len(traffic.recipients)
    if rule.action is RuleAction.OFF or not (traffic.messages or traffic.recipients):
        return None
    checks = (
        ("recipients", recipients, profile.recipient_peak.peak, rule.min_recipients),
        ("messages", messages, profile.message_peak.peak, rule.min_messages),
    )
    for unit, count, usual_peak, floor in checks:
        if count > max(floor, rule.factor * usual_peak):
            if not step.learning:
                profile.message_peak.learnt = profile.recipient_peak.learnt = False
            figures = f"{count} {unit} in {span(rule.interval)}, usual peak {usual(usual_peak)}"
            reason = f"volume burst: {figures}"
            return Finding(traffic.source, "volume", rule.action, reason)
    return None


def _new_domains(step: _Step) -> Finding | None:
    """During the learning period every domain is new: remembered, neither counted as usual nor
    reported (the source's first customers are no anomaly)."""
    rule, profile = step.rules.new_domains, step.profile
    peak = profile.new_domain_peak
    peak.roll(step.now, learn_from=profile.first_seen + step.rules.learning)
    count = profile.new_domains.add(step.new_domains, step.now)
    peak.count += step.new_domains
    if rule.action is RuleAction.OFF or not step.new_domains or step.learning:
        return None
    if count <= max(rule.minimum, rule.factor * peak.peak):
        return None
    peak.learnt = False
    reason = (
        f"new recipient domains: {count} never seen before in {span(rule.interval)},"
        f" usual peak {usual(peak.peak)}"
    )
    return Finding(step.traffic.source, "new_domains", rule.action, reason)


def _refusals(step: _Step) -> Finding | None:
    rule = step.rules.refusals
    refused = sorted(step.traffic.refusals & rule.checks)
    count = step.profile.refusals.add(1 if refused else 0, step.now)
    if rule.action is RuleAction.OFF or not refused or count < rule.count:
        return None
    reason = (
        f"refusal streak: {count} messages refused in {span(rule.interval)}"
        f" (last by {', '.join(refused)})"
    )
    return Finding(step.traffic.source, "refusals", rule.action, reason)


def _hours(step: _Step) -> Finding | None:
    rule, profile, messages = step.rules.hours, step.profile, step.traffic.messages
    if not messages:
        return None
    hour = time.gmtime(step.now).tm_hour
    share = profile.hour_share(hour)
    profile.hours[hour] += messages
    if rule.action is RuleAction.OFF or step.learning or share >= rule.min_share:
        return None
    reason = (
        f"outside usual hours: a message at {hour:02d}:00-{hour:02d}:59 UTC,"
        f" an hour that carried {share:.1%} of its mail"
    )
    return Finding(step.traffic.source, "hours", rule.action, reason)


def _effective(finding: Finding, traffic: Traffic, learning: bool) -> Finding:
    """A lock is an alert while the source learns (history rules) and in monitor mode."""
    if finding.action is not RuleAction.LOCK:
        return finding
    if traffic.monitor or (learning and finding.rule in HISTORY_RULES):
        why = "monitor mode" if traffic.monitor else "learning period"
        return Finding(
            finding.source, finding.rule, RuleAction.ALERT, f"{finding.reason} (would lock: {why})"
        )
    return finding


def _not_repeated(profile: Profile, finding: Finding, now: float, rules: Rules) -> bool:
    """An alert or monitor finding once per rule and quiet period (recorded in the profile). A
    lock is never held back: the kill switch itself ignores a source that is locked already,
    and a lock that expired while the source misbehaves must be pulled again."""
    if finding.action is RuleAction.LOCK:
        return True
    interval: float = getattr(getattr(rules, finding.rule), "interval", MIN_QUIET)
    key = f"{finding.rule}:{finding.action.value}"
    last = profile.fired.get(key)
    if last is not None and now - last < max(interval, MIN_QUIET):
        return False
    profile.fired[key] = now
    return True
