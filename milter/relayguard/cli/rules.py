"""The rules workbench for security teams: `relayguard rules check | test`.

`check` compiles and validates every YARA rule and DLP detector of a configuration. `test` runs the
very check functions the milter runs (MIME walk limits, YARA, DLP) on sample messages and shows
which rule and detector hit which part, with counts; the matched data only with
`--show-matches`, for local debugging. `test --suite DIR` runs the samples of DIR/manifest.toml
against their expected outcome, so a rules repository can be kept under CI (exit 1 on a failure).
ClamAV and URL block lists are not run here: they need their daemons, and are not rules a team
writes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relayguard.checks import Subject, mime_limits
from relayguard.checks import dlp as dlp_check
from relayguard.checks import yara as yara_check
from relayguard.config import Config, Source, load_config
from relayguard.core.message import Client, Envelope, message_from_bytes
from relayguard.core.safe_text import printable
from relayguard.core.verdict import Action, Verdict
from relayguard.dlp.profiles import scan_parts
from relayguard.parsing.mime import raw_message, walk_message

OUTCOMES = {a.label: a for a in (Action.ACCEPT, Action.TAG, Action.QUARANTINE, Action.REJECT)}
MANIFEST_KEYS = frozenset({"file", "source", "expect", "rules", "detectors", "description"})


@dataclass(slots=True)
class SampleResult:
    """What the workbench found in one sample."""

    sample: str
    source: str | None
    action: Action
    verdicts: list[Verdict]
    rules: dict[str, list[str]] = field(default_factory=dict)  # rule -> part paths
    detectors: dict[str, int] = field(default_factory=dict)  # detector -> count (all detectors)
    per_part: list[dict[str, Any]] = field(default_factory=list)
    matches: list[dict[str, Any]] = field(default_factory=list)  # only with --show-matches

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sample": self.sample,
            "source": self.source,
            "action": self.action.label,
            "checks": [
                {"name": v.check, "action": v.action.label, "reason": v.reason}
                for v in self.verdicts
            ],
            "yara_rules": self.rules,
            "dlp_counts": self.detectors,
            "parts": self.per_part,
        }
        if self.matches:
            out["matches"] = self.matches
        return out


def evaluate(
    config: Config, raw: bytes, name: str, source: Source | None, show_matches: bool = False
) -> SampleResult:
    """Run the content checks the milter would run for `source` on one raw message."""
    envelope = Envelope(Client(), "")
    message = message_from_bytes(raw, envelope)
    subject = Subject(config, source, envelope, message=message)
    content = config.content
    verdicts = [mime_limits.check_limits(subject)]
    walked = walk_message(message, content.limits)
    result = SampleResult(name, source.name if source else None, Action.ACCEPT, verdicts)
    parts: dict[str, dict[str, Any]] = {
        p.path: {
            "part": p.path,
            "filename": p.filename,
            "content_type": p.content_type,
            "size": p.size,
            "yara": [],
            "dlp": {},
        }
        for p in walked.parts
    }
    if content.yara is not None:
        verdicts.append(yara_check.make_check(content.yara)(subject))
        try:
            hits = list(
                yara_check.scan(
                    content.yara, raw_message(message), walked.parts, result.source or ""
                )
            )
        except yara_check.ScanFailed:
            hits = []
        for hit in hits:
            result.rules.setdefault(hit.rule, []).append(hit.part_path or "message")
            if hit.part_path in parts:
                parts[hit.part_path]["yara"].append(hit.rule)
            if show_matches:
                for offset, identifier, data in hit.strings:
                    result.matches.append(
                        {
                            "kind": "yara",
                            "rule": hit.rule,
                            "part": hit.part_path or "message",
                            "string": identifier,
                            "offset": offset,
                            "data": data[:200].decode("utf-8", "replace"),
                        }
                    )
    if content.dlp.profile_for(source) is not None:
        verdicts.append(dlp_check.make_check(content.dlp)(subject))
    scan = scan_parts(walked.parts, list(content.dlp.detectors.values()))
    result.detectors = dict(sorted(scan.counts.items()))
    for found in scan.parts:
        parts[found.path]["dlp"] = {d: len(m) for d, m in found.matches.items()}
        if show_matches:
            for detector, matches in found.matches.items():
                for match in matches:
                    result.matches.append(
                        {
                            "kind": "dlp",
                            "detector": detector,
                            "part": found.path,
                            "value": match.value,
                        }
                    )
    result.per_part = [p for p in parts.values() if p["yara"] or p["dlp"]]
    result.action = max((v.action for v in verdicts), default=Action.ACCEPT)
    return result


def format_result(result: SampleResult) -> str:
    lines = [
        f"{result.sample}: {result.action.label}"
        + (f" (source {result.source})" if result.source else "")
    ]
    for verdict in result.verdicts:
        lines.append(f"  {verdict.check:<12} {verdict.action.label:<10} {verdict.reason}")
    for part in result.per_part:
        # Part paths and reasons are escaped where they are made; the file name is as sent.
        filename = printable(part["filename"])
        label = f"part {part['part']}" + (f" ({filename})" if filename else "")
        hits = [f"yara:{r}" for r in part["yara"]] + [
            f"dlp:{d}={n}" for d, n in part["dlp"].items()
        ]
        lines.append(f"    {label}: {', '.join(hits)}")
    raw_rules = [r for r, paths in result.rules.items() if "message" in paths]
    if raw_rules:
        lines.append(f"    raw message: {', '.join('yara:' + r for r in raw_rules)}")
    for match in result.matches:
        if match["kind"] == "dlp":
            value = printable(match["value"])
            lines.append(f"    MATCH dlp:{match['detector']} part {match['part']}: {value}")
        else:
            lines.append(
                f"    MATCH yara:{match['rule']} {match['string']} part {match['part']}"
                f" @{match['offset']}: {match['data']!r}"
            )
    return "\n".join(lines)


# --- the suite (test-folder) mode ---------------------------------------------------------


def run_suite(config: Config, directory: Path) -> tuple[list[str], int]:
    """Lines to print and the number of failed samples."""
    manifest_path = directory / "manifest.toml"
    try:
        manifest = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return [f"{manifest_path}: {exc}"], 1
    samples = manifest.get("samples")
    if not isinstance(samples, list) or not samples:
        return [f"{manifest_path}: no [[samples]]"], 1
    lines: list[str] = []
    failed = 0
    for index, entry in enumerate(samples):
        problems = _run_sample(config, directory, manifest_path, index, entry)
        label = entry.get("file", f"samples[{index}]") if isinstance(entry, dict) else index
        if problems:
            failed += 1
            lines.append(f"FAIL {label}")
            lines.extend(f"     {p}" for p in problems)
        else:
            lines.append(f"ok   {label}")
    lines.append(f"{len(samples) - failed} passed, {failed} failed")
    return lines, failed


def _run_sample(
    config: Config, directory: Path, manifest: Path, index: int, entry: Any
) -> list[str]:
    where = f"{manifest}: samples[{index}]"
    if not isinstance(entry, dict):
        return [f"{where}: expected a table"]
    unknown = set(entry) - MANIFEST_KEYS
    if unknown:
        return [f"{where}: unknown key(s) {', '.join(sorted(unknown))}"]
    expect = entry.get("expect")
    if expect not in OUTCOMES:
        return [f"{where}.expect: one of {', '.join(OUTCOMES)}"]
    source = None
    if entry.get("source"):
        source = config.source(str(entry["source"]))
        if source is None:
            return [f"{where}.source: no source {entry['source']!r} in {config.path}"]
    try:
        raw = (directory / str(entry.get("file", ""))).read_bytes()
    except OSError as exc:
        return [f"{where}.file: {exc.strerror}: {entry.get('file')}"]
    result = evaluate(config, raw, str(entry["file"]), source)
    problems = []
    if result.action is not OUTCOMES[expect]:
        deciding = max(result.verdicts, key=lambda v: v.action)
        problems.append(
            f"expected {expect}, got {result.action.label} ({deciding.check}: {deciding.reason})"
        )
    if "rules" in entry:
        wanted = set(entry["rules"])
        if wanted != set(result.rules):
            problems.append(f"YARA rules: expected {sorted(wanted)}, got {sorted(result.rules)}")
    expected_counts = entry.get("detectors", {})
    if isinstance(expected_counts, Mapping):
        for name, count in expected_counts.items():
            got = result.detectors.get(name, 0)
            if got != count:
                problems.append(f"detector {name}: expected {count}, got {got}")
    return problems


# --- the command line ---------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="rules_command", required=True)
    check = actions.add_parser("check", help="compile and validate every rule and detector")
    check.add_argument("--config", "-c", type=Path, required=True, help="the relayguard.toml")
    check.set_defaults(handler=_check)
    test = actions.add_parser("test", help="which rules and detectors hit which part")
    test.add_argument("--config", "-c", type=Path, required=True, help="the relayguard.toml")
    test.add_argument("samples", nargs="*", type=Path, help="messages (.eml) to test")
    test.add_argument("--source", help="apply this source's DLP profile (default: none)")
    test.add_argument("--suite", type=Path, help="a folder with manifest.toml and samples")
    test.add_argument(
        "--show-matches",
        action="store_true",
        help="print the matched data (local debugging only: it may be sensitive)",
    )
    test.add_argument("--json", action="store_true", help="one JSON array")
    test.set_defaults(handler=_test)


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # YARA compile and detector errors are ConfigErrors
    content = config.content
    if content.yara is not None:
        compiled = content.yara.compiled
        files = f"{len(compiled.files)} file(s) from {compiled.directory}"
        print(f"YARA: {len(compiled.info)} rule(s) in {files}")
        for rule in compiled.info:
            action = rule.action or f"{content.yara.default_action.label} (default)"
            print(f"  {rule.name}: {action}")
    else:
        print("YARA: not configured")
    print(f"DLP: {len(content.dlp.detectors)} detector(s), {len(content.dlp.profiles)} profile(s)")
    for detector in content.dlp.detectors.values():
        print(f"  detector {detector.name}: {detector.description}")
    for profile in content.dlp.profiles.values():
        thresholds = ", ".join(f"{n}>={c}" for n, c in profile.thresholds.items())
        users = [s.name for s in config.sources if s.dlp_profile == profile.name]
        if content.dlp.default_profile == profile.name:
            users.append("(default)")
        print(
            f"  profile {profile.name}: {profile.match} of {thresholds} -> {profile.action.value};"
            f" used by {', '.join(users) or 'no source'}"
        )
    print("OK")
    return 0


def _test(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.suite:
        lines, failed = run_suite(config, args.suite)
        print("\n".join(lines))
        return 1 if failed else 0
    if not args.samples:
        print("relayguard rules test: give SAMPLE files or --suite DIR", file=sys.stderr)
        return 2
    source = None
    if args.source:
        source = config.source(args.source)
        if source is None:
            print(f"relayguard rules test: no source {args.source!r}", file=sys.stderr)
            return 2
    results = []
    for sample in args.samples:
        try:
            raw = sample.read_bytes()
        except OSError as exc:
            print(f"relayguard rules test: {sample}: {exc.strerror}", file=sys.stderr)
            return 2
        results.append(evaluate(config, raw, str(sample), source, args.show_matches))
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print("\n".join(format_result(r) for r in results))
    return 0
