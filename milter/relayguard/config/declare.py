"""The declaration toolkit: a TOML key is one dataclass field, read by one generic reader.

`text()`, `number()`, `real()`, `flag()`, `texts()`, `choice()`, `actions()`, `counts()`,
`section()` and `sections()` each return a `dataclasses.field` whose metadata holds a `Key`: the
TOML type, the default (written as the TOML value a sysadmin would write), bounds or choices and
an optional `parse` function. `read_section(cls, data, at)` reads one TOML table into `cls` from
those fields alone: unknown keys, wrong types, out-of-range numbers and values `parse` refuses
become located problems, and the key keeps its default so that every other problem is still found.

Rules of a declaration:
- a key absent from the file takes its default, validated like a written value;
- a default that does not validate makes the key *required*: its problem says what is missing
  (``parse`` raising ``ValueError("missing: ...")`` on ``""`` is the usual form);
- ``None`` as default means "unset": the field is None and nothing is validated;
- fields without a `Key` (compiled rules, loaded keys) are not TOML keys: the reader or the
  I/O pass (config/resolve.py) fills them.
A section class may define ``verify(self, given, at)`` for rules across its keys (``given`` is the
raw table). `declared_keys()` lists every key with its documented default for docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from relayguard.core.errors import ConfigError
from relayguard.core.verdict import Action

T = TypeVar("T")
Parse = Callable[[Any], Any]

# Mail that was not scanned must not leave silently: a failure action can hold, refuse or tag
# it, never plainly accept it. Each key names the subset it allows, in the order it lists them.
FAILURE_ACTIONS = (Action.TEMPFAIL, Action.REJECT, Action.QUARANTINE, Action.TAG)
CONTENT_ACTIONS = (Action.REJECT, Action.QUARANTINE, Action.TAG)
ERROR_ACTIONS = (Action.TEMPFAIL, Action.REJECT)

_KEY = "relayguard.config.key"


class Problems:
    """Every located problem of one file, collected so that all are reported at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self.keypaths: list[str] = []

    def add(self, keypath: str, text: str) -> None:
        where = f"{keypath}: " if keypath else ""
        self.lines.append(f"{self.path}: {where}{text}")
        self.keypaths.append(keypath)

    def clean(self, keypath: str) -> bool:
        """No problem at KEYPATH or inside it: the I/O pass works only on what parsed."""
        return not any(
            k == keypath or k.startswith((keypath + ".", keypath + "[")) for k in self.keypaths
        )

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError(self.lines)


@dataclasses.dataclass(frozen=True, slots=True)
class Place:
    """Where a value sits in the file ('sources[2].networks'), and where its problems go."""

    problems: Problems
    keypath: str = ""

    def key(self, name: str) -> Place:
        return Place(self.problems, f"{self.keypath}.{name}" if self.keypath else name)

    def item(self, index: int) -> Place:
        return Place(self.problems, f"{self.keypath}[{index}]")

    def problem(self, text: str) -> None:
        self.problems.add(self.keypath, text)


class Kind:
    """A TOML type: what it accepts and how a written value becomes a Python value."""

    label: ClassVar[str] = "a value"
    types: ClassVar[tuple[type, ...]] = (object,)
    empty: ClassVar[Any] = None  # the value of a required key that is missing

    def accepts(self, value: object) -> bool:
        # bool is an int in Python; TOML keeps them apart and so do we.
        if isinstance(value, bool) and bool not in self.types:
            return False
        return isinstance(value, self.types)

    def wrong_type(self, value: object) -> str:
        return f"expected {self.label}, got {toml_type(value)}"

    def convert(self, value: Any, at: Place) -> Any:
        """The Python value; raise ValueError(problem) to refuse it whole."""
        return value


class Text(Kind):
    label = "a string"
    types: ClassVar[tuple[type, ...]] = (str,)
    empty = ""


class Flag(Kind):
    label = "a boolean"
    types: ClassVar[tuple[type, ...]] = (bool,)
    empty = False


class Number(Kind):
    label = "an integer"
    types: ClassVar[tuple[type, ...]] = (int,)

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, at: Place) -> Any:
        if not self.low <= value <= self.high:
            raise ValueError(f"must be between {self.low} and {self.high}, got {value}")
        return value


class Real(Number):
    """An integer or a float (a spam score), read as a float."""

    label = "a number"
    types: ClassVar[tuple[type, ...]] = (int, float)

    def convert(self, value: Any, at: Place) -> Any:
        return float(super().convert(value, at))


class Texts(Kind):
    """An array of non-empty strings; `each` parses one item (a refused item is left out)."""

    label = "an array of strings"
    types: ClassVar[tuple[type, ...]] = (list, tuple)
    empty = ()

    def __init__(self, each: Parse | None) -> None:
        self.each = each

    def convert(self, value: Any, at: Place) -> Any:
        items = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                at.item(index).problem(f"expected a non-empty string, got {item!r}")
                continue
            try:
                items.append(self.each(item) if self.each else item)
            except ValueError as exc:
                at.item(index).problem(str(exc))
        return tuple(items)


class Choice(Kind):
    """One of named values; "" (or no default) is a missing choice."""

    label = "a string"
    types: ClassVar[tuple[type, ...]] = (str,)

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = options

    def convert(self, value: Any, at: Place) -> Any:
        if value == "":
            raise ValueError(f"missing: one of {', '.join(self.options)}")
        if value not in self.options:
            raise ValueError(f"must be one of {', '.join(map(repr, self.options))}, got {value!r}")
        return self.options[value]


class Counts(Kind):
    """A table of name = count >= 1 (a DLP profile's detector thresholds)."""

    label = "a table of detector = minimum count"
    types: ClassVar[tuple[type, ...]] = (dict,)
    empty = MappingProxyType({})

    def wrong_type(self, value: object) -> str:
        return f"expected {self.label}"

    def convert(self, value: Any, at: Place) -> Any:
        if not value:
            raise ValueError(f"expected {self.label}")
        counts = {}
        for name, count in value.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                at.key(name).problem("expected a count of at least 1")
            else:
                counts[name] = count
        return MappingProxyType(counts)


class Section(Kind):
    """A table read into its own declared dataclass."""

    label = "a table"
    types: ClassVar[tuple[type, ...]] = (dict,)

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def convert(self, value: Any, at: Place) -> Any:
        return read_section(self.cls, value, at)


class Sections(Section):
    """An array of tables ([[name]]), each read into the declared dataclass."""

    label = "an array of tables ([[...]])"
    types: ClassVar[tuple[type, ...]] = (list,)
    empty = ()

    def convert(self, value: Any, at: Place) -> Any:
        read: list[Any] = []
        for index, item in enumerate(value):
            if isinstance(item, dict):
                read.append(read_section(self.cls, item, at.item(index)))
            else:
                at.item(index).problem(f"expected a table, got {toml_type(item)}")
        return tuple(read)


@dataclasses.dataclass(frozen=True, slots=True)
class Key:
    """One TOML key: its type, default, validation and how the documentation shows its default."""

    kind: Kind
    default: Any  # the TOML value an absent key stands for; None: unset
    parse: Parse | None = None
    shown: str | None = None  # the documented default, where rendering `default` would mislead
    fallback: Any = None  # the Python value of an absent (or refused) key
    missing: str | None = None  # the problem of an absent key whose default does not validate

    def value(self, given: Any, at: Place) -> Any:
        """The Python value of GIVEN (a TOML value); raise ValueError(problem) to refuse it."""
        value = self.kind.convert(given, at)
        return self.parse(value) if self.parse is not None else value

    def read(self, data: Mapping[str, Any], name: str, at: Place) -> Any:
        if name not in data:
            if self.missing is not None:
                at.problem(self.missing)
            return self.fallback
        given = data[name]
        if not self.kind.accepts(given):
            at.problem(self.kind.wrong_type(given))
            return self.fallback
        try:
            return self.value(given, at)
        except ValueError as exc:
            at.problem(str(exc))
            return self.fallback

    def documented_default(self) -> str:
        """The default as docs/configuration.md shows it (its table's default column)."""
        if self.shown is not None:
            return self.shown
        if self.missing is not None:
            return "required"
        if self.default is None:
            return "unset"
        return f"`{_toml(self.default)}`"


def declare(kind: Kind, default: Any, parse: Parse | None, shown: str | None) -> Key:
    """A key whose absent value is its default, validated once here: a default that does not
    validate makes the key required, with the problem that validation gave."""
    key = Key(kind, default, parse, shown)
    if default is None:
        return key
    at = Place(Problems(Path("<default>")))
    try:
        value = key.value(default, at)
    except ValueError as exc:
        return dataclasses.replace(key, fallback=kind.empty, missing=str(exc))
    if at.problems.lines:  # a default that is partly refused is a mistake in the declaration
        raise AssertionError(at.problems.lines)
    return dataclasses.replace(key, fallback=value)


def _field(kind: Kind, default: Any, parse: Parse | None, shown: str | None) -> Any:
    key = declare(kind, default, parse, shown)
    value = key.fallback
    metadata = {_KEY: key}
    if type(value).__hash__ is None or isinstance(value, MappingProxyType):
        return dataclasses.field(default_factory=lambda: value, metadata=metadata)
    return dataclasses.field(default=value, metadata=metadata)


def text(default: str | None = "", *, parse: Parse | None = None, shown: str | None = None) -> Any:
    return _field(Text(), default, parse, shown)


def flag(default: bool) -> Any:
    return _field(Flag(), default, None, None)


def number(default: int | None, low: int, high: int, *, shown: str | None = None) -> Any:
    return _field(Number(low, high), default, None, shown)


def real(default: float | None, low: int, high: int, *, shown: str | None = None) -> Any:
    return _field(Real(low, high), default, None, shown)


def texts(
    *,
    each: Parse | None = None,
    parse: Parse | None = None,
    default: Sequence[str] = (),
    shown: str | None = None,
) -> Any:
    return _field(Texts(each), list(default), parse, shown)


def choice(default: str | None, options: Mapping[str, Any], *, shown: str | None = None) -> Any:
    return _field(Choice(options), default, None, shown)


def actions(default: str, allowed: Sequence[Action]) -> Any:
    """An action by name, from the subset this key allows (core.verdict's Action.label)."""
    return choice(default, {action.label: action for action in allowed})


def counts() -> Any:
    return _field(Counts(), {}, None, None)


def section(cls: type, *, optional: bool = False) -> Any:
    return _field(Section(cls), None if optional else {}, None, None)


def sections(cls: type) -> Any:
    return _field(Sections(cls), [], None, None)


def keys_of(cls: type) -> Mapping[str, Key]:
    """The declared keys of a section class, in declaration order."""
    return _keys_of(cls)


@cache
def _keys_of(cls: type) -> Mapping[str, Key]:
    return MappingProxyType(
        {f.name: f.metadata[_KEY] for f in dataclasses.fields(cls) if _KEY in f.metadata}
    )


def read_section(cls: type[T], data: Mapping[str, Any], at: Place) -> T:
    """Read one TOML table into CLS; every problem is recorded at its place."""
    keys = keys_of(cls)
    for name in data:
        if name not in keys:
            at.key(name).problem("unknown key")
    section = cls(**{name: key.read(data, name, at.key(name)) for name, key in keys.items()})
    verify = getattr(section, "verify", None)
    if verify is not None:
        verify(data, at)
    return section


def declared_keys(cls: type, table: str = "") -> Iterator[tuple[str, str, Key]]:
    """(table, key, declaration) of every key under CLS; a nested table's keys are listed under
    its own key name (sources.rate_limits -> table 'rate_limits'), as the documentation does."""
    for name, key in keys_of(cls).items():
        if isinstance(key.kind, Section):
            if table:
                yield table, name, key
            yield from declared_keys(key.kind.cls, name)
        else:
            yield table, name, key


def schema(cls: type) -> Mapping[str, frozenset[str]]:
    """Table name -> its keys ('' is the root), derived from the declarations."""
    tables: dict[str, set[str]] = {"": set(keys_of(cls))}
    for table, name, _key in declared_keys(cls):
        if table:
            tables.setdefault(table, set()).add(name)
    return MappingProxyType({table: frozenset(names) for table, names in tables.items()})


def absolute_path(text: str) -> Path | None:
    """An absolute path; "" is unset."""
    if text and not text.startswith("/"):
        raise ValueError(f"must be an absolute path, got {text!r}")
    return Path(text) if text else None


def absolute(text: str) -> Path:
    """An absolute path, required."""
    path = absolute_path(text)
    if path is None:
        raise ValueError(f"must be an absolute path, got {text!r}")
    return path


def toml_type(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array"}
    names[dict] = "table"
    return names.get(type(value), type(value).__name__)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{}" if not value else json.dumps(value)
    return json.dumps(value)
