"""[state] redis_password_file: the Redis password lives in its own file (0640 root:relayguard,
written by the milter role with no_log), not in relayguard.toml, so that the configuration can be
shown (`ansible-playbook --diff`, `relayguard check`, support tickets) without the secret.

Read once by the resolve pass; a world-readable file, a missing one, an empty one, and a password
both in the URL and in a file are configuration errors naming the file and the key. A real
redis-server with requirepass answers a store opened with the password from the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.redis_server import RedisServer

from relayguard.config import load_config
from relayguard.core.errors import ConfigError
from relayguard.state.factory import open_store

pytestmark = pytest.mark.unit

PASSWORD = "a-redis-password-0123456789abcdef"
SOURCE = '[[sources]]\nname = "a"\nsasl_users = ["a"]\nsenders = ["a@example.com"]\n'


def write(tmp_path: Path, state: str) -> Path:
    path = tmp_path / "relayguard.toml"
    path.write_text(f'[state]\nbackend = "redis"\n{state}\n{SOURCE}')
    return path


def password_file(tmp_path: Path, text: str = PASSWORD + "\n", mode: int = 0o640) -> Path:
    path = tmp_path / "redis.password"
    path.write_text(text)
    path.chmod(mode)
    return path


def problems(path: Path) -> str:
    with pytest.raises(ConfigError) as error:
        load_config(path)
    return str(error.value)


def test_the_password_is_read_once_and_never_shown(tmp_path: Path) -> None:
    secret = password_file(tmp_path)
    config = load_config(write(tmp_path, f'redis_password_file = "{secret}"'))
    assert config.state is not None
    assert config.state.redis_password == PASSWORD  # the trailing newline is not part of it
    assert PASSWORD not in repr(config.state) and PASSWORD not in repr(config)


def test_a_world_readable_password_file_is_refused(tmp_path: Path) -> None:
    secret = password_file(tmp_path, mode=0o644)
    path = write(tmp_path, f'redis_password_file = "{secret}"')
    assert (
        f"{path}: state.redis_password_file: {secret}: every user may read or change it"
        f" (mode 0644): chmod o-rwx {secret}"
    ) in problems(path)


def test_a_missing_or_empty_password_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.password"
    path = write(tmp_path, f'redis_password_file = "{missing}"')
    assert f"{path}: state.redis_password_file: cannot read {missing}:" in problems(path)
    empty = password_file(tmp_path, text="\n")
    path = write(tmp_path, f'redis_password_file = "{empty}"')
    assert f"{path}: state.redis_password_file: {empty} is empty" in problems(path)


@pytest.mark.parametrize(
    "url",
    ["redis://:inline@127.0.0.1:6379/0", "redis://127.0.0.1:6379/0?password=inline"],
)
def test_a_password_in_the_url_and_a_file_exclude_each_other(tmp_path: Path, url: str) -> None:
    secret = password_file(tmp_path)
    path = write(tmp_path, f'redis_url = "{url}"\nredis_password_file = "{secret}"')
    text = problems(path)
    assert (
        "state.redis_password_file: the password is given twice (in state.redis_url too):"
        " keep only the file" in text
    )
    assert "inline" not in text


def test_the_password_file_is_for_redis_only(tmp_path: Path) -> None:
    secret = password_file(tmp_path)
    path = tmp_path / "sqlite.toml"
    path.write_text(f'[state]\nredis_password_file = "{secret}"\n{SOURCE}')
    assert 'state.redis_password_file: only used with backend = "redis"' in problems(path)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    with RedisServer(directory, password=PASSWORD) as server:
        yield server


def test_a_store_opened_with_the_file_authenticates(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    secret = password_file(tmp_path)
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    config = load_config(write(tmp_path, f'redis_url = "{url}"\nredis_password_file = "{secret}"'))
    assert config.state is not None
    store = open_store(config.state)
    store.disable("a", "stolen password", actor="test", now=1.0)
    assert store.disabled("a") is not None
