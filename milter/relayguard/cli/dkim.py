"""`relayguard dkim generate | dns | rotate | verify-dns`: the key lifecycle.

Rotation is two runs of `relayguard dkim rotate --domain D`, with DNS publication in between:

1. no pending key: a new key is generated per active algorithm (status pending, not signing) and
   its TXT record printed. Publish it.
2. pending keys: only if DNS serves every pending record with the key on disk, the pending keys
   become active and the previous active keys retired; otherwise nothing changes and the exit
   status is 3. Reload the milter (SIGHUP) to sign with the new keys.

Retired keys stay listed by `dkim dns` for `dkim.grace_days`, so mail signed before the switch
still verifies while it is in transit or re-checked; a later `rotate` removes their private key
files once the grace period is over and says which TXT records may go.

These commands read the configuration's sections without its I/O pass or cross-references
(`parse_sections`): loading it would refuse a signed domain without a key, and this is how that
key gets made.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.resolver
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relayguard.config import DkimSettings, MilterSettings
from relayguard.config.reader import parse_sections
from relayguard.dkim import keys as dkim_keys
from relayguard.dkim import status as dkim_status
from relayguard.dkim.keys import DkimKeyError, KeyEntry, SigningKey
from relayguard.scanners.dns import make_resolver, txt_records

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_PUBLISHED = 3
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class KeySettings:
    key_directory: Path
    user: str
    grace_days: int


def read_settings(args: argparse.Namespace) -> KeySettings:
    """[dkim] and milter.user of --config (their declared defaults without it), then the options."""
    config = parse_sections(args.config) if args.config is not None else None
    dkim = config.dkim if config is not None else DkimSettings()
    milter = config.milter if config is not None else MilterSettings()
    directory = Path(args.key_directory) if args.key_directory else dkim.key_directory
    user = args.user if args.user is not None else milter.user
    return KeySettings(directory, user, dkim.grace_days)


def resolver_lookup(nameserver: str | None, port: int) -> dkim_keys.TxtLookup:
    """TXT lookups through the system resolver, or through one named server and port."""
    resolver = make_resolver([nameserver] if nameserver else [], port)

    def lookup(name: str) -> str | None:
        try:
            records = txt_records(resolver, name)
        except (dns.resolver.NoNameservers, dns.exception.Timeout):
            return None
        return "".join(records) if records else None

    return lookup


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dkim_command", required=True)

    def common(
        parser: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int]
    ) -> None:
        parser.add_argument("--config", "-c", type=Path, help="read [dkim] and milter.user here")
        parser.add_argument("--key-directory", help="overrides dkim.key_directory")
        parser.add_argument("--user", help="owner of key files (default: milter.user)")
        parser.add_argument("--domain", required=True, help="the signing (From) domain")
        parser.set_defaults(handler=handler)

    def dns_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--nameserver", help="ask this DNS server instead of the system's")
        parser.add_argument("--port", type=int, default=53, help="its port (default 53)")

    generate = sub.add_parser("generate", help="write a new key (0600, owned by the milter user)")
    common(generate, _generate)
    generate.add_argument("--selector", required=True)
    generate.add_argument("--algorithm", choices=dkim_keys.ALGORITHMS, default="rsa")
    generate.add_argument("--bits", type=int, default=2048, help="RSA key size (>= 2048)")

    records = sub.add_parser("dns", help="print the TXT records to publish, ready to paste")
    common(records, _dns)

    rotate = sub.add_parser("rotate", help="stage new keys, then switch once DNS serves them")
    common(rotate, _rotate)
    rotate.add_argument("--selector", help="selector of the new key(s) (default: ALG + date)")
    dns_options(rotate)

    verify = sub.add_parser("verify-dns", help="check that DNS serves the keys on disk")
    common(verify, _verify_dns)
    dns_options(verify)
    verify.add_argument(
        "--metrics-file", type=Path, help="also record the result here ([metrics] dkim_status_file)"
    )


def _generate(args: argparse.Namespace) -> int:
    settings = read_settings(args)
    try:
        entry = dkim_keys.generate(
            settings.key_directory,
            args.domain,
            args.selector,
            args.algorithm,
            args.bits,
            user=settings.user,
        )
        key = dkim_keys.load_key(settings.key_directory, args.domain, entry)
    except DkimKeyError as exc:
        print(f"relayguard dkim generate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{key.path}: {entry.algorithm} key, selector {entry.selector}, {entry.status}")
    if entry.status == "pending":
        print("publish the record below, then run: relayguard dkim rotate --domain", args.domain)
    print(dkim_keys.zone_line(key))
    return EXIT_OK


def _published(settings: KeySettings, domain: str, now: float) -> list[tuple[KeyEntry, str]]:
    """Keys whose records belong in DNS now, with a note for the sysadmin."""
    rows = []
    for entry in dkim_keys.read_manifest(settings.key_directory, domain):
        if entry.status == "retired":
            until = entry.retired + settings.grace_days * DAY
            if until <= now:
                continue
            note = f"retired; keep until {time.strftime('%Y-%m-%d', time.gmtime(until))}"
        else:
            note = entry.status
        rows.append((entry, note))
    return rows


def _dns(args: argparse.Namespace) -> int:
    settings = read_settings(args)
    try:
        rows = _published(settings, args.domain, time.time())
        if not rows:
            print(f"no keys for {args.domain} in {settings.key_directory}", file=sys.stderr)
            return EXIT_FAILED
        for entry, note in rows:
            key = dkim_keys.load_key(settings.key_directory, args.domain, entry)
            print(f"; {entry.algorithm} selector {entry.selector}: {note}")
            print(dkim_keys.zone_line(key))
    except DkimKeyError as exc:
        print(f"relayguard dkim dns: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _verify_dns(args: argparse.Namespace) -> int:
    settings = read_settings(args)
    lookup = resolver_lookup(args.nameserver, args.port)
    try:
        entries = dkim_keys.read_manifest(settings.key_directory, args.domain)
        keys = [dkim_keys.load_key(settings.key_directory, args.domain, e) for e in entries]
    except DkimKeyError as exc:
        print(f"relayguard dkim verify-dns: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not keys:
        print(f"no keys for {args.domain} in {settings.key_directory}", file=sys.stderr)
        return EXIT_FAILED
    now = time.time()
    checks = [dkim_keys.check_published(key, lookup) for key in keys]
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.key.algorithm} {check.detail}")
    if args.metrics_file is not None:
        try:
            results = list(zip(entries, checks, strict=True))
            _write_status(args.metrics_file, settings, args.domain, results, now)
        except OSError as exc:
            print(f"relayguard dkim verify-dns: {args.metrics_file}: {exc}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK if all(check.ok for check in checks) else EXIT_FAILED


def _write_status(
    path: Path,
    settings: KeySettings,
    domain: str,
    results: list[tuple[KeyEntry, dkim_keys.DnsCheck]],
    now: float,
) -> None:
    """Retired keys past their grace period are left out: their record may already be gone."""
    keys = tuple(
        dkim_status.KeyStatus(e.selector, e.algorithm, e.status, e.created, int(check.ok))
        for e, check in results
        if e.status != "retired" or e.retired + settings.grace_days * DAY > now
    )
    dkim_status.write_domain(path, dkim_status.DomainStatus(domain, now, keys))


def _rotate(args: argparse.Namespace) -> int:
    settings = read_settings(args)
    now = time.time()
    try:
        return _rotate_keys(args, settings, now)
    except DkimKeyError as exc:
        print(f"relayguard dkim rotate: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _rotate_keys(args: argparse.Namespace, settings: KeySettings, now: float) -> int:
    directory, domain = settings.key_directory, args.domain
    entries = _forget_expired(settings, domain, now)
    pending = [e for e in entries if e.status == "pending"]
    if not pending:
        active = [e for e in entries if e.status == "active"]
        if not active:
            print(f"{domain}: no active key; use relayguard dkim generate", file=sys.stderr)
            return EXIT_FAILED
        used = {e.selector for e in entries}
        for entry in active:
            selector = _new_selector(args.selector, entry.algorithm, len(active) > 1, now, used)
            used.add(selector)
            new = dkim_keys.generate(
                directory, domain, selector, entry.algorithm, _bits(directory, domain, entry),
                user=settings.user, status="pending", now=now,
            )  # fmt: skip
            key = dkim_keys.load_key(directory, domain, new)
            print(f"; new {new.algorithm} selector {selector}: pending, publish it:")
            print(dkim_keys.zone_line(key))
        print(f"then run again: relayguard dkim rotate --domain {domain}")
        return EXIT_OK
    lookup = resolver_lookup(args.nameserver, args.port)
    missing = []
    for entry in pending:
        check = dkim_keys.check_published(dkim_keys.load_key(directory, domain, entry), lookup)
        if not check.ok:
            missing.append(check.detail)
    if missing:
        for detail in missing:
            print(f"not yet: {detail}")
        print("nothing changed: the new keys sign only once DNS serves them")
        return EXIT_NOT_PUBLISHED
    switched_algorithms = {e.algorithm for e in pending}
    updated = []
    for entry in entries:
        if entry.status == "pending":
            updated.append(dkim_keys.with_status(entry, "active", now))
            print(f"{entry.selector}: active")
        elif entry.status == "active" and entry.algorithm in switched_algorithms:
            updated.append(dkim_keys.with_status(entry, "retired", now))
            print(f"{entry.selector}: retired (record stays published {settings.grace_days} days)")
        else:
            updated.append(entry)
    dkim_keys.write_manifest(directory, domain, updated, settings.user)
    print("reload the milter (SIGHUP) to sign with the new keys")
    return EXIT_OK


def _forget_expired(settings: KeySettings, domain: str, now: float) -> list[KeyEntry]:
    entries = dkim_keys.read_manifest(settings.key_directory, domain)
    keep = []
    for entry in entries:
        if entry.status == "retired" and entry.retired + settings.grace_days * DAY <= now:
            path = dkim_keys.key_path(settings.key_directory, domain, entry.selector)
            path.unlink(missing_ok=True)
            name = dkim_keys.record_name(domain, entry.selector)
            print(f"{entry.selector}: grace period over, key deleted; remove TXT {name}")
        else:
            keep.append(entry)
    if len(keep) != len(entries):
        dkim_keys.write_manifest(settings.key_directory, domain, keep, settings.user)
    return keep


def _new_selector(
    given: str | None, algorithm: str, several: bool, now: float, used: set[str]
) -> str:
    base = given or f"{algorithm}{time.strftime('%Y%m%d', time.gmtime(now))}"
    if given and several:
        base = f"{given}-{algorithm}"
    selector, counter = base, 1
    while selector in used:
        counter += 1
        selector = f"{base}-{counter}"
    return selector


def _bits(directory: Path, domain: str, entry: KeyEntry) -> int:
    """A new RSA key as large as the one it replaces."""
    if entry.algorithm != "rsa":
        return 0
    key: SigningKey = dkim_keys.load_key(directory, domain, entry)
    private = serialization.load_pem_private_key(key.private, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    return max(dkim_keys.MIN_RSA_BITS, private.key_size)
