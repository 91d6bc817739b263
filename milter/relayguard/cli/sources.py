"""`relayguard sources list|disable|enable|disabled`: the sources, and the kill switch.

The work (state store, then an audit line with who ran the command and why) is engine/admin.py,
which the console shares.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from relayguard.cli import add_config_arg
from relayguard.config import load_config
from relayguard.engine.admin import (
    AdminError,
    NotAudited,
    disable_source,
    disabled_sources,
    enable_source,
)
from relayguard.state import Disabled

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="sources_command", required=True)
    listing = commands.add_parser("list", help="list sources and how they are identified")
    add_config_arg(listing)
    listing.add_argument("--json", action="store_true", help="one JSON array")
    listing.set_defaults(handler=_sources_list)
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


def _sources_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    rows: list[dict[str, Any]] = [
        {
            "name": s.name,
            "mode": config.mode_for(s).value,
            "sasl_users": list(s.sasl_users),
            "client_cert_subjects": list(s.client_cert_subjects),
            "networks": [str(n) for n in s.networks],
            "senders": sorted(s.senders.addresses) + sorted("@" + d for d in s.senders.domains),
            "recipients": sorted(s.recipients.addresses)
            + sorted("@" + d for d in s.recipients.domains),
            "max_recipients": s.max_recipients,
        }
        for s in config.sources
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for row in rows:
        identified = ", ".join(
            [f"sasl:{u}" for u in row["sasl_users"]]
            + [f"cert:{c}" for c in row["client_cert_subjects"]]
            + [f"net:{n}" for n in row["networks"]]
        )
        print(f"{row['name']}  [{row['mode']}]  by {identified}")
        print(f"    senders: {', '.join(row['senders'])}")
        if row["recipients"]:
            print(f"    recipients: {', '.join(row['recipients'])}")
    return EXIT_OK


def invoking_user() -> str:
    """Who ran the command: the login behind sudo when there is one."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (sudo as {user})" if sudo and sudo != user else user


def _guard(action: Callable[[], int]) -> int:
    try:
        return action()
    except NotAudited as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    except AdminError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE if exc.usage else EXIT_FAILED


def _disable(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    actor = invoking_user()

    def run() -> int:
        reason = disable_source(config, args.name, args.reason, actor)
        print(f"source {args.name} disabled by {actor}: {reason}")
        return EXIT_OK

    return _guard(run)


def _enable(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    actor = invoking_user()

    def run() -> int:
        if enable_source(config, args.name, args.reason, actor):
            print(f"source {args.name} enabled by {actor}")
        else:
            print(f"source {args.name} was not disabled")
        return EXIT_OK

    return _guard(run)


def _list(args: argparse.Namespace) -> int:
    config = load_config(args.config)

    def run() -> int:
        now = time.time()
        for entry in disabled_sources(config):
            since = datetime.fromtimestamp(entry.since, UTC).isoformat(timespec="seconds")
            line = f"{entry.source}  disabled since {since} by {entry.actor}: {entry.reason}"
            print(line + _expiry(entry, now))
        return EXIT_OK

    return _guard(run)


def _expiry(entry: Disabled, now: float) -> str:
    """An automatic lock may lift itself (anomaly/): say when, or that it has."""
    if entry.expires is None:
        return ""
    when = datetime.fromtimestamp(entry.expires, UTC).isoformat(timespec="seconds")
    return f" (until {when})" if entry.in_force(now) else f" (expired {when}: sends again)"
