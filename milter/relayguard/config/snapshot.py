"""Config: one immutable snapshot of the whole configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from relayguard.config.anomaly import AnomalySettings
from relayguard.config.api import ApiSettings
from relayguard.config.console import ConsoleSettings
from relayguard.config.content import ContentSettings
from relayguard.config.dkim import DkimSettings
from relayguard.config.milter import MilterSettings
from relayguard.config.outbound import OutboundPath
from relayguard.config.prometheus import MetricsSettings
from relayguard.config.relay import RelaySettings
from relayguard.config.sources import IPNetwork, Source
from relayguard.config.spam import SpamSettings
from relayguard.config.state import StateSettings
from relayguard.config.unsubscribe import UnsubscribeSettings
from relayguard.core.verdict import Mode


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
    api: ApiSettings | None = None  # None: no [api]; the milter's api listener path is closed
    spam: SpamSettings | None = None  # None: no [spam]; no outbound spam scoring
    outbound_paths: Mapping[str, OutboundPath] = field(default_factory=lambda: MappingProxyType({}))
    console: ConsoleSettings | None = None  # None: no [console]; `relayguard console` refuses
    anomaly: AnomalySettings | None = None  # None: no [anomaly]; no automatic source lock

    def source(self, name: str) -> Source | None:
        return next((s for s in self.sources if s.name == name), None)

    def mode_for(self, source: Source | None) -> Mode:
        if source is not None and source.mode is not None:
            return source.mode
        return self.relay.mode
