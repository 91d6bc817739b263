"""`relayguard quarantine-helper`: the root service that runs Postfix's hold-queue tools for the
console (services/quarantine_helper, docs/console.md). Options only: it reads no configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

from relayguard.cli import EXIT_OK
from relayguard.services.quarantine_helper.server import serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", type=Path, required=True, help="the unix socket to create")
    parser.add_argument(
        "--socket-group", required=True, help="the group that may connect (the console's)"
    )
    parser.add_argument(
        "--postfix-config",
        type=Path,
        default=Path("/etc/postfix"),
        help="Postfix's configuration directory (postfix -c); default /etc/postfix",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    serve(args.socket, args.socket_group, args.postfix_config)
    return EXIT_OK
