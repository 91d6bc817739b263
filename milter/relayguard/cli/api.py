"""`relayguard api serve | token create | token revoke | token list` (docs/api.md).

Tokens live in the runtime state store ([state]), shared by every API process and node; these
commands change it directly. A token's secret is printed once, by `create`, and never stored.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import re
import sys
import time

from relayguard.config import Config, load_config
from relayguard.services.api import server, tokens
from relayguard.state import ApiToken, StateStore, StateUnavailable
from relayguard.state.factory import open_store

DURATION = re.compile(r"^(\d+)([mhd])$")
UNITS = {"m": 60, "h": 3600, "d": 86400}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`relayguard api`."""
    commands = parser.add_subparsers(dest="api_command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP send API")
    _config_arg(serve)
    serve.set_defaults(handler=_serve)

    token = commands.add_parser("token", help="send-API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="create a token; its secret is shown once")
    _config_arg(create)
    create.add_argument("--source", required=True, help="the source the token sends as")
    create.add_argument(
        "--expires", type=expiry, help="a duration (90d, 12h, 30m) or a date (2026-12-31)"
    )
    create.set_defaults(handler=_create)
    revoke = token_commands.add_parser("revoke", help="revoke a token by its id")
    _config_arg(revoke)
    revoke.add_argument("token_id")
    revoke.set_defaults(handler=_revoke)
    listing = token_commands.add_parser("list", help="tokens without secrets")
    _config_arg(listing)
    listing.add_argument("--source", help="only this source's tokens")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="the relayguard.toml")


def expiry(text: str, now: float | None = None) -> float:
    """Unix time from '90d' / '12h' / '30m' (from now) or an ISO date (midnight UTC)."""
    start = time.time() if now is None else now
    found = DURATION.fullmatch(text)
    if found is not None and int(found.group(1)) > 0:
        return start + int(found.group(1)) * UNITS[found.group(2)]
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a duration such as 90d, 12h, 30m or a date such as 2026-12-31"
        ) from None
    when = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
    if when <= start:
        raise argparse.ArgumentTypeError(f"{text!r} is in the past")
    return when


def _serve(args: argparse.Namespace) -> int:
    return server.serve(args.config)


def _store(args: argparse.Namespace) -> tuple[StateStore, Config]:
    config = load_config(args.config)
    if config.state is None:
        raise SystemExit("relayguard api: the configuration has no [state] section")
    return open_store(config.state), config


def _create(args: argparse.Namespace) -> int:
    store, config = _store(args)
    if config.source(args.source) is None:
        print(f"relayguard api: no source named {args.source!r}", file=sys.stderr)
        return 1
    try:
        text, record = tokens.create(store, args.source, _actor(), time.time(), args.expires)
    except StateUnavailable as exc:
        print(f"relayguard api: state backend unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(text)
    print(
        f"token {record.token_id} for source {record.source}, expires {_when(record.expires)}:"
        " the secret above is shown only now",
        file=sys.stderr,
    )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    try:
        revoked = store.revoke_api_token(args.token_id, time.time())
    except StateUnavailable as exc:
        print(f"relayguard api: state backend unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"token {args.token_id}: {'revoked' if revoked else 'unknown or already revoked'}")
    return 0 if revoked else 1


def _list(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    try:
        found = store.api_tokens(args.source)
    except StateUnavailable as exc:
        print(f"relayguard api: state backend unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.json:
        print(json.dumps([_row(t) for t in found], indent=2))
        return 0
    for t in found:
        state = f"revoked {_when(t.revoked)}" if t.revoked is not None else "active"
        print(f"{t.token_id}\t{t.source}\t{state}\texpires {_when(t.expires)}\tby {t.actor}")
    return 0


def _row(token: ApiToken) -> dict[str, object]:
    """Everything but the digest: the list never shows anything that verifies a secret."""
    return {
        "token_id": token.token_id,
        "source": token.source,
        "actor": token.actor,
        "created": token.created,
        "expires": token.expires,
        "revoked": token.revoked,
    }


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _when(moment: float | None) -> str:
    if moment is None:
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
