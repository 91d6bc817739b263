"""The services that never sign (send API, console, unsubscribe endpoint) run as their own users,
who cannot read the DKIM private keys (0600, the milter's user): they load the configuration
without them, instead of refusing to start on a relay that signs."""

from __future__ import annotations

from pathlib import Path

import pytest

from relayguard.config import load_config
from relayguard.core.errors import ConfigError

pytestmark = pytest.mark.unit


def test_a_service_loads_the_configuration_without_the_private_keys(tmp_path: Path) -> None:
    path = tmp_path / "relayguard.toml"
    path.write_text(
        f'[dkim]\nkey_directory = "{tmp_path / "unreadable"}"\ndomains = ["example.com"]\n'
        '[[sources]]\nname = "a"\nsasl_users = ["a"]\nsenders = ["a@example.com"]\n'
    )
    with pytest.raises(ConfigError, match=r"dkim\.domains\[0\]"):
        load_config(path)  # the milter (and `relayguard check`) must see its keys
    config = load_config(path, signing_keys=False)
    assert config.dkim.domains == ("example.com",)
    assert dict(config.dkim.keys) == {}
