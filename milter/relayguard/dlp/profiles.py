"""DLP profiles: detectors with thresholds and one action, and the scan of a walked message."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from relayguard.core.safe_text import printable
from relayguard.dlp.detectors import Detector, Match, iter_matches, scan_text
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
    """What the detectors found in a message. `counts` are per detector, over the whole message;
    `parts` holds each part's matches only when the scan was asked to keep them."""

    counts: dict[str, int] = field(default_factory=dict)
    parts: list[PartFindings] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # part paths, with the reason
    scanned_parts: int = 0


class _Tally:
    """The message's count per detector, kept as the matches come: the distinct values of a
    detector that counts them (a card quoted in the text and its HTML alternative is one), else
    the number of matches. Detectors come out in the order they were first found."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self.distinct = {d.name for d in detectors if d.count_distinct}
        self.values: dict[str, set[str]] = {}
        self.occurrences: dict[str, int] = {}

    def add(self, matches: Iterable[Match]) -> None:
        for match in matches:
            if match.detector in self.distinct:
                self.values.setdefault(match.detector, set()).add(match.value)
            self.occurrences[match.detector] = self.occurrences.get(match.detector, 0) + 1

    def counts(self) -> dict[str, int]:
        return {
            name: len(self.values[name]) if name in self.distinct else count
            for name, count in self.occurrences.items()
        }


def scan_parts(
    parts: Iterable[Part], detectors: Sequence[Detector], *, keep_matches: bool = True
) -> DlpScan:
    """The DLP scan of PARTS, one part at a time: a part's text is dropped before the next part
    is read, and with `keep_matches=False` (the milter's check) the matches are counted as they
    are found and never held, so memory holds one part's text and the distinct values counted.
    `parts` is then left empty."""
    scan = DlpScan()
    tally = _Tally(detectors)
    for part in parts:
        text = _part_text(part, scan)
        if text is None:
            continue
        if keep_matches:
            found = scan_text(text, detectors)
            tally.add(match for matches in found.values() for match in matches)
            if found:
                scan.parts.append(PartFindings(part.path, part.filename, found))
        else:
            tally.add(iter_matches(text, detectors))
        del text  # before the next part's text is extracted
    scan.counts = tally.counts()
    return scan


def _part_text(part: Part, scan: DlpScan) -> str | None:
    """PART's text, None when it has none or cannot be read (then noted in SCAN)."""
    # Imported on first scan: the text extractors (PDF, OOXML) are not needed to read a config.
    from relayguard.dlp.extract import ExtractionError, extract_text  # noqa: PLC0415

    try:
        text = extract_text(part)
    except ExtractionError as exc:
        scan.unreadable.append(f"{part.path}: {printable(str(exc))}")  # it may name a member
        return None
    if text is not None:
        scan.scanned_parts += 1
    return text


def summary(counts: Mapping[str, int]) -> str:
    """'card_number=3, iban=1': detector names and counts only, never the matched data."""
    return ", ".join(f"{name}={count}" for name, count in sorted(counts.items()))
