"""DLP keyword dictionaries from files (`keywords_file`): read once when the configuration is
loaded, relative to it, every problem naming the config file, the key, the dictionary and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from relayguard.config import load_config, parse_config
from relayguard.core.errors import ConfigError
from relayguard.dlp.detectors import scan_text

pytestmark = pytest.mark.unit

CONFIG = """
[[sources]]
name = "erp"
sasl_users = ["erp"]
senders = ["@example.com"]
dlp_profile = "secrets"

[[dlp_detectors]]
name = "projects"
{detector}

[[dlp_profiles]]
name = "secrets"
detectors = {{ projects = 1 }}
action = "reject"
"""


def site(tmp_path: Path, detector: str, dictionary: bytes | None = None) -> Path:
    """A rules directory next to the config, as a site's repository deploys it."""
    if dictionary is not None:
        (tmp_path / "dlp").mkdir()
        (tmp_path / "dlp" / "projects.txt").write_bytes(dictionary)
    path = tmp_path / "relayguard.toml"
    path.write_text(CONFIG.format(detector=detector))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_config(path)
    return list(error.value.problems)


def test_keywords_from_a_file_relative_to_the_config(tmp_path: Path) -> None:
    dictionary = "\ufeff# code names\n\nProject Falcon\n  Überflieger  \r\nss#\nproject falcon\n"
    config = load_config(
        site(tmp_path, 'keywords_file = "dlp/projects.txt"', dictionary.encode("utf-8"))
    )
    detector = config.content.dlp.detectors["projects"]
    text = "re: PROJECT FALCON and überflieger, ss# 12; not falconry or code names"
    found = scan_text(text, [detector])["projects"]
    assert [m.value for m in found] == ["project falcon", "überflieger", "ss#"]


def test_absolute_path(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("falcon\n")
    config = load_config(site(tmp_path, f'keywords_file = "{words}"'))
    assert scan_text("the falcon", [config.content.dlp.detectors["projects"]])


def test_keywords_and_keywords_file_together_is_an_error(tmp_path: Path) -> None:
    path = site(tmp_path, 'keywords = ["x"]\nkeywords_file = "dlp/projects.txt"', b"falcon\n")
    assert (
        f"{path}: dlp_detectors[0].keywords_file: detector 'projects': give only one of"
        " 'pattern', 'keywords' or 'keywords_file'"
    ) in problems(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"falcon\neagle\n\xff\xfe hawk\n", "line 3: not UTF-8 (byte 1)"),
        (b"falcon\nea\x00gle\n", "line 2: control character U+0000"),
        (b"falcon\nea\tgle\n", "line 2: control character U+0009"),
        (b"# only a comment\n\n", ": no keywords (only blank lines and comments)"),
    ],
)
def test_bad_content_names_config_key_file_and_line(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = site(tmp_path, 'keywords_file = "dlp/projects.txt"', content)
    dictionary = tmp_path / "dlp" / "projects.txt"
    separator = "" if problem.startswith(":") else " "
    assert problems(path) == [
        f"{path}: dlp_detectors[0].keywords_file: detector 'projects': {dictionary}{separator}"
        + problem
    ]


def test_missing_file(tmp_path: Path) -> None:
    path = site(tmp_path, 'keywords_file = "dlp/nope.txt"')
    [problem] = problems(path)
    assert problem.startswith(
        f"{path}: dlp_detectors[0].keywords_file: detector 'projects': {tmp_path}/dlp/nope.txt:"
        " cannot read: No such file or directory"
    )


def test_other_keys_are_still_checked_in_the_first_pass(tmp_path: Path) -> None:
    path = site(tmp_path, 'keywords_file = "dlp/projects.txt"\nvalidator = "nope"', b"falcon\n")
    assert any(
        problem.startswith(f"{path}: dlp_detectors[0].validator: detector 'projects': unknown")
        for problem in problems(path)
    )


def test_an_unresolved_dictionary_never_scans_as_empty(tmp_path: Path) -> None:
    """parse_config alone (no I/O pass) leaves the dictionary unread: using it is loud."""
    config = parse_config(site(tmp_path, 'keywords_file = "dlp/projects.txt"', b"falcon\n"))
    with pytest.raises(RuntimeError, match="not read: config not resolved"):
        scan_text("falcon", [config.content.dlp.detectors["projects"]])
