"""`relayguard dns-audit DOMAIN`: what receivers will find in DNS for mail from this relay.

SPF (RFC 7208), DKIM (RFC 6376, the selectors configured for the domain), DMARC (RFC 7489), MX,
and Exchange Online's Direct Send exposure. Each finding is pass, warn or fail with a one-line fix;
the exit status is 1 when anything fails. DNS is asked through an injected dnspython resolver, so
tests run against a real DNS server on loopback.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.name
import dns.resolver
import dns.reversename

from relayguard.cli.dkim import read_settings
from relayguard.config import parse_config
from relayguard.config.outbound import OutboundPath
from relayguard.dkim import keys as dkim_keys
from relayguard.dkim.keys import DkimKeyError
from relayguard.scanners.dns import make_resolver, txt_records

PASS, WARN, FAIL = "pass", "warn", "fail"
SPF_LOOKUP_LIMIT = 10  # RFC 7208 §4.6.4: include, a, mx, ptr, exists and redirect count
EXCHANGE_MX_SUFFIX = ".mail.protection.outlook.com"
EXCHANGE_SPF = "spf.protection.outlook.com"
DIRECT_SEND_FIX = (
    "reject Direct Send in the tenant (Set-OrganizationConfig -RejectDirectSend $true),"
    " route devices through this relay with a partner (inbound) connector, publish DMARC p=reject"
)


@dataclass(frozen=True, slots=True)
class Finding:
    area: str  # spf, dkim, dmarc, mx, direct-send, outbound
    status: str  # pass, warn, fail
    message: str
    fix: str = ""


class Dns:
    """TXT/MX lookups; a missing name or record is [] (a timeout is an error worth reporting)."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver

    def txt(self, name: str) -> list[str]:
        return txt_records(self.resolver, name)

    def mx(self, name: str) -> list[tuple[int, str]]:
        return sorted(
            (int(r.preference), r.exchange.to_text().rstrip(".").lower())
            for r in self._query(name, "MX")
        )

    def ptr(self, address: str) -> list[str]:
        """The names of an address's reverse DNS (RFC 1035 §3.5 in-addr.arpa, RFC 3596 ip6.arpa)."""
        reverse = dns.reversename.from_address(address).to_text()
        try:
            records = self._query(reverse, "PTR")
        except dns.resolver.NoNameservers:
            return []  # an unassigned or lame-delegated reverse zone: no usable PTR either
        return [r.target.to_text().rstrip(".").lower() for r in records]

    def addresses(self, name: str) -> list[str]:
        return [r.address for kind in ("A", "AAAA") for r in self._query(name, kind)]

    def _query(self, name: str, kind: str) -> list[Any]:
        try:
            return list(self.resolver.resolve(name, kind))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []


# --- SPF ---------------------------------------------------------------------------------------


@dataclass
class SpfWalk:
    lookups: int = 0
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None
    includes: list[str] | None = None
    errors: list[str] | None = None

    def __post_init__(self) -> None:
        self.networks, self.includes, self.errors = [], [], []


def spf_records(dns_: Dns, domain: str) -> list[str]:
    return [t for t in dns_.txt(domain) if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]


def walk_spf(dns_: Dns, domain: str, walk: SpfWalk, depth: int = 0) -> str | None:
    """Count DNS-querying terms through include/redirect; collect ip4/ip6; return `all`."""
    assert walk.networks is not None and walk.includes is not None and walk.errors is not None
    records = spf_records(dns_, domain)
    if len(records) != 1:
        if depth:
            walk.errors.append(f"{domain}: {len(records)} SPF records (include needs exactly 1)")
        return None
    all_term = None
    redirect = None
    for term in records[0].split()[1:]:
        qualifier = term[0] if term[0] in "+-~?" else "+"
        body = term[1:] if term[0] in "+-~?" else term
        name, _, value = body.partition(":")
        lowered = name.lower()
        if lowered == "all":
            all_term = qualifier + "all"
        elif lowered in ("ip4", "ip6"):
            try:
                walk.networks.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                walk.errors.append(f"{domain}: bad {term}")
        elif lowered == "include":
            walk.lookups += 1
            walk.includes.append(value.lower())
            if depth < SPF_LOOKUP_LIMIT:
                walk_spf(dns_, value, walk, depth + 1)
        elif lowered in ("a", "mx", "ptr", "exists"):
            walk.lookups += 1
        elif body.lower().startswith("redirect="):
            walk.lookups += 1
            redirect = body.split("=", 1)[1]
        elif "=" in body:
            continue  # modifiers (exp=, unknown ones) are ignored (RFC 7208 §6)
        else:
            walk.errors.append(f"{domain}: unknown mechanism {term!r}")
    if redirect and all_term is None and depth < SPF_LOOKUP_LIMIT:
        return walk_spf(dns_, redirect, walk, depth + 1)
    return all_term


def audit_spf(dns_: Dns, domain: str, relay_ips: Sequence[str]) -> tuple[list[Finding], SpfWalk]:
    findings: list[Finding] = []
    walk = SpfWalk()
    records = spf_records(dns_, domain)
    if not records:
        findings.append(
            Finding("spf", FAIL, f"{domain} publishes no SPF record",
                    f'publish TXT "v=spf1 ip4:RELAY-IP -all" at {domain}')
        )  # fmt: skip
        return findings, walk
    if len(records) > 1:
        findings.append(
            Finding("spf", FAIL, f"{domain} publishes {len(records)} SPF records (permerror)",
                    "merge them into one v=spf1 record")
        )  # fmt: skip
        return findings, walk
    all_term = walk_spf(dns_, domain, walk)
    assert walk.errors is not None and walk.networks is not None
    for error in walk.errors:
        findings.append(Finding("spf", FAIL, f"SPF syntax: {error}", "correct the record"))
    if walk.lookups > SPF_LOOKUP_LIMIT:
        findings.append(
            Finding("spf", FAIL,
                    f"SPF needs {walk.lookups} DNS lookups, more than {SPF_LOOKUP_LIMIT}"
                    " (RFC 7208 §4.6.4: permerror)",
                    "flatten includes into ip4:/ip6: terms or drop unused ones")
        )  # fmt: skip
    else:
        findings.append(Finding("spf", PASS, f"SPF uses {walk.lookups} of 10 DNS lookups"))
    if all_term in ("-all", "~all"):
        findings.append(Finding("spf", PASS, f"SPF ends with {all_term}"))
    elif all_term in ("+all", "?all"):
        findings.append(
            Finding("spf", FAIL, f"SPF ends with {all_term}: anyone may send as {domain}",
                    "end the record with -all (or ~all while migrating)")
        )  # fmt: skip
    else:
        findings.append(
            Finding("spf", WARN, "SPF has no all term (neutral for unlisted senders)",
                    "end the record with -all")
        )  # fmt: skip
    for text in relay_ips:
        address = ipaddress.ip_address(text)
        if any(address.version == n.version and address in n for n in walk.networks):
            findings.append(Finding("spf", PASS, f"relay address {address} is covered by SPF"))
        else:
            findings.append(
                Finding("spf", FAIL, f"relay address {address} is not in SPF's ip4/ip6 terms",
                        f"add ip{address.version}:{address} to the SPF record of {domain}")
            )  # fmt: skip
    return findings, walk


# --- DKIM, DMARC, MX ---------------------------------------------------------------------------


def audit_dkim(dns_: Dns, domain: str, keys: Sequence[dkim_keys.SigningKey]) -> list[Finding]:
    if not keys:
        return [
            Finding("dkim", WARN, f"no DKIM key configured for {domain} on this relay",
                    f"relayguard dkim generate --domain {domain} --selector NAME")
        ]  # fmt: skip
    findings = []
    for key in keys:

        def lookup(name: str) -> str | None:
            texts = dns_.txt(name)
            return "".join(texts) if texts else None

        check = dkim_keys.check_published(key, lookup)
        if check.ok:
            findings.append(Finding("dkim", PASS, f"{key.algorithm} {check.detail}"))
        else:
            findings.append(
                Finding("dkim", FAIL, check.detail,
                        f"publish the output of relayguard dkim dns --domain {domain}")
            )  # fmt: skip
    return findings


def audit_dmarc(dns_: Dns, domain: str) -> tuple[list[Finding], str | None]:
    name = f"_dmarc.{domain}"
    records = [t for t in dns_.txt(name) if t.replace(" ", "").lower().startswith("v=dmarc1")]
    if not records:
        return [
            Finding("dmarc", FAIL, f"no DMARC record at {name}",
                    f'publish TXT "v=DMARC1; p=reject; rua=mailto:dmarc@{domain}" at {name}')
        ], None  # fmt: skip
    if len(records) > 1:
        return [Finding("dmarc", FAIL, f"{len(records)} DMARC records at {name}",
                        "keep exactly one")], None  # fmt: skip
    tags = {k.lower(): v for k, v in dkim_keys.parse_tags(records[0]).items()}
    findings = []
    policy = tags.get("p", "").lower()
    if policy == "reject":
        findings.append(Finding("dmarc", PASS, "DMARC p=reject"))
    elif policy == "quarantine":
        findings.append(
            Finding("dmarc", WARN, "DMARC p=quarantine", "move to p=reject once reports are clean")
        )
    elif policy == "none":
        findings.append(
            Finding("dmarc", WARN, "DMARC p=none: spoofed mail is still delivered",
                    "move to p=quarantine, then p=reject, once reports are clean")
        )  # fmt: skip
    else:
        findings.append(
            Finding("dmarc", FAIL, f"DMARC policy p={policy or '(missing)'} is invalid",
                    "set p=none, quarantine or reject")
        )  # fmt: skip
    for tag, label in (("adkim", "DKIM"), ("aspf", "SPF")):
        mode = tags.get(tag, "r").lower()
        findings.append(
            Finding("dmarc", PASS, f"{tag}={mode} ({label} alignment "
                    f"{'strict' if mode == 's' else 'relaxed'})")
        )  # fmt: skip
    if tags.get("rua"):
        findings.append(Finding("dmarc", PASS, f"aggregate reports to {tags['rua']}"))
    else:
        findings.append(
            Finding("dmarc", WARN, "no rua= reporting address: you will not see who sends as you",
                    f"add rua=mailto:dmarc@{domain}")
        )  # fmt: skip
    return findings, policy


def audit_mx(dns_: Dns, domain: str) -> tuple[list[Finding], list[tuple[int, str]]]:
    records = dns_.mx(domain)
    if not records:
        return [
            Finding("mx", WARN, f"{domain} has no MX record", "publish MX if it takes mail")
        ], []
    hosts = ", ".join(f"{pref} {host}" for pref, host in records)
    return [Finding("mx", PASS, f"MX: {hosts}")], records


def audit_direct_send(
    mx: list[tuple[int, str]], includes: Sequence[str], policy: str | None
) -> list[Finding]:
    """Exchange Online accepts unauthenticated mail for its tenants' domains on the MX host
    (Direct Send); with Microsoft's SPF included, spoofed internal mail passes SPF."""
    on_exchange = any(host.endswith(EXCHANGE_MX_SUFFIX) for _, host in mx)
    includes_microsoft = EXCHANGE_SPF in includes
    if not on_exchange:
        return [Finding("direct-send", PASS, "MX is not Exchange Online: no Direct Send path")]
    if not includes_microsoft:
        return [
            Finding("direct-send", WARN,
                    "MX is Exchange Online; SPF does not include spf.protection.outlook.com",
                    DIRECT_SEND_FIX)
        ]  # fmt: skip
    exposure = (
        "MX is Exchange Online and SPF includes spf.protection.outlook.com: Direct Send can"
        " deliver spoofed internal mail unless the tenant rejects it"
    )
    if policy != "reject":
        exposure += f" (DMARC is p={policy or 'missing'}, which does not stop it)"
    return [Finding("direct-send", FAIL, exposure, DIRECT_SEND_FIX)]


# --- outbound paths ----------------------------------------------------------------------------


def audit_outbound_path(dns_: Dns, path: OutboundPath) -> list[Finding]:
    """Receivers trust a sending address whose reverse DNS names a host that resolves back to it
    (forward-confirmed) and is the name it announces in HELO (RFC 5321 §4.1.4); SPF coverage of
    the address is audit_spf's part."""
    label = f"path {path.name}"
    if not path.bind_address:
        via = f"through {path.relayhost}" if path.relayhost else "from the relay's own address"
        return [Finding("outbound", PASS, f"{label} sends {via}: no address of its own to check")]
    address = path.bind_address
    names = dns_.ptr(address)
    wanted = path.helo_name or "the path's helo_name"
    if not names:
        return [
            Finding("outbound", FAIL, f"{label}: {address} has no reverse DNS (PTR)",
                    f"ask whoever runs {address} for a PTR record naming {wanted}")
        ]  # fmt: skip
    confirmed = [n for n in names if ipaddress.ip_address(address) in _addresses(dns_, n)]
    if not confirmed:
        return [
            Finding("outbound", FAIL,
                    f"{label}: reverse DNS of {address} ({', '.join(names)}) does not resolve"
                    " back to it", f"publish an A/AAAA record {names[0]} -> {address}")
        ]  # fmt: skip
    findings = [
        Finding("outbound", PASS, f"{label}: {address} has reverse DNS {confirmed[0]}, confirmed")
    ]
    helo = path.helo_name.rstrip(".").lower()
    if not helo:
        findings.append(
            Finding("outbound", WARN, f"{label} has no helo_name: Postfix announces myhostname",
                    f"set helo_name = \"{confirmed[0]}\" for the path")
        )  # fmt: skip
    elif helo in confirmed:
        findings.append(Finding("outbound", PASS, f"{label}: HELO {helo} matches reverse DNS"))
    else:
        findings.append(
            Finding("outbound", FAIL,
                    f"{label}: HELO {helo} is not the reverse DNS of {address} ({confirmed[0]})",
                    f"set helo_name = \"{confirmed[0]}\" or change the PTR record")
        )  # fmt: skip
    return findings


def _addresses(dns_: Dns, name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(text) for text in dns_.addresses(name)]


def audit(
    dns_: Dns,
    domain: str,
    relay_ips: Sequence[str] = (),
    keys: Sequence[dkim_keys.SigningKey] = (),
    paths: Sequence[OutboundPath] = (),
) -> list[Finding]:
    """Every check for DOMAIN; each outbound path's own address must be covered by SPF too."""
    path_ips = [p.bind_address for p in paths if p.bind_address not in ("", *relay_ips)]
    spf, walk = audit_spf(dns_, domain, [*relay_ips, *dict.fromkeys(path_ips)])
    dmarc, policy = audit_dmarc(dns_, domain)
    mx_findings, mx = audit_mx(dns_, domain)
    direct = audit_direct_send(mx, walk.includes or [], policy)
    outbound = [finding for path in paths for finding in audit_outbound_path(dns_, path)]
    return [*spf, *audit_dkim(dns_, domain, keys), *dmarc, *mx_findings, *direct, *outbound]


# --- the command -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("domain")
    parser.add_argument(
        "--relay-ip", action="append", default=[], help="an address this relay sends from"
    )
    parser.add_argument(
        "--config", "-c", type=Path, help="read [dkim] keys and [[outbound_paths]] from here"
    )
    parser.add_argument("--key-directory", help="DKIM key directory (overrides the config)")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--nameserver", help="ask this DNS server instead of the system's")
    parser.add_argument("--port", type=int, default=53)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for text in args.relay_ip:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            print(f"relayguard dns-audit: {text!r} is not an IP address", file=sys.stderr)
            return 2
    try:
        domain = dns.name.from_text(args.domain).to_text().rstrip(".").lower()
    except dns.exception.DNSException as exc:
        print(f"relayguard dns-audit: {args.domain!r}: {exc}", file=sys.stderr)
        return 2
    args.user = ""  # read_settings: key ownership is not checked here
    keys: tuple[dkim_keys.SigningKey, ...] = ()
    if args.config is not None or args.key_directory:
        settings = read_settings(args)
        try:
            keys = dkim_keys.load_keys(settings.key_directory, domain, ("active",))
        except DkimKeyError as exc:
            print(f"relayguard dns-audit: {exc}", file=sys.stderr)
            return 2
    paths = tuple(parse_config(args.config).outbound_paths.values()) if args.config else ()
    resolver = make_resolver([args.nameserver] if args.nameserver else [], args.port)
    try:
        findings = audit(Dns(resolver), domain, args.relay_ip, keys, paths)
    except dns.exception.DNSException as exc:
        print(f"relayguard dns-audit: DNS failed: {exc}", file=sys.stderr)
        return 2
    failed = any(f.status == FAIL for f in findings)
    if args.json:
        print(json.dumps({"domain": domain, "ok": not failed,
                          "findings": [asdict(f) for f in findings]}, indent=2))  # fmt: skip
    else:
        for finding in findings:
            print(f"{finding.status.upper():4} {finding.area:11} {finding.message}")
            if finding.fix and finding.status != PASS:
                print(f"     {'':11} fix: {finding.fix}")
    return 1 if failed else 0
