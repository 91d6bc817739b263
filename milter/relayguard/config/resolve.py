"""The second pass: what needs the system. User and group lookups, DKIM keys, YARA rules.

`resolve(config)` returns the configuration with `dkim.keys` and `content.yara.compiled` filled,
or raises ConfigError with located problems; load_config is read + resolve in one report.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from relayguard.config.declare import Place, Problems
from relayguard.config.dkim import DkimSettings
from relayguard.config.milter import MilterSettings
from relayguard.config.scanners import YaraSettings
from relayguard.config.snapshot import Config
from relayguard.dkim import keys as dkim_keys
from relayguard.dkim.keys import SigningKey
from relayguard.scanners.yara_rules import RuleError, compile_directory


def resolve(config: Config) -> Config:
    """CONFIG (parsed) with its keys and rules loaded, or ConfigError naming each problem."""
    problems = Problems(config.path)
    resolved = resolve_into(config, problems)
    problems.raise_if_any()
    return resolved


def resolve_into(config: Config, problems: Problems) -> Config:
    """Resolve what parsed cleanly; problems go to PROBLEMS (with those of the parse)."""
    root = Place(problems)
    _system_names(config.milter, root.key("milter"))
    dkim = config.dkim
    if problems.clean("dkim.key_directory"):
        keys = _dkim_keys(dkim, config.milter.user, root.key("dkim"))
        dkim = replace(dkim, keys=MappingProxyType(keys))
    content = config.content
    if content.yara is not None and problems.clean("yara.rules_dir"):
        content = replace(content, yara=_compiled(content.yara, root.key("yara")))
    return replace(config, dkim=dkim, content=content)


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


def _compiled(yara: YaraSettings, at: Place) -> YaraSettings:
    try:
        return replace(yara, compiled_rules=compile_directory(yara.rules_dir))
    except RuleError as exc:
        for problem in exc.problems:
            at.key("rules_dir").problem(problem)
        return yara
