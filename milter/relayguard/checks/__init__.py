"""One module per check. A check is a plain callable, Subject -> Verdict, with no pymilter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from relayguard.config import Config, Source
from relayguard.core.message import Envelope, Message
from relayguard.core.verdict import Verdict


class Stage(Enum):
    """When a check can run: as early as its data exists, so refusals come at the right command."""

    MAIL = "mail"
    RCPT = "rcpt"
    END = "end"


@dataclass(frozen=True, slots=True)
class Subject:
    """What a check looks at: the snapshot, the identified source and the transaction so far."""

    config: Config
    source: Source | None
    envelope: Envelope
    recipient: str = ""
    message: Message | None = None
    # `relayguard test-message`: evaluate, but change no shared state (quotas, counters).
    dry_run: bool = False


CheckFunction = Callable[[Subject], Verdict]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    stage: Stage
    run: CheckFunction
