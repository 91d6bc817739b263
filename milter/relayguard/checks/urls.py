"""URL reputation: host names of the URLs in text and HTML parts, looked up in DNS block lists.

This check finds the hosts and turns the lists' answers into a verdict; how a list is asked and
what its answers mean is scanners/dnsbl.py. A DNS failure is its own outcome with
`urls.failure_action` (tag and log by default).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from relayguard.checks import Check, CheckFunction, Stage, Subject
from relayguard.config import Config
from relayguard.config.urls import UrlSettings
from relayguard.core.verdict import Action, Facts, FactValue, Verdict
from relayguard.dlp.extract import document_kind, html_content
from relayguard.parsing.mime import Part, walk_message
from relayguard.scanners import dnsbl

NAME = "urls"
HEADER = "X-Relayguard-URL"
log = logging.getLogger(__name__)

URL_IN_TEXT = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"'()\[\]{}]+")
HOST = re.compile(r"^(?i:https?://)?(?:[^@/?#]*@)?(\[[0-9a-fA-F:.]+\]|[^:/?#\\]+)")
LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Listing:
    host: str
    queried: str
    zone: str
    action: Action


def urls_in_part(part: Part) -> list[str]:
    kind = document_kind(part)
    if kind == "html":
        content = html_content(part.text())
        return content.links + URL_IN_TEXT.findall(content.text)
    if kind == "text":
        return URL_IN_TEXT.findall(part.text())
    return []


def host_of(url: str) -> str | None:
    match = HOST.match(url.strip())
    if not match:
        return None
    host = match.group(1).strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    labels = host.split(".")
    if len(labels) < 2 or not all(LABEL.match(label) for label in labels):
        return None
    return host


def hosts_in(parts: Iterable[Part], limit: int) -> tuple[list[str], bool]:
    """Distinct hosts in order of appearance, at most `limit`; True when some were left out."""
    hosts: list[str] = []
    for part in parts:
        if part.in_document:
            continue
        for url in urls_in_part(part):
            host = host_of(url)
            if host and host not in hosts:
                if len(hosts) >= limit:
                    return hosts, True
                hosts.append(host)
    return hosts, False


def make_check(settings: UrlSettings, lookup: dnsbl.Lookup) -> CheckFunction:
    def check_urls(subject: Subject) -> Verdict:
        assert subject.message is not None
        walked = walk_message(subject.message, subject.config.content.limits)
        hosts, truncated = hosts_in(walked.parts, settings.max_domains)
        listings: list[Listing] = []
        failures: list[str] = []
        for host in hosts:
            for blocklist in settings.blocklists:
                answer = dnsbl.ask(lookup, host, blocklist.zone, blocklist.codes)
                if answer.failure is not None:
                    failures.append(answer.failure)
                elif answer.listed is not None:
                    listings.append(Listing(host, answer.listed, blocklist.zone, blocklist.action))
        return _verdict(
            settings,
            subject,
            hosts=hosts,
            truncated=truncated,
            listings=listings,
            failures=failures,
        )

    return check_urls


def _verdict(
    settings: UrlSettings,
    subject: Subject,
    *,
    hosts: list[str],
    truncated: bool,
    listings: list[Listing],
    failures: list[str],
) -> Verdict:
    if listings:
        worst = max(listings, key=lambda item: item.action)
        names = sorted({f"{item.queried} ({item.zone})" for item in listings})
        headers = ((HEADER, "listed: " + ", ".join(names)),) if worst.action is Action.TAG else ()
        # Counts and the configured zones: the listed names themselves come from the message.
        listed: Facts = {
            "hosts": len(hosts),
            "listed": len({item.host for item in listings}),
            "zones": tuple(sorted({item.zone for item in listings})),
        }
        reason = f"URL domain listed: {', '.join(names)}"
        return Verdict(NAME, worst.action, reason, headers=headers, facts=listed)
    if failures:
        log.warning(
            "%s: URL block list lookups failed: %s",
            subject.envelope.queue_id or "NOQUEUE",
            "; ".join(sorted(set(failures))),
        )
        zones = sorted({failure.split(":", 1)[0] for failure in failures})
        headers = (
            ((HEADER, "unchecked: DNS failure"),) if settings.failure_action is Action.TAG else ()
        )
        return Verdict(
            NAME,
            settings.failure_action,
            f"URL block list lookup failed for {', '.join(zones)}",
            headers=headers,
            error=True,
            facts={"hosts": len(hosts), "failed_zones": tuple(zones)},
        )
    more = " (more not checked: urls.max_domains)" if truncated else ""
    facts: dict[str, FactValue] = {"hosts": len(hosts)}
    if truncated:
        facts["truncated"] = True
    return Verdict(NAME, Action.ACCEPT, f"{len(hosts)} URL host(s), none listed{more}", facts=facts)


def checks(config: Config) -> tuple[Check, ...]:
    settings = config.content.urls
    if settings is None:
        return ()
    lookup = dnsbl.a_lookup(settings.nameservers, settings.port, settings.timeout)
    return (Check(NAME, Stage.END, make_check(settings, lookup)),)
