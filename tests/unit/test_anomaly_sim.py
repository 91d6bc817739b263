"""The anomaly detector's targets (issue 17), on simulated traffic through the real detector and
SQLite store (bench/anomaly_sim.py; its table is in docs/anomaly.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.anomaly_sim import HOUR, MINUTE, SCENARIOS, Outcome, run

pytestmark = [pytest.mark.unit, pytest.mark.timeout(240)]


def outcome(name: str, tmp_path: Path) -> Outcome:
    scenario = next(s for s in SCENARIOS if s.name == name)
    return run(scenario, tmp_path)


def test_printer_mailing_hundreds_of_recipients_is_locked_before_50_messages(
    tmp_path: Path,
) -> None:
    for name in ("printer_burst", "printer_internal_burst"):
        result = outcome(name, tmp_path)
        assert result.locked and not result.locked_in_history, name
        assert result.history_messages > 100  # weeks of 3 scans a day came first
        assert result.through < 50, name
        assert result.episode_messages == 600  # the rest was refused at MAIL FROM
        assert result.reason.startswith("auto-lock: ")


def test_erp_month_end_run_to_its_usual_customers_is_never_locked(tmp_path: Path) -> None:
    result = outcome("erp_month_end", tmp_path)
    assert not result.locked
    assert result.through == result.episode_messages == 20_000
    assert not any(key.endswith(":lock") for key in result.findings)


def test_slow_spammer_on_a_stolen_credential_is_locked_within_its_first_day(
    tmp_path: Path,
) -> None:
    result = outcome("slow_spammer", tmp_path)
    assert result.locked and not result.locked_in_history
    assert result.locked_at is not None and result.locked_at < 24 * HOUR
    assert "new recipient domains" in result.reason


def test_five_virus_or_dlp_refusals_in_ten_minutes_lock(tmp_path: Path) -> None:
    result = outcome("refusal_streak", tmp_path)
    assert result.locked and not result.locked_in_history
    assert result.through == 5  # locked by the fifth refusal
    assert result.locked_at is not None and result.locked_at <= 10 * MINUTE
    assert "refusal streak: 5 messages refused in 10 min" in result.reason
