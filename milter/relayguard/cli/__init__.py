"""The `relayguard` command: argument parsing only; the work lives in the modules it calls."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relayguard.cli import dkim as dkim_cli
from relayguard.cli import dns_audit as dnsaudit
from relayguard.cli import inventory, quarantine, report, rules
from relayguard.cli import sources as sourcestate
from relayguard.cli import suppression as suppression_cli
from relayguard.cli.test_message import DryRunError, dry_run, format_result
from relayguard.config import Config, load_config, milter_socket_problem
from relayguard.core.errors import ConfigError
from relayguard.daemon.server import serve

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

# Feature modules add their subcommands with one entry here: a function that receives the
# top-level subparsers and registers its commands (each with set_defaults(handler=...)).
COMMANDS: tuple[Callable[[Subcommands], None], ...] = (
    dkim_cli.add_commands,
    dnsaudit.add_commands,
    suppression_cli.add_commands,
    inventory.add_commands,
    report.add_commands,
    quarantine.add_commands,
    rules.add_commands,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relayguard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    milter = commands.add_parser("milter", help="run the milter for Postfix")
    add_config_arg(milter)
    milter.add_argument(
        "--socket",
        type=_milter_socket,
        help="override [milter] socket: unix:/path or inet:PORT@HOST on loopback (libmilter form)",
    )
    milter.add_argument("-v", "--verbose", action="store_true")
    milter.set_defaults(handler=_milter)

    check = commands.add_parser("check", help="validate the configuration; non-zero on problems")
    add_config_arg(check)
    check.set_defaults(handler=_check)

    sources = commands.add_parser("sources", help="registered sending sources")
    source_commands = sources.add_subparsers(dest="sources_command", required=True)
    listing = source_commands.add_parser("list", help="list sources and how they are identified")
    add_config_arg(listing)
    listing.add_argument("--json", action="store_true", help="one JSON array")
    listing.set_defaults(handler=_sources_list)
    sourcestate.add_source_commands(source_commands)  # disable, enable, disabled

    test = commands.add_parser(
        "test-message", help="dry-run the whole pipeline on a message without sending it"
    )
    test.add_argument("file", type=Path, help="an RFC 5322 message (.eml)")
    add_config_arg(test)
    test.add_argument("--source", required=True, help="the source to send as")
    test.add_argument("--mail-from", help="envelope sender (default: the From address)")
    test.add_argument(
        "--rcpt", action="append", default=[], help="envelope recipient (repeatable; default: To)"
    )
    test.add_argument("--json", action="store_true", help="print one JSON object")
    test.set_defaults(handler=_test_message)
    for add_commands in COMMANDS:
        add_commands(commands)
    return parser


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, required=True, help="the relayguard.toml")


def _milter_socket(spec: str) -> str:
    """The override is held to the rule milter.socket is: unix or loopback only."""
    problem = milter_socket_problem(spec)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return spec


def _milter(args: argparse.Namespace) -> int:
    return serve(args.config, args.socket)


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"{args.config}: OK ({len(config.sources)} source(s), mode {config.relay.mode.value})")
    for warning in config_warnings(config):
        print(f"warning: {warning}")
    return EXIT_OK


def config_warnings(config: Config) -> list[str]:
    """Valid but probably not what the sysadmin meant."""
    warnings = []
    if config.relay.audit_log is None:
        warnings.append(
            f"{config.path}: relay.audit_log: not set; audit lines go to the milter log"
        )
    elif not config.relay.audit_log.parent.is_dir():
        warnings.append(
            f"{config.path}: relay.audit_log: directory {config.relay.audit_log.parent} missing"
        )
    clamav = config.content.clamav
    if clamav is not None and clamav.database_directory is not None:
        official = ("main.cvd", "main.cld", "daily.cvd", "daily.cld")
        if not any((clamav.database_directory / name).exists() for name in official):
            warnings.append(
                f"{config.path}: clamav.database_directory: no official ClamAV signatures"
                f" (main/daily) in {clamav.database_directory}; clamd has only a local set:"
                " run freshclam"
            )
    if not config.relay.internal_domains:
        warnings.append(
            f"{config.path}: relay.internal_domains: empty; unregistered clients using your"
            " domains are not called out"
        )
    return warnings


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


def _test_message(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        result = dry_run(config, args.file, args.source, args.mail_from, args.rcpt)
    except DryRunError as exc:
        print(f"relayguard test-message: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
