"""`relayguard unsubscribe-server` and `relayguard suppression list | add | remove | export`.

The suppression list lives in the runtime state store ([state]: SQLite by default, or Redis),
shared by every milter process and node; these commands read and change it directly.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time

from relayguard.config import load_config
from relayguard.parsing.rfc5322 import HeaderViolation, parse_envelope_address
from relayguard.services import unsubscribe
from relayguard.state import StateStore, StateUnavailable
from relayguard.state.factory import open_store


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """`relayguard unsubscribe-server`."""
    parser.add_argument("--config", "-c", required=True, help="the relayguard.toml")
    parser.set_defaults(handler=lambda args: unsubscribe.serve(args.config))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`relayguard suppression`."""
    sub = parser.add_subparsers(dest="suppression_command", required=True)
    for name, handler, text in (
        ("list", _list, "list suppressed recipients"),
        ("add", _add, "suppress a recipient for a scope"),
        ("remove", _remove, "lift a suppression"),
        ("export", _export, "CSV of scope, recipient, reason, since (UTC)"),
    ):
        parser = sub.add_parser(name, help=text)
        parser.add_argument("--config", "-c", required=True, help="the relayguard.toml")
        parser.add_argument(
            "--scope", required=name in ("add", "remove"), help="a source, or SOURCE/LIST"
        )
        if name in ("add", "remove"):
            parser.add_argument("recipient")
        if name == "add":
            parser.add_argument("--reason", default="added by an administrator")
        if name == "list":
            parser.add_argument("--json", action="store_true")
        parser.set_defaults(handler=handler)


def _store(args: argparse.Namespace) -> StateStore:
    config = load_config(args.config)
    if config.state is None:
        raise SystemExit("relayguard suppression: the configuration has no [state] section")
    return open_store(config.state)


def _recipient(text: str) -> str:
    try:
        mailbox = parse_envelope_address(text)
    except HeaderViolation as exc:
        raise SystemExit(f"relayguard suppression: {text!r}: {exc.reason}") from None
    if mailbox is None:
        raise SystemExit("relayguard suppression: the null address cannot be suppressed")
    return mailbox.address


def _run(args: argparse.Namespace, work: object) -> int:
    store = _store(args)
    try:
        assert callable(work)
        return int(work(store))
    except StateUnavailable as exc:
        print(f"relayguard suppression: state backend unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _list(args: argparse.Namespace) -> int:
    def work(store: StateStore) -> int:
        rows = list(store.suppressions(args.scope))
        if args.json:
            print(json.dumps([
                {"scope": r.scope, "recipient": r.recipient, "reason": r.reason, "since": r.since}
                for r in rows
            ], indent=2))  # fmt: skip
        for r in [] if args.json else rows:
            print(f"{r.scope}\t{r.recipient}\t{_when(r.since)}\t{r.reason}")
        return 0

    return _run(args, work)


def _add(args: argparse.Namespace) -> int:
    recipient = _recipient(args.recipient)

    def work(store: StateStore) -> int:
        added = store.suppress(args.scope, recipient, args.reason, time.time())
        print(f"{recipient}: {'suppressed' if added else 'already suppressed'} for {args.scope}")
        return 0

    return _run(args, work)


def _remove(args: argparse.Namespace) -> int:
    recipient = _recipient(args.recipient)

    def work(store: StateStore) -> int:
        removed = store.unsuppress(args.scope, recipient)
        print(f"{recipient}: {'removed from' if removed else 'was not in'} {args.scope}")
        return 0 if removed else 1

    return _run(args, work)


def _export(args: argparse.Namespace) -> int:
    def work(store: StateStore) -> int:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(["scope", "recipient", "reason", "since"])
        for r in store.suppressions(args.scope):
            out.writerow([r.scope, r.recipient, r.reason, _when(r.since)])
        return 0

    return _run(args, work)


def _when(since: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
