"""`relayguard test-message`: the whole pipeline on an .eml file, without sending anything.

It drives the same Transaction class as the milter, so what it prints is what the milter would do
for that source. Nothing is audited: a dry run is not a decision.
"""

from __future__ import annotations

import argparse
import json
import sys
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from relayguard.checks.source import NETWORK_LISTENERS
from relayguard.cli import EXIT_OK, EXIT_USAGE, add_config_arg
from relayguard.config import Config, Source, load_config
from relayguard.core.errors import RelayguardError
from relayguard.core.message import Client, Envelope, message_from_bytes
from relayguard.core.safe_text import printable
from relayguard.core.verdict import Action, Decision
from relayguard.engine.audit import AuditLog
from relayguard.engine.runtime import Runtime, prepare_process
from relayguard.engine.transaction import Transaction
from relayguard.parsing.rfc5322 import HeaderViolation, parse_mailbox_field


class DryRunError(RelayguardError):
    """The dry run cannot start (unknown source, unreadable file, no recipient)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="an RFC 5322 message (.eml)")
    add_config_arg(parser)
    parser.add_argument("--source", required=True, help="the source to send as")
    parser.add_argument("--mail-from", help="envelope sender (default: the From address)")
    parser.add_argument(
        "--rcpt", action="append", default=[], help="envelope recipient (repeatable; default: To)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config.dkim.domains:
        prepare_process()  # sign as a worker does (dkimpy is imported only to sign)
    try:
        result = dry_run(config, args.file, args.source, args.mail_from, args.rcpt)
    except DryRunError as exc:
        print(f"relayguard test-message: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return EXIT_OK


def client_for(source: Source) -> Client:
    """A client that the source check identifies as SOURCE, the strongest way the source allows,
    on a listener the source may use."""
    listener = source.listeners[0] if source.listeners else "submission"
    if source.sasl_users:
        return Client(address="127.0.0.1", sasl_user=source.sasl_users[0], daemon_name=listener)
    if source.client_cert_subjects:
        return Client(
            address="127.0.0.1",
            cert_subject=source.client_cert_subjects[0],
            cert_issuer=source.client_cert_issuers[0] if source.client_cert_issuers else "",
            daemon_name=listener,
        )
    network_listener = (source.listeners or NETWORK_LISTENERS)[0]
    return Client(address=str(source.networks[0].network_address), daemon_name=network_listener)


def dry_run(
    config: Config,
    path: Path,
    source_name: str,
    mail_from: str | None = None,
    recipients: list[str] | None = None,
) -> dict[str, Any]:
    source = config.source(source_name)
    if source is None:
        known = ", ".join(s.name for s in config.sources)
        raise DryRunError(f"no source {source_name!r} in {config.path} (known: {known})")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DryRunError(f"cannot read {path}: {exc.strerror}") from None
    client = client_for(source)
    message = message_from_bytes(raw, Envelope(client, ""))
    if mail_from is None:
        mail_from = _default_sender(message.header_values("From"), source)
    if not recipients:
        recipients = _default_recipients(message.header_values("To") + message.header_values("Cc"))
    if not recipients:
        raise DryRunError("no recipients: the message has no To/Cc; pass --rcpt")

    runtime = Runtime.build(config, AuditLog(None), dry_run=True)
    tx = Transaction(runtime, client, audit_enabled=False)
    result: dict[str, Any] = {"stage": "mail", "decision": tx.mail(f"<{mail_from}>")}
    if result["decision"].action < Action.TEMPFAIL:
        replies = [(r, tx.rcpt(f"<{r}>")) for r in recipients]
        # When every recipient is refused, the transaction ends with the last refusal.
        result = {"stage": "rcpt", "decision": replies[-1][1], "rcpt": replies}
        if tx.recipients:
            decision = tx.end(message.headers, message.body, message.size)
            result = {"stage": "end", "decision": decision, "rcpt": replies}
    return _report(tx, result)


def _report(tx: Transaction, result: dict[str, Any]) -> dict[str, Any]:
    decision: Decision = result["decision"]
    checks = list(tx.verdicts) if result["stage"] != "end" else list(decision.verdicts)
    for _, rcpt_decision in result.get("rcpt", []):
        checks += [v for v in rcpt_decision.verdicts if v not in checks]
    return {
        "action": decision.action.label if decision.action is not Action.TAG else "accept",
        "outcome": decision.outcome,
        "reply": str(decision.reply) if decision.reply else None,
        "stage": result["stage"],
        "source": tx.source.name if tx.source else None,
        "mode": decision.mode.value,
        "mail_from": tx.mail_from,
        "recipients": list(tx.recipients),
        "recipient_refusals": [
            {"recipient": r, "reason": v.reason, "applied": applied}
            for r, v, applied in tx.recipient_refusals
        ],
        "checks": [
            {"name": v.check, "action": v.action.label, "reason": v.reason, "ms": v.elapsed_ms}
            for v in checks
        ],
        "headers_added": [{"name": n, "value": v} for n, v in decision.headers],
        "quarantine": decision.action is Action.QUARANTINE,
    }


def _default_sender(from_values: list[bytes], source: Source) -> str:
    if len(from_values) == 1:
        try:
            return parse_mailbox_field(from_values[0]).address
        except HeaderViolation:
            pass
    return min(source.senders.addresses, default="")


def _default_recipients(values: list[bytes]) -> list[str]:
    texts = [v.decode("utf-8", "replace") for v in values]
    return [address for _, address in getaddresses(texts) if "@" in address]


def format_result(result: dict[str, Any]) -> str:
    lines = [
        f"action:  {result['action']} ({result['outcome']}, at {result['stage']})",
        f"reply:   {result['reply'] or '-'}",
        f"source:  {result['source']} (mode {result['mode']})",
    ]
    lines += [f"  {c['name']:<20} {c['action']:<10} {c['reason']}" for c in result["checks"]]
    lines += [
        f"  recipient {r['recipient']}: {r['reason']}"
        + ("" if r["applied"] else " (monitor: not applied)")
        for r in result["recipient_refusals"]
    ]
    lines += [f"adds:    {h['name']}: {h['value']}" for h in result["headers_added"]]
    # Reasons, recipients and header values come from the sample: each line escaped (safe_text).
    return "\n".join(printable(line) for line in lines)
