"""Content-scanning configuration: located errors, YARA compile errors, reload keeps the rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from relayguard.config import load_config
from relayguard.core.errors import ConfigError
from relayguard.core.verdict import Action
from relayguard.engine.audit import AuditLog
from relayguard.engine.runtime import Runtime, RuntimeHolder

pytestmark = pytest.mark.unit

SOURCE = """
[[sources]]
name = "erp"
sasl_users = ["erp"]
senders = ["@example.com"]
{extra}
"""


def write(tmp_path: Path, text: str, extra: str = "") -> Path:
    path = tmp_path / "relayguard.toml"
    path.write_text(SOURCE.format(extra=extra) + text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_config(path)
    return [p.split(": ", 1)[1] for p in error.value.problems]


def rules(tmp_path: Path, text: str, name: str = "local.yar") -> Path:
    directory = tmp_path / "yara"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text)
    return directory


def test_defaults_without_content_sections(tmp_path: Path) -> None:
    content = load_config(write(tmp_path, "")).content
    assert (content.clamav, content.yara, content.urls) == (None, None, None)
    assert content.limit_action is Action.QUARANTINE
    assert not content.walks_content


def test_full_content_configuration(tmp_path: Path) -> None:
    directory = rules(tmp_path, 'rule r { meta: action = "tag" condition: true }')
    config = load_config(
        write(
            tmp_path,
            f"""
[content]
max_depth = 5
max_parts = 200
max_decoded_bytes = 1048576
max_archive_members = 10
max_expansion_ratio = 20
limit_action = "reject"
encrypted_action = "tag"

[clamav]
socket = "inet:3310@127.0.0.1"
timeout = 5
failure_action = "quarantine"

[yara]
rules_dir = "{directory}"
default_action = "quarantine"
timeout = 3

[dlp]
default_profile = "pci"
unreadable_action = "quarantine"

[[dlp_detectors]]
name = "badge"
pattern = 'EMP\\d{{6}}'
context = ["badge"]
context_window = 20
ignore_case = true

[[dlp_profiles]]
name = "pci"
detectors = {{ card_number = 2, badge = 1 }}
match = "all"
action = "encrypt-route"

[urls]
nameservers = ["127.0.0.1", "::1"]
port = 5353
timeout = 1
failure_action = "tempfail"
max_domains = 5

[[url_blocklists]]
zone = "dbl.example.net"
action = "tag"
codes = ["127.0.1.2"]
""",
        )
    )
    content = config.content
    assert (content.limits.max_depth, content.limits.max_decoded_bytes) == (5, 1048576)
    assert (content.limit_action, content.encrypted_action) == (Action.REJECT, Action.TAG)
    assert content.clamav is not None and content.clamav.failure_action is Action.QUARANTINE
    assert content.yara is not None and content.yara.compiled.info[0].name == "local:r"
    assert content.dlp.profile_for(config.source("erp")).name == "pci"  # type: ignore[union-attr]
    assert content.urls is not None and content.urls.blocklists[0].codes == {"127.0.1.2"}
    assert content.walks_content


def test_yara_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    directory = rules(tmp_path, "rule ok { condition: true }\n\nrule bad {\n condition: nope\n}\n")
    found = problems(write(tmp_path, f'[yara]\nrules_dir = "{directory}"\n'))
    assert found == [f'yara.rules_dir: {directory}/local.yar line 4: undefined identifier "nope"']


def test_yara_bad_meta_action_and_missing_directory(tmp_path: Path) -> None:
    directory = rules(tmp_path, 'rule r { meta: action = "drop" condition: true }')
    assert problems(write(tmp_path, f'[yara]\nrules_dir = "{directory}"\n')) == [
        f"yara.rules_dir: {directory}/local.yar: rule r: meta action 'drop' is not one of"
        " reject, quarantine, tag"
    ]
    assert problems(write(tmp_path, '[yara]\nrules_dir = "/nonexistent/yara"\n')) == [
        "yara.rules_dir: /nonexistent/yara: not a directory"
    ]


def test_dangling_references_and_bad_values(tmp_path: Path) -> None:
    found = problems(
        write(
            tmp_path,
            """
[clamav]
socket = "tcp://localhost"

[dlp]
default_profile = "nope"

[[dlp_detectors]]
name = "Bad Name"
pattern = "x"

[[dlp_detectors]]
name = "broken"
pattern = "("

[[dlp_profiles]]
name = "p"
detectors = { card_number = 0, unknown = 1 }
action = "shred"

[[url_blocklists]]
zone = "not a zone"
""",
            extra='dlp_profile = "missing"',
        )
    )
    assert "sources[0].dlp_profile: no [[dlp_profiles]] named 'missing'" in found
    assert "dlp.default_profile: no [[dlp_profiles]] named 'nope'" in found
    assert (
        "clamav.socket: 'tcp://localhost' is not 'unix:/absolute/path' or 'inet:PORT@HOST'" in found
    )
    assert "dlp_detectors[0].name: 'Bad Name' must be 1-64 of a-z 0-9 _ (letter first)" in found
    assert any(
        p.startswith("dlp_detectors[1].pattern: detector 'broken': invalid regular") for p in found
    )
    assert "dlp_profiles[0].detectors.card_number: expected a count of at least 1" in found
    assert "dlp_profiles[0].detectors.unknown: no such detector" in found
    assert any(p.startswith("dlp_profiles[0].action: must be one of") for p in found)
    assert "url_blocklists[0].zone: 'not a zone' is not a DNS zone name" in found


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    found = problems(write(tmp_path, '[clamav]\nsocket = "unix:/x"\nsocekt_timeout = 3\n'))
    assert found == ["clamav.socekt_timeout: unknown key"]


def test_reload_with_a_broken_rule_keeps_the_running_rules(tmp_path: Path) -> None:
    directory = rules(tmp_path, 'rule first { strings: $a = "A1" condition: $a }')
    path = write(tmp_path, f'[yara]\nrules_dir = "{directory}"\n')
    holder = RuntimeHolder(path, Runtime.build(load_config(path), AuditLog(None)))
    (directory / "local.yar").write_text("rule first { condition: broken }")
    assert holder.reload() is False
    yara = holder.current.config.content.yara
    assert yara is not None and [r.name for r in yara.compiled.info] == ["local:first"]
    (directory / "local.yar").write_text('rule second { strings: $a = "B2" condition: $a }')
    assert holder.reload() is True
    yara = holder.current.config.content.yara
    assert yara is not None and [r.name for r in yara.compiled.info] == ["local:second"]


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(\\d)\\1", "invalid escape sequence: \\1"),  # a backreference
        (r"(?<!\\w)ACC\\d+", "invalid perl operator: (?<"),  # a lookbehind
        (r"ACC\\d+(?=X)", "invalid perl operator: (?="),  # a lookahead
    ],
)
def test_custom_pattern_the_linear_engine_cannot_run_is_a_located_error(
    tmp_path: Path, pattern: str, reason: str
) -> None:
    path = write(
        tmp_path,
        f'[[dlp_detectors]]\nname = "fine"\nkeywords = ["x"]\n\n'
        f'[[dlp_detectors]]\nname = "account"\npattern = "{pattern}"\n',
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert len(error.value.problems) == 1, error.value.problems
    problem = error.value.problems[0]
    assert problem.startswith(f"{path}: dlp_detectors[1].pattern: detector 'account': ")
    assert "not supported by the linear-time (RE2) engine" in problem
    assert reason in problem
