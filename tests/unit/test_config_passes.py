"""The two passes of the configuration: parse (no I/O) and resolve (users, DKIM keys, YARA rules),
the declarations behind them, and who may import config/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from relayguard import cli
from relayguard.config import load_config, parse_config, resolve
from relayguard.core.errors import ConfigError
from relayguard.core.verdict import Action
from relayguard.dkim import keys as dkim_keys

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).parents[2] / "milter" / "relayguard"
SOURCE = """
[[sources]]
name = "erp"
sasl_users = ["erp"]
senders = ["@example.com"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relayguard.toml"
    path.write_text(text + SOURCE)
    return path


def needs_io(tmp_path: Path, extra: str = "") -> Path:
    """Valid TOML whose users, keys and rules do not exist."""
    return write(
        tmp_path,
        f"""{extra}
[milter]
user = "no-such-user-x"
[dkim]
key_directory = "{tmp_path / "keys"}"
domains = ["example.com"]
[yara]
rules_dir = "missing-rules"
""",
    )


def test_parse_does_no_io_and_load_reports_both_passes_at_once(tmp_path: Path) -> None:
    config = parse_config(needs_io(tmp_path))
    assert config.dkim.keys == {}
    assert config.content.yara is not None
    assert config.content.yara.rules_dir == tmp_path / "missing-rules"
    with pytest.raises(RuntimeError, match="not compiled"):
        _ = config.content.yara.compiled
    path = needs_io(tmp_path, '[relay]\nmode = "loud"\n')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert [p.removeprefix(f"{path}: ").split(":")[0] for p in error.value.problems] == [
        "relay.mode",
        "milter.user",
        "dkim.domains[0]",
        "yara.rules_dir",
    ]


def test_resolve_loads_keys_and_compiles_rules(tmp_path: Path) -> None:
    dkim_keys.generate(tmp_path / "keys", "example.com", "s1", "ed25519")
    (tmp_path / "missing-rules").mkdir()
    (tmp_path / "missing-rules" / "r.yar").write_text("rule r { condition: true }")
    text = needs_io(tmp_path).read_text().replace('user = "no-such-user-x"', "")
    parsed = parse_config(write(tmp_path, text.replace(SOURCE, "")))
    resolved = resolve(parsed)
    assert [key.selector for key in resolved.dkim.keys["example.com"]] == ["s1"]
    assert resolved.content.yara is not None
    assert [rule.name for rule in resolved.content.yara.compiled.info] == ["r:r"]
    assert parsed.dkim.keys == {}  # the parsed snapshot is unchanged


def test_dkim_commands_read_the_declared_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """They used to re-read the raw TOML with their own defaults: a bad value was a traceback."""
    path = write(tmp_path, '[dkim]\ngrace_days = "seven"\nkey_directory = "keys"\n')
    assert cli.main(["dkim", "dns", "--config", str(path), "--domain", "example.com"]) == 1
    err = capsys.readouterr().err
    assert f"{path}: dkim.grace_days: expected an integer, got string" in err
    assert f"{path}: dkim.key_directory: must be an absolute path, got 'keys'" in err


def test_dkim_generate_works_before_the_key_exists(tmp_path: Path) -> None:
    """The configuration names a domain with no key yet: loading it would refuse it, parsing not."""
    keys = tmp_path / "keys"
    path = write(tmp_path, f'[dkim]\nkey_directory = "{keys}"\ndomains = ["example.com"]\n')
    argv = ["dkim", "generate", "--config", str(path), "--domain", "example.com"]
    assert cli.main([*argv, "--selector", "s1", "--algorithm", "ed25519", "--user", ""]) == 0
    assert [k.selector for k in load_config(path).dkim.keys["example.com"]] == ["s1"]


def test_nested_tables_are_read_from_their_declarations(tmp_path: Path) -> None:
    text = SOURCE + "rate_limits = { messages_per_hour = 0, colour = 1, bytes_per_day = 'x' }\n"
    path = tmp_path / "c.toml"
    path.write_text("[state]\n" + text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert [p.removeprefix(f"{path}: ") for p in error.value.problems] == [
        "sources[0].rate_limits.colour: unknown key",
        "sources[0].rate_limits.messages_per_hour: must be between 1 and 9007199254740992, got 0",
        "sources[0].rate_limits.bytes_per_day: expected an integer, got string",
    ]


def test_one_map_from_action_names() -> None:
    assert [Action.named(action.label) for action in Action] == list(Action)
    with pytest.raises(KeyError):
        Action.named("drop")


def imports_of(directory: Path) -> set[str]:
    found = set()
    for path in directory.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


def test_config_imports_only_lower_layers_and_state_not_config() -> None:
    upper = ("checks", "transforms", "engine", "daemon", "services", "cli", "metrics")
    assert {
        name
        for name in imports_of(PACKAGE / "config")
        if name.startswith(tuple(f"relayguard.{layer}" for layer in upper))
    } == set()
    assert {n for n in imports_of(PACKAGE / "state") if n.startswith("relayguard.config")} == set()
