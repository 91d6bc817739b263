"""Every setting through the milter role (issue 15 item 1): the configuration is YAML mirroring
the TOML, arrays of tables included, written by a TOML library and checked by `relayguard check`.

The role's config task renders, on this machine into a temp dir, the commented example of
ansible/vars/site.yml (every feature: YARA, DLP with a custom detector, URL block lists, state,
rate limits, metrics, unsubscribe, spam, anomaly, outbound paths) together with the individual
variables; a second run changes nothing. The argument specs allow what the configuration allows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from relayguard.config.declare import ERROR_ACTIONS, FAILURE_ACTIONS
from tests.deploy.playbook import ROOT, render_config, rendered_config

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

ROLE = ROOT / "ansible" / "roles" / "relayguard_milter"
SITE_VARS = ROOT / "ansible" / "vars" / "site.yml"


def site_example() -> dict[str, Any]:
    """The commented `relayguard_milter__config` example of ansible/vars/site.yml, uncommented."""
    text = SITE_VARS.read_text()
    block = text.split("# BEGIN relayguard_milter__config example\n")[1]
    block = block.split("# END relayguard_milter__config example")[0]
    example = yaml.safe_load(re.sub(r"(?m)^# ?", "", block))
    assert isinstance(example, dict)
    return example


def test_every_feature_of_the_site_example_renders_and_passes_relayguard_check(
    tmp_path: Path,
) -> None:
    example = site_example()
    config = example["relayguard_milter__config"]
    # This machine's paths instead of the relay's; a literal secret instead of the file lookup.
    config["yara"]["rules_dir"] = str(ROOT / "tests" / "data" / "content" / "yara")
    config["state"]["path"] = str(tmp_path / "state.sqlite3")
    config["unsubscribe"]["secrets"] = ["a-test-secret-of-32-characters!!"]
    variables = {
        **example,
        "relayguard_milter__demo_user": "demo-device",
        "relayguard_milter__demo_sender": "demo-device@example.com",
        "relayguard_milter__clamav_socket": "/run/clamd.sock",
        "relayguard_milter__clamav_failure_action": "quarantine",
        "relayguard_milter__spam_quarantine_score": None,
    }

    first = render_config(tmp_path, variables)
    assert first.returncode == 0, first.stdout[-4000:]
    rendered = rendered_config(tmp_path)
    assert [p["name"] for p in rendered["dlp_profiles"]] == ["finance"]
    assert [d["name"] for d in rendered["dlp_detectors"]] == ["badge_number", "project_names"]
    assert rendered["dlp_detectors"][0]["pattern"] == r"EMP\d{6}"
    assert [b["zone"] for b in rendered["url_blocklists"]] == [
        "dbl.example.net",
        "uribl.example.org",
    ]
    assert rendered["spam_policies"][0]["quarantine_score"] == 6.0
    assert rendered["anomaly"]["volume"] == {"action": "lock", "min_recipients": 100}
    assert rendered["anomaly_overrides"] == [
        {"sources": ["erp"], "volume": {"min_recipients": 5000}}
    ]
    assert rendered["outbound_paths"][0]["name"] == "bulk"
    assert rendered["metrics"]["port"] == 9489 and rendered["state"]["backend"] == "sqlite"
    # The individual variables are still read, and merged with the structured configuration.
    assert [s["name"] for s in rendered["sources"]] == ["demo-device", "erp", "newsletter"]
    assert rendered["sources"][1]["rate_limits"] == {"messages_per_hour": 2000,
                                                      "recipients_per_day": 50000}  # fmt: skip
    assert rendered["clamav"] == {"socket": "unix:/run/clamd.sock", "timeout": 30,
                                  "failure_action": "quarantine"}  # fmt: skip
    assert "quarantine_score" not in rendered["spam"]  # null leaves the key out
    assert rendered["milter"]["workers"] == 2 and rendered["relay"]["mode"] == "enforce"

    second = render_config(tmp_path, variables)
    assert second.returncode == 0 and re.search(r"changed=0\b", second.stdout), second.stdout


def test_a_configuration_relayguard_check_refuses_is_not_written(tmp_path: Path) -> None:
    bad = {"relayguard_milter__config": {"dlp_profiles": [{"name": "x", "detectors": {"nope": 1}}]}}
    result = render_config(tmp_path, bad)
    assert result.returncode != 0
    assert "dlp_profiles[0]" in result.stdout, result.stdout[-3000:]
    assert not (tmp_path / "relayguard.toml").exists()


def spec_choices(name: str) -> set[str]:
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    return set(specs["argument_specs"]["main"]["options"][name]["choices"])


def test_argument_specs_allow_what_the_configuration_allows() -> None:
    failure = {action.label for action in FAILURE_ACTIONS}
    assert spec_choices("relayguard_milter__clamav_failure_action") == failure
    assert spec_choices("relayguard_milter__spam_failure_action") == failure
    assert spec_choices("relayguard_milter__error_action") == {a.label for a in ERROR_ACTIONS}
