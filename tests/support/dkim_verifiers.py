"""Three DKIM verifiers that fetch keys from a real DNS server (tests/support/dns_server.py).

* dkimpy, with a `dnsfunc` that asks the server through dnspython;
* OpenDKIM (Debian's `opendkim`, C, libopendkim) in its test mode (`opendkim -t FILE`), with
  libunbound told by a stub zone to ask the server on its loopback port (opendkim-testmsg has no
  way to name a server or port; the daemon's ResolverConfiguration has). It verifies RSA and
  Ed25519;
* Perl's Mail::DKIM (Debian's libmail-dkim-perl) with a Net::DNS resolver on that server and
  port. Debian 12's version knows RSA only: it reports Ed25519 signatures as unsupported.

Each returns one `Result` per DKIM-Signature: (domain, selector, algorithm, result).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dkim
import dns.exception
import dns.resolver

from tests.support.dns_server import DnsServer

OPENDKIM = "/usr/sbin/opendkim"

PERL_VERIFIER = r"""
use strict; use warnings;
use Mail::DKIM::Verifier; use Net::DNS::Resolver;
my $resolver = Net::DNS::Resolver->new(
    nameservers => ["127.0.0.1"], port => $ARGV[0], recurse => 0,
    tcp_timeout => 5, udp_timeout => 5);
Mail::DKIM::DNS::resolver($resolver);
my $verifier = Mail::DKIM::Verifier->new();
binmode STDIN; local $/; my $message = <STDIN>;
$message =~ s/\r?\n/\r\n/g;
$verifier->PRINT($message); $verifier->CLOSE;
for my $s ($verifier->signatures) {
    print join("\t", $s->domain, $s->selector, $s->algorithm, $s->result), "\n";
}
"""


@dataclass(frozen=True, slots=True)
class Result:
    domain: str
    selector: str
    algorithm: str
    result: str  # "pass", "fail", "invalid", ...


def dnsfunc(server: DnsServer):  # type: ignore[no-untyped-def]
    """dkimpy's injected DNS lookup, answered by the test DNS server."""
    resolver = server.resolver()

    def get_txt(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode("ascii").rstrip("."), "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.exception.Timeout):
            return None
        return b"".join(b"".join(rdata.strings) for rdata in answer)

    return get_txt


def _signature_tags(message: bytes) -> list[dict[bytes, bytes]]:
    verifier = dkim.DKIM(message)
    tags = []
    for name, value in verifier.headers:
        if name.lower() == b"dkim-signature":
            tags.append(dkim.util.parse_tag_value(value))
    return tags


def verify_dkimpy(message: bytes, server: DnsServer) -> list[Result]:
    lookup = dnsfunc(server)
    results = []
    for index, tags in enumerate(_signature_tags(message)):
        try:
            ok = dkim.DKIM(message).verify(idx=index, dnsfunc=lookup)
        except dkim.ValidationError:  # e.g. "body hash mismatch": dkimpy raises it
            ok = False
        results.append(
            Result(
                tags[b"d"].decode(),
                tags[b"s"].decode(),
                tags[b"a"].decode(),
                "pass" if ok else "fail",
            )
        )
    return results


def verify_opendkim(message: bytes, server: DnsServer, zones: list[str]) -> list[Result]:
    """`opendkim -t` on the message; results read from the Authentication-Results it adds."""
    with tempfile.TemporaryDirectory(prefix="opendkim-") as directory:
        work = Path(directory)
        stubs = "".join(
            f'stub-zone:\n\tname: "{zone}"\n\tstub-addr: {server.host}@{server.port}\n'
            for zone in zones
        )
        (work / "unbound.conf").write_text(
            'server:\n\tdo-not-query-localhost: no\n\tmodule-config: "iterator"\n' + stubs
        )
        (work / "opendkim.conf").write_text(
            f"ResolverConfiguration {work / 'unbound.conf'}\nMode v\nSyslog no\n"
            "AlwaysAddARHeader yes\n"
        )
        (work / "message.eml").write_bytes(message.replace(b"\r\n", b"\n"))
        done = subprocess.run(
            [OPENDKIM, "-x", str(work / "opendkim.conf"), "-vvv", "-t", str(work / "message.eml")],
            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    output = done.stdout + done.stderr
    results = [
        Result(domain, selector, algorithm, result)
        for result, domain, algorithm, selector in re.findall(
            r"dkim=(\w+)(?: reason=\"[^\"]*\")?(?: \([^)]*\))?"
            r" header\.d=(\S+) header\.i=\S+ header\.a=(\S+) header\.s=(\S+)",
            output,
        )
    ]
    if not results:
        raise AssertionError(f"opendkim gave no DKIM result ({done.returncode}):\n{output}")
    return results


def verify_mail_dkim(message: bytes, server: DnsServer) -> list[Result]:
    done = subprocess.run(
        ["perl", "-e", PERL_VERIFIER, str(server.port)],
        input=message, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"Mail::DKIM failed: {done.stderr.decode(errors='replace')}")
    return [Result(*line.split("\t")) for line in done.stdout.decode().splitlines() if line.strip()]
