"""Administrative actions shared by the command line and the console: the kill switch, and the
audit line every operator action writes (who did what, and why).

A kill-switch change is written to the state store (so every milter process and node sharing it
refuses or admits the source from its next MAIL FROM on) and then audited.
"""

from __future__ import annotations

import time

from relayguard.config import Config
from relayguard.core.audit_record import AdminRecord
from relayguard.core.errors import AuditError, RelayguardError
from relayguard.engine.audit import AuditLog, now
from relayguard.state import Disabled, StateStore, StateUnavailable
from relayguard.state.factory import open_store


class AdminError(RelayguardError):
    """The action was refused (`usage`: the request was wrong) or could not be done."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


class NotAudited(AdminError):
    """The action was done, but its audit line could not be written."""


def audit_admin(
    config: Config, event: str, actor: str, source: str | None = None, reason: str = "",
    **details: str,
) -> None:  # fmt: skip
    """One admin line in the relay's audit log; NotAudited when it cannot be written."""
    record = AdminRecord(now(), event, actor, source, reason, details)
    try:
        AuditLog(config.relay.audit_log).write(record)
    except AuditError as exc:
        raise NotAudited(f"done, but NOT audited: {exc}") from exc


def one_line(text: str) -> str:
    """A reason as one line of single spaces (it is shown in a 550 reply)."""
    return " ".join(text.split())


def _store(config: Config) -> StateStore:
    if config.state is None:
        problem = f"{config.path}: no [state] section: the kill switch needs one"
        raise AdminError(problem, usage=True)
    return open_store(config.state)


def _require_source(config: Config, name: str) -> None:
    if config.source(name) is None:
        known = ", ".join(s.name for s in config.sources)
        raise AdminError(f"no source {name!r} in {config.path} (known: {known})", usage=True)


def disable_source(config: Config, name: str, reason: str, actor: str) -> str:
    """Refuse `name` at once (binding in monitor mode too, checks/killswitch.py); the reason
    as stored. Audited as `source_disabled`."""
    _require_source(config, name)
    reason = one_line(reason)
    if not reason:
        raise AdminError("a reason must say why", usage=True)
    store = _store(config)
    try:
        store.disable(name, reason, actor, time.time())
    except StateUnavailable as exc:
        raise AdminError(f"not disabled: {exc}") from exc
    finally:
        store.close()
    audit_admin(config, "source_disabled", actor, source=name, reason=reason)
    return reason


def enable_source(config: Config, name: str, reason: str, actor: str) -> bool:
    """Let `name` send again; False when it was not disabled (nothing audited then)."""
    _require_source(config, name)
    store = _store(config)
    try:
        changed = store.enable(name, actor)
    except StateUnavailable as exc:
        raise AdminError(f"not enabled: {exc}") from exc
    finally:
        store.close()
    if changed:
        audit_admin(config, "source_enabled", actor, source=name, reason=one_line(reason))
    return changed


def disabled_sources(config: Config) -> list[Disabled]:
    store = _store(config)
    try:
        return store.all_disabled()
    except StateUnavailable as exc:
        raise AdminError(str(exc)) from exc
    finally:
        store.close()
