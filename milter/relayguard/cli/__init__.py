"""The `relayguard` command: argument parsing only; the work lives in the modules it calls."""

# Start-up time is the point of this module's shape: it imports nothing of relayguard but the error
# it reports. Every command is one row of COMMANDS (name, help, module); the entry point creates a
# parser per name, and imports only the module of the command being run, whose `add_arguments`
# fills in that command's options and handler. Registering every module's arguments up front would
# import them all (config, engine, dnspython, cryptography, aiohttp...): 0.6 s for `--help`.

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from relayguard.core.errors import ConfigError

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    """One top-level command; `module.function(parser)` adds its arguments and handler."""

    name: str
    help: str
    module: str
    function: str = "add_arguments"


# The order is the order of `relayguard --help`.
COMMANDS = (
    Command("milter", "run the milter for Postfix", "relayguard.cli.milter"),
    Command("check", "validate the configuration; non-zero on problems", "relayguard.cli.check"),
    Command("sources", "registered sending sources", "relayguard.cli.sources"),
    Command(
        "test-message",
        "dry-run the whole pipeline on a message without sending it",
        "relayguard.cli.test_message",
    ),
    Command("dkim", "DKIM keys: generate, print DNS records, rotate", "relayguard.cli.dkim"),
    Command(
        "dns-audit",
        "check SPF, DKIM, DMARC, MX and Direct Send exposure of a domain",
        "relayguard.cli.dns_audit",
    ),
    Command(
        "unsubscribe-server",
        "run the RFC 8058 one-click endpoint",
        "relayguard.cli.suppression",
        "add_server_arguments",
    ),
    Command("suppression", "the suppression list (unsubscribed)", "relayguard.cli.suppression"),
    Command(
        "inventory", "propose [[sources]] from a monitor-mode audit log", "relayguard.cli.inventory"
    ),
    Command("report", "volume, refusals, rules, DKIM from an audit log", "relayguard.cli.report"),
    Command("quarantine", "messages held by the quarantine action", "relayguard.cli.quarantine"),
    Command(
        "quarantine-helper",
        "the console's root hold-queue service",
        "relayguard.cli.quarantine_helper",
    ),
    Command("rules", "check and test YARA rules and DLP detectors", "relayguard.cli.rules"),
    Command("console", "the operator console and its accounts", "relayguard.cli.console"),
    Command("api", "the HTTP send API: serve, tokens", "relayguard.cli.api"),
)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = _parser(_chosen(arguments)).parse_args(arguments)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s relayguard[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"configuration invalid ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INVALID


def _chosen(arguments: Sequence[str]) -> str | None:
    """The command named on the line: the top level has no option that takes a value, so it is
    the first argument that is not an option (None for `relayguard --help`)."""
    return next((a for a in arguments if not a.startswith("-")), None)


def _parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relayguard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command_parser = commands.add_parser(command.name, help=command.help)
        if command.name == chosen:
            module = importlib.import_module(command.module)
            add_arguments = cast(
                Callable[[argparse.ArgumentParser], None], getattr(module, command.function)
            )
            add_arguments(command_parser)
    return parser


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, required=True, help="the relayguard.toml")


if __name__ == "__main__":
    sys.exit(main())
