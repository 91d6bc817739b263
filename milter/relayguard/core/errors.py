"""The small exception tree of relayguard: callers catch what they can handle."""

from __future__ import annotations


class RelayguardError(Exception):
    """Base of every error relayguard raises on purpose."""


class ConfigError(RelayguardError):
    """A configuration that cannot be used; `problems` are located, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(problems))


class AuditError(RelayguardError):
    """The audit line could not be written: the message must not pass unaudited."""
