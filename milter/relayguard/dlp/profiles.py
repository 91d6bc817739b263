"""DLP profiles: detectors with thresholds and one action, and the scan of a walked message."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from relayguard.core.safe_text import printable
from relayguard.dlp.detectors import Detector, Match, scan_text
from relayguard.parsing.mime import Part


class ProfileAction(StrEnum):
    REJECT = "reject"
    QUARANTINE = "quarantine"
    TAG = "tag"
    ENCRYPT_ROUTE = "encrypt-route"


@dataclass(frozen=True, slots=True)
class Profile:
    """`thresholds`: detector name -> minimum count. `match`: 'any' threshold met triggers the
    profile, or 'all' of them must be met."""

    name: str
    thresholds: Mapping[str, int]
    action: ProfileAction
    match: str = "any"

    def triggered(self, counts: Mapping[str, int]) -> dict[str, int]:
        """The detectors whose thresholds were met, when that triggers the profile; else {}."""
        met = {
            name: counts.get(name, 0)
            for name, minimum in self.thresholds.items()
            if counts.get(name, 0) >= minimum
        }
        if self.match == "all" and len(met) < len(self.thresholds):
            return {}
        return met


@dataclass(slots=True)
class PartFindings:
    path: str
    filename: str
    matches: dict[str, list[Match]]


@dataclass(slots=True)
class DlpScan:
    """What the detectors found in a message. `counts` are per detector, over the whole message."""

    counts: dict[str, int] = field(default_factory=dict)
    parts: list[PartFindings] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # part paths, with the reason
    scanned_parts: int = 0


def scan_parts(parts: Iterable[Part], detectors: Sequence[Detector]) -> DlpScan:
    # Imported on first scan: the text extractors (PDF, OOXML) are not needed to read a config.
    from relayguard.dlp.extract import ExtractionError, extract_text  # noqa: PLC0415

    scan = DlpScan()
    everything: dict[str, list[Match]] = {}
    for part in parts:
        try:
            text = extract_text(part)
        except ExtractionError as exc:
            scan.unreadable.append(f"{part.path}: {printable(str(exc))}")  # it may name a member
            continue
        if text is None:
            continue
        scan.scanned_parts += 1
        found = scan_text(text, detectors)
        if found:
            scan.parts.append(PartFindings(part.path, part.filename, found))
            for name, matches in found.items():
                everything.setdefault(name, []).extend(matches)
    by_name = {d.name: d for d in detectors}
    scan.counts = {name: by_name[name].count(matches) for name, matches in everything.items()}
    return scan


def summary(counts: Mapping[str, int]) -> str:
    """'card_number=3, iban=1': detector names and counts only, never the matched data."""
    return ", ".join(f"{name}={count}" for name, count in sorted(counts.items()))
