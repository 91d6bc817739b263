"""The quarantine is Postfix's hold queue: list, show, release, delete (the CLI and the console).

The milter's quarantine action makes Postfix put the message on hold (its reason is in the audit
line of that queue id, and in Postfix's log as `milter-hold`). These commands wrap Postfix's own
tools with `-c CONFIG_DIR`, so they work on any instance: `postqueue -j` to list, `postcat` to
show, `postsuper -H` + `postqueue -i` to release (delivered now, not rescanned: a human decided),
`postsuper -d` to delete.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from relayguard.core.errors import RelayguardError
from relayguard.core.safe_text import printable

POSTQUEUE = "/usr/sbin/postqueue"
POSTSUPER = "/usr/sbin/postsuper"
POSTCAT = "/usr/sbin/postcat"
# Both of Postfix's formats: short ids are hex digits, long ids (enable_long_queue_ids) letters and
# digits. Matched whole (fullmatch: `$` would let a final newline through).
QUEUE_ID = re.compile(r"[0-9A-Za-z]{5,32}")


class QuarantineError(RelayguardError):
    """A Postfix tool failed or the queue id is not on hold."""


@dataclass(frozen=True, slots=True)
class Held:
    queue_id: str
    arrival_time: int
    size: int
    sender: str
    recipients: tuple[str, ...]
    reason: str = ""


def _run(argv: list[str]) -> str:
    # A held message's header may hold any byte: decoded as UTF-8 (RFC 6532), never a crash.
    return _run_bytes(argv).decode("utf-8", "replace")


def _run_bytes(argv: list[str]) -> bytes:
    result = subprocess.run(
        argv, capture_output=True, check=False, stdin=subprocess.DEVNULL, timeout=60
    )
    if result.returncode != 0:
        problem = result.stderr.decode("utf-8", "replace").strip()
        raise QuarantineError(f"{Path(argv[0]).name} failed: {problem}")
    return result.stdout


def checked_queue_id(text: str) -> str:
    """`text` when it can be a Postfix queue id: never an option, a path or a second word."""
    if not QUEUE_ID.fullmatch(text):
        raise QuarantineError(f"{text!r} is not a Postfix queue id")
    return text


def held(postfix_config: Path, reasons: dict[str, str] | None = None) -> list[Held]:
    output = _run([POSTQUEUE, "-c", str(postfix_config), "-j"])
    messages = []
    for line in output.splitlines():
        if not line.strip():
            continue
        entry: dict[str, Any] = json.loads(line)
        if entry.get("queue_name") != "hold":
            continue
        queue_id = str(entry["queue_id"])
        messages.append(
            Held(
                queue_id=queue_id,
                arrival_time=int(entry.get("arrival_time", 0)),
                size=int(entry.get("message_size", 0)),
                sender=str(entry.get("sender", "")),
                recipients=tuple(str(r.get("address", "")) for r in entry.get("recipients", [])),
                reason=(reasons or {}).get(queue_id, ""),
            )
        )
    return messages


def audit_reasons(audit_log: Path | None, queue_ids: Iterable[str] | None = None) -> dict[str, str]:
    """queue id -> why it was quarantined, from the audit lines (the reasons of the checks whose
    action was quarantine). Lines are read as they come; a damaged line is skipped."""
    wanted = set(queue_ids) if queue_ids is not None else None
    reasons: dict[str, str] = {}
    if audit_log is None or not audit_log.exists():
        return reasons
    with audit_log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if '"quarantine"' not in line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            queue_id = record.get("queue_id")
            if not queue_id or (wanted is not None and queue_id not in wanted):
                continue
            why = [
                f"{check.get('name')}: {check.get('reason')}"
                for check in record.get("checks", [])
                if check.get("action") == "quarantine"
            ]
            if why:
                reasons[str(queue_id)] = "; ".join(why)
    return reasons


def show(postfix_config: Path, queue_id: str, body: bool = False) -> str:
    flags = "-ehbq" if body else "-ehq"
    return _run([POSTCAT, "-c", str(postfix_config), flags, checked_queue_id(queue_id)])


def message_bytes(postfix_config: Path, queue_id: str) -> bytes:
    """The held message as queued (header and body, bytes as they are), for the console's view."""
    _require_held(postfix_config, checked_queue_id(queue_id))
    return _run_bytes([POSTCAT, "-c", str(postfix_config), "-hbq", queue_id])


def format_list(messages: list[Held], reasons: dict[str, str]) -> str:
    """One line per held message, its reason below; the sender's values escaped (safe_text)."""
    lines = []
    for m in messages:
        lines.append(
            printable(f"{m.queue_id}  {m.size:>9}  <{m.sender}> -> {', '.join(m.recipients)}")
        )
        if reasons.get(m.queue_id):
            lines.append("    " + printable(reasons[m.queue_id]))
    lines.append(f"{len(messages)} message(s) on hold")
    return "\n".join(lines)


def format_show(reason: str | None, postcat_output: str) -> str:
    """postcat's view, line by line escaped: the header fields are the sender's text, and an ESC
    sequence or a CR in them must not rewrite the sysadmin's terminal."""
    lines = [f"*** quarantined: {printable(reason)}"] if reason else []
    # split("\n"), not splitlines(): that also splits at \x85 or U+2028, which must be shown.
    lines += [printable(line) for line in postcat_output.removesuffix("\n").split("\n")]
    return "\n".join(lines) + "\n"


def _require_held(postfix_config: Path, queue_id: str) -> None:
    if not any(m.queue_id == queue_id for m in held(postfix_config)):
        raise QuarantineError(f"{queue_id} is not in the hold queue")


def release(postfix_config: Path, queue_id: str) -> None:
    """Out of hold and delivered now. It is not scanned again: a person released it."""
    _require_held(postfix_config, checked_queue_id(queue_id))
    _run([POSTSUPER, "-c", str(postfix_config), "-H", queue_id])
    _run([POSTQUEUE, "-c", str(postfix_config), "-i", queue_id])


def delete(postfix_config: Path, queue_id: str) -> None:
    _require_held(postfix_config, checked_queue_id(queue_id))
    _run([POSTSUPER, "-c", str(postfix_config), "-d", queue_id, "hold"])


class Hold(Protocol):
    """A hold queue as the console uses it: Postfix's own (HoldQueue), the root helper's client
    (services/quarantine_helper/client.py), or the tests' messages in memory."""

    def held(self) -> list[Held]: ...

    def message(self, queue_id: str) -> bytes: ...

    def release(self, queue_id: str) -> None: ...

    def delete(self, queue_id: str) -> None: ...


class HoldQueue:
    """The hold queue of one Postfix instance, through the functions above (root only)."""

    def __init__(self, postfix_config: Path) -> None:
        self.postfix_config = postfix_config

    def held(self) -> list[Held]:
        return held(self.postfix_config)

    def message(self, queue_id: str) -> bytes:
        return message_bytes(self.postfix_config, queue_id)

    def release(self, queue_id: str) -> None:
        release(self.postfix_config, queue_id)

    def delete(self, queue_id: str) -> None:
        delete(self.postfix_config, queue_id)
