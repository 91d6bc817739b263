"""Rules as code (issue 15 item 2): the milter role deploys a site's rules directory only after
`relayguard rules check` and the site's `rules test --suite` passed on the relay.

The role's rules and config tasks run on this machine into a temp dir (tests/deploy/
render_rules.yml): a good set goes live behind the symlink and the rendered configuration reads
it; a second run changes nothing; a rule that does not compile, or a set that fails its own
suite, is refused with the rule's file and line and the previous set stays live.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.deploy.playbook import ROOT, VENV, milter_vars, run_playbook

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

CONTENT = ROOT / "tests" / "data" / "content"
DLP_TOML = """\
# The finance team's DLP rules: merged into relayguard.toml by the relayguard_milter role.
[[dlp_detectors]]
name = "badge_number"
pattern = 'EMP\\d{6}'
context = ["badge"]
context_window = 40

[[dlp_profiles]]
name = "pci"
detectors = { card_number = 3, badge_number = 1 }
action = "reject"
"""
# A detector whose keywords are a dictionary in the site's rules directory (relative path).
DICTIONARY_TOML = """
[[dlp_detectors]]
name = "projects"
keywords_file = "dictionaries/projects.txt"
ignore_case = true
"""
BROKEN_RULE = """
rule Broken_Rule {
  condition:
    filesize >
}
"""


def site_rules(root: Path) -> Path:
    """A site's rules directory: YARA files, dlp.toml and a `rules test` suite."""
    site = root / "site-rules"
    shutil.copytree(CONTENT / "yara", site / "yara")
    (site / "dlp.toml").write_text(DLP_TOML)
    shutil.copytree(CONTENT / "suite", site / "tests", ignore=shutil.ignore_patterns("*.toml"))
    shutil.copy(CONTENT / "suite" / "manifest.toml", site / "tests" / "manifest.toml")
    return site


def deploy(tmp_path: Path, site: Path) -> subprocess.CompletedProcess[str]:
    extra = {
        **milter_vars(tmp_path, config_file=tmp_path / "etc" / "relayguard.toml"),
        "relayguard_milter__rules_src": str(site),
        "relayguard_milter__rules_dir": str(tmp_path / "etc" / "rules"),
        "relayguard_milter__sources": [
            {"name": "billing", "sasl_users": ["billing"], "senders": ["@example.com"],
             "dlp_profile": "pci"},
        ],
    }  # fmt: skip
    return run_playbook("render_rules.yml", extra, tmp_path)


def releases(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "etc" / "rules.releases").iterdir())


def test_good_rules_go_live_and_a_broken_set_is_refused(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    site = site_rules(tmp_path)
    live = tmp_path / "etc" / "rules"

    first = deploy(tmp_path, site)
    assert first.returncode == 0, first.stdout[-4000:]
    assert live.is_symlink()
    good_release = os.readlink(live)
    assert (live / "yara" / "markers.yar").read_bytes() == (site / "yara/markers.yar").read_bytes()
    config = tomllib.loads((tmp_path / "etc" / "relayguard.toml").read_text())
    assert config["yara"]["rules_dir"] == f"{live}/yara"
    assert [d["name"] for d in config["dlp_detectors"]] == ["badge_number"]
    assert config["dlp_profiles"][0]["detectors"] == {"card_number": 3, "badge_number": 1}
    # The live configuration, through the symlink, passes the site's own suite.
    suite = subprocess.run(
        [str(VENV / "bin" / "relayguard"), "rules", "test", "--config",
         str(tmp_path / "etc" / "relayguard.toml"), "--suite", str(live / "tests")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert suite.returncode == 0 and "4 passed" in suite.stdout, suite.stdout + suite.stderr

    second = deploy(tmp_path, site)
    assert second.returncode == 0 and re.search(r"changed=0\b", second.stdout), second.stdout

    # A rule that does not compile: refused with the site's file and line, old set stays live.
    with (site / "yara" / "markers.yar").open("a") as rules:
        rules.write(BROKEN_RULE)
    broken_line = (site / "yara" / "markers.yar").read_text().count("\n")
    broken = deploy(tmp_path, site)
    assert broken.returncode != 0
    assert f"{site}/yara/markers.yar line {broken_line}" in broken.stdout, broken.stdout[-4000:]
    assert os.readlink(live) == good_release
    assert releases(tmp_path) == sorted(
        [Path(good_release).name, Path(good_release).name + ".toml"]
    )

    # Rules that compile but fail the site's suite: refused too, naming the failing sample.
    (site / "yara" / "markers.yar").write_text((CONTENT / "yara" / "markers.yar").read_text())
    manifest = (site / "tests" / "manifest.toml").read_text()
    (site / "tests" / "manifest.toml").write_text(
        manifest.replace('expect = "quarantine"', 'expect = "reject"')
    )
    failing = deploy(tmp_path, site)
    assert failing.returncode != 0
    assert "FAIL hold-marker.eml" in failing.stdout, failing.stdout[-4000:]
    assert os.readlink(live) == good_release

    # Two newer good sets: each goes live, the one it replaced stays, older ones are removed.
    (site / "tests" / "manifest.toml").write_text(manifest)
    for revision in ("second", "third"):
        (site / "dlp.toml").write_text(f"# {revision} revision\n{DLP_TOML}")
        previous = os.readlink(live)
        newer = deploy(tmp_path, site)
        assert newer.returncode == 0, newer.stdout[-4000:]
        assert os.readlink(live) != previous
        kept = [Path(os.readlink(live)).name, Path(previous).name]
        assert releases(tmp_path) == sorted(kept + [name + ".toml" for name in kept])


def test_dictionaries_go_with_the_rules_and_are_checked_before_the_switch(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    site = site_rules(tmp_path)
    (site / "dictionaries").mkdir()
    dictionary = site / "dictionaries" / "projects.txt"
    dictionary.write_text("# code names\nproject falcon\nproject osprey\n")
    (site / "dlp.toml").write_text(DLP_TOML + DICTIONARY_TOML)
    live = tmp_path / "etc" / "rules"

    first = deploy(tmp_path, site)
    assert first.returncode == 0, first.stdout[-4000:]
    good_release = os.readlink(live)
    assert (live / "dictionaries" / "projects.txt").read_bytes() == dictionary.read_bytes()
    config_file = tmp_path / "etc" / "relayguard.toml"
    detectors = tomllib.loads(config_file.read_text())["dlp_detectors"]
    projects = next(d for d in detectors if d["name"] == "projects")
    # Read through the live symlink (not next to relayguard.toml, where a relative path points).
    assert projects["keywords_file"] == f"{live}/dictionaries/projects.txt"
    check = subprocess.run(
        [str(VENV / "bin" / "relayguard"), "check", "--config", str(config_file)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr

    second = deploy(tmp_path, site)
    assert second.returncode == 0 and re.search(r"changed=0\b", second.stdout), second.stdout

    # A dictionary left empty: refused on the relay, naming the site's file; the old set stays.
    dictionary.write_text("# nothing yet\n")
    broken = deploy(tmp_path, site)
    assert broken.returncode != 0
    output = " ".join(broken.stdout.split())  # the play's output wraps long messages
    assert f"{site}/dictionaries/projects.txt: no keywords" in output, broken.stdout[-4000:]
    assert os.readlink(live) == good_release
