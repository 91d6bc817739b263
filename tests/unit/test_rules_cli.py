"""The rules workbench: `relayguard rules check | test`, and the suite mode for CI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relayguard.cli import main

pytestmark = pytest.mark.unit

SUITE = Path(__file__).parents[1] / "data" / "content" / "suite"
CONFIG = SUITE / "relayguard.toml"


def test_rules_check_lists_rules_detectors_and_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", "--config", str(CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "YARA: 5 rule(s) in 2 file(s)" in out
    assert "  markers:Block_Marker: reject" in out
    assert "  attachments:Executable_In_Archive: reject (default)" in out
    assert "  profile pci: any of card_number>=3 -> reject; used by billing" in out
    assert out.rstrip().endswith("OK")


def test_rules_check_reports_a_broken_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(SUITE.parent / "yara", tmp_path / "yara")
    (tmp_path / "yara" / "new.yar").write_text("rule new {\n  condition: filesize <\n}\n")
    (tmp_path / "suite").mkdir()
    config = tmp_path / "suite" / "relayguard.toml"
    config.write_text(CONFIG.read_text())
    assert main(["rules", "check", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"yara.rules_dir: {tmp_path}/yara/new.yar line 3: syntax error" in err


def test_rules_test_shows_hits_per_part_without_the_data(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sample = SUITE / "cards-export.eml"
    assert main(["rules", "test", "--config", str(CONFIG), "--source", "billing", str(sample)]) == 0
    out = capsys.readouterr().out
    assert f"{sample}: reject (source billing)" in out
    assert "dlp          reject     DLP profile pci matched: card_number=3" in out
    assert "part 2 (cards.csv): dlp:card_number=3" in out
    assert "4111" not in out


def test_rules_test_show_matches_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    sample = SUITE / "cards-export.eml"
    args = ["rules", "test", "--config", str(CONFIG), str(sample), "--show-matches", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["action"] == "accept"  # no --source: no DLP profile applies
    assert result["dlp_counts"] == {"card_number": 3}
    assert {m["value"] for m in result["matches"]} == {
        "4111111111111111",
        "5500000000000004",
        "378282246310005",
    }


def test_suite_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "test", "--config", str(CONFIG), "--suite", str(SUITE)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "4 passed, 0 failed"


def test_suite_failure_says_what_differs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for sample in SUITE.glob("*.eml"):
        shutil.copy(sample, tmp_path)
    (tmp_path / "manifest.toml").write_text(
        '[[samples]]\nfile = "hold-marker.eml"\nexpect = "reject"\nrules = ["markers:Other"]\n'
        '[[samples]]\nfile = "cards-export.eml"\nsource = "billing"\nexpect = "reject"\n'
        "detectors = { card_number = 2 }\n"
        '[[samples]]\nfile = "missing.eml"\nexpect = "accept"\n'
    )
    assert main(["rules", "test", "--config", str(CONFIG), "--suite", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL hold-marker.eml" in out
    assert "expected reject, got quarantine (yara: YARA rule markers:Hold_Marker matched" in out
    assert "YARA rules: expected ['markers:Other'], got ['markers:Hold_Marker']" in out
    assert "detector card_number: expected 2, got 3" in out
    assert "FAIL missing.eml" in out
    assert out.splitlines()[-1] == "0 passed, 3 failed"


ACCOUNT_CONFIG = """
[[sources]]
name = "billing"
sasl_users = ["billing"]
senders = ["@example.com"]
dlp_profile = "accounts"

[[dlp_detectors]]
name = "account"
pattern = '{pattern}'

[[dlp_profiles]]
name = "accounts"
detectors = {{ account = 1 }}
action = "reject"
"""


def test_rules_check_and_test_run_custom_patterns_on_re2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A nested-quantifier pattern and a hostile text: the workbench answers at once (in a child
    process, so that a backtracking regression fails on the timeout instead of hanging)."""
    config = tmp_path / "relayguard.toml"
    config.write_text(ACCOUNT_CONFIG.format(pattern=r"ACC(\d+\s?)+X"))
    sample = tmp_path / "accounts.eml"
    hostile = "ACC" + "1" * 40 + "!"
    sample.write_text(
        "From: billing@example.com\nTo: a@example.org\nSubject: accounts\n\n"
        f"{hostile}\nnew account ACC12 34X\n"
    )
    assert main(["rules", "check", "--config", str(config)]) == 0
    assert "  detector account: custom pattern" in capsys.readouterr().out
    args = ["rules", "test", "--config", config, "--source", "billing", sample, "--show-matches"]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "relayguard.cli", *map(str, args), "--json"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("rules test did not finish within 20 s: catastrophic backtracking")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)[0]
    assert result["action"] == "reject"
    assert result["dlp_counts"] == {"account": 1}
    assert [m["value"] for m in result["matches"]] == ["acc12 34x"]


def test_rules_check_names_a_pattern_re2_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relayguard.toml"
    config.write_text(ACCOUNT_CONFIG.format(pattern=r"(?<![\w])ACC\d+"))
    assert main(["rules", "check", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert (
        f"{config}: dlp_detectors[0].pattern: detector 'account': not supported by the"
        " linear-time (RE2) engine: invalid perl operator: (?<!"
    ) in err
