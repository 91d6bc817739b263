"""Key files, their checks at configuration load, and their DNS records."""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path

import pytest

from relayguard import cli
from relayguard.config import load_config
from relayguard.core.errors import ConfigError
from relayguard.dkim import keys as dkim_keys

pytestmark = pytest.mark.unit

CONFIG = """
[milter]
user = "{user}"
[dkim]
key_directory = "{keys}"
domains = ["example.com"]
[[sources]]
name = "printer"
sasl_users = ["printer"]
senders = ["@example.com"]
"""


def write(tmp_path: Path, keys: Path, user: str = "") -> Path:
    path = tmp_path / "relayguard.toml"
    path.write_text(CONFIG.format(keys=keys, user=user))
    return path


def test_generated_key_is_0600_and_loads(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    entry = dkim_keys.generate(keys, "example.com", "s1", "rsa", 2048)
    path = dkim_keys.key_path(keys, "example.com", "s1")
    assert (entry.status, path.stat().st_mode & 0o777) == ("active", 0o600)
    assert (keys / "example.com").stat().st_mode & 0o777 == 0o700
    config = load_config(write(tmp_path, keys))
    (key,) = config.dkim.keys["example.com"]
    assert (key.selector, key.algorithm) == ("s1", "rsa")
    assert "PRIVATE" not in repr(key)  # key material never in a log line or traceback


def test_second_key_of_an_algorithm_is_pending(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    dkim_keys.generate(keys, "example.com", "a", "ed25519")
    assert dkim_keys.generate(keys, "example.com", "b", "ed25519").status == "pending"
    with pytest.raises(dkim_keys.DkimKeyError, match="exists already"):
        dkim_keys.generate(keys, "example.com", "b", "ed25519")
    with pytest.raises(dkim_keys.DkimKeyError, match="at least 2048 bits"):
        dkim_keys.generate(keys, "example.com", "c", "rsa", 1024)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.chmod(0o640), "mode 0640 lets others read the private key"),
        (lambda p: p.chmod(0o604), "mode 0604 lets others read the private key"),
        (lambda p: p.unlink(), "key file missing (selector s1)"),
        (lambda p: p.write_bytes(b"garbage"), "not a usable PEM private key"),
    ],
)
def test_bad_key_is_a_located_config_error(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    keys = tmp_path / "keys"
    dkim_keys.generate(keys, "example.com", "s1", "ed25519")
    path = dkim_keys.key_path(keys, "example.com", "s1")
    damage(path)
    config = write(tmp_path, keys)
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert any(str(path) in p and message in p for p in error.value.problems), error.value


def test_key_not_owned_by_the_milter_user_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    dkim_keys.generate(keys, "example.com", "s1", "ed25519")
    owner = pwd.getpwuid(os.geteuid()).pw_name
    other = "nobody" if owner != "nobody" else "daemon"
    with pytest.raises(ConfigError, match=f"not by the milter user {other}"):
        load_config(write(tmp_path, keys, other))


def test_domain_without_active_key_tells_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=re.escape("run relayguard dkim generate --domain example.com")
    ):
        load_config(write(tmp_path, tmp_path / "empty"))


def test_check_command_fails_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    dkim_keys.generate(keys, "example.com", "s1", "rsa")
    path = dkim_keys.key_path(keys, "example.com", "s1")
    path.chmod(0o000)
    config = write(tmp_path, keys)
    assert cli.main(["check", "--config", str(config)]) == 1
    assert f"{path}: unreadable (mode 0000)" in capsys.readouterr().err


def test_dns_record_is_split_into_255_octet_strings(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    dkim_keys.generate(keys, "example.com", "big", "rsa", 4096)
    (key,) = dkim_keys.load_keys(keys, "example.com")
    text = dkim_keys.record_text(key)
    parts = dkim_keys.txt_strings(text)
    assert len(parts) > 2 and all(len(p) <= 255 for p in parts) and "".join(parts) == text
    line = dkim_keys.zone_line(key)
    assert line.startswith('big._domainkey.example.com. 3600 IN TXT ( "v=DKIM1; k=rsa; p=')
