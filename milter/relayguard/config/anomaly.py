"""[anomaly] and [[anomaly_overrides]]: the automatic source lock (anomaly/, docs/anomaly.md).

[anomaly] turns the detector on and holds the rules every source gets; an [[anomaly_overrides]]
entry changes some of them for the sources it names (an ERP's month-end run, a printer that may
never mail outside). An override holds only what it changes: every key it does not write is the
[anomaly] value (`link_anomaly`). Intervals and lock expiries are in seconds, memories in days.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from relayguard.config.declare import Place, choice, keys_of, number, real, section, texts

if TYPE_CHECKING:
    from relayguard.config.sources import Source

DAY = 86400
YEAR = 365 * DAY


class RuleAction(StrEnum):
    OFF = "off"  # not evaluated
    MONITOR = "monitor"  # counted in the metric and logged, nothing else
    ALERT = "alert"  # an audit line, the metric and a warning in the log
    LOCK = "lock"  # the kill switch with an automatic reason; audited and counted


ACTIONS = {action.value: action for action in RuleAction}
DEFAULT_REFUSAL_CHECKS = ("clamav", "yara", "dlp", "spam", "envelope_sender", "header_identities")
RULES = ("volume", "new_domains", "refusals", "hours")


@dataclass(frozen=True, slots=True)
class VolumeRule:
    """Messages or recipients in `interval` above `factor` x the source's usual peak, and above
    the floors (a source that sends almost nothing may still send a little more)."""

    action: RuleAction = choice("lock", ACTIONS)
    interval: int = number(600, 60, 7 * DAY)
    factor: float = real(10.0, 1, 1000)
    min_messages: int = number(20, 1, 10**9)
    min_recipients: int = number(50, 1, 10**9)
    lock_expiry: int = number(0, 0, YEAR)  # 0: locked until an operator enables the source


@dataclass(frozen=True, slots=True)
class NewDomainsRule:
    """Recipient domains never seen for the source, in `interval`, above `factor` x its usual
    number of new domains per interval and above `minimum`."""

    action: RuleAction = choice("lock", ACTIONS)
    interval: int = number(DAY, 3600, 30 * DAY)
    factor: float = real(4.0, 1, 1000)
    minimum: int = number(20, 1, 10**9)
    lock_expiry: int = number(0, 0, YEAR)


@dataclass(frozen=True, slots=True)
class RefusalsRule:
    """`count` messages refused (or quarantined) by one of `checks` within `interval`. It needs
    no history, so it acts during the learning period too."""

    action: RuleAction = choice("lock", ACTIONS)
    interval: int = number(600, 60, 7 * DAY)
    count: int = number(5, 1, 10**6)
    checks: frozenset[str] = texts(default=DEFAULT_REFUSAL_CHECKS, parse=frozenset)
    lock_expiry: int = number(0, 0, YEAR)


@dataclass(frozen=True, slots=True)
class HoursRule:
    """A message in an hour of the day (UTC) that carried less than `min_share` of the source's
    remembered mail."""

    action: RuleAction = choice("monitor", ACTIONS)
    min_share: float = real(0.01, 0, 1)
    lock_expiry: int = number(0, 0, YEAR)


@dataclass(frozen=True, slots=True)
class AnomalyRules:
    """Everything that applies to one source."""

    # A monthly cycle (a month-end run) is seen before a history rule may lock.
    learning_days: float = real(35.0, 0, 3650)
    memory_days: float = real(60.0, 1, 3650)  # half-life of the usual peaks and hours
    domain_memory_days: float = real(400.0, 1, 3650)  # unused this long: a domain is new again
    volume: VolumeRule = section(VolumeRule)
    new_domains: NewDomainsRule = section(NewDomainsRule)
    refusals: RefusalsRule = section(RefusalsRule)
    hours: HoursRule = section(HoursRule)

    @property
    def learning(self) -> float:
        return self.learning_days * DAY

    @property
    def memory(self) -> float:
        return self.memory_days * DAY

    @property
    def domain_memory(self) -> float:
        return self.domain_memory_days * DAY


@dataclass(frozen=True, slots=True)
class AnomalySettings(AnomalyRules):
    """[anomaly]: on when present; the rules of every source without an override."""

    # Filled by link_anomaly from [[anomaly_overrides]].
    by_source: Mapping[str, AnomalyRules] = field(default_factory=lambda: MappingProxyType({}))

    def for_source(self, name: str) -> AnomalyRules:
        return self.by_source.get(name, self)


def source_names(names: tuple[str, ...]) -> tuple[str, ...]:
    if not names:
        raise ValueError("missing: the sources this override applies to")
    return names


@dataclass(frozen=True, slots=True)
class AnomalyOverride(AnomalyRules):
    """[[anomaly_overrides]]: other values of some [anomaly] keys for the sources named."""

    sources: tuple[str, ...] = texts(parse=source_names)


def link_anomaly(
    anomaly: AnomalySettings | None,
    overrides: tuple[AnomalyOverride, ...],
    given: Mapping[str, Any],
    sources: tuple[Source, ...],
    root: Place,
    *,
    state: bool,
) -> AnomalySettings | None:
    """Each overridden source's rules: [anomaly] with the keys its override writes replaced."""
    if anomaly is None:
        if overrides:
            root.key("anomaly_overrides").problem("needs an [anomaly] section")
        return None
    if not state:
        root.key("anomaly").problem("needs a [state] section: the baselines and locks live there")
    known = {source.name for source in sources}
    raw = given.get("anomaly_overrides")
    tables = raw if isinstance(raw, list) else []
    by_source: dict[str, AnomalyRules] = {}
    for index, (override, table) in enumerate(zip(overrides, tables, strict=False)):
        at = root.key("anomaly_overrides").item(index).key("sources")
        rules = _merged(anomaly, override, table)
        for position, name in enumerate(override.sources):
            if name not in known:
                at.item(position).problem(f"no source named {name!r}")
            elif name in by_source:
                at.item(position).problem(f"source {name!r} is in an earlier override already")
            else:
                by_source[name] = rules
    return replace(anomaly, by_source=MappingProxyType(by_source))


def _merged(base: AnomalySettings, override: AnomalyOverride, table: Any) -> AnomalyRules:
    """The [anomaly] rules with the keys the override's table writes taken from the override."""
    written = table if isinstance(table, dict) else {}
    changes: dict[str, Any] = {}
    for name in keys_of(AnomalyRules):
        if name not in written:
            continue
        value = getattr(override, name)
        if name in RULES and isinstance(written[name], dict):
            rule_keys = [key for key in written[name] if key in keys_of(type(value))]
            value = replace(getattr(base, name), **{k: getattr(value, k) for k in rule_keys})
        changes[name] = value
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(AnomalyRules)}
    return AnomalyRules(**{**fields, **changes})
