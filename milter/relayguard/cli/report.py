"""`relayguard report`: what the relay did, from its audit log, as text or one HTML page.

The HTML page is self-contained (inline CSS and SVG, no script, no font or image to fetch), so a
sysadmin can mail it to a manager and it renders the same offline.
"""

from __future__ import annotations

import argparse
import html
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from relayguard.core.audit_record import (
    AdminRecord,
    AuditRecord,
    CheckEntry,
    DecisionRecord,
    dkim_algorithms,
    fact_counts,
    fact_names,
    fact_text,
    rate_limit,
)
from relayguard.core.safe_text import printable
from relayguard.core.verdict import Action
from relayguard.engine.audit_reader import parse_since, read_audit

CONTENT_RULE_CHECKS = ("yara", "dlp")
DELIVERED = frozenset({Action.ACCEPT, Action.TAG, Action.QUARANTINE})


@dataclass
class SourceVolume:
    decisions: int = 0
    delivered: int = 0
    refused: int = 0
    would_refuse: int = 0
    size: int = 0


@dataclass
class Report:
    path: Path
    since: str | None
    decisions: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    sources: dict[str, SourceVolume] = field(default_factory=lambda: defaultdict(SourceVolume))
    days: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    refusals: Counter[str] = field(default_factory=Counter)
    content_rules: Counter[str] = field(default_factory=Counter)
    scanner_errors: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    signed: int = 0
    dkim_algorithms: Counter[str] = field(default_factory=Counter)
    admin: list[AdminRecord] = field(default_factory=list)
    unreadable: int = 0
    first: str = ""
    last: str = ""


def build(path: Path, since: str | None = None) -> Report:
    records = read_audit(path, parse_since(since) if since else None)
    report = Report(path, since, unreadable=records.unreadable)
    for admin in records.admin:
        add_admin(report, admin)
    for record in records.decisions:
        add_decision(report, record)
    return report


def add_admin(report: Report, record: AdminRecord) -> None:
    # Acts on a source (the kill switch and its kin); console logins and the like are not news here.
    if record.source:
        report.admin.append(record)


def add_decision(report: Report, record: DecisionRecord) -> None:
    n = record.attempts
    report.decisions += n
    when = record.time
    report.first = min(report.first or when, when)
    report.last = max(report.last, when)
    report.outcomes[record.outcome] += n
    volume = report.sources[record.source or "(no source)"]
    volume.decisions += n
    volume.size += record.size or 0
    day = report.days[when[:10]]
    if record.action in DELIVERED and record.stage == "end":
        volume.delivered += 1
        day["delivered"] += 1
        report.delivered += 1
        algorithms = {a for check in record.checks for a in dkim_algorithms(check)}
        if algorithms:
            report.signed += 1
            report.dkim_algorithms.update(algorithms)
    elif record.action >= Action.TEMPFAIL:
        volume.refused += n
        day["refused"] += n
    if record.outcome.startswith("would_"):
        volume.would_refuse += n
        day["would refuse"] += n
    check = record.deciding_check() if record.outcome != "accept" else None
    if check is not None:
        report.refusals[refusal_kind(check)] += n
    for entry in record.checks:
        if entry.error:
            report.scanner_errors[entry.name] += n
        elif entry.name.startswith(CONTENT_RULE_CHECKS) and entry.action is not Action.ACCEPT:
            report.content_rules.update(dict.fromkeys(content_rules(entry), n))


class ReportView:
    """The HTML report of a whole log, one record at a time: the console keeps one current from
    its audit index instead of reading the log again for every page."""

    def __init__(self, path: Path) -> None:
        self.report = Report(path, None)

    def add(self, record: AuditRecord) -> None:
        if isinstance(record, DecisionRecord):
            add_decision(self.report, record)
        else:
            add_admin(self.report, record)

    def render(self) -> str:
        return format_html(self.report)


def refusal_kind(check: CheckEntry) -> str:
    """Refusals grouped by kind: a rate limit by its limit, not by its changing retry time."""
    limit = rate_limit(check)
    if limit is not None:
        kind, window, most = limit
        return f"{check.name}: limit of {most} {kind} per {window}"
    return f"{check.name}: {check.reason}"


def content_rules(entry: CheckEntry) -> list[str]:
    """The YARA rules or DLP detectors that matched; the reason when the line has no facts (v1)."""
    rules = fact_names(entry.facts, "rules")
    profile = fact_text(entry.facts, "profile")
    detectors = sorted(fact_counts(entry.facts, "detectors"))
    if rules:
        return [f"{entry.name}: {rule}" for rule in rules]
    if profile and detectors:
        return [f"{entry.name}: {profile}/{detector}" for detector in detectors]
    return [f"{entry.name}: {entry.reason}"]


# --- text ----------------------------------------------------------------------------------------
def format_text(report: Report) -> str:
    lines = [
        f"relayguard report of {report.path}" + (f" since {report.since}" if report.since else ""),
        f"{report.decisions} decision(s), {report.first[:19]} .. {report.last[:19]}",
        "outcomes: " + ", ".join(f"{k} {v}" for k, v in report.outcomes.most_common()),
        "",
        f"{'source':<24} {'decisions':>9} {'delivered':>9} {'refused':>8} {'would':>6}"
        f" {'bytes':>12}",
    ]
    for name, v in sorted(report.sources.items(), key=lambda kv: -kv[1].decisions):
        lines.append(
            f"{name:<24} {v.decisions:>9} {v.delivered:>9} {v.refused:>8}"
            f" {v.would_refuse:>6} {v.size:>12}"
        )
    sections = (
        ("refusals by reason", report.refusals),
        ("top YARA/DLP rules", report.content_rules),
        ("check errors (scanners, state backend)", report.scanner_errors),
    )
    for title, counter in sections:
        lines += ["", f"{title}:"]
        lines += [f"  {n:>6}  {k}" for k, n in counter.most_common(15)] or ["  none"]
    lines += ["", f"DKIM coverage: {_coverage(report)}"]
    if report.admin:
        lines += ["", "kill switch:"]
        lines += [
            f"  {a.time[:19]}  {a.event} {a.source} by {a.actor}: {a.reason}" for a in report.admin
        ]
    # Sources, reasons and actors come from the audit log: each line escaped (safe_text).
    return "\n".join(printable(line) for line in lines) + "\n"


def _coverage(report: Report) -> str:
    if not report.delivered:
        return "no delivered messages"
    share = 100 * report.signed / report.delivered
    algorithms = ", ".join(f"{a} {n}" for a, n in report.dkim_algorithms.most_common())
    return f"{report.signed} of {report.delivered} delivered signed ({share:.1f}%)" + (
        f"; by algorithm: {algorithms}" if algorithms else ""
    )


# --- HTML ----------------------------------------------------------------------------------------
COLOURS = {"delivered": "#2e7d32", "refused": "#c62828", "would refuse": "#f9a825"}

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2433;margin:2em auto;
max-width:960px;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid
#dde1e8;padding-bottom:.2em}.muted{color:#5b6475}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #dde1e8;border-radius:8px;
padding:10px 14px;min-width:120px}.card b{display:block;font-size:1.5em}
table{border-collapse:collapse;width:100%}td,th{padding:4px 8px;border-bottom:1px solid #eef0f4;
text-align:left}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
svg text{font:12px system-ui,sans-serif;fill:#1d2433}
"""


def _e(value: object) -> str:
    """HTML-escaped, and a bidi override or a control character shown, not obeyed."""
    return html.escape(printable(str(value)), quote=True)


def _bars(items: list[tuple[str, int]], colour: str, width: int = 900) -> str:
    """Horizontal bars with their labels: one SVG, no script."""
    if not items:
        return '<p class="muted">none</p>'
    label_w, row = 330, 24
    top = max(n for _, n in items) or 1
    height = row * len(items) + 4
    parts = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for index, (label, n) in enumerate(items):
        y = index * row + 2
        bar = max(2, int((width - label_w - 60) * n / top))
        short = label if len(label) <= 52 else label[:51] + "…"
        parts += [
            f"<title>{_e(label)}: {n}</title>" if index == 0 else "",
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{_e(short)}</text>',
            f'<rect x="{label_w}" y="{y + 3}" width="{bar}" height="16" rx="3" fill="{colour}">'
            f"<title>{_e(label)}: {n}</title></rect>",
            f'<text x="{label_w + bar + 6}" y="{y + 15}">{n}</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)


def _days_chart(days: dict[str, Counter[str]], width: int = 900, height: int = 220) -> str:
    """Stacked daily columns: delivered, refused, would refuse."""
    if not days:
        return '<p class="muted">no data</p>'
    ordered = sorted(days.items())
    top = max(sum(c.values()) for _, c in ordered) or 1
    left, bottom, plot_h = 40, 30, height - 50
    step = (width - left - 10) / len(ordered)
    col = max(4.0, min(48.0, step * 0.7))
    parts = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    parts.append(f'<text x="{left - 6}" y="16" text-anchor="end">{top}</text>')
    parts.append(
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}"'
        ' stroke="#9aa3b2"/>'
    )
    for index, (day, counts) in enumerate(ordered):
        x = left + index * step + (step - col) / 2
        y = float(height - bottom)
        for kind, colour in COLOURS.items():
            h = plot_h * counts[kind] / top
            if h:
                y -= h
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{col:.1f}" height="{h:.1f}"'
                    f' fill="{colour}"><title>{_e(day)} {kind}: {counts[kind]}</title></rect>'
                )
        if len(ordered) <= 16 or index % max(1, len(ordered) // 12) == 0:
            parts.append(
                f'<text x="{x + col / 2:.1f}" y="{height - bottom + 16}"'
                f' text-anchor="middle">{_e(day[5:])}</text>'
            )
    legend_x = width - 330
    for index, (kind, colour) in enumerate(COLOURS.items()):
        x = legend_x + index * 110
        parts.append(f'<rect x="{x}" y="4" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 16}" y="15">{kind}</text>')
    parts.append("</svg>")
    return "".join(parts)


def format_html(report: Report) -> str:
    period = f"{report.first[:16].replace('T', ' ')} to {report.last[:16].replace('T', ' ')} UTC"
    refused = sum(v.refused for v in report.sources.values())
    would = sum(v.would_refuse for v in report.sources.values())
    cards = [
        ("decisions", report.decisions),
        ("delivered", report.delivered),
        ("refused", refused),
        ("would refuse (monitor)", would),
        (
            "DKIM signed",
            f"{100 * report.signed / report.delivered:.0f}%" if report.delivered else "-",
        ),
        ("check errors", sum(report.scanner_errors.values())),
    ]
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td class=n>{v.decisions}</td><td class=n>{v.delivered}</td>"
        f"<td class=n>{v.refused}</td><td class=n>{v.would_refuse}</td>"
        f"<td class=n>{v.size / 1024:.1f}</td></tr>"
        for name, v in sorted(report.sources.items(), key=lambda kv: -kv[1].decisions)
    )
    admin = "".join(
        f"<tr><td>{_e(a.time[:19].replace('T', ' '))}</td><td>{_e(a.event)}"
        f"</td><td>{_e(a.source)}</td><td>{_e(a.actor)}</td>"
        f"<td>{_e(a.reason)}</td></tr>"
        for a in report.admin
    )
    sources = sorted(report.sources.items(), key=lambda kv: -kv[1].decisions)[:20]
    body = [
        "<h1>relayguard report</h1>",
        f'<p class="muted">{_e(report.path.name)} · {_e(period)}'
        + (f" · since {_e(report.since)}" if report.since else "")
        + "</p>",
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in cards)
        + "</div>",
        "<h2>Volume per day</h2>",
        _days_chart(report.days),
        "<h2>Messages per source</h2>",
        _bars([(n, v.decisions) for n, v in sources], "#3558a8"),
        "<table><tr><th>source</th><th class=n>decisions</th><th class=n>delivered</th>"
        "<th class=n>refused</th><th class=n>would refuse</th><th class=n>KiB</th></tr>"
        f"{rows}</table>",
        "<h2>Refusals by reason</h2>",
        _bars(report.refusals.most_common(12), "#c62828"),
        "<h2>Top YARA and DLP rules</h2>",
        _bars(report.content_rules.most_common(10), "#6a1b9a"),
        "<h2>Check errors (scanners, state backend)</h2>",
        _bars(report.scanner_errors.most_common(10), "#ef6c00"),
        "<h2>DKIM coverage</h2>",
        f"<p>{_e(_coverage(report))}</p>",
        _bars(report.dkim_algorithms.most_common(), "#2e7d32"),
    ]
    if admin:
        body += [
            "<h2>Kill switch</h2><table><tr><th>time (UTC)</th><th>event</th><th>source</th>"
            f"<th>by</th><th>reason</th></tr>{admin}</table>"
        ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>relayguard report {_e(period)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audit-log", type=Path, required=True, help="the JSON-lines audit log")
    parser.add_argument("--since", help="only decisions from this date or time on (ISO 8601)")
    parser.add_argument("--html", type=Path, help="also write one self-contained HTML page here")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        report = build(args.audit_log, args.since)
    except OSError as exc:
        print(f"relayguard report: cannot read {args.audit_log}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"relayguard report: --since: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(format_text(report))
    if args.html:
        args.html.write_text(format_html(report), encoding="utf-8")
        print(f"HTML report: {args.html}")
    return 0
