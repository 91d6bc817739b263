"""`relayguard quarantine list | show | release | delete`: Postfix's hold queue.

The work is engine/quarantine.py, which the console shares.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from relayguard.config import load_config
from relayguard.engine.quarantine import (
    QuarantineError,
    audit_reasons,
    delete,
    format_list,
    format_show,
    held,
    release,
    show,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="quarantine_command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--postfix-config",
            type=Path,
            default=Path("/etc/postfix"),
            help="Postfix's configuration directory (postfix -c); default /etc/postfix",
        )
        sub.add_argument(
            "--config", "-c", type=Path, help="relayguard.toml: reasons from its audit log"
        )

    listing = actions.add_parser("list", help="held messages, with the reason when known")
    common(listing)
    listing.add_argument("--json", action="store_true", help="one JSON array")
    listing.set_defaults(handler=_list)
    for name, handler, text in (
        ("show", _show, "envelope and headers of a held message (--body for the body)"),
        ("release", _release, "deliver a held message now (it is not scanned again)"),
        ("delete", _delete, "delete a held message"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("queue_id")
        common(sub)
        if name == "show":
            sub.add_argument("--body", action="store_true", help="print the body too")
        sub.set_defaults(handler=handler)


def _audit_log(args: argparse.Namespace) -> Path | None:
    return load_config(args.config).relay.audit_log if args.config else None


def _guard(action: Any) -> int:
    try:
        action()
    except QuarantineError as exc:
        print(f"relayguard quarantine: {exc}", file=sys.stderr)
        return 1
    return 0


def _list(args: argparse.Namespace) -> int:
    def run() -> None:
        messages = held(args.postfix_config)
        reasons = audit_reasons(_audit_log(args), [m.queue_id for m in messages])
        rows = [
            {
                "queue_id": m.queue_id,
                "arrival_time": m.arrival_time,
                "size": m.size,
                "sender": m.sender,
                "recipients": list(m.recipients),
                "reason": reasons.get(m.queue_id, ""),
            }
            for m in messages
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
            return
        print(format_list(messages, reasons))

    return _guard(run)


def _show(args: argparse.Namespace) -> int:
    def run() -> None:
        reason = audit_reasons(_audit_log(args), [args.queue_id]).get(args.queue_id)
        print(format_show(reason, show(args.postfix_config, args.queue_id, args.body)), end="")

    return _guard(run)


def _release(args: argparse.Namespace) -> int:
    def run() -> None:
        release(args.postfix_config, args.queue_id)
        print(f"{args.queue_id}: released for delivery")

    return _guard(run)


def _delete(args: argparse.Namespace) -> int:
    def run() -> None:
        delete(args.postfix_config, args.queue_id)
        print(f"{args.queue_id}: deleted")

    return _guard(run)
