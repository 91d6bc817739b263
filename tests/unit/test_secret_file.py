"""One reader for every secret file: the Redis password ([state] redis_password_file) and the
send API's SASL password ([api] sasl_password_file) are refused the same way when other users
could read them, and read the same way (the first line, without its line ending)."""

from __future__ import annotations

from pathlib import Path

import pytest

from relayguard.core.secret_file import SecretFileError, read_secret_file
from relayguard.services.api import server

pytestmark = pytest.mark.unit

SECRET = "s3cret with inner space"


def secret_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "secret"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    "text", [SECRET, f"{SECRET}\n", f"{SECRET}\r\n", f"  {SECRET}\t\n", f"{SECRET}\nsecond line\n"]
)
def test_the_secret_is_the_first_line_without_its_ending(tmp_path: Path, text: str) -> None:
    assert read_secret_file(secret_file(tmp_path, text)) == SECRET


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o660, 0o400])
def test_owner_and_group_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    assert read_secret_file(secret_file(tmp_path, SECRET, mode)) == SECRET


@pytest.mark.parametrize("mode", [0o604, 0o644, 0o602, 0o601])
def test_any_right_for_other_users_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = secret_file(tmp_path, SECRET, mode)
    with pytest.raises(SecretFileError) as error:
        read_secret_file(path)
    assert str(error.value) == (
        f"{path}: every user may read or change it (mode {mode:04o}): chmod o-rwx {path}"
    )
    assert SECRET not in str(error.value)


@pytest.mark.parametrize("text", ["", "\n", "   \n", "\nsecret on the second line\n"])
def test_an_empty_first_line_is_refused(tmp_path: Path, text: str) -> None:
    path = secret_file(tmp_path, text)
    with pytest.raises(SecretFileError) as error:
        read_secret_file(path)
    assert str(error.value) == f"{path} is empty"


def test_a_missing_or_undecodable_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(SecretFileError) as error:
        read_secret_file(missing)
    assert str(error.value) == f"cannot read {missing}: No such file or directory"
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\n")
    binary.chmod(0o600)
    with pytest.raises(SecretFileError) as error:
        read_secret_file(binary)
    assert str(error.value).startswith(f"cannot read {binary}: 'utf-8' codec can't decode")


def test_api_serve_refuses_a_world_readable_sasl_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = secret_file(tmp_path, SECRET, 0o644)
    config = tmp_path / "relayguard.toml"
    config.write_text(
        f'[state]\npath = "{tmp_path / "state.sqlite3"}"\n'
        f'[api]\nsasl_user = "relayguard-api"\nsasl_password_file = "{password}"\n'
        '[[sources]]\nname = "erp"\nsasl_users = ["erp-device"]\nsenders = ["erp@example.com"]\n'
    )
    assert server.serve(str(config)) == 1
    error = capsys.readouterr().err
    assert error == (
        f"relayguard api serve: {config}: api.sasl_password_file: {password}: every user may"
        f" read or change it (mode 0644): chmod o-rwx {password}\n"
    )
