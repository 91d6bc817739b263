"""[dlp], [[dlp_detectors]] and [[dlp_profiles]]: what DLP looks for and what each profile does.

Detectors and profiles are built once all sections are read (`link_dlp`): a profile names
detectors, sources and dlp.default_profile name profiles. A detector whose keywords are in a file
(`keywords_file`) is built by config/resolve.py, which does the I/O (`read_dictionaries`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from relayguard.config.declare import (
    FAILURE_ACTIONS,
    Place,
    actions,
    choice,
    counts,
    flag,
    number,
    text,
    texts,
)
from relayguard.config.sources import Source
from relayguard.core.verdict import Action
from relayguard.dlp.detectors import (
    BUILTIN,
    Detector,
    DetectorError,
    Found,
    custom_detector,
)
from relayguard.dlp.profiles import Profile, ProfileAction

DETECTOR_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def detector_name(name: str) -> str:
    if not DETECTOR_NAME.fullmatch(name):
        raise ValueError(f"{name!r} must be 1-64 of a-z 0-9 _ (letter first)")
    return name


def dictionary_path(text: str) -> Path | None:
    """As written; read_dictionaries makes a relative one relative to the configuration file."""
    return Path(text) if text else None


def profile_name(name: str) -> str:
    if not name:
        raise ValueError("missing: every profile needs a name")
    return name


@dataclass(frozen=True, slots=True)
class DetectorEntry:
    """One [[dlp_detectors]] table, before it is compiled into a Detector."""

    name: str = text("", parse=detector_name)
    pattern: str = text("")
    keywords: tuple[str, ...] = texts()
    keywords_file: Path | None = text(None, parse=dictionary_path)
    validator: str = text("")
    context: tuple[str, ...] = texts()
    context_window: int = number(80, 1, 10_000)
    ignore_case: bool = flag(False)


@dataclass(frozen=True, slots=True)
class ProfileEntry:
    """One [[dlp_profiles]] table, before its detector names are checked."""

    name: str = text("", parse=profile_name)
    detectors: Mapping[str, int] = counts()
    match: str = choice("any", {"any": "any", "all": "all"})
    action: ProfileAction | None = choice("", {action.value: action for action in ProfileAction})


@dataclass(frozen=True, slots=True)
class DlpSettings:
    default_profile: str = text("")
    unreadable_action: Action = actions("tag", FAILURE_ACTIONS)
    detectors: Mapping[str, Detector] = field(default_factory=lambda: MappingProxyType(BUILTIN))
    profiles: Mapping[str, Profile] = field(default_factory=lambda: MappingProxyType({}))
    # [[dlp_detectors]] index -> entry, for the detectors whose keywords_file is still to read
    dictionaries: Mapping[int, DetectorEntry] = field(default_factory=lambda: MappingProxyType({}))

    def profile_for(self, source: Source | None) -> Profile | None:
        name = (source.dlp_profile if source is not None else "") or self.default_profile
        return self.profiles.get(name) if name else None


def link_dlp(
    dlp: DlpSettings,
    detectors: tuple[DetectorEntry, ...],
    profiles: tuple[ProfileEntry, ...],
    sources: tuple[Source, ...],
    root: Place,
) -> DlpSettings:
    """DLP settings with their detectors and profiles; every dangling name is a problem."""
    built = _detectors(detectors, root.key("dlp_detectors"))
    named = _profiles(profiles, built, root.key("dlp_profiles"))
    dictionaries = {
        index: entry
        for index, entry in enumerate(detectors)
        if entry.name in built and isinstance(built[entry.name].pattern, _Unread)
    }
    if dlp.default_profile and dlp.default_profile not in named:
        root.key("dlp").key("default_profile").problem(
            f"no [[dlp_profiles]] named {dlp.default_profile!r}"
        )
    for index, source in enumerate(sources):
        if source.dlp_profile and source.dlp_profile not in named:
            root.key("sources").item(index).key("dlp_profile").problem(
                f"no [[dlp_profiles]] named {source.dlp_profile!r}"
            )
    return replace(
        dlp,
        detectors=MappingProxyType(built),
        profiles=MappingProxyType(named),
        dictionaries=MappingProxyType(dictionaries),
    )


def _detectors(entries: tuple[DetectorEntry, ...], at: Place) -> dict[str, Detector]:
    detectors = dict(BUILTIN)
    for index, entry in enumerate(entries):
        if not DETECTOR_NAME.fullmatch(entry.name):
            continue  # its name is already a problem
        if entry.name in detectors:
            at.item(index).key("name").problem(
                f"detector {entry.name!r} is already defined (built-in or above)"
            )
            continue
        if entry.keywords_file is not None and (entry.keywords or entry.pattern):
            at.item(index).key("keywords_file").problem(
                f"detector {entry.name!r}: give only one of 'pattern', 'keywords' or"
                " 'keywords_file'"
            )
            continue
        try:
            detectors[entry.name] = _detector(entry)
        except DetectorError as exc:
            at.item(index).key(exc.key).problem(f"detector {entry.name!r}: {exc}")
    return detectors


def _detector(entry: DetectorEntry) -> Detector:
    if entry.keywords_file is None:
        return entry_detector(entry, entry.keywords)
    # Its other keys are checked now; its keywords come with read_dictionaries (config/resolve.py).
    unread = _Unread(entry.keywords_file)
    return replace(entry_detector(entry, ("-",)), pattern=unread, keywords=None)


def entry_detector(entry: DetectorEntry, keywords: tuple[str, ...]) -> Detector:
    """ENTRY's detector, with KEYWORDS as its dictionary when it has no pattern."""
    return custom_detector(
        entry.name,
        pattern=entry.pattern,
        keywords=keywords,
        validator=entry.validator,
        context=entry.context,
        context_window=entry.context_window,
        ignore_case=entry.ignore_case,
    )


@dataclass(frozen=True, slots=True)
class _Unread:
    """The pattern of a dictionary detector whose file is not read yet: never runs."""

    path: Path

    def finditer(self, string: str, pos: int = 0, endpos: int = 0, /) -> Iterator[Found]:
        raise RuntimeError(f"DLP dictionary {self.path} not read: config not resolved")

    def match(self, string: str, pos: int = 0, endpos: int = 0, /) -> Found | None:
        raise RuntimeError(f"DLP dictionary {self.path} not read: config not resolved")


def _profiles(
    entries: tuple[ProfileEntry, ...], detectors: Mapping[str, Detector], at: Place
) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    for index, entry in enumerate(entries):
        where = at.item(index)
        if entry.name in profiles:
            where.key("name").problem(f"duplicate profile name {entry.name!r}")
        for name in entry.detectors:
            if name not in detectors:
                where.key("detectors").key(name).problem("no such detector")
        if entry.name and entry.action is not None:
            thresholds = {k: v for k, v in entry.detectors.items() if k in detectors}
            profiles[entry.name] = Profile(
                entry.name, MappingProxyType(thresholds), entry.action, entry.match
            )
    return profiles
