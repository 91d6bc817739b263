"""Configuration of content scanning: [content] limits, [clamav], [yara], [dlp], [[dlp_detectors]],
[[dlp_profiles]], [urls] and [[url_blocklists]].

config.py calls `build_content()` with its root table reader; the keys live in config.SCHEMA like
every other section. YARA rules are compiled here, while the configuration is validated, so a rule
that does not compile is a configuration error (file and line) and a reload keeps the running
rules. DLP detectors are compiled here too.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from relayguard.core.verdict import Action
from relayguard.dlp.detectors import BUILTIN, Detector, DetectorError, custom_detector
from relayguard.dlp.profiles import Profile, ProfileAction
from relayguard.parsing.mime import WalkLimits
from relayguard.scanners.clamd import parse_spec
from relayguard.scanners.yara_rules import CompiledRules, RuleError, compile_directory

if TYPE_CHECKING:
    from collections.abc import Iterator

    from relayguard.config import Source

DETECTOR_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
ZONE = re.compile(
    r"^(?=.{1,200}$)([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\.?$"
)

# Mail that was not scanned must not leave silently: a scanner's failure action can hold,
# refuse or tag it, never plainly accept it.
FAILURE_ACTIONS = {
    "tempfail": Action.TEMPFAIL,
    "reject": Action.REJECT,
    "quarantine": Action.QUARANTINE,
    "tag": Action.TAG,
}
CONTENT_ACTIONS = {"reject": Action.REJECT, "quarantine": Action.QUARANTINE, "tag": Action.TAG}
PROFILE_ACTIONS = {a.value: a for a in ProfileAction}
PROFILE_MATCH = {"any": "any", "all": "all"}


class TableLike(Protocol):
    """What config._Table offers (typed here without importing config: it imports this module)."""

    data: Mapping[str, Any]

    def problem(self, key: str, text: str) -> None: ...
    def string(self, key: str, default: str = "") -> str: ...
    def integer(self, key: str, default: int | None, low: int, high: int) -> int | None: ...
    def strings(self, key: str) -> tuple[str, ...]: ...
    def choice(self, key: str, choices: Mapping[str, Any], default: Any) -> Any: ...
    def table(self, key: str) -> TableLike: ...
    def tables(self, key: str) -> Iterator[TableLike]: ...


@dataclass(frozen=True, slots=True)
class ClamavSettings:
    socket: str
    timeout: int = 30
    failure_action: Action = Action.TEMPFAIL
    database_directory: Path | None = None  # only for `relayguard check`'s signature warning


@dataclass(frozen=True, slots=True)
class YaraSettings:
    rules_dir: Path
    compiled: CompiledRules
    default_action: Action = Action.REJECT
    timeout: int = 10
    failure_action: Action = Action.TEMPFAIL


@dataclass(frozen=True, slots=True)
class DlpSettings:
    detectors: Mapping[str, Detector] = field(default_factory=lambda: MappingProxyType(BUILTIN))
    profiles: Mapping[str, Profile] = field(default_factory=lambda: MappingProxyType({}))
    default_profile: str = ""
    unreadable_action: Action = Action.TAG

    def profile_for(self, source: Source | None) -> Profile | None:
        name = getattr(source, "dlp_profile", "") or self.default_profile
        return self.profiles.get(name) if name else None


@dataclass(frozen=True, slots=True)
class Blocklist:
    zone: str
    action: Action
    codes: frozenset[str] = frozenset()  # answers that count; empty = any 127.0.0.0/8


@dataclass(frozen=True, slots=True)
class UrlSettings:
    blocklists: tuple[Blocklist, ...]
    nameservers: tuple[str, ...] = ()
    port: int = 53
    timeout: int = 2
    failure_action: Action = Action.TAG
    max_domains: int = 20


@dataclass(frozen=True, slots=True)
class ContentSettings:
    limits: WalkLimits = field(default_factory=WalkLimits)
    limit_action: Action = Action.QUARANTINE
    encrypted_action: Action = Action.QUARANTINE
    clamav: ClamavSettings | None = None
    yara: YaraSettings | None = None
    dlp: DlpSettings = field(default_factory=DlpSettings)
    urls: UrlSettings | None = None

    @property
    def scans_content(self) -> bool:
        """Whether any content check is configured (the walk limits check runs only then)."""
        return bool(self.clamav or self.yara or self.dlp.profiles or self.urls)


def build_content(root: TableLike, sources: Sequence[Source], base: Path) -> ContentSettings:
    """Read every content section of the root table; problems are recorded on the tables."""
    limits, limit_action, encrypted_action = _limits(root.table("content"))
    dlp = _dlp(root, sources)
    return ContentSettings(
        limits=limits,
        limit_action=limit_action,
        encrypted_action=encrypted_action,
        clamav=_clamav(root.table("clamav")) if "clamav" in root.data else None,
        yara=_yara(root.table("yara"), base) if "yara" in root.data else None,
        dlp=dlp,
        urls=_urls(root) if "urls" in root.data or "url_blocklists" in root.data else None,
    )


def _limits(table: TableLike) -> tuple[WalkLimits, Action, Action]:
    d = WalkLimits()
    limits = WalkLimits(
        max_depth=table.integer("max_depth", d.max_depth, 1, 100) or d.max_depth,
        max_parts=table.integer("max_parts", d.max_parts, 1, 100_000) or d.max_parts,
        max_decoded_bytes=table.integer("max_decoded_bytes", d.max_decoded_bytes, 1024, 2**34)
        or d.max_decoded_bytes,
        max_archive_members=table.integer("max_archive_members", d.max_archive_members, 1, 100_000)
        or d.max_archive_members,
        max_expansion_ratio=table.integer("max_expansion_ratio", d.max_expansion_ratio, 2, 100_000)
        or d.max_expansion_ratio,
    )
    return (
        limits,
        table.choice("limit_action", FAILURE_ACTIONS, Action.QUARANTINE),
        table.choice("encrypted_action", FAILURE_ACTIONS, Action.QUARANTINE),
    )


def _clamav(table: TableLike) -> ClamavSettings:
    socket = table.string("socket")
    if not socket:
        table.problem("socket", "missing: clamd's 'unix:/path' or 'inet:PORT@HOST'")
    else:
        try:
            parse_spec(socket)
        except ValueError as exc:
            table.problem("socket", str(exc))
    database = table.string("database_directory")
    return ClamavSettings(
        socket=socket,
        timeout=table.integer("timeout", 30, 1, 3600) or 30,
        failure_action=table.choice("failure_action", FAILURE_ACTIONS, Action.TEMPFAIL),
        database_directory=Path(database) if database else None,
    )


def _yara(table: TableLike, base: Path) -> YaraSettings | None:
    text = table.string("rules_dir")
    default_action = table.choice("default_action", CONTENT_ACTIONS, Action.REJECT)
    timeout = table.integer("timeout", 10, 1, 600) or 10
    failure_action = table.choice("failure_action", FAILURE_ACTIONS, Action.TEMPFAIL)
    if not text:
        table.problem("rules_dir", "missing: the directory holding *.yar files")
        return None
    directory = Path(os.path.normpath(text if text.startswith("/") else base / text))
    try:
        compiled = compile_directory(directory)
    except RuleError as exc:
        for problem in exc.problems:
            table.problem("rules_dir", problem)
        return None
    return YaraSettings(directory, compiled, default_action, timeout, failure_action)


def _detectors(root: TableLike) -> dict[str, Detector]:
    detectors = dict(BUILTIN)
    for table in root.tables("dlp_detectors"):
        name = table.string("name")
        if not DETECTOR_NAME.fullmatch(name):
            table.problem("name", f"{name!r} must be 1-64 of a-z 0-9 _ (letter first)")
            continue
        if name in detectors:
            table.problem("name", f"detector {name!r} is already defined (built-in or above)")
            continue
        try:
            detectors[name] = custom_detector(
                name,
                pattern=table.string("pattern"),
                keywords=table.strings("keywords"),
                validator=table.string("validator"),
                context=table.strings("context"),
                context_window=table.integer("context_window", 80, 1, 10_000) or 80,
                ignore_case=table.data.get("ignore_case") is True,
            )
        except DetectorError as exc:
            table.problem(exc.key, f"detector {name!r}: {exc}")
        if "ignore_case" in table.data and not isinstance(table.data["ignore_case"], bool):
            table.problem("ignore_case", "expected a boolean")
    return detectors


def _profiles(root: TableLike, detectors: Mapping[str, Detector]) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    for table in root.tables("dlp_profiles"):
        name = table.string("name")
        if not name:
            table.problem("name", "missing: every profile needs a name")
        elif name in profiles:
            table.problem("name", f"duplicate profile name {name!r}")
        raw = table.data.get("detectors")
        thresholds: dict[str, int] = {}
        if not isinstance(raw, dict) or not raw:
            table.problem("detectors", "expected a table of detector = minimum count")
        else:
            for detector, minimum in raw.items():
                if detector not in detectors:
                    table.problem(f"detectors.{detector}", "no such detector")
                elif isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
                    table.problem(f"detectors.{detector}", "expected a count of at least 1")
                else:
                    thresholds[detector] = minimum
        action = table.choice("action", PROFILE_ACTIONS, None)
        if "action" not in table.data:
            table.problem("action", f"missing: one of {', '.join(PROFILE_ACTIONS)}")
        match = table.choice("match", PROFILE_MATCH, "any")
        if name and action is not None:
            profiles[name] = Profile(name, MappingProxyType(thresholds), action, match)
    return profiles


def _dlp(root: TableLike, sources: Sequence[Source]) -> DlpSettings:
    table = root.table("dlp")
    detectors = _detectors(root)
    profiles = _profiles(root, detectors)
    default = table.string("default_profile")
    if default and default not in profiles:
        table.problem("default_profile", f"no [[dlp_profiles]] named {default!r}")
    for index, source in enumerate(sources):
        wanted = getattr(source, "dlp_profile", "")
        if wanted and wanted not in profiles:
            root.problem(f"sources[{index}].dlp_profile", f"no [[dlp_profiles]] named {wanted!r}")
    return DlpSettings(
        detectors=MappingProxyType(detectors),
        profiles=MappingProxyType(profiles),
        default_profile=default,
        unreadable_action=table.choice("unreadable_action", FAILURE_ACTIONS, Action.TAG),
    )


def _urls(root: TableLike) -> UrlSettings:
    table = root.table("urls")
    nameservers = []
    for index, server in enumerate(table.strings("nameservers")):
        try:
            nameservers.append(str(ipaddress.ip_address(server)))
        except ValueError:
            table.problem(f"nameservers[{index}]", f"{server!r} is not an IP address")
    blocklists = []
    for entry in root.tables("url_blocklists"):
        zone = entry.string("zone").rstrip(".").lower()
        if not ZONE.fullmatch(zone):
            entry.problem("zone", f"{zone!r} is not a DNS zone name")
        codes = []
        for index, code in enumerate(entry.strings("codes")):
            try:
                codes.append(str(ipaddress.IPv4Address(code)))
            except ValueError:
                entry.problem(f"codes[{index}]", f"{code!r} is not an IPv4 address")
        action = entry.choice("action", CONTENT_ACTIONS, Action.REJECT)
        blocklists.append(Blocklist(zone, action, frozenset(codes)))
    if not blocklists:
        table.problem("nameservers", "URL checking needs at least one [[url_blocklists]] zone")
    return UrlSettings(
        blocklists=tuple(blocklists),
        nameservers=tuple(nameservers),
        port=table.integer("port", 53, 1, 65535) or 53,
        timeout=table.integer("timeout", 2, 1, 60) or 2,
        failure_action=table.choice("failure_action", FAILURE_ACTIONS, Action.TAG),
        max_domains=table.integer("max_domains", 20, 1, 1000) or 20,
    )
