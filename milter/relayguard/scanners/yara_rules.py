"""YARA rules from a directory: compiled once per configuration snapshot, errors located.

Every ``*.yar`` / ``*.yara`` file under the directory is compiled into its own namespace (the
file's path relative to the directory). A syntax error is reported with the file and line, so a
bad rule is a configuration error and a reload keeps the running rules. The externals every rule
may use are declared here with their defaults and set per scanned part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yara

from relayguard.core.errors import RelayguardError

EXTERNALS: dict[str, str | bool] = {
    "filename": "",
    "content_type": "",
    "source": "",
    "is_attachment": False,
    "part_path": "",
}
RULE_ACTIONS = ("reject", "quarantine", "tag")
_LOCATION = re.compile(r"^(?P<file>.*)\((?P<line>\d+)\): (?P<text>.*)$", re.DOTALL)


class RuleError(RelayguardError):
    """Rules that cannot be used; `problems` are located, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True)
class RuleInfo:
    name: str  # namespace:identifier
    action: str  # '' = the configured default
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CompiledRules:
    directory: Path
    files: tuple[Path, ...]
    rules: Any  # yara.Rules (yara-python has no type information)
    info: tuple[RuleInfo, ...]

    def action_of(self, namespace: str, identifier: str) -> str:
        wanted = f"{namespace}:{identifier}"
        return next((r.action for r in self.info if r.name == wanted), "")


def rule_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yar", ".yara") and p.is_file())


def namespace_of(directory: Path, path: Path) -> str:
    return path.relative_to(directory).with_suffix("").as_posix()


def located(error: Exception) -> str:
    """yara-python's 'file(line): message' as 'file line N: message'."""
    text = str(error)
    match = _LOCATION.match(text)
    if match:
        return f"{match['file']} line {match['line']}: {match['text']}"
    return text


def compile_directory(directory: Path) -> CompiledRules:
    """Compile every rule file; raise RuleError naming each bad file and line."""
    if not directory.is_dir():
        raise RuleError([f"{directory}: not a directory"])
    files = rule_files(directory)
    problems: list[str] = []
    info: list[RuleInfo] = []
    for path in files:  # one by one first, so every bad file is reported, not only the first
        try:
            single = yara.compile(filepath=str(path), externals=EXTERNALS)
        except yara.SyntaxError as exc:
            problems.append(located(exc))
            continue
        except yara.Error as exc:
            problems.append(f"{path}: {exc}")
            continue
        namespace = namespace_of(directory, path)
        for rule in single:
            action = str(rule.meta.get("action", "")).lower()
            if action and action not in RULE_ACTIONS:
                problems.append(
                    f"{path}: rule {rule.identifier}: meta action {action!r} is not one of"
                    f" {', '.join(RULE_ACTIONS)}"
                )
            info.append(RuleInfo(f"{namespace}:{rule.identifier}", action, tuple(rule.tags)))
    if problems:
        raise RuleError(problems)
    try:
        rules = yara.compile(
            filepaths={namespace_of(directory, p): str(p) for p in files}, externals=EXTERNALS
        )
    except yara.Error as exc:
        raise RuleError([located(exc)]) from None
    return CompiledRules(directory, tuple(files), rules, tuple(info))
