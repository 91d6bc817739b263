"""`relayguard milter`: run the milter for Postfix (daemon/server.py does the work)."""

from __future__ import annotations

import argparse

from relayguard.cli import add_config_arg
from relayguard.config import milter_socket_problem
from relayguard.daemon.server import serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arg(parser)
    parser.add_argument(
        "--socket",
        type=_milter_socket,
        help="override [milter] socket: unix:/path or inet:PORT@HOST on loopback (libmilter form)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.set_defaults(handler=_run)


def _milter_socket(spec: str) -> str:
    """The override is held to the rule milter.socket is: unix or loopback only."""
    problem = milter_socket_problem(spec)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return spec


def _run(args: argparse.Namespace) -> int:
    return serve(args.config, args.socket)
