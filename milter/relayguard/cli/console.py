"""`relayguard console serve | user add|passwd|remove`: the operator console and its accounts.

Passwords are read from the terminal (twice) or, without one, from the first line of standard
input: never from the command line, where `ps` and the shell history would show them.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from relayguard.cli import EXIT_OK, EXIT_USAGE, add_config_arg
from relayguard.cli.inventory import InventoryView
from relayguard.cli.report import ReportView
from relayguard.cli.sources import invoking_user
from relayguard.config import Config, load_config
from relayguard.config.console import ConsoleSettings
from relayguard.engine.admin import AdminError, audit_admin
from relayguard.services.console.accounts import ROLES, AccountError, Accounts
from relayguard.services.console.app import Console, Extras
from relayguard.services.console.audit_index import AuditIndex
from relayguard.services.http import reload_on_sighup, serve_asgi


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="console_command", required=True)
    serve = actions.add_parser("serve", help="run the console (loopback, or TLS elsewhere)")
    add_config_arg(serve)
    serve.set_defaults(handler=_serve)
    user = actions.add_parser("user", help="the console's local accounts")
    user_actions = user.add_subparsers(dest="user_command", required=True)
    add = user_actions.add_parser("add", help="add an account (password from a prompt or stdin)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="viewer")
    passwd = user_actions.add_parser("passwd", help="set a new password (ends its sessions)")
    passwd.add_argument("name")
    remove = user_actions.add_parser("remove", help="remove an account (ends its sessions)")
    remove.add_argument("name")
    for sub, handler in ((add, _add), (passwd, _passwd), (remove, _remove)):
        add_config_arg(sub)
        sub.set_defaults(handler=handler)


def settings_of(config: Config) -> ConsoleSettings:
    if config.console is None:
        raise AdminError(f"{config.path}: no [console] section", usage=True)
    return config.console


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config, signing_keys=False)  # its own user; it signs nothing
    try:
        settings = settings_of(config)
    except AdminError as exc:
        print(f"relayguard console: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings.state_directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    audit_log = config.relay.audit_log
    index = AuditIndex(settings.index_path, audit_log) if audit_log else None
    console = Console(config, settings, index, Extras(InventoryView, ReportView))
    reload_on_sighup(args.config, console.reload)
    serve_asgi(console.app(), console.listener)
    return EXIT_OK


def read_password(confirm: bool = True) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("password: ")
    if confirm and getpass.getpass("again: ") != password:
        raise AccountError("the two passwords differ")
    return password


def _account_action(args: argparse.Namespace, event: str) -> int:
    config = load_config(args.config)
    try:
        accounts = Accounts(settings_of(config).accounts_file)
        if event == "console_user_added":
            accounts.add(args.name, args.role, read_password())
        elif event == "console_password_changed":
            accounts.passwd(args.name, read_password())
        else:
            accounts.remove(args.name)
        audit_admin(config, event, invoking_user(), user=args.name)
    except (AccountError, AdminError) as exc:
        print(f"relayguard console user: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.name}: done")
    return EXIT_OK


def _add(args: argparse.Namespace) -> int:
    return _account_action(args, "console_user_added")


def _passwd(args: argparse.Namespace) -> int:
    return _account_action(args, "console_password_changed")


def _remove(args: argparse.Namespace) -> int:
    return _account_action(args, "console_user_removed")
