"""The DKIM status file (written by `dkim verify-dns --metrics-file`) and the supervisor's
collector that turns it into gauges at scrape time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from relayguard import metrics
from relayguard.config import Config, load_config
from relayguard.dkim import status as dkim_status
from relayguard.dkim.status import DomainStatus, KeyStatus

pytestmark = pytest.mark.unit

ACTIVE = KeyStatus("rsa2025", "rsa", "active", 1_700_000_000.0, 1)
PENDING = KeyStatus("ed2026", "ed25519", "pending", 1_760_000_000.0, 0)


@pytest.fixture
def status_file(tmp_path: Path) -> Path:
    return tmp_path / "dkim-status.json"


@pytest.fixture
def config(status_file: Path, write_config: Callable[..., Path]) -> Config:
    path = write_config()
    path.write_text(path.read_text() + f'\n[metrics]\ndkim_status_file = "{status_file}"\n')
    return load_config(path)


def scrape(config: Config) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(metrics.DkimStatusCollector(lambda: config))
    return registry


def test_each_domain_replaces_only_its_own_entry(status_file: Path) -> None:
    dkim_status.write_domain(status_file, DomainStatus("a.test", 100.0, (ACTIVE,)))
    dkim_status.write_domain(status_file, DomainStatus("b.test", 200.0, (ACTIVE, PENDING)))
    dkim_status.write_domain(status_file, DomainStatus("a.test", 300.0, (PENDING,)))
    assert sorted(dkim_status.read_status(status_file), key=lambda d: d.domain) == [
        DomainStatus("a.test", 300.0, (PENDING,)),
        DomainStatus("b.test", 200.0, (ACTIVE, PENDING)),
    ]
    assert [p.name for p in status_file.parent.iterdir()] == [status_file.name]  # no temp left
    assert status_file.stat().st_mode & 0o777 == 0o644


def test_a_broken_file_is_rewritten_from_scratch(status_file: Path) -> None:
    status_file.write_text("{not json")
    dkim_status.write_domain(status_file, DomainStatus("a.test", 100.0, (ACTIVE,)))
    assert dkim_status.read_status(status_file) == [DomainStatus("a.test", 100.0, (ACTIVE,))]


def test_the_collector_exports_the_file(config: Config, status_file: Path) -> None:
    dkim_status.write_domain(status_file, DomainStatus("a.test", 1234.5, (ACTIVE, PENDING)))
    registry = scrape(config)
    value = registry.get_sample_value
    assert value("relayguard_dkim_dns_match", {"domain": "a.test", "selector": "rsa2025"}) == 1
    assert value("relayguard_dkim_dns_match", {"domain": "a.test", "selector": "ed2026"}) == 0
    created = {"domain": "a.test", "selector": "rsa2025", "algorithm": "rsa", "status": "active"}
    assert value("relayguard_dkim_key_created_timestamp_seconds", created) == 1_700_000_000.0
    assert value("relayguard_dkim_dns_check_timestamp_seconds", {"domain": "a.test"}) == 1234.5


@pytest.mark.parametrize(
    ("content", "logged"),
    [
        (None, "no DKIM status file yet"),
        ("{not json", "cannot read the DKIM status file"),
        ('{"domains": {"a.test": {"checked": 1}}}', "malformed DKIM status file"),
        ('{"domains": {"a.test": {"checked": 1, "keys": [{"selector": "x"}]}}}', "malformed"),
        ("[1, 2]", "no 'domains' table"),
    ],
)
def test_a_missing_or_broken_file_gives_no_gauges_and_a_log_line(
    config: Config,
    status_file: Path,
    caplog: pytest.LogCaptureFixture,
    content: str | None,
    logged: str,
) -> None:
    if content is not None:
        status_file.write_text(content)
    with caplog.at_level(logging.WARNING, logger="relayguard.metrics"):
        families = list(scrape(config).collect())
    assert families == []
    assert logged in caplog.text and str(status_file) in caplog.text


def test_no_status_file_configured_means_no_dkim_gauges(write_config: Callable[..., Path]) -> None:
    config = load_config(write_config())
    assert config.metrics.dkim_status_file is None
    assert list(scrape(config).collect()) == []
