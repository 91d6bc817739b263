"""Reading the file: TOML, then each section from its declaration, then the cross-references.

No I/O beyond reading the file itself: user lookups, DKIM keys and YARA rules are the second
pass (config/resolve.py). `parse_config` is this pass alone, for commands that must work before
keys exist (`relayguard dkim generate`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from relayguard.config.anomaly import AnomalyOverride, AnomalySettings, link_anomaly
from relayguard.config.api import ApiSettings, api_reference_problems
from relayguard.config.console import ConsoleSettings
from relayguard.config.content import ContentLimits, ContentSettings
from relayguard.config.declare import Place, Problems, read_section, section, sections
from relayguard.config.dkim import DkimSettings
from relayguard.config.dlp import DetectorEntry, DlpSettings, ProfileEntry, link_dlp
from relayguard.config.milter import MilterSettings
from relayguard.config.outbound import OutboundPath, link_paths
from relayguard.config.prometheus import MetricsSettings
from relayguard.config.relay import RelaySettings
from relayguard.config.scanners import ClamavSettings, YaraSettings
from relayguard.config.snapshot import Config
from relayguard.config.sources import Source, index_sources
from relayguard.config.spam import SpamPolicy, SpamSettings, link_spam
from relayguard.config.state import StateSettings
from relayguard.config.unsubscribe import UnsubscribeSettings
from relayguard.config.urls import Blocklist, UrlSettings


@dataclass(frozen=True, slots=True)
class Document:
    """The file's top-level tables, one field each: a new section is one line here and, where
    its value goes into Config, a line in `_link`."""

    relay: RelaySettings = section(RelaySettings)
    milter: MilterSettings = section(MilterSettings)
    sources: tuple[Source, ...] = sections(Source)
    state: StateSettings | None = section(StateSettings, optional=True)
    metrics: MetricsSettings = section(MetricsSettings)
    dkim: DkimSettings = section(DkimSettings)
    unsubscribe: UnsubscribeSettings | None = section(UnsubscribeSettings, optional=True)
    content: ContentLimits = section(ContentLimits)
    clamav: ClamavSettings | None = section(ClamavSettings, optional=True)
    yara: YaraSettings | None = section(YaraSettings, optional=True)
    dlp: DlpSettings = section(DlpSettings)
    dlp_detectors: tuple[DetectorEntry, ...] = sections(DetectorEntry)
    dlp_profiles: tuple[ProfileEntry, ...] = sections(ProfileEntry)
    urls: UrlSettings | None = section(UrlSettings, optional=True)
    url_blocklists: tuple[Blocklist, ...] = sections(Blocklist)
    api: ApiSettings | None = section(ApiSettings, optional=True)
    spam: SpamSettings | None = section(SpamSettings, optional=True)
    spam_policies: tuple[SpamPolicy, ...] = sections(SpamPolicy)
    outbound_paths: tuple[OutboundPath, ...] = sections(OutboundPath)
    console: ConsoleSettings | None = section(ConsoleSettings, optional=True)
    anomaly: AnomalySettings | None = section(AnomalySettings, optional=True)
    anomaly_overrides: tuple[AnomalyOverride, ...] = sections(AnomalyOverride)


def parse_config(path: str | Path) -> Config:
    """Read and validate PATH without I/O checks (keys, rules, users), or raise ConfigError."""
    problems = Problems(Path(path))
    config = read_config(Path(path), problems)
    problems.raise_if_any()
    assert config is not None  # no problem: the file was read
    return config


def parse_sections(path: str | Path) -> Document:
    """Each section read and validated on its own, without the cross-references: for commands
    that need one section of a file that may not yet be a whole relay (`relayguard dkim`)."""
    problems = Problems(Path(path))
    data = _toml(Path(path), problems)
    document = read_section(Document, data or {}, Place(problems))
    problems.raise_if_any()
    return document


def read_config(path: Path, problems: Problems) -> Config | None:
    """The configuration as far as it is valid, its problems in PROBLEMS; None if the file
    could not be read as TOML at all."""
    data = _toml(path, problems)
    if data is None:
        return None
    root = Place(problems)
    document = read_section(Document, data, root)
    return _link(document, data, path, root)


def _toml(path: Path, problems: Problems) -> dict[str, Any] | None:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.add("", f"cannot read: {exc.strerror}")
        return None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        problems.add("", f"not UTF-8 (byte {exc.start})")
    except tomllib.TOMLDecodeError as exc:
        problems.add("", f"TOML syntax error: {exc}")
    return None


def _link(doc: Document, given: Mapping[str, Any], path: Path, root: Place) -> Config:
    """Cross-references between sections, checked once every section is read."""
    if "sources" not in given:
        root.key("sources").problem("no [[sources]] defined: nothing could send through the relay")
    _needs_state(doc, root)
    if doc.unsubscribe is not None:
        _bulk_sources(given["unsubscribe"], doc.sources, root.key("unsubscribe"))
    if doc.api is not None:
        for problem in api_reference_problems(doc.api, doc.sources):
            root.key("api").key("sasl_user").problem(problem)
    index = index_sources(doc.sources, root.key("sources"))
    return Config(
        path=path,
        relay=doc.relay,
        milter=doc.milter,
        sources=doc.sources,
        by_sasl_user=index.by_sasl_user,
        by_cert_subject=index.by_cert_subject,
        by_network=index.by_network,
        state=doc.state,
        metrics=doc.metrics,
        dkim=doc.dkim,
        unsubscribe=doc.unsubscribe,
        content=_content(doc, given, path.parent, root),
        api=doc.api,
        spam=link_spam(doc.spam, doc.spam_policies, doc.sources, root),
        outbound_paths=link_paths(doc.outbound_paths, doc.sources, root),
        console=doc.console,
        anomaly=link_anomaly(
            doc.anomaly,
            doc.anomaly_overrides,
            given,
            doc.sources,
            root,
            state=doc.state is not None,
        ),
    )


def _needs_state(doc: Document, root: Place) -> None:
    """Rate limits and the suppression list live in the state store."""
    if doc.state is not None:
        return
    for index, source in enumerate(doc.sources):
        if source.rate_limits.limits:
            root.key("sources").item(index).key("rate_limits").problem(
                "rate limits need a [state] section"
            )
    if doc.unsubscribe is not None:
        root.key("unsubscribe").problem("needs a [state] section: the suppression list lives there")


def _bulk_sources(table: Mapping[str, Any], sources: tuple[Source, ...], at: Place) -> None:
    names = {source.name for source in sources}
    bulk = table.get("sources")
    for index, name in enumerate(bulk if isinstance(bulk, list) else ()):
        if isinstance(name, str) and name and name not in names:
            at.key("sources").item(index).problem(f"no source named {name!r}")


def _content(doc: Document, given: Mapping[str, Any], base: Path, root: Place) -> ContentSettings:
    yara = doc.yara
    if yara is not None:
        yara = replace(yara, rules_dir=Path(os.path.normpath(base / yara.rules_dir)))
    urls = None
    if doc.urls is not None or "url_blocklists" in given:
        urls = replace(doc.urls or UrlSettings(), blocklists=doc.url_blocklists)
        if not urls.blocklists:
            root.key("urls").key("nameservers").problem(
                "URL checking needs at least one [[url_blocklists]] zone"
            )
    return ContentSettings(
        limits=doc.content.walk_limits(),
        limit_action=doc.content.limit_action,
        encrypted_action=doc.content.encrypted_action,
        clamav=doc.clamav,
        yara=yara,
        dlp=link_dlp(doc.dlp, doc.dlp_detectors, doc.dlp_profiles, doc.sources, root),
        urls=urls,
    )
