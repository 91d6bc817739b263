"""The one dnspython set-up (scanners/dns.py) and the block-list lookups against a real DNS
server (NSD) on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from relayguard.scanners import dnsbl
from relayguard.scanners.dns import make_resolver, txt_records
from tests.support.dns_server import DnsServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

ZONES = {
    "dbl.test": """
evil.example A 127.0.1.2
bad.example A 127.0.0.2
bad.example A 127.0.0.9
""",
    "keys.test": """
sel._domainkey TXT ( "v=DKIM1; k=rsa; " "p=MIGfMA0" )
two TXT "first"
two TXT "second"
""",
}


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONES) as server:
        yield server


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_block_list_answers_listed_and_absent_names(dns: DnsServer) -> None:
    lookup = dnsbl.a_lookup([dns.host], dns.port, 2)
    assert lookup("evil.example.dbl.test") == ["127.0.1.2"]
    assert lookup("clean.example.dbl.test") == []
    assert sorted(lookup("bad.example.dbl.test")) == ["127.0.0.2", "127.0.0.9"]
    assert dnsbl.ask(lookup, "www.evil.example", "dbl.test", ()) == dnsbl.ZoneAnswer(
        listed="evil.example"
    )
    assert dnsbl.ask(lookup, "bad.example", "dbl.test", {"127.0.0.3"}) == dnsbl.ZoneAnswer()


def test_a_list_that_does_not_answer_is_a_failure_not_clean() -> None:
    lookup = dnsbl.a_lookup(["127.0.0.1"], closed_udp_port(), 0.5)
    with pytest.raises(dnsbl.LookupFailed):
        lookup("evil.example.dbl.test")
    answer = dnsbl.ask(lookup, "evil.example", "dbl.test", ())
    assert answer.listed is None
    assert answer.failure is not None
    assert answer.failure.startswith("dbl.test: ")


def test_txt_records_join_their_strings_one_per_record(dns: DnsServer) -> None:
    resolver = make_resolver([dns.host], dns.port)
    assert txt_records(resolver, "sel._domainkey.keys.test") == ["v=DKIM1; k=rsa; p=MIGfMA0"]
    assert sorted(txt_records(resolver, "two.keys.test")) == ["first", "second"]
    assert txt_records(resolver, "absent.keys.test") == []


def test_the_resolver_asks_names_as_written() -> None:
    """No search domains, whatever resolv.conf says: a list zone or a selector is never
    turned into another name."""
    configured = make_resolver(["127.0.0.1"], 5300, timeout=0.5, lifetime=1.5)
    assert (configured.nameservers, configured.port) == (["127.0.0.1"], 5300)
    assert (configured.timeout, configured.lifetime) == (0.5, 1.5)
    for resolver in (configured, make_resolver()):
        assert resolver.search == []
        assert resolver.use_search_by_default is False
