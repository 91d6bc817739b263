"""URL reputation: host names of the URLs in text and HTML parts, looked up in DNS block lists.

SURBL/URIBL/Spamhaus-DBL style: a listed name `evil.example` answers an A record in 127.0.0.0/8
for `evil.example.ZONE`; NXDOMAIN means not listed. The host and its parent domains (down to two
labels) are queried, since lists hold registered domains and we carry no public-suffix list; IP
hosts are queried reversed (`4.3.2.1.ZONE`). Answers in 127.255.255.0/24 are the lists' own error
codes (e.g. a query through a refused resolver), not listings. A DNS failure is its own outcome
with `urls.failure_action` (tag and log by default).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dns.exception
import dns.resolver

from relayguard.checks import Check, CheckFunction, Stage, Subject
from relayguard.config import Config
from relayguard.config.content import Blocklist, UrlSettings
from relayguard.core.verdict import Action, Verdict
from relayguard.dlp.extract import document_kind, html_content
from relayguard.parsing.mime import Part, walk_message

NAME = "urls"
HEADER = "X-Relayguard-URL"
log = logging.getLogger(__name__)

URL_IN_TEXT = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"'()\[\]{}]+")
HOST = re.compile(r"^(?i:https?://)?(?:[^@/?#]*@)?(\[[0-9a-fA-F:.]+\]|[^:/?#\\]+)")
LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?$")


class LookupFailed(Exception):
    """The DNS query got no answer (timeout, SERVFAIL, refused): the name is unchecked."""


Lookup = Callable[[str], list[str]]  # name -> A records; [] when the name does not exist


@dataclass(frozen=True, slots=True)
class Listing:
    host: str
    queried: str
    zone: str
    action: Action


def dns_lookup(settings: UrlSettings) -> Lookup:
    """A dnspython resolver for the configured servers (or /etc/resolv.conf when none)."""
    if settings.nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = list(settings.nameservers)
        resolver.port = settings.port
    else:
        resolver = dns.resolver.Resolver()
    resolver.lifetime = settings.timeout
    resolver.timeout = settings.timeout

    def lookup(name: str) -> list[str]:
        try:
            answer = resolver.resolve(name, "A", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise LookupFailed(f"{type(exc).__name__}") from None
        return [record.to_text() for record in answer]

    return lookup


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


def query_names(host: str) -> list[str]:
    """The names to look up for one host: IPs reversed; else the host and its parents."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")[-5:]
        return [".".join(labels[i:]) for i in range(len(labels) - 1)]
    if address.version == 4:
        return [".".join(reversed(host.split(".")))]
    return [".".join(reversed(address.exploded.replace(":", "")))]


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


def listed(answers: list[str], blocklist: Blocklist) -> bool:
    for answer in answers:
        if blocklist.codes:
            if answer in blocklist.codes:
                return True
        elif answer.startswith("127.") and not answer.startswith("127.255.255."):
            return True
    return False


def make_check(settings: UrlSettings, lookup: Lookup) -> CheckFunction:
    def check_urls(subject: Subject) -> Verdict:
        assert subject.message is not None
        walked = walk_message(subject.message, subject.config.content.limits)
        hosts, truncated = hosts_in(walked.parts, settings.max_domains)
        listings: list[Listing] = []
        failures: list[str] = []
        for host in hosts:
            for blocklist in settings.blocklists:
                for name in query_names(host):
                    queried = f"{name}.{blocklist.zone}"
                    try:
                        answers = lookup(queried)
                    except LookupFailed as exc:
                        failures.append(f"{blocklist.zone}: {exc}")
                        break  # this list does not answer; do not hammer it with the parents
                    if any(a.startswith("127.255.255.") for a in answers):
                        failures.append(f"{blocklist.zone}: error answer {answers[0]}")
                        break
                    if listed(answers, blocklist):
                        listings.append(Listing(host, name, blocklist.zone, blocklist.action))
                        break
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
        return Verdict(
            NAME, worst.action, f"URL domain listed: {', '.join(names)}", headers=headers
        )
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
        )
    more = " (more not checked: urls.max_domains)" if truncated else ""
    return Verdict(NAME, Action.ACCEPT, f"{len(hosts)} URL host(s), none listed{more}")


def checks(config: Config) -> tuple[Check, ...]:
    settings = config.content.urls
    if settings is None:
        return ()
    return (Check(NAME, Stage.END, make_check(settings, dns_lookup(settings))),)
