"""What a source usually does, learnt from its own traffic (docs/anomaly.md, "How it learns").

A profile holds, per source:
- sliding counters for the current interval of each rule (messages, recipients, new recipient
  domains, refused messages): an interval in BUCKETS buckets, the oldest one counted whole, so a
  count is never lower than the true one (as for the rate limits, state/window.py, with fewer
  buckets: the profile is read and written for every message);
- for volume and new domains, the *usual peak*: the highest count of any completed fixed interval,
  decaying with a half-life (`Rules.memory`), so a month-end run is still remembered at the next
  month end while a source whose traffic really fell slowly forgets its old peak. An interval in
  which the rule fired after the learning period is not learnt: a burst never raises the bar for
  the next one;
- the mail per hour of the day (UTC), decaying with the same half-life;
- when each rule last fired, so an alert is not repeated for every message of one burst.

The profile is JSON in the state store, replaced by compare-and-set (detector.py), so every milter
process and node learns from all the traffic of the source.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

HOURS = 24
BUCKETS = 10


@dataclass
class Window:
    """A sliding count over the last `width` seconds (never lower than the true count)."""

    width: float
    buckets: dict[int, int] = field(default_factory=dict)

    def add(self, amount: int, now: float) -> int:
        """Add `amount` at `now`; the count in the window, `amount` included."""
        current = math.floor(now * BUCKETS / self.width)
        self.buckets = {b: n for b, n in self.buckets.items() if b >= current - BUCKETS}
        if amount:
            self.buckets[current] = self.buckets.get(current, 0) + amount
        return sum(self.buckets.values())


@dataclass
class Peak:
    """The decayed maximum count of completed fixed intervals of `width` seconds."""

    width: float
    peak: float = 0.0
    slot: int = 0  # the fixed interval being counted
    count: int = 0
    learnt: bool = True  # False once a rule fired in this interval (after the learning period)

    def roll(self, now: float, learn_from: float) -> None:
        """Fold the interval that ended into the peak (when it is learnt and began at or after
        `learn_from`), then count the one `now` falls in."""
        slot = math.floor(now / self.width)
        if slot == self.slot:
            return
        if self.learnt and self.slot * self.width >= learn_from:
            self.peak = max(self.peak, float(self.count))
        self.slot, self.count, self.learnt = slot, 0, True

    def decay(self, factor: float) -> None:
        self.peak *= factor


@dataclass
class Profile:
    first_seen: float
    updated: float
    messages: Window
    recipients: Window
    new_domains: Window
    refusals: Window
    message_peak: Peak
    recipient_peak: Peak
    new_domain_peak: Peak
    hours: list[float] = field(default_factory=lambda: [0.0] * HOURS)
    fired: dict[str, float] = field(default_factory=dict)

    @classmethod
    def new(cls, now: float, volume: float, domains: float, refusals: float) -> Profile:
        """A source seen for the first time: its learning period starts now."""
        return cls(
            first_seen=now,
            updated=now,
            messages=Window(volume),
            recipients=Window(volume),
            new_domains=Window(domains),
            refusals=Window(refusals),
            message_peak=Peak(volume, slot=math.floor(now / volume)),
            recipient_peak=Peak(volume, slot=math.floor(now / volume)),
            new_domain_peak=Peak(domains, slot=math.floor(now / domains)),
        )

    def fit(self, volume: float, domains: float, refusals: float) -> None:
        """The configured intervals changed: restart the sliding counts, rescale the peaks."""
        for name, width in (
            ("messages", volume), ("recipients", volume), ("new_domains", domains),
            ("refusals", refusals),
        ):  # fmt: skip
            if getattr(self, name).width != width:
                setattr(self, name, Window(width))
        for name, width in (
            ("message_peak", volume), ("recipient_peak", volume), ("new_domain_peak", domains),
        ):  # fmt: skip
            peak: Peak = getattr(self, name)
            if peak.width != width:
                setattr(self, name, Peak(width, peak.peak * width / peak.width, -1))

    def age(self, now: float, half_life: float) -> None:
        """Decay the peaks and the hours of the day by the time since the last update."""
        elapsed = max(0.0, now - self.updated)
        factor = 0.5 ** (elapsed / half_life) if half_life > 0 else 1.0
        for peak in (self.message_peak, self.recipient_peak, self.new_domain_peak):
            peak.decay(factor)
        self.hours = [count * factor for count in self.hours]
        self.updated = max(self.updated, now)

    def hour_share(self, hour: int) -> float:
        """The part of the remembered mail sent in this hour of the day (1.0 with no history)."""
        total = sum(self.hours)
        return self.hours[hour] / total if total > 0 else 1.0

    # --- storage -----------------------------------------------------------------------------
    def dump(self) -> str:
        return json.dumps(
            {
                "first_seen": self.first_seen,
                "updated": self.updated,
                "windows": {
                    name: _window_json(getattr(self, name))
                    for name in ("messages", "recipients", "new_domains", "refusals")
                },
                "peaks": {
                    name: _peak_json(getattr(self, name))
                    for name in ("message_peak", "recipient_peak", "new_domain_peak")
                },
                "hours": self.hours,
                "fired": self.fired,
            },
            separators=(",", ":"),
        )

    @classmethod
    def load(cls, text: str) -> Profile:
        data = json.loads(text)
        windows, peaks = data["windows"], data["peaks"]
        hours = [float(count) for count in data["hours"]]
        return cls(
            first_seen=float(data["first_seen"]),
            updated=float(data["updated"]),
            messages=_window(windows["messages"]),
            recipients=_window(windows["recipients"]),
            new_domains=_window(windows["new_domains"]),
            refusals=_window(windows["refusals"]),
            message_peak=_peak(peaks["message_peak"]),
            recipient_peak=_peak(peaks["recipient_peak"]),
            new_domain_peak=_peak(peaks["new_domain_peak"]),
            hours=hours if len(hours) == HOURS else [0.0] * HOURS,
            fired={str(k): float(v) for k, v in data["fired"].items()},
        )


def _window_json(window: Window) -> dict[str, Any]:
    return {"width": window.width, "buckets": {str(b): n for b, n in window.buckets.items()}}


def _window(raw: dict[str, Any]) -> Window:
    return Window(float(raw["width"]), {int(b): int(n) for b, n in raw["buckets"].items()})


def _peak_json(peak: Peak) -> dict[str, Any]:
    return {
        "width": peak.width,
        "peak": peak.peak,
        "slot": peak.slot,
        "count": peak.count,
        "learnt": peak.learnt,
    }


def _peak(raw: dict[str, Any]) -> Peak:
    return Peak(
        float(raw["width"]),
        float(raw["peak"]),
        int(raw["slot"]),
        int(raw["count"]),
        bool(raw["learnt"]),
    )
