"""The TOML configuration, validated once into frozen dataclasses.

Every problem names the file, the key path and what is wrong; all problems are reported at once so
a sysadmin fixes a file in one pass. Unknown keys are errors: a typo must never silently disable a
policy.
"""

from __future__ import annotations

import grp
import ipaddress
import pwd
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from relayguard.errors import ConfigError
from relayguard.identities import IdentitySet, build_identity_set, parse_identity
from relayguard.rfc5322 import ascii_lower
from relayguard.verdict import Action, Mode

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HEADER_NAME = re.compile(r"^[!-9;-~]{1,64}$")  # RFC 5322 §3.6.8 ftext
SOCKET_SPEC = re.compile(r"^(unix|local):(/.+)$|^(inet|inet6):(\d{1,5})@(.+)$")

# Every key the schema knows, per table. docs/configuration.md must document each one (tested).
SCHEMA: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "": frozenset({"relay", "milter", "sources"}),
        "relay": frozenset(
            {"mode", "internal_domains", "audit_log", "trace_header", "error_action"}
        ),
        "milter": frozenset(
            {"socket", "socket_owner", "socket_group", "socket_mode", "workers", "timeout", "user"}
        ),
        "sources": frozenset(
            {
                "name",
                "description",
                "sasl_users",
                "client_cert_subjects",
                "networks",
                "senders",
                "recipients",
                "max_recipients",
                "mode",
            }
        ),
    }
)


@dataclass(frozen=True, slots=True)
class RelaySettings:
    mode: Mode = Mode.ENFORCE
    internal_domains: frozenset[str] = frozenset()
    audit_log: Path | None = None
    trace_header: str = "X-Relayguard"
    error_action: Action = Action.TEMPFAIL


@dataclass(frozen=True, slots=True)
class MilterSettings:
    socket: str = "unix:/var/spool/postfix/relayguard/milter.sock"
    socket_owner: str = ""
    socket_group: str = ""
    socket_mode: int = 0o660
    workers: int = 2
    timeout: int = 60
    user: str = ""


@dataclass(frozen=True, slots=True)
class Source:
    """A registered sending device or application and what it may do."""

    name: str
    description: str = ""
    sasl_users: tuple[str, ...] = ()
    client_cert_subjects: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()
    senders: IdentitySet = field(default_factory=IdentitySet)
    recipients: IdentitySet = field(default_factory=IdentitySet)
    max_recipients: int | None = None
    mode: Mode | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """One immutable snapshot; a reload builds a new one, transactions in flight keep theirs."""

    path: Path
    relay: RelaySettings
    milter: MilterSettings
    sources: tuple[Source, ...]
    by_sasl_user: Mapping[str, Source]
    by_cert_subject: Mapping[str, Source]
    by_network: tuple[tuple[IPNetwork, Source], ...]

    def source(self, name: str) -> Source | None:
        return next((s for s in self.sources if s.name == name), None)

    def mode_for(self, source: Source | None) -> Mode:
        if source is not None and source.mode is not None:
            return source.mode
        return self.relay.mode


def load_config(path: str | Path) -> Config:
    """Read and validate PATH, or raise ConfigError listing every problem found."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 (byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from None
    return _Builder(path, data).build()


class _Table:
    """A TOML table being read: typed getters that record located problems instead of raising."""

    def __init__(self, builder: _Builder, data: Mapping[str, Any], keypath: str, schema: str):
        self.builder = builder
        self.data = data
        self.keypath = keypath
        for key in data:
            if key not in SCHEMA[schema]:
                self.problem(key, "unknown key")

    def where(self, key: str) -> str:
        return f"{self.keypath}.{key}" if self.keypath else key

    def problem(self, key: str, text: str) -> None:
        self.builder.problem(self.where(key), text)

    def _typed(self, key: str, kind: type | tuple[type, ...], label: str) -> Any:
        value = self.data.get(key)
        if value is None:
            return None
        # bool is an int in Python; TOML keeps them apart and so do we.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            self.problem(key, f"expected {label}, got {_toml_type(value)}")
            return None
        return value

    def string(self, key: str, default: str = "") -> str:
        value = self._typed(key, str, "a string")
        return default if value is None else str(value)

    def integer(self, key: str, default: int | None, low: int, high: int) -> int | None:
        value = self._typed(key, int, "an integer")
        if value is None:
            return default
        if not low <= value <= high:
            self.problem(key, f"must be between {low} and {high}, got {value}")
            return default
        return int(value)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._typed(key, list, "an array of strings")
        if value is None:
            return ()
        items: list[str] = []
        for index, item in enumerate(value):
            if isinstance(item, str) and item:
                items.append(item)
            else:
                self.problem(f"{key}[{index}]", f"expected a non-empty string, got {item!r}")
        return tuple(items)

    def choice(self, key: str, choices: Mapping[str, Any], default: Any) -> Any:
        value = self._typed(key, str, "a string")
        if value is None:
            return default
        if value not in choices:
            self.problem(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
            return default
        return choices[value]

    def table(self, key: str) -> _Table:
        value = self._typed(key, dict, "a table")
        return _Table(self.builder, value or {}, self.where(key), key)

    def tables(self, key: str) -> Iterator[_Table]:
        value = self._typed(key, list, "an array of tables ([[...]])")
        for index, item in enumerate(value or []):
            where = f"{self.where(key)}[{index}]"
            if isinstance(item, dict):
                yield _Table(self.builder, item, where, key)
            else:
                self.builder.problem(where, f"expected a table, got {_toml_type(item)}")


MODES = {m.value: m for m in Mode}
ERROR_ACTIONS = {"tempfail": Action.TEMPFAIL, "reject": Action.REJECT}


class _Builder:
    def __init__(self, path: Path, data: Mapping[str, Any]) -> None:
        self.path = path
        self.data = data
        self.problems: list[str] = []

    def problem(self, keypath: str, text: str) -> None:
        self.problems.append(f"{self.path}: {keypath}: {text}")

    def build(self) -> Config:
        root = _Table(self, self.data, "", "")
        relay = self._relay(root.table("relay"))
        milter = self._milter(root.table("milter"))
        sources = tuple(self._source(t) for t in root.tables("sources"))
        if not sources and "sources" not in self.data:
            self.problem("sources", "no [[sources]] defined: nothing could send through the relay")
        indexes = self._index(sources)
        if self.problems:
            raise ConfigError(self.problems)
        by_sasl, by_cert, by_network = indexes
        return Config(
            path=self.path,
            relay=relay,
            milter=milter,
            sources=sources,
            by_sasl_user=MappingProxyType(by_sasl),
            by_cert_subject=MappingProxyType(by_cert),
            by_network=tuple(sorted(by_network, key=lambda item: -item[0].prefixlen)),
        )

    def _relay(self, table: _Table) -> RelaySettings:
        domains = []
        for index, domain in enumerate(table.strings("internal_domains")):
            try:
                domains.append(parse_identity("@" + domain)[1])
            except ValueError as exc:
                table.problem(f"internal_domains[{index}]", str(exc))
        audit_log = table.string("audit_log")
        if audit_log and not audit_log.startswith("/"):
            table.problem("audit_log", f"must be an absolute path, got {audit_log!r}")
        trace_header = table.string("trace_header", "X-Relayguard")
        if trace_header and not HEADER_NAME.match(trace_header):
            table.problem("trace_header", f"{trace_header!r} is not a valid header field name")
        return RelaySettings(
            mode=table.choice("mode", MODES, Mode.ENFORCE),
            internal_domains=frozenset(domains),
            audit_log=Path(audit_log) if audit_log else None,
            trace_header=trace_header,
            error_action=table.choice("error_action", ERROR_ACTIONS, Action.TEMPFAIL),
        )

    def _milter(self, table: _Table) -> MilterSettings:
        defaults = MilterSettings()
        socket = table.string("socket", defaults.socket)
        if not SOCKET_SPEC.match(socket):
            table.problem("socket", f"{socket!r} is not 'unix:/absolute/path' or 'inet:PORT@HOST'")
        mode_text = table.string("socket_mode", "0660")
        try:
            socket_mode = int(mode_text, 8)
            if not 0 <= socket_mode <= 0o777:
                raise ValueError
        except ValueError:
            table.problem("socket_mode", f"{mode_text!r} is not an octal mode such as '0660'")
            socket_mode = defaults.socket_mode
        if socket_mode & 0o007:
            table.problem("socket_mode", "must not grant access to other users (e.g. '0660')")
        for key, lookup in (("socket_owner", pwd.getpwnam), ("socket_group", grp.getgrnam)):
            self._system_name(table, key, lookup)
        self._system_name(table, "user", pwd.getpwnam)
        return MilterSettings(
            socket=socket,
            socket_owner=table.string("socket_owner"),
            socket_group=table.string("socket_group"),
            socket_mode=socket_mode,
            workers=table.integer("workers", defaults.workers, 1, 64) or defaults.workers,
            timeout=table.integer("timeout", defaults.timeout, 1, 3600) or defaults.timeout,
            user=table.string("user"),
        )

    def _system_name(self, table: _Table, key: str, lookup: Any) -> None:
        name = table.string(key)
        if not name:
            return
        try:
            lookup(name)
        except KeyError:
            table.problem(key, f"no such {'group' if 'group' in key else 'user'} {name!r}")

    def _cert_names(self, table: _Table) -> tuple[str, ...]:
        """Postfix's {cert_subject} macro is the Common Name of a certificate it verified, not
        the whole subject DN: accept 'CN=name' or 'name' and keep the name."""
        names = []
        for index, text in enumerate(table.strings("client_cert_subjects")):
            name = text[3:] if text[:3].upper() == "CN=" else text
            if not name or any(c in name for c in ",+=") or name != name.strip():
                table.problem(
                    f"client_cert_subjects[{index}]",
                    f"{text!r}: give the certificate's Common Name (e.g. 'CN=erp.example.com');"
                    " Postfix passes only the CN of a verified client certificate",
                )
            else:
                names.append(name)
        return tuple(names)

    def _identities(self, table: _Table, key: str) -> IdentitySet:
        valid = []
        for index, pattern in enumerate(table.strings(key)):
            try:
                parse_identity(pattern)
                valid.append(pattern)
            except ValueError as exc:
                table.problem(f"{key}[{index}]", str(exc))
        return build_identity_set(tuple(valid))

    def _source(self, table: _Table) -> Source:
        name = table.string("name")
        if not name:
            table.problem("name", "missing: every source needs a name")
        elif not SOURCE_NAME.match(name):
            table.problem(
                "name", f"{name!r} must be 1-64 of A-Z a-z 0-9 . _ - (letter/digit first)"
            )
        networks = []
        for index, text in enumerate(table.strings("networks")):
            try:
                networks.append(ipaddress.ip_network(text, strict=True))
            except ValueError as exc:
                table.problem(f"networks[{index}]", f"{text!r} is not a valid network: {exc}")
        source = Source(
            name=name,
            description=table.string("description"),
            sasl_users=table.strings("sasl_users"),
            client_cert_subjects=self._cert_names(table),
            networks=tuple(networks),
            senders=self._identities(table, "senders"),
            recipients=self._identities(table, "recipients"),
            max_recipients=table.integer("max_recipients", None, 1, 100_000),
            mode=table.choice("mode", MODES, None),
        )
        if source.senders.is_empty and "senders" not in table.data:
            table.problem(
                "senders", "missing: list the addresses or '@domains' this source may use"
            )
        if not (source.sasl_users or source.client_cert_subjects or table.data.get("networks")):
            table.problem(
                "name",
                f"source {name!r} has no sasl_users, client_cert_subjects or networks:"
                " nothing can identify it",
            )
        return source

    def _index(
        self, sources: tuple[Source, ...]
    ) -> tuple[dict[str, Source], dict[str, Source], list[tuple[IPNetwork, Source]]]:
        """Each identifier belongs to exactly one source; an ambiguous claim is an error."""
        by_name: dict[str, int] = {}
        by_sasl: dict[str, Source] = {}
        by_cert: dict[str, Source] = {}
        by_network: list[tuple[IPNetwork, Source]] = []
        for index, source in enumerate(sources):
            where = f"sources[{index}]"
            if source.name in by_name:
                first = by_name[source.name]
                self.problem(f"{where}.name", f"duplicate source name (also sources[{first}])")
            by_name.setdefault(source.name, index)
            for user in source.sasl_users:
                other = by_sasl.get(ascii_lower(user))
                if other is not None:
                    self.problem(
                        f"{where}.sasl_users", f"{user!r} is already claimed by {other.name!r}"
                    )
                by_sasl.setdefault(ascii_lower(user), source)
            for subject in source.client_cert_subjects:
                other = by_cert.get(subject)
                if other is not None:
                    self.problem(
                        f"{where}.client_cert_subjects",
                        f"{subject!r} is already claimed by {other.name!r}",
                    )
                by_cert.setdefault(subject, source)
            for network in source.networks:
                for claimed, other in by_network:
                    if network.version == claimed.version and network.overlaps(claimed):
                        self.problem(
                            f"{where}.networks",
                            f"{network} overlaps {claimed} of source {other.name!r}:"
                            " a client address must identify one source",
                        )
                by_network.append((network, source))
        return by_sasl, by_cert, by_network


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _toml_type(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array"}
    names[dict] = "table"
    return names.get(type(value), type(value).__name__)
