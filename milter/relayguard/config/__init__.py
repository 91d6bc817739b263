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

from relayguard.config.content import ContentSettings, build_content
from relayguard.core.errors import ConfigError
from relayguard.core.verdict import Action, Mode
from relayguard.dkim import keys as dkim_keys
from relayguard.dkim.keys import SigningKey
from relayguard.parsing.identities import IdentitySet, build_identity_set, parse_identity
from relayguard.parsing.rfc5322 import ascii_lower

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HEADER_NAME = re.compile(r"^[!-9;-~]{1,64}$")  # RFC 5322 §3.6.8 ftext
SOCKET_SPEC = re.compile(r"^(unix|local):(/.+)$|^(inet|inet6):(\d{1,5})@(.+)$")
# Rate limits per source (state.md): what is counted, over which sliding windows (seconds).
RATE_KINDS = ("messages", "recipients", "bytes")
RATE_WINDOWS: Mapping[str, int] = MappingProxyType({"minute": 60, "hour": 3600, "day": 86400})
# The {daemon_name} of each SMTP listener in postfix/master.cf.j2 (milter_macro_daemon_name).
LISTENERS = ("smtp", "submission", "smtps")

# Every key the schema knows, per table. docs/configuration.md must document each one (tested).
SCHEMA: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "": frozenset(
            {"relay", "milter", "sources", "state", "metrics", "dkim", "unsubscribe"}
            | {"content", "clamav", "yara", "dlp", "dlp_detectors", "dlp_profiles"}
            | {"urls", "url_blocklists"}
        ),
        "relay": frozenset(
            {"mode", "internal_domains", "internal_subdomains", "audit_log", "trace_header"}
            | {"error_action"}
            | {"unregistered_audit_interval"}
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
                "client_cert_issuers",
                "networks",
                "listeners",
                "senders",
                "recipients",
                "max_recipients",
                "mode",
                "rate_limits",
                "dlp_profile",
            }
        ),
        "state": frozenset(
            {"backend", "path", "redis_url", "redis_prefix", "timeout_ms", "failure_action"}
        ),
        "metrics": frozenset({"port", "address", "directory"}),
        "dkim": frozenset({"key_directory", "domains", "missing_key", "grace_days"}),
        "unsubscribe": frozenset({"sources", "base_url", "mailto", "secrets", "address", "port"}),
        "rate_limits": frozenset(
            {f"{what}_per_{unit}" for what in RATE_KINDS for unit in RATE_WINDOWS}
        ),
        # Content scanning (content_settings.py).
        "content": frozenset(
            {"max_depth", "max_parts", "max_decoded_bytes", "max_archive_members"}
            | {"max_expansion_ratio", "limit_action", "encrypted_action"}
        ),
        "clamav": frozenset({"socket", "timeout", "failure_action", "database_directory"}),
        "yara": frozenset({"rules_dir", "default_action", "timeout", "failure_action"}),
        "dlp": frozenset({"default_profile", "unreadable_action"}),
        "dlp_detectors": frozenset(
            {"name", "pattern", "keywords", "validator", "context", "context_window"}
            | {"ignore_case"}
        ),
        "dlp_profiles": frozenset({"name", "detectors", "match", "action"}),
        "urls": frozenset({"nameservers", "port", "timeout", "failure_action", "max_domains"}),
        "url_blocklists": frozenset({"zone", "action", "codes"}),
    }
)


@dataclass(frozen=True, slots=True)
class RelaySettings:
    mode: Mode = Mode.ENFORCE
    internal_domains: frozenset[str] = frozenset()
    internal_subdomains: bool = True
    audit_log: Path | None = None
    trace_header: str = "X-Relayguard"
    error_action: Action = Action.TEMPFAIL
    # Seconds over which an unregistered client's refusals make one counted audit line; 0 = off.
    unregistered_audit_interval: int = 60

    def internal_domain_of(self, domain: str) -> str | None:
        """The listed internal domain that DOMAIN (ASCII-lowercased) is, or is below when
        internal_subdomains is on: erp.example.com is as much yours as example.com."""
        if domain in self.internal_domains:
            return domain
        if self.internal_subdomains:
            labels = domain.split(".")
            for start in range(1, len(labels)):
                parent = ".".join(labels[start:])
                if parent in self.internal_domains:
                    return parent
        return None


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
class StateSettings:
    """Where runtime state lives (kill switch, rate-limit counters, suppression list)."""

    backend: str = "sqlite"
    path: Path = Path("/var/lib/relayguard/state.sqlite3")
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "relayguard:"
    timeout_ms: int = 1000
    failure_action: Action = Action.TEMPFAIL


@dataclass(frozen=True, slots=True)
class DkimSettings:
    """DKIM signing (signing.py): the active keys of each signed domain, read at load time so
    that a missing or exposed key is a located error at start, on reload and in check."""

    key_directory: Path = Path("/etc/relayguard/dkim")
    domains: tuple[str, ...] = ()
    missing_key: str = "refuse"  # or "unsigned": pass with a warning in the audit line
    grace_days: int = 7
    keys: Mapping[str, tuple[SigningKey, ...]] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class UnsubscribeSettings:
    """RFC 8058 one-click unsubscribe for bulk sources (unsubscribe.py)."""

    sources: frozenset[str] = frozenset()
    base_url: str = ""
    mailto: str = ""
    secrets: tuple[str, ...] = ()  # the first signs new tokens; all verify (rotation)
    address: str = "127.0.0.1"
    port: int = 8025


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    port: int | None = None  # None: no metrics endpoint
    address: str = "127.0.0.1"
    directory: Path | None = None


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per-source limits: (kind, window name, window seconds) -> limit; empty means none."""

    limits: tuple[tuple[str, str, int, int], ...] = ()

    def of(self, kind: str) -> tuple[tuple[str, int, int], ...]:
        """(window name, window seconds, limit) of one kind: messages, recipients or bytes."""
        return tuple((unit, window, limit) for k, unit, window, limit in self.limits if k == kind)


@dataclass(frozen=True, slots=True)
class Source:
    """A registered sending device or application and what it may do."""

    name: str
    description: str = ""
    sasl_users: tuple[str, ...] = ()
    client_cert_subjects: tuple[str, ...] = ()
    client_cert_issuers: tuple[str, ...] = ()  # empty: any issuer Postfix's client CA file trusts
    networks: tuple[IPNetwork, ...] = ()
    listeners: tuple[str, ...] = ()  # empty: the default of checks/source.py
    senders: IdentitySet = field(default_factory=IdentitySet)
    recipients: IdentitySet = field(default_factory=IdentitySet)
    max_recipients: int | None = None
    mode: Mode | None = None
    rate_limits: RateLimits = field(default_factory=RateLimits)
    dlp_profile: str = ""


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
    state: StateSettings | None = None  # None: no [state]; kill switch and rate limits off
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    dkim: DkimSettings = field(default_factory=DkimSettings)
    unsubscribe: UnsubscribeSettings | None = None
    content: ContentSettings = field(default_factory=ContentSettings)

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


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or the name localhost: a listener only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def milter_socket_problem(spec: str) -> str | None:
    """Why SPEC may not be the milter's socket, or None. Whoever can connect to the milter sends
    its own {auth_authen} macro: on a reachable address it would be a DKIM signing oracle."""
    found = SOCKET_SPEC.fullmatch(spec)
    if found is None:
        return f"{spec!r} is not 'unix:/absolute/path' or 'inet:PORT@HOST'"
    host = found.group(5)
    if host is not None and host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # libmilter's bracketed address literal, as in inet6:8891@[::1]
    if host is not None and not is_loopback_host(host):
        return (
            f"{spec!r}: the milter listens on a unix socket or a loopback address only"
            " (127.0.0.0/8, ::1, localhost)"
        )
    return None


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

    def boolean(self, key: str, default: bool) -> bool:
        value = self._typed(key, bool, "a boolean")
        return default if value is None else bool(value)

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
        state = self._state(root.table("state")) if "state" in self.data else None
        if state is None:
            for index, source in enumerate(sources):
                if source.rate_limits.limits:
                    self.problem(
                        f"sources[{index}].rate_limits", "rate limits need a [state] section"
                    )
        metrics = self._metrics(root.table("metrics"))
        dkim = self._dkim(root.table("dkim"), milter.user)
        unsubscribe = (
            self._unsubscribe(root.table("unsubscribe"), sources)
            if "unsubscribe" in self.data
            else None
        )
        if unsubscribe is not None and state is None:
            self.problem("unsubscribe", "needs a [state] section: the suppression list lives there")
        content = build_content(root, sources, self.path.parent)
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
            state=state,
            metrics=metrics,
            dkim=dkim,
            unsubscribe=unsubscribe,
            content=content,
        )

    def _dkim(self, table: _Table, user: str) -> DkimSettings:
        directory = table.string("key_directory", "/etc/relayguard/dkim")
        if not directory.startswith("/"):
            table.problem("key_directory", f"must be an absolute path, got {directory!r}")
        domains = []
        for index, domain in enumerate(table.strings("domains")):
            try:
                domains.append(parse_identity("@" + domain)[1])
            except ValueError as exc:
                table.problem(f"domains[{index}]", str(exc))
        keys: dict[str, tuple[SigningKey, ...]] = {}
        for index, domain in enumerate(domains):
            try:
                keys[domain] = dkim_keys.load_keys(Path(directory), domain, user=user)
            except dkim_keys.DkimKeyError as exc:
                table.problem(f"domains[{index}]", str(exc))
                continue
            if not keys[domain]:
                table.problem(
                    f"domains[{index}]",
                    f"no active key for {domain} in {directory}:"
                    f" run relayguard dkim generate --domain {domain} --selector NAME",
                )
        return DkimSettings(
            key_directory=Path(directory),
            domains=tuple(domains),
            missing_key=table.choice(
                "missing_key", {"refuse": "refuse", "unsigned": "unsigned"}, "refuse"
            ),
            grace_days=table.integer("grace_days", 7, 0, 365) or 0,
            keys=MappingProxyType(keys),
        )

    def _unsubscribe(self, table: _Table, sources: tuple[Source, ...]) -> UnsubscribeSettings:
        names = {s.name for s in sources}
        bulk = table.strings("sources")
        for index, name in enumerate(bulk):
            if name not in names:
                table.problem(f"sources[{index}]", f"no source named {name!r}")
        base_url = table.string("base_url")
        if not base_url.startswith("https://") or any(c in base_url for c in " <>\"'"):
            # RFC 8058 §3.1: the one-click URI must be HTTPS.
            table.problem("base_url", f"must be an https:// URL, got {base_url!r}")
        secrets = table.strings("secrets")
        if not secrets or any(len(secret) < 16 for secret in secrets):
            table.problem("secrets", "give at least one secret of 16 or more characters")
        mailto = table.string("mailto")
        if mailto:
            try:
                parse_identity(mailto)
            except ValueError as exc:
                table.problem("mailto", str(exc))
        return UnsubscribeSettings(
            sources=frozenset(bulk),
            base_url=base_url,
            mailto=mailto,
            secrets=secrets,
            address=table.string("address", "127.0.0.1"),
            port=table.integer("port", 8025, 1, 65535) or 8025,
        )

    def _state(self, table: _Table) -> StateSettings:
        defaults = StateSettings()
        path = table.string("path", str(defaults.path))
        if not path.startswith("/"):
            table.problem("path", f"must be an absolute path, got {path!r}")
        url = table.string("redis_url", defaults.redis_url)
        if not url.startswith(("redis://", "rediss://", "unix://")):
            table.problem("redis_url", f"{url!r} is not a redis://, rediss:// or unix:// URL")
        prefix = table.string("redis_prefix", defaults.redis_prefix)
        if not prefix:
            table.problem("redis_prefix", "must not be empty")
        timeout = table.integer("timeout_ms", defaults.timeout_ms, 10, 60_000)
        return StateSettings(
            backend=table.choice("backend", {"sqlite": "sqlite", "redis": "redis"}, "sqlite"),
            path=Path(path),
            redis_url=url,
            redis_prefix=prefix,
            timeout_ms=timeout or defaults.timeout_ms,
            failure_action=table.choice("failure_action", ERROR_ACTIONS, Action.TEMPFAIL),
        )

    def _metrics(self, table: _Table) -> MetricsSettings:
        address = table.string("address", "127.0.0.1")
        if not is_loopback_host(address):
            table.problem("address", f"{address!r}: metrics are served on a loopback address only")
        directory = table.string("directory")
        if directory and not directory.startswith("/"):
            table.problem("directory", f"must be an absolute path, got {directory!r}")
        return MetricsSettings(
            port=table.integer("port", None, 1, 65535),
            address=address,
            directory=Path(directory) if directory else None,
        )

    def _rate_limits(self, table: _Table) -> RateLimits:
        limits = []
        for kind in RATE_KINDS:
            for unit, window in RATE_WINDOWS.items():
                limit = table.integer(f"{kind}_per_{unit}", None, 1, 2**53)
                if limit is not None:
                    limits.append((kind, unit, window, limit))
        return RateLimits(tuple(limits))

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
        if trace_header and not HEADER_NAME.fullmatch(trace_header):
            table.problem("trace_header", f"{trace_header!r} is not a valid header field name")
        return RelaySettings(
            mode=table.choice("mode", MODES, Mode.ENFORCE),
            internal_domains=frozenset(domains),
            internal_subdomains=table.boolean("internal_subdomains", True),
            audit_log=Path(audit_log) if audit_log else None,
            trace_header=trace_header,
            error_action=table.choice("error_action", ERROR_ACTIONS, Action.TEMPFAIL),
            unregistered_audit_interval=table.integer("unregistered_audit_interval", 60, 0, 3600)
            or 0,
        )

    def _milter(self, table: _Table) -> MilterSettings:
        defaults = MilterSettings()
        socket = table.string("socket", defaults.socket)
        socket_problem = milter_socket_problem(socket)
        if socket_problem:
            table.problem("socket", socket_problem)
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

    def _cert_names(self, table: _Table, key: str, whose: str, example: str) -> tuple[str, ...]:
        """Postfix's {cert_subject} and {cert_issuer} macros are Common Names of a certificate it
        verified, not whole DNs: accept 'CN=name' or 'name' and keep the name."""
        names = []
        for index, text in enumerate(table.strings(key)):
            name = text[3:] if text[:3].upper() == "CN=" else text
            if not name or any(c in name for c in ",+=") or name != name.strip():
                table.problem(
                    f"{key}[{index}]",
                    f"{text!r}: give the {whose} Common Name (e.g. 'CN={example}');"
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
        elif not SOURCE_NAME.fullmatch(name):
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
            client_cert_subjects=self._cert_names(
                table, "client_cert_subjects", "certificate's", "erp.example.com"
            ),
            client_cert_issuers=self._cert_names(
                table, "client_cert_issuers", "issuer's", "Example Device CA"
            ),
            networks=tuple(networks),
            listeners=self._listeners(table),
            senders=self._identities(table, "senders"),
            recipients=self._identities(table, "recipients"),
            max_recipients=table.integer("max_recipients", None, 1, 100_000),
            mode=table.choice("mode", MODES, None),
            rate_limits=self._rate_limits(table.table("rate_limits")),
            dlp_profile=table.string("dlp_profile"),
        )
        if source.senders.is_empty and "senders" not in table.data:
            table.problem(
                "senders", "missing: list the addresses or '@domains' this source may use"
            )
        if source.client_cert_issuers and not source.client_cert_subjects:
            table.problem(
                "client_cert_issuers",
                "pins the issuer of client_cert_subjects, but the source has none",
            )
        if not (source.sasl_users or source.client_cert_subjects or table.data.get("networks")):
            table.problem(
                "name",
                f"source {name!r} has no sasl_users, client_cert_subjects or networks:"
                " nothing can identify it",
            )
        return source

    def _listeners(self, table: _Table) -> tuple[str, ...]:
        names = table.strings("listeners")
        if table.data.get("listeners") == []:
            table.problem("listeners", "empty: the source could send through no listener")
        for index, name in enumerate(names):
            if name not in LISTENERS:
                table.problem(
                    f"listeners[{index}]",
                    f"{name!r} is not a listener: use {', '.join(map(repr, LISTENERS))}",
                )
        return names

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
