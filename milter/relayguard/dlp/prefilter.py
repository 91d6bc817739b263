r"""Where the built-in detectors and keyword dictionaries can match, found by Hyperscan.

The built-in patterns (detectors.py) run on Python's `re`, which tries them at every digit of
the text: about 15-25 ms per MB and detector on digit-heavy text, even where nothing matches
(a meter reading, "0123456789"). Hyperscan runs a *superset* of each pattern over the whole text
at well under 1 ms per MB, and the exact `re` pattern then runs only on the lines it flagged, so
the findings are those of the full scan (tests/unit/test_dlp_prefilter.py checks it on random
text). Why lines are enough:

- no built-in pattern matches "\n" (their classes are digits, letters, " " and "-"), and their
  lookaheads stop at the first character after the match, which for a match at the end of a line
  is that "\n": running a pattern on one line, its "\n" included, finds what the full scan finds
  there; the lookbehinds only look for characters that are not "\n";
- each candidate below keeps a pattern's shape and its boundaries, and only drops conditions
  (lookarounds, the backreference), so it matches wherever the pattern does.

Hyperscan reads bytes: it scans `text.encode("ascii", "replace")`, one byte per character, so
offsets are the text's. A non-ASCII character becomes "?", which every candidate accepts wherever
a character class of the pattern could match a non-ASCII one (Python's `\d` and `\w` are
Unicode): the superset holds for any text. Hyperscan is linear in the text, like RE2.

A keyword dictionary (`Keywords`) is one pass of its keywords as caseless literals: it gives where
a keyword can start, and the dictionary's `re` alternation is tried there only (an alternation of
1,000 words on `re` costs seconds per MB: it tries every word at every word start).
Every scan runs on one thread of the process's own (`on_scan_thread`: why, there), and `locate`
makes it one trip there per text, for the built-ins and every dictionary together.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import hyperscan

# The built-ins' boundaries with the character consumed instead of looked at: the character
# before a number (or its start) and after it (or its end) is not one of [\w+/=-]. "?" is outside
# the class, so it may stand on either side of a number.
_START = r"(?:^|[^A-Za-z0-9_+/=\-])"
_END = r"(?:[^A-Za-z0-9_+/=\-]|$)"
# Each built-in of detectors.py without its lookarounds and backreference. `\d` is compiled as
# [0-9?]: a non-ASCII character may be a digit of another script (BUILTIN below).
CANDIDATES: Mapping[str, str] = {
    "card_number": _START
    + r"\d(?:\d{12,18}|\d{3}[ -]\d{4}[ -]\d{4}[ -]\d{4}(?:[ -]\d{3})?|\d{3}[ -]\d{6}[ -]\d{4,5})"
    + _END,
    "iban": r"(?:^|[^A-Za-z0-9_])[A-Z]{2}\d{2}"
    r"(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)(?:[^A-Za-z0-9_]|$)",
    "es_dni": _START + r"(?:\d{8}|[XYZ][ -]?\d{7})[ -]?[A-Za-z](?:[^A-Za-z0-9_\-]|$)",
    "us_ssn": _START + r"\d(?:\d{2}-\d{2}-\d{4}|\d{2} \d{2} \d{4}|\d{8})" + _END,
}
GAP = 256  # flagged lines closer than this are one span: fewer spans to hold and to call re on
CHUNK = 1 << 18  # characters encoded at a time (cut after a "\n"): the byte copy stays small

Spans = list[tuple[int, int]]
T = TypeVar("T")

_scanner: tuple[int, ThreadPoolExecutor] | None = None
_scanner_lock = threading.Lock()


def on_scan_thread(work: Callable[[], T]) -> T:
    """WORK done on this process's one Hyperscan thread, a thread Python started. Hyperscan calls
    its match handler back with PyGILState_Ensure, which is only safe on such a thread: pymilter
    runs each connection with a thread state of its own that libmilter's threads take turns
    with, and scans made there killed milter workers with SIGSEGV. One thread also means one
    scratch space per database."""
    global _scanner  # noqa: PLW0603  (one per process: a forked worker makes its own)
    with _scanner_lock:
        if _scanner is None or _scanner[0] != os.getpid():
            _scanner = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="hyperscan"))
        executor = _scanner[1]
    return executor.submit(work).result()


class _Lines:
    """Collects, per detector, the lines of its candidates; lines less than GAP apart are one
    span (a span of whole lines is as exact as each line on its own)."""

    def __init__(self, data: bytes, offset: int, wanted: Sequence[bool], spans: list[Spans]):
        self.data = data
        self.offset = offset
        self.wanted = wanted
        self.spans = spans

    def on_match(self, index: int, _start: int, end: int, _flags: int, _context: object) -> None:
        if not self.wanted[index]:
            return
        spans = self.spans[index]
        at = self.offset + end - 1  # the candidate's last byte: on its line, or that line's "\n"
        if spans and at < spans[-1][1]:
            return
        first = self.data.rfind(b"\n", 0, end - 1) + 1 + self.offset
        newline = self.data.find(b"\n", end - 1)
        last = self.offset + (newline + 1 if newline >= 0 else len(self.data))
        if spans and first - spans[-1][1] <= GAP:
            spans[-1] = (spans[-1][0], last)
        else:
            spans.append((first, last))


class Prefilter:
    """Candidate expressions over the ASCII copy, each flagging the lines of one detector.
    Compiled by `compile` or on first use; scanned through `locate`, from any thread."""

    def __init__(self, expressions: Sequence[tuple[str, str]]) -> None:
        self.names = tuple(dict.fromkeys(name for name, _ in expressions))
        self.expressions = tuple(expressions)
        self._database: hyperscan.Database | None = None
        self._compiling = threading.Lock()
        self._scratch: hyperscan.Scratch | None = None  # used on the scan thread only

    @property
    def compiled(self) -> bool:
        return self._database is not None

    def compile(self) -> None:
        """Compiles the database now, once (50-80 ms here). The milter's supervisor calls it
        before it forks its workers (engine/runtime.py, prepare_supervisor), so no worker pays
        it on its first message and the workers share the database's pages instead of holding
        a copy each. That is safe off the scan thread: a database is plain memory that scans only
        read, and compiling calls no Python code back (only a scan's match handler does, see
        on_scan_thread). The scratch space a scan writes is made on the scan thread, per
        process (`_scratch_here`). Without that call, the first scan compiles it."""
        with self._compiling:
            if self._database is None:
                # Imported here: reading a configuration does not load it.
                import hyperscan  # noqa: PLC0415

                database = hyperscan.Database()
                database.compile(
                    expressions=[e.encode("ascii") for _, e in self.expressions],
                    ids=[self.names.index(name) for name, _ in self.expressions],
                    elements=len(self.expressions),
                    flags=[0] * len(self.expressions),
                )
                self._database = database

    def _scratch_here(self) -> tuple[hyperscan.Database, hyperscan.Scratch]:
        """On the scan thread: the database (compiled if it is not yet) and its scratch."""
        if self._database is None:
            self.compile()
        assert self._database is not None
        if self._scratch is None:
            import hyperscan  # noqa: PLC0415

            self._scratch = hyperscan.Scratch(self._database)
        return self._database, self._scratch

    def scan_chunk(
        self, data: bytes, offset: int, wanted: Sequence[bool], spans: list[Spans]
    ) -> None:
        """On the scan thread: adds the lines of DATA (at OFFSET in the text) to SPANS."""
        database, scratch = self._scratch_here()
        collector = _Lines(data, offset, wanted, spans)
        database.scan(data, match_event_handler=collector.on_match, scratch=scratch)


def _chunks(text: str, chunk: int) -> Iterator[tuple[int, bytes]]:
    """TEXT as (offset, ASCII copy) pieces of about CHUNK characters, each cut after a "\n"."""
    start = 0
    while start < len(text):
        cut = text.find("\n", start + chunk)
        stop = len(text) if cut < 0 else cut + 1
        yield start, text[start:stop].encode("ascii", "replace")
        start = stop


BUILTIN = Prefilter(
    [(name, candidate.replace(r"\d", "[0-9?]")) for name, candidate in CANDIDATES.items()]
)


# The non-ASCII characters that match an ASCII letter case-insensitively in Python's `re` (found
# by trying every code point): the ASCII copy cannot show them, so a text holding one is scanned
# whole by a dictionary.
FOLDS_TO_ASCII = ("\u0130", "\u0131", "\u017f", "\u212a")  # dotted, dotless i; long s; Kelvin


class Keywords:
    """Where the keywords of a dictionary (detectors.word_list: case-insensitive literals) can
    start, for all of them in one Hyperscan pass of caseless literals. Compiled at once (about
    0.2 s per 1,000 keywords), so a configuration load pays it before workers fork."""

    def __init__(self, words: Sequence[str]) -> None:
        import hyperscan  # noqa: PLC0415  (see Prefilter.compile)

        self.lengths = [len(word) for word in words]
        self.database = hyperscan.Database()
        self.database.compile(
            expressions=[_literal(word) for word in words],
            ids=list(range(len(words))),
            elements=len(words),
            flags=[hyperscan.HS_FLAG_CASELESS] * len(words),
        )
        self._scratch: hyperscan.Scratch | None = None  # used on the scan thread only

    def scan_chunk(self, data: bytes, offset: int, found: set[int]) -> None:
        """On the scan thread: adds to FOUND where a keyword may start in DATA (at OFFSET)."""
        if self._scratch is None:
            import hyperscan  # noqa: PLC0415

            self._scratch = hyperscan.Scratch(self.database)

        def on_match(index: int, _from: int, end: int, _flags: int, _ctx: object) -> None:
            found.add(offset + end - self.lengths[index])

        self.database.scan(data, match_event_handler=on_match, scratch=self._scratch)


@dataclass(frozen=True, slots=True)
class Located:
    """What `locate` found: the flagged lines by detector name, and each dictionary's starts."""

    lines: dict[str, Spans]
    starts: dict[Keywords, list[int] | None]


def locate(
    text: str,
    prefilters: Mapping[Prefilter, Sequence[str]],
    dictionaries: Sequence[Keywords],
    chunk: int = CHUNK,
) -> Located:
    """For each of PREFILTERS, the (start, end) character spans of the lines of TEXT where each
    detector name given with it may match; for each of DICTIONARIES, the offsets in order where
    a keyword may start, or None when TEXT holds one of FOLDS_TO_ASCII (then only a scan of the
    whole text is exact). All in one job on the scan thread: a text's trip there
    costs a thread switch each way, whatever it scans. Each chunk of the ASCII copy is encoded
    once and scanned by every database."""
    wanted = {used: [name in names for name in used.names] for used, names in prefilters.items()}
    spans: dict[Prefilter, list[Spans]] = {used: [[] for _ in used.names] for used in prefilters}
    folds = any(char in text for char in FOLDS_TO_ASCII) if dictionaries else False
    found: dict[Keywords, set[int]] = {} if folds else {words: set() for words in dictionaries}

    def scan() -> None:
        for start, data in _chunks(text, chunk):
            for used in prefilters:
                used.scan_chunk(data, start, wanted[used], spans[used])
            for words, starts in found.items():
                words.scan_chunk(data, start, starts)

    if text and (prefilters or found):
        on_scan_thread(scan)
    return Located(
        lines={
            name: spans[used][index]
            for used in prefilters
            for index, name in enumerate(used.names)
            if wanted[used][index]
        },
        starts={words: sorted(found[words]) if words in found else None for words in dictionaries},
    )


def _literal(word: str) -> bytes:
    """WORD as a Hyperscan literal over the ASCII copy: an ASCII character as itself (the
    caseless flag adds its other case), a non-ASCII one as "?" or an ASCII letter it matches."""
    return "".join(_character(char) for char in word).encode("ascii")


@lru_cache(maxsize=4096)
def _character(char: str) -> str:
    if char.isascii():
        return f"\\x{ord(char):02x}"
    forms = [a for a in map(chr, range(128)) if re.fullmatch(re.escape(char), a, re.IGNORECASE)]
    return "[" + "".join(f"\\x{ord(c):02x}" for c in ["?", *forms]) + "]"
