"""The second pass: what needs the system. User and group lookups, DKIM keys, YARA rules, the
Redis password file.

`resolve(config)` returns the configuration with `dkim.keys`, `content.yara.compiled` and the DLP
dictionaries (`keywords_file`) filled, or raises ConfigError with located problems; load_config is
read + resolve in one report.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from relayguard.config.declare import Place, Problems
from relayguard.config.dkim import DkimSettings
from relayguard.config.dlp import DlpSettings, entry_detector
from relayguard.config.milter import MilterSettings
from relayguard.config.scanners import YaraSettings
from relayguard.config.snapshot import Config
from relayguard.core.secret_file import SecretFileError, read_secret_file
from relayguard.dkim import keys as dkim_keys
from relayguard.dkim.keys import SigningKey
from relayguard.dlp.dictionaries import DictionaryError, read_keywords
from relayguard.scanners.yara_rules import RuleError, compile_directory


def resolve(config: Config) -> Config:
    """CONFIG (parsed) with its keys and rules loaded, or ConfigError naming each problem."""
    problems = Problems(config.path)
    resolved = resolve_into(config, problems)
    problems.raise_if_any()
    return resolved


def resolve_into(config: Config, problems: Problems, *, signing_keys: bool = True) -> Config:
    """Resolve what parsed cleanly; problems go to PROBLEMS (with those of the parse).
    SIGNING_KEYS false: leave dkim.keys empty (for the services that never sign)."""
    root = Place(problems)
    _system_names(config.milter, root.key("milter"))
    dkim = config.dkim
    if signing_keys and problems.clean("dkim.key_directory"):
        keys = _dkim_keys(dkim, config.milter.user, root.key("dkim"))
        dkim = replace(dkim, keys=MappingProxyType(keys))
    content = config.content
    if content.yara is not None and problems.clean("yara.rules_dir"):
        content = replace(content, yara=_compiled(content.yara, root.key("yara")))
    if content.dlp.dictionaries:
        dlp = _dictionaries(content.dlp, config.path.parent, root.key("dlp_detectors"))
        content = replace(content, dlp=dlp)
    state = config.state
    if state is not None and state.redis_password_file is not None and problems.clean("state"):
        at = root.key("state").key("redis_password_file")
        state = replace(state, redis_password=_secret(state.redis_password_file, at))
    return replace(config, dkim=dkim, content=content, state=state)


def _system_names(milter: MilterSettings, at: Place) -> None:
    lookups: Mapping[str, tuple[str, Callable[[str], Any]]] = {
        "socket_owner": ("user", pwd.getpwnam),
        "socket_group": ("group", grp.getgrnam),
        "user": ("user", pwd.getpwnam),
    }
    for key, (what, lookup) in lookups.items():
        name = getattr(milter, key)
        if not name:
            continue
        try:
            lookup(name)
        except KeyError:
            at.key(key).problem(f"no such {what} {name!r}")


def _dkim_keys(dkim: DkimSettings, user: str, at: Place) -> dict[str, tuple[SigningKey, ...]]:
    """The active keys of each signed domain: a missing or exposed key is a problem now, at
    start, reload or check, not when the first message would be signed."""
    keys: dict[str, tuple[SigningKey, ...]] = {}
    for index, domain in enumerate(dkim.domains):
        try:
            keys[domain] = dkim_keys.load_keys(dkim.key_directory, domain, user=user)
        except dkim_keys.DkimKeyError as exc:
            at.key("domains").item(index).problem(str(exc))
            continue
        if not keys[domain]:
            at.key("domains").item(index).problem(
                f"no active key for {domain} in {dkim.key_directory}:"
                f" run relayguard dkim generate --domain {domain} --selector NAME"
            )
    return keys


def _secret(path: Path, at: Place) -> str:
    try:
        return read_secret_file(path)
    except SecretFileError as exc:
        at.problem(str(exc))
        return ""


def _compiled(yara: YaraSettings, at: Place) -> YaraSettings:
    try:
        return replace(yara, compiled_rules=compile_directory(yara.rules_dir))
    except RuleError as exc:
        for problem in exc.problems:
            at.key("rules_dir").problem(problem)
        return yara


def _dictionaries(dlp: DlpSettings, base: Path, at: Place) -> DlpSettings:
    """The detectors whose keywords are in a file (relative: to the configuration's directory),
    each file read once, now."""
    detectors = dict(dlp.detectors)
    for index, entry in dlp.dictionaries.items():
        where = at.item(index)
        if entry.keywords_file is None or not where.problems.clean(where.keypath):
            continue
        path = Path(os.path.normpath(base / entry.keywords_file))
        try:
            detectors[entry.name] = entry_detector(entry, read_keywords(path))
        except DictionaryError as exc:
            where.key("keywords_file").problem(f"detector {entry.name!r}: {exc}")
    return replace(dlp, detectors=MappingProxyType(detectors), dictionaries=MappingProxyType({}))
