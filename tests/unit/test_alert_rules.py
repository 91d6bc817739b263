"""The Prometheus alert rules in monitoring/prometheus: valid, unit-tested, and built only on
metrics that exist (the milter's, or the few external ones named below)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
RULES = ROOT / "monitoring/prometheus/relayguard-alerts.yml"
RULE_TESTS = ROOT / "monitoring/prometheus/relayguard-alerts.test.yml"
SCRAPE_CONFIG = ROOT / "monitoring/prometheus/prometheus.yml"
EXPORTER_DEFAULTS = ROOT / "ansible/roles/relayguard_postfix_exporter/defaults/main.yml"

# Metrics the rules may use that relayguard does not export.
EXTERNAL_METRICS = {
    "up",  # Prometheus, per scrape target
    "postfix_showq_message_size_bytes_count",  # postfix_exporter: messages per Postfix queue
    "postfix_up",  # postfix_exporter: 1 when its read of Postfix's showq socket worked
}
# The series names each metric type exposes (prometheus_client; multiprocess mode has no _created).
EXPOSED_SUFFIXES = {
    "Counter": ("_total",),
    "Histogram": ("_bucket", "_count", "_sum"),
    "Gauge": ("",),
    "GaugeMetricFamily": ("",),
    "CounterMetricFamily": ("_total",),
}
PROMQL_WORDS = {"and", "or", "unless", "bool", "inf", "nan"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: install Debian's prometheus package (make deps)"
    return subprocess.run(
        [binary, *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=RULES.parent,
        timeout=240,
    )


def exported_metrics() -> set[str]:
    """Series names that metrics.py's Counter/Histogram/Gauge definitions expose."""
    (source,) = (ROOT / "milter/relayguard").rglob("metrics.py")
    names = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        kind = getattr(node.func, "id", getattr(node.func, "attr", ""))
        first = node.args[0]
        if (
            kind in EXPOSED_SUFFIXES
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
        ):
            names |= {f"{first.value}{suffix}" for suffix in EXPOSED_SUFFIXES[kind]}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label matchers,
    grouping clauses, ranges, offsets, numbers, functions and keywords are taken out."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]|\boffset\s+-?\w+", "", expr)
    tokens = re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", expr)
    return {t[1] for t in tokens if not t[2] and t[1].lower() not in PROMQL_WORDS}


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_use_only_metrics_that_exist() -> None:
    known = exported_metrics() | EXTERNAL_METRICS
    used = set().union(*(metric_names(rule["expr"]) for rule in alert_rules()))
    assert used - known == set()
    assert {"relayguard_messages_total", "relayguard_state_up"} <= used


def test_the_unit_tests_feed_only_metrics_that_exist() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fed = {s["series"].split("{")[0] for t in tests for s in t["input_series"]}
    assert fed - (exported_metrics() | EXTERNAL_METRICS) == set()


def test_every_alert_is_actionable_and_has_a_firing_test() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", ())
        if case.get("exp_alerts")
    }
    for rule in alert_rules():
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]
        assert "What to do:" in rule["annotations"]["description"], rule["alert"]
        assert rule["alert"] in fired, f"{rule['alert']} has no promtool case where it fires"


def test_metric_names_reads_promql() -> None:
    expr = (
        'sum by (source) (rate(a_total{x="b{c}"}[5m] offset 1d)) > 2 * max_over_time(b[7d:1h])'
        ' unless on (instance) label_replace(c_count, "s", "$1", "check", "(.+)") and 1e3 > inf'
    )
    assert metric_names(expr) == {"a_total", "b", "c_count"}
    assert exported_metrics() >= {"relayguard_messages_total", "relayguard_state_up"}


def test_the_scrape_configuration_loads_the_rules_and_names_the_jobs_they_select() -> None:
    result = promtool("check", "config", SCRAPE_CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Checking {RULES.name}\n  SUCCESS: {len(alert_rules())} rules found" in result.stdout
    jobs = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"]
    }
    selected = set(re.findall(r'job="([^"]+)"', RULES.read_text()))
    assert selected == {"relayguard", "postfix"} and selected <= jobs.keys()
    exporter = yaml.safe_load(EXPORTER_DEFAULTS.read_text())
    assert jobs["postfix"] == [exporter["relayguard_postfix_exporter__listen_address"]]
