"""The anomaly detector's state calls per message, on both backends (a real redis-server).

The observer runs before the milter replies, so each Redis round trip it makes is latency for
every message (bench/anomaly_cost.py measures it). Learning the recipient domains and reading the
profile is one call (one MULTI on Redis); the compare-and-set write is the other.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from relayguard.anomaly.detector import Detector, Traffic
from relayguard.config.anomaly import AnomalySettings
from relayguard.state import StateStore

pytestmark = pytest.mark.protocol

T0 = 1_800_000_000.0


class Counted:
    """The real store, with the name of each call it gets recorded."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted if callable(attribute) else attribute


def test_learning_domains_and_reading_the_baseline_is_one_call(store: StateStore) -> None:
    assert store.learn_domains_and_baseline("erp", ["a.example"], T0, 0) == ({"a.example"}, None)
    assert store.replace_baseline("erp", '{"n": 1}', 0)
    new, stored = store.learn_domains_and_baseline("erp", ["a.example", "b.example"], T0 + 1, 0)
    assert new == {"b.example"}
    assert stored is not None
    assert (stored.version, stored.data) == (1, '{"n": 1}')
    # Domains not seen since forget_before are forgotten, so they are new again.
    new, _ = store.learn_domains_and_baseline("erp", ["a.example"], T0 + 10, T0 + 5)
    assert new == {"a.example"}
    assert store.learn_domains_and_baseline("printer", [], T0, 0) == (set(), None)


def test_a_message_costs_the_detector_two_state_calls(store: StateStore) -> None:
    counted = Counted(store)
    clock = iter(T0 + i for i in range(100))
    detector = Detector(counted, AnomalySettings(), clock=lambda: next(clock))
    detector.observe(Traffic("erp", 1, ("ap@customer.example",)))  # the profile exists
    counted.calls.clear()
    assert detector.observe(Traffic("erp", 1, ("ap@customer.example",))) == []
    assert counted.calls == Counter({"learn_domains_and_baseline": 1, "replace_baseline": 1})


def test_a_lost_compare_and_set_reads_the_profile_again(store: StateStore) -> None:
    counted = Counted(store)
    clock = iter(T0 + i for i in range(100))
    detector = Detector(counted, AnomalySettings(), clock=lambda: next(clock))
    detector.observe(Traffic("erp", 1, ("ap@customer.example",)))
    stale = store.baseline("erp")
    assert stale is not None
    # Another process writes between this detector's read and its write: it must re-read.
    real_read = store.learn_domains_and_baseline

    def read_then_interfere(*args: Any) -> Any:
        found = real_read(*args)
        assert store.replace_baseline("erp", stale.data, stale.version)
        return found

    counted.store = _Patched(store, learn_domains_and_baseline=read_then_interfere)
    counted.calls.clear()
    detector.observe(Traffic("erp", 1, ("ap@customer.example",)))
    assert counted.calls["baseline"] == 1
    assert counted.calls["replace_baseline"] == 2
    stored = store.baseline("erp")
    assert stored is not None
    assert stored.version == stale.version + 2  # the other write and this one, both kept


class _Patched:
    def __init__(self, store: StateStore, **methods: Any) -> None:
        self.store = store
        self.methods = methods

    def __getattr__(self, name: str) -> Any:
        return self.methods.get(name) or getattr(self.store, name)
