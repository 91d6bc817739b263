"""Starting `relayguard api serve`: read the config, the API's SASL password, and serve."""

from __future__ import annotations

import sys

from relayguard.config import load_config
from relayguard.core.secret_file import SecretFileError, read_secret_file
from relayguard.services.api.app import SendApi
from relayguard.services.api.handoff import Handoff, Relay
from relayguard.services.http import Listener, listener_problem, reload_on_sighup, serve_asgi
from relayguard.state.factory import open_store


def serve(config_path: str) -> int:
    config = load_config(config_path, signing_keys=False)  # the milter signs, not the API
    settings = config.api
    if settings is None or config.state is None:
        print("relayguard api serve: the config needs [api] and [state]", file=sys.stderr)
        return 1
    listener = Listener(settings.address, settings.port, settings.tls_certificate, settings.tls_key)
    problem = listener_problem(listener)
    if problem:
        print(f"relayguard api serve: {config.path}: api: {problem}", file=sys.stderr)
        return 1
    assert settings.sasl_password_file is not None
    try:
        password = read_secret_file(settings.sasl_password_file)
    except SecretFileError as exc:
        print(
            f"relayguard api serve: {config.path}: api.sasl_password_file: {exc}", file=sys.stderr
        )
        return 1
    relay = Relay(
        settings.relay_host,
        settings.relay_port,
        settings.sasl_user,
        password,
        float(settings.timeout),
        settings.connections,
    )
    api = SendApi(config, open_store(config.state), Handoff(relay))
    reload_on_sighup(config_path, api.reload)
    serve_asgi(api.app(), listener)
    return 0
