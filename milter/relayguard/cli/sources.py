"""`relayguard sources disable|enable|disabled`: the kill switch, from the command line.

A change is written to the state store (so every milter process and node sharing it refuses or
admits the source from its next MAIL FROM on) and then audited in the relay's audit log with who
ran the command and why.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from relayguard.config import Config, load_config
from relayguard.core.errors import AuditError
from relayguard.engine.audit import AuditLog, now
from relayguard.state import StateStore, StateUnavailable
from relayguard.state.factory import open_store

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_source_commands(commands: Subcommands) -> None:
    """Registers under `relayguard sources`."""
    disable = commands.add_parser("disable", help="kill switch: refuse a source at once")
    disable.add_argument("name", help="the source's name")
    disable.add_argument("--reason", required=True, help="why (shown in the 550 reply)")
    _config_arg(disable)
    disable.set_defaults(handler=_disable)
    enable = commands.add_parser("enable", help="let a disabled source send again")
    enable.add_argument("name", help="the source's name")
    enable.add_argument("--reason", default="", help="why (audited)")
    _config_arg(enable)
    enable.set_defaults(handler=_enable)
    listing = commands.add_parser("disabled", help="list disabled sources")
    _config_arg(listing)
    listing.set_defaults(handler=_list)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="the relayguard.toml")


def invoking_user() -> str:
    """Who ran the command: the login behind sudo when there is one."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (sudo as {user})" if sudo and sudo != user else user


def _store(config: Config) -> StateStore | None:
    if config.state is None:
        print(f"{config.path}: no [state] section: the kill switch needs one", file=sys.stderr)
        return None
    return open_store(config.state)


def _known(config: Config, name: str) -> bool:
    if config.source(name) is None:
        known = ", ".join(s.name for s in config.sources)
        print(f"no source {name!r} in {config.path} (known: {known})", file=sys.stderr)
        return False
    return True


def _audit(config: Config, event: str, name: str, actor: str, reason: str) -> int:
    record: dict[str, Any] = {
        "time": now(),
        "stage": "admin",
        "event": event,
        "source": name,
        "actor": actor,
        "reason": reason,
    }
    try:
        AuditLog(config.relay.audit_log).write(record)
    except AuditError as exc:
        print(f"done, but NOT audited: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _disable(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = _store(config)
    if store is None or not _known(config, args.name):
        return EXIT_USAGE
    reason = " ".join(args.reason.split())
    if not reason:
        print("--reason must say why", file=sys.stderr)
        return EXIT_USAGE
    actor = invoking_user()
    try:
        store.disable(args.name, reason, actor, time.time())
    except StateUnavailable as exc:
        print(f"not disabled: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        store.close()
    # The kill switch is binding in monitor mode too (checks/killswitch.py).
    print(f"source {args.name} disabled by {actor}: {reason}")
    return _audit(config, "source_disabled", args.name, actor, reason)


def _enable(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = _store(config)
    if store is None or not _known(config, args.name):
        return EXIT_USAGE
    actor = invoking_user()
    try:
        changed = store.enable(args.name, actor)
    except StateUnavailable as exc:
        print(f"not enabled: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        store.close()
    if not changed:
        print(f"source {args.name} was not disabled")
        return EXIT_OK
    print(f"source {args.name} enabled by {actor}")
    return _audit(config, "source_enabled", args.name, actor, " ".join(args.reason.split()))


def _list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = _store(config)
    if store is None:
        return EXIT_USAGE
    try:
        entries = store.all_disabled()
    except StateUnavailable as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    finally:
        store.close()
    for entry in entries:
        since = datetime.fromtimestamp(entry.since, UTC).isoformat(timespec="seconds")
        print(f"{entry.source}  disabled since {since} by {entry.actor}: {entry.reason}")
    return EXIT_OK
