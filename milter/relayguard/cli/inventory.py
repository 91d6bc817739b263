"""`relayguard inventory`: who sent what through the relay in monitor mode, as proposed sources.

For the Direct Send migration: run the relay in monitor mode, let every device and application
send through it, then turn what the audit log saw into `[[sources]]` blocks. Clients are grouped
by how they would be identified in enforce mode (SASL login, else verified certificate CN, else
client address); each block allows exactly the envelope senders and From addresses seen and the
recipient *domains* seen. The output is valid TOML that `relayguard check` accepts as it is; the
comments above each block say what the sysadmin should review (volume, what would have been
refused and why).
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from relayguard.config import SOURCE_NAME
from relayguard.core.audit_record import AuditRecord, DecisionRecord
from relayguard.core.safe_text import UNSAFE, printable
from relayguard.engine.audit_reader import parse_since, read_audit
from relayguard.parsing.identities import parse_identity
from relayguard.parsing.rfc5322 import HeaderViolation, ascii_lower, parse_mailbox_field


@dataclass
class Flow:
    """Everything seen from one client identity."""

    kind: str  # sasl, cert or address
    identity: str
    decisions: int = 0
    messages: int = 0
    size: int = 0
    first: str = ""
    last: str = ""
    registered: Counter[str] = field(default_factory=Counter)
    envelope_senders: Counter[str] = field(default_factory=Counter)
    from_addresses: Counter[str] = field(default_factory=Counter)
    recipient_domains: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    unusable: Counter[str] = field(default_factory=Counter)


def identity_of(record: DecisionRecord) -> tuple[str, str] | None:
    if record.sasl_user:
        return "sasl", record.sasl_user
    if record.cert_subject:
        return "cert", record.cert_subject
    if record.client_address:
        return "address", record.client_address
    return None


def collect(records: list[DecisionRecord]) -> list[Flow]:
    flows: dict[tuple[str, str], Flow] = {}
    for record in records:
        add_decision(flows, record)
    return sorted(flows.values(), key=lambda f: (f.kind, f.identity))


def add_decision(flows: dict[tuple[str, str], Flow], record: DecisionRecord) -> None:
    """Count one decision into the flow of its client identity."""
    key = identity_of(record)
    if key is None:
        return
    flow = flows.setdefault(key, Flow(*key))
    n = record.attempts
    flow.decisions += n
    flow.first = min(flow.first or record.time, record.time)
    flow.last = max(flow.last, record.time)
    if record.source:
        flow.registered[record.source] += 1
    if record.stage == "end":
        flow.messages += 1
        flow.size += record.size or 0
    if record.mail_from:
        flow.envelope_senders[record.mail_from] += 1
    if record.from_header:
        try:
            mailbox = parse_mailbox_field(record.from_header.encode("utf-8"))
            flow.from_addresses[mailbox.address] += 1
        except HeaderViolation as exc:
            flow.unusable[f"From header refused: {exc.reason}"] += 1
    for recipient in record.recipients:
        flow.recipient_domains[ascii_lower(recipient.rpartition("@")[2])] += 1
    if record.outcome != "accept":
        # Every refusing check, not only the deciding one: all must be fixed before enforce.
        refusing = record.refusing_checks()
        for check in refusing:
            flow.refusals[f"{check.name}: {check.reason}"] += n
        if not refusing:
            flow.refusals[f"{record.outcome}: no check recorded"] += n


def _name_for(flow: Flow, taken: set[str]) -> str:
    if flow.registered:
        base = flow.registered.most_common(1)[0][0]
    elif flow.kind == "address":
        base = "host-" + re.sub(r"[^A-Za-z0-9]+", "-", flow.identity).strip("-")
    else:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", flow.identity).strip("-._") or "source"
    base = base[:60] if SOURCE_NAME.fullmatch(base[:60]) else "source"  # '$' allows a final \n
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    taken.add(name)
    return name


def _toml(value: str) -> str:
    """A TOML basic string that reads back as exactly `value`, on one visible line: quote and
    backslash escaped, each character safe_text.UNSAFE finds as a \\uXXXX escape (TOML 1.0)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + UNSAFE.sub(_toml_escape, escaped) + '"'


def _toml_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    # A lone surrogate (an undecodable byte) is no Unicode scalar value: TOML cannot hold it.
    return "\\ufffd" if 0xD800 <= code <= 0xDFFF else f"\\u{code:04x}"


def _array(values: list[str]) -> str:
    return "[" + ", ".join(_toml(v) for v in values) + "]"


def _counted(counter: Counter[str], limit: int = 8) -> str:
    items = [f"{value} ({count})" for value, count in counter.most_common(limit)]
    more = len(counter) - limit
    return ", ".join(items) + (f", … {more} more" if more > 0 else "") if items else "-"


def _identifier(flow: Flow) -> tuple[str, str] | None:
    if flow.kind == "sasl":
        return "sasl_users", _array([flow.identity])
    if flow.kind == "cert":
        return "client_cert_subjects", _array([f"CN={flow.identity}"])
    try:
        address = ipaddress.ip_address(flow.identity.removeprefix("IPv6:"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return "networks", _array([str(ipaddress.ip_network(address))])


def propose(flows: list[Flow], header: str) -> str:
    out = [f"# {line}" if line else "#" for line in header.splitlines()]
    taken: set[str] = set()
    for flow in flows:
        identifier = _identifier(flow)
        label = {"sasl": "SASL user", "cert": "certificate CN", "address": "client"}[flow.kind]
        out += [
            "",
            f"# {label} {flow.identity}: {flow.messages} message(s), {flow.size} bytes,"
            f" {flow.first[:10]} .. {flow.last[:10]}",
            f"#   registered as: {_counted(flow.registered)}",
            f"#   envelope senders: {_counted(flow.envelope_senders)}",
            f"#   From addresses: {_counted(flow.from_addresses)}",
            f"#   recipient domains: {_counted(flow.recipient_domains)}",
        ]
        out += [f"#   would have been refused {n}x: {r}" for r, n in flow.refusals.most_common(10)]
        out += [f"#   not proposed {n}x: {r}" for r, n in flow.unusable.most_common(5)]
        if identifier is None:
            out.append(f"#   (no usable identifier: {flow.identity!r}; not proposed)")
            continue
        senders, rejected = [], []
        for address in sorted(set(flow.envelope_senders) | set(flow.from_addresses)):
            try:
                parse_identity(address)
                senders.append(address)
            except ValueError as exc:
                rejected.append(str(exc))
        out += [f"#   not proposed: {reason}" for reason in rejected]
        domains = []
        for domain in sorted(flow.recipient_domains):
            try:
                parse_identity("@" + domain)
                domains.append("@" + domain)
            except ValueError as exc:
                out.append(f"#   not proposed: {exc}")
        out += [
            "[[sources]]",
            f"name = {_toml(_name_for(flow, taken))}",
            f"description = {_toml(f'inventory: {label} {printable(flow.identity)}')}",
            f"{identifier[0]} = {identifier[1]}",
            f"senders = {_array(senders)}",
        ]
        if domains:
            out.append(f"recipients = {_array(domains)}")
    # Comments quote what clients sent (identities, addresses, reasons): each one escaped, so
    # none can end the comment and add a line of its own to the proposed configuration.
    return "\n".join(printable(line) if line.startswith("#") else line for line in out) + "\n"


def inventory(path: Path, since: str | None = None) -> str:
    records = read_audit(path, parse_since(since) if since else None)
    flows = collect(records.decisions)
    decisions = sum(r.attempts for r in records.decisions)  # a counted line stands for `count`
    return propose(flows, _header(path, since, decisions, len(flows), records.unreadable))


def _header(path: Path, since: str | None, decisions: int, flows: int, unreadable: int) -> str:
    return (
        f"relayguard inventory of {path}"
        + (f" since {since}" if since else "")
        + f": {decisions} decision(s) from {flows} client identit(y/ies)"
        + (f"; {unreadable} unreadable line(s) skipped" if unreadable else "")
        + "\nProposed sources: review each block, then add it to relayguard.toml."
        + "\nEach allows exactly the senders and the recipient domains that were seen."
    )


class InventoryView:
    """The inventory of a whole log, one record at a time: the console keeps one current from
    its audit index instead of reading the log again for every page."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.flows: dict[tuple[str, str], Flow] = {}
        self.decisions = 0

    def add(self, record: AuditRecord) -> None:
        if isinstance(record, DecisionRecord):
            add_decision(self.flows, record)
            self.decisions += record.attempts

    def render(self) -> str:
        flows = sorted(self.flows.values(), key=lambda f: (f.kind, f.identity))
        return propose(flows, _header(self.path, None, self.decisions, len(flows), 0))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audit-log", type=Path, required=True, help="the JSON-lines audit log")
    parser.add_argument("--since", help="only decisions from this date or time on (ISO 8601)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        text = inventory(args.audit_log, args.since)
    except OSError as exc:
        print(
            f"relayguard inventory: cannot read {args.audit_log}: {exc.strerror}", file=sys.stderr
        )
        return 2
    except ValueError as exc:
        print(f"relayguard inventory: --since: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
