"""The typed audit record: written with a schema version, read back from any version, and the
verdicts' facts that metrics, report and inventory count instead of parsing reason text."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.unit.test_content_checks import CARDS
from tests.unit.test_content_checks import CONFIG as CONTENT_CONFIG

from relayguard import metrics
from relayguard.checks import Check, Stage, Subject, clamav, dlp, urls
from relayguard.checks import yara as yara_check
from relayguard.cli import inventory, report
from relayguard.config import Config, load_config
from relayguard.config.content import ClamavSettings
from relayguard.core.audit_record import (
    SCHEMA,
    AdminRecord,
    AuditRecord,
    CheckEntry,
    DecisionRecord,
    RecipientRefusal,
    parse_line,
    parse_record,
)
from relayguard.core.message import Client, Envelope, message_from_bytes
from relayguard.core.verdict import Action, Mode, Verdict
from relayguard.dkim import keys as dkim_keys
from relayguard.engine.audit import FACT_ITEMS_LIMIT, FACT_TEXT_LIMIT, AuditLog
from relayguard.engine.audit_reader import read_audit
from relayguard.engine.pipeline import Pipeline
from relayguard.engine.runtime import Runtime
from relayguard.engine.transaction import Transaction
from relayguard.scanners.clamd import ScanResult

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2] / "milter" / "relayguard"
SCANNER = Client(address="198.51.100.7", sasl_user="scanner-hq")

# A line as the milter wrote it before the schema version existed (v1).
V1_LINE = {
    "time": "2026-11-23T10:00:00.000Z", "queue_id": "4XQ", "stage": "end", "mode": "monitor",
    "source": "erp", "client_address": "192.0.2.1", "sasl_user": "erp", "cert_subject": None,
    "cert_issuer": None, "listener": "submission", "mail_from": "erp@example.com",
    "recipients": ["a@example.com"],
    "recipient_refusals": [{"recipient": "b@example.com", "check": "rate_limit", "applied": True,
                            "reason": "source erp is over its limit of 5 recipients per hour;"
                                      " retry in 3 s"}],
    "from": "ERP <erp@example.com>", "message_id": "<1@example.com>", "size": 2048,
    "checks": [
        {"name": "clamav", "action": "tempfail", "reason": "clamd down", "ms": 3.0,
         "error": True},
        {"name": "dkim", "action": "accept", "reason": "signed d=example.com s=a(rsa),b(ed25519)",
         "ms": 1.5},
    ],
    "action": "accept", "outcome": "would_tempfail", "reply": None,
}  # fmt: skip


def decision(**fields: Any) -> DecisionRecord:
    base = DecisionRecord(
        time="2026-11-23T10:00:00.000Z",
        stage="end",
        mode=Mode.ENFORCE,
        action=Action.ACCEPT,
        outcome="accept",
        source="erp",
        client_address="192.0.2.1",
        mail_from="erp@example.com",
        recipients=("a@example.com",),
        size=100,
    )
    return replace(base, **fields)


# --- the reader -----------------------------------------------------------------------------------


def test_a_v1_line_is_read_with_its_facts_recovered_once() -> None:
    record = parse_record(V1_LINE)
    assert isinstance(record, DecisionRecord)
    assert record.schema == 1
    assert (record.mode, record.action, record.outcome) == (Mode.MONITOR, Action.ACCEPT,
                                                            "would_tempfail")  # fmt: skip
    assert (record.from_header, record.size, record.listener) == (
        "ERP <erp@example.com>",
        2048,
        "submission",
    )
    clamd, dkim = record.checks
    assert (clamd.name, clamd.action, clamd.error, clamd.ms) == ("clamav", Action.TEMPFAIL, True, 3)
    # v1 wording is frozen, so the two facts v1 readers parsed from it are recovered in the reader.
    assert dkim.facts == {
        "domain": "example.com",
        "selectors": ("a", "b"),
        "algorithms": ("rsa", "ed25519"),
    }
    (refusal,) = record.recipient_refusals
    assert refusal.facts == {"kind": "recipients", "window": "hour", "limit": 5}
    line = record.to_json()
    assert line["v"] == 1
    assert {key: line[key] for key in V1_LINE} == V1_LINE | {  # nothing lost, nothing renamed
        "checks": [
            V1_LINE["checks"][0],
            V1_LINE["checks"][1] | {"facts": line["checks"][1]["facts"]},
        ],
        "recipient_refusals": [V1_LINE["recipient_refusals"][0] | {"facts": refusal.facts}],
    }


def test_a_v2_line_round_trips_and_carries_its_version() -> None:
    record = decision(
        queue_id="4XQ",
        checks=(
            CheckEntry("rate_limit", Action.TEMPFAIL, "over", 0.5,
                       facts={"kind": "messages", "window": "minute", "limit": 2,
                              "retry_after": 31}),
            CheckEntry("dlp", Action.ACCEPT, "profile pci: 1 part(s)", 2.0,
                       facts={"profile": "pci", "detectors": {"card_number": 1}}),
        ),
        recipient_refusals=(RecipientRefusal("b@example.com", "recipients", "no", False),),
        count=3,
        last_time="2026-11-23T10:01:00.000Z",
    )  # fmt: skip
    line = json.dumps(record.to_json())
    assert json.loads(line)["v"] == SCHEMA == 2
    assert parse_line(line) == record
    admin = AdminRecord("2026-11-23T10:00:00.000Z", "source_disabled", "alice", "erp", "stolen")
    assert json.loads(json.dumps(admin.to_json()))["stage"] == "admin"
    assert parse_line(json.dumps(admin.to_json())) == admin


def test_fields_and_facts_of_a_later_version_are_tolerated() -> None:
    line = decision().to_json() | {
        "v": 7,
        "spam": {"score": 3.5},  # a field this reader does not know
        "checks": [
            {"name": "yara", "action": "tag", "reason": "r", "ms": 1, "verdict_id": "x",
             "facts": {"rules": ["a:b"], "parts": [{"path": "2"}]}},
        ],
    }  # fmt: skip
    record = parse_record(line)
    assert isinstance(record, DecisionRecord) and record.schema == 7
    (entry,) = record.checks
    assert entry.facts == {"rules": ("a:b",)}  # a fact of an unknown shape is left out


def test_lines_that_are_no_record_are_counted_unreadable(tmp_path: Path) -> None:
    good = decision().to_json()
    log = tmp_path / "audit.jsonl"
    lines = [
        json.dumps(good),
        "not json",
        "[1, 2]",
        json.dumps({"hello": "world"}),
        json.dumps(good | {"action": "explode"}),  # no action this reader knows
        json.dumps(good | {"size": "big"}),  # a field of the wrong type: not half-read
        json.dumps(good | {"checks": [{"name": "x", "action": "accept", "error": "yes"}]}),
        json.dumps(good)[:40],  # a torn last line
    ]
    log.write_text("\n".join(lines) + "\n\n")
    found = read_audit(log)
    assert (len(found.decisions), found.unreadable) == (1, 7)


# --- facts in the audit line ----------------------------------------------------------------------


def runtime(config_path: Path, *checks: Check) -> Runtime:
    config = load_config(config_path)
    built = Runtime.build(config)
    return replace(built, pipeline=Pipeline(config, checks))


def deliver(rt: Runtime, client: Client = SCANNER) -> None:
    tx = Transaction(rt, client)
    if tx.mail("<scanner@example.com>").action >= Action.TEMPFAIL:
        return
    tx.rcpt("<alice@example.com>")
    raw = (Path(__file__).parents[1] / "data" / "good.eml").read_bytes()
    message = message_from_bytes(raw, tx.envelope)
    tx.end(message.headers, message.body, message.size)


def test_facts_are_written_bounded_and_omitted_when_empty(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    many = tuple(f"rules:Rule_{n}_" + "x" * 200 for n in range(100))

    def found(subject: Subject) -> Verdict:
        facts = {"rule": many[0], "rules": many, "count": 100}
        return Verdict("yara", Action.TAG, "YARA rule matched", facts=facts)

    deliver(runtime(write_config(audit=audit), Check("yara", Stage.END, found)))
    (line,) = [json.loads(text) for text in audit.read_text().splitlines()]
    assert line["v"] == 2
    by_name = {entry["name"]: entry for entry in line["checks"]}
    assert "facts" not in by_name["source"]  # no facts: no key
    facts = by_name["yara"]["facts"]
    assert facts["count"] == 100
    assert len(facts["rules"]) == FACT_ITEMS_LIMIT
    assert len(facts["rule"]) < FACT_TEXT_LIMIT + 30 and "…[clipped " in facts["rule"]


@pytest.fixture
def content(tmp_path: Path) -> Config:
    path = tmp_path / "content.toml"
    path.write_text(CONTENT_CONFIG)
    return load_config(path)


def content_subject(config: Config, body: str, source: str = "erp") -> Subject:
    msg = EmailMessage()
    msg["From"] = "erp@example.com"
    msg["To"] = "alice@example.com"
    msg["Subject"] = "test"
    msg.set_content(body)
    envelope = Envelope(Client(sasl_user=source), "erp@example.com", ("alice@example.com",), "Q1")
    parsed = message_from_bytes(msg.as_bytes().replace(b"\n", b"\r\n"), envelope)
    return Subject(config, config.source(source), envelope, message=parsed)


def test_content_checks_state_names_and_counts_never_content(content: Config) -> None:
    virus = clamav.make_check(ClamavSettings("unix:/x"), lambda data: ScanResult("Eicar-Sig"))
    assert virus(content_subject(content, "x")).facts == {
        "signature": "Eicar-Sig",
        "detection": "malware",
    }
    assert content.content.yara is not None
    rule = yara_check.make_check(content.content.yara)(
        content_subject(content, "x RELAYGUARD-TEST-BLOCK y")
    )
    assert rule.facts == {"rule": "markers:Block_Marker", "rules": ("markers:Block_Marker",)}
    leak = dlp.make_check(content.content.dlp)(content_subject(content, f"cards {CARDS}"))
    assert leak.facts == {"profile": "pci", "detectors": {"card_number": 3}}
    assert "4111" not in json.dumps(leak.facts) and "4111" not in str(leak.facts)
    assert content.content.urls is not None
    listed = urls.make_check(
        content.content.urls, lambda name: ["127.0.1.2"] if name.endswith(".dbl.test") else []
    )(content_subject(content, "see https://evil.example/x and https://bad.example/"))
    assert listed.facts == {"hosts": 2, "listed": 2, "zones": ("dbl.test",)}
    assert "evil.example" not in json.dumps(listed.facts)  # the names come from the message


# --- metrics, report and inventory from facts -----------------------------------------------------

LIMITS = "rate_limits = { messages_per_minute = 2 }\n"
RATE_LIMIT_HITS = "relayguard_rate_limit_hits_total"
DKIM_SIGNATURES = "relayguard_dkim_signatures_total"
STATE_AND_DKIM = """
[state]
backend = "sqlite"
path = "{state}"

[dkim]
key_directory = "{keys}"
domains = ["example.com"]
"""


@pytest.fixture
def signing_config(write_config: Callable[..., Path], tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    dkim_keys.generate(keys, "example.com", "ed1", "ed25519")
    dkim_keys.generate(keys, "example.com", "rsa1", "rsa")
    path = write_config(audit=tmp_path / "audit.jsonl")
    text = path.read_text().replace("max_recipients = 3\n", "max_recipients = 3\n" + LIMITS)
    path.write_text(text + STATE_AND_DKIM.format(state=tmp_path / "state.db", keys=keys))
    return path


def observed(config_path: Path) -> tuple[Runtime, CollectorRegistry, list[AuditRecord]]:
    registry = CollectorRegistry()
    counters = metrics._Metrics(registry)
    seen: list[AuditRecord] = []
    observe = metrics.MetricsObserver("sqlite", lambda: counters)
    rt = Runtime.build(load_config(config_path))
    return replace(rt, observers=(observe, seen.append)), registry, seen


def test_rate_limit_and_dkim_counters_come_from_facts(signing_config: Path, tmp_path: Path) -> None:
    rt, registry, seen = observed(signing_config)
    for _ in range(3):  # the limit is 2 a minute: the third is refused at MAIL FROM
        deliver(rt)
    assert all(isinstance(record, DecisionRecord) for record in seen)
    hits = {"source": "scanner-hq", "limit": "messages_per_minute"}
    assert registry.get_sample_value(RATE_LIMIT_HITS, hits) == 1
    for algorithm in ("ed25519", "rsa"):  # two messages, each signed with both keys
        assert registry.get_sample_value(DKIM_SIGNATURES, {"algorithm": algorithm}) == 2
    refused = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    (limit,) = [c for c in refused["checks"] if c["name"] == "rate_limit"]
    assert limit["facts"] == {"kind": "messages", "window": "minute", "limit": 2,
                              "retry_after": limit["facts"]["retry_after"]}  # fmt: skip

    built = report.build(tmp_path / "audit.jsonl")
    assert (built.signed, built.dkim_algorithms) == (2, {"ed25519": 2, "rsa": 2})
    assert built.refusals == {"rate_limit: limit of 2 messages per minute": 1}


def test_reworded_reasons_change_no_counter(signing_config: Path, tmp_path: Path) -> None:
    """What broke counters before: every reason reworded, the numbers stay the same."""
    rt, registry, seen = observed(signing_config)
    for _ in range(3):
        deliver(rt)
    reworded = [
        replace(
            record,
            checks=tuple(replace(c, reason="reworded") for c in record.checks),
            reply="451 4.7.1 reworded",
        )
        for record in seen
        if isinstance(record, DecisionRecord)
    ]
    again = CollectorRegistry()
    counters = metrics._Metrics(again)
    observe = metrics.MetricsObserver("sqlite", lambda: counters)
    for record in reworded:
        observe(record)
    for name, labels in (
        (RATE_LIMIT_HITS, {"source": "scanner-hq", "limit": "messages_per_minute"}),
        (DKIM_SIGNATURES, {"algorithm": "ed25519"}),
        (DKIM_SIGNATURES, {"algorithm": "rsa"}),
    ):
        assert again.get_sample_value(name, labels) == registry.get_sample_value(name, labels)
    log = tmp_path / "reworded.jsonl"
    audit = AuditLog(log)
    for record in reworded:
        audit.write(record)
    assert report.build(log).signed == 2
    assert report.build(log).refusals == {"rate_limit: limit of 2 messages per minute": 1}


def test_inventory_reads_typed_records(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    refused = decision(
        mode=Mode.MONITOR,
        outcome="would_reject",
        from_header="ERP <erp@example.com>",
        checks=(CheckEntry("header_identities", Action.REJECT, "From not allowed"),),
        count=4,
    )
    AuditLog(log).write(refused)
    (flow,) = inventory.collect(read_audit(log).decisions)
    assert (flow.kind, flow.identity, flow.decisions) == ("address", "192.0.2.1", 4)
    assert flow.refusals == {"header_identities: From not allowed": 4}
    assert flow.from_addresses == {"erp@example.com": 1}


# --- no reader parses reason text -----------------------------------------------------------------

READERS = ("metrics.py", "cli/report.py", "cli/inventory.py")
REGEX_CALLS = {"compile", "search", "match", "fullmatch", "findall", "finditer", "sub", "subn"}


def regex_calls_over_reasons(source: str) -> list[str]:
    """Calls of a regular expression whose arguments mention a reason or a reply."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if node.func.attr not in REGEX_CALLS:
            continue
        names = {
            n.id if isinstance(n, ast.Name) else n.attr
            for arg in [*node.args, *(k.value for k in node.keywords)]
            for n in ast.walk(arg)
            if isinstance(n, ast.Name | ast.Attribute)
        }
        names |= {
            str(n.value)
            for arg in node.args
            for n in ast.walk(arg)
            if isinstance(n, ast.Constant) and n.value in ("reason", "reply")
        }
        if names & {"reason", "reply"}:
            found.append(ast.unparse(node))
    return found


@pytest.mark.parametrize("module", READERS)
def test_readers_never_parse_reason_text(module: str) -> None:
    source = (ROOT / module).read_text()
    assert regex_calls_over_reasons(source) == []
    if module != "cli/inventory.py":  # inventory escapes TOML and makes names with `re`
        assert "import re\n" not in source


def test_the_reason_check_finds_what_it_looks_for() -> None:
    assert regex_calls_over_reasons("RATE.search(check['reason'])") == [
        "RATE.search(check['reason'])"
    ]
    assert regex_calls_over_reasons("re.sub('x', 'y', entry.reason)") != []
    assert regex_calls_over_reasons("UNSAFE.sub(escape, value)") == []
