"""`relayguard dns-audit` and the DKIM key lifecycle against a real DNS server (NSD) on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from relayguard import cli
from relayguard.dkim import keys as dkim_keys
from tests.support.dns_server import DnsServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

INCLUDES = " ".join(f"include:s{i}.toomany.test" for i in range(11))
# RFC 7208 §3.3: a record over 255 octets is split into strings, joined without a space.
INCLUDES_SPLIT = f'{INCLUDES[:200]}" "{INCLUDES[200:]}'
ZONES = {
    "good.test": """
@ TXT "v=spf1 ip4:192.0.2.0/28 ip6:2001:db8::/64 include:_spf.good.test -all"
_spf TXT "v=spf1 a mx -all"
_dmarc TXT "v=DMARC1; p=reject; adkim=s; aspf=r; rua=mailto:dmarc@good.test"
@ MX 10 mx.good.test.
bulk A 192.0.2.10
mail2 A 192.0.2.11
""",
    # Reverse DNS of the outbound paths' addresses (RFC 1035 §3.5).
    "2.0.192.in-addr.arpa": """
10 PTR bulk.good.test.
11 PTR mail2.good.test.
12 PTR nowhere.good.test.
""",
    "toomany.test": f"""
@ TXT ( "v=spf1 {INCLUDES_SPLIT} +all" )
_dmarc TXT "v=DMARC1; p=none"
@ MX 10 mx.toomany.test.
"""
    + "".join(f's{i} TXT "v=spf1 -all"\n' for i in range(11)),
    "exchange.test": """
@ TXT "v=spf1 include:spf.protection.outlook.com -all"
_dmarc TXT "v=DMARC1; p=quarantine; rua=mailto:d@exchange.test"
@ MX 0 exchange-test.mail.protection.outlook.com.
""",
    "protection.outlook.com": """
spf TXT "v=spf1 ip4:40.92.0.0/15 ip4:40.107.0.0/16 -all"
""",
    "broken.test": """
@ TXT "v=spf1 ip4:192.0.2.1 -all"
@ TXT "v=spf1 ip4:192.0.2.2 ~all"
""",
    "typo.test": """
@ TXT "v=spf1 ip4:192.0.2.1 inclde:x.test ?all"
_dmarc TXT "v=DMARC1; p=rejct"
""",
}


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONES) as server:
        yield server


def audit(
    dns: DnsServer, capsys: pytest.CaptureFixture[str], domain: str, *extra: str
) -> tuple[int, dict[tuple[str, str], list[str]]]:
    status = cli.main(
        ["dns-audit", domain, "--json", "--nameserver", dns.host, "--port", str(dns.port), *extra]
    )
    report = json.loads(capsys.readouterr().out)
    by_status: dict[tuple[str, str], list[str]] = {}
    for finding in report["findings"]:
        by_status.setdefault((finding["area"], finding["status"]), []).append(finding["message"])
        if finding["status"] != "pass":
            assert finding["fix"], finding  # every warn/fail says how to fix it
    return status, by_status


def test_good_zone_passes(dns: DnsServer, capsys: pytest.CaptureFixture[str]) -> None:
    status, findings = audit(dns, capsys, "good.test", "--relay-ip", "192.0.2.5")
    assert status == 0
    assert not [key for key in findings if key[1] == "fail"]
    assert "SPF uses 3 of 10 DNS lookups" in findings["spf", "pass"]
    assert "relay address 192.0.2.5 is covered by SPF" in findings["spf", "pass"]
    assert "DMARC p=reject" in findings["dmarc", "pass"]
    assert "adkim=s (DKIM alignment strict)" in findings["dmarc", "pass"]
    assert findings["mx", "pass"] == ["MX: 10 mx.good.test"]


def test_relay_address_outside_spf_fails(
    dns: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, findings = audit(dns, capsys, "good.test", "--relay-ip", "198.51.100.7")
    assert status == 1
    assert findings["spf", "fail"] == ["relay address 198.51.100.7 is not in SPF's ip4/ip6 terms"]


def test_too_many_lookups_and_plus_all(dns: DnsServer, capsys: pytest.CaptureFixture[str]) -> None:
    status, findings = audit(dns, capsys, "toomany.test")
    assert status == 1
    assert any("SPF needs 11 DNS lookups, more than 10" in m for m in findings["spf", "fail"])
    assert any(m.startswith("SPF ends with +all") for m in findings["spf", "fail"])
    assert any("p=none" in m for m in findings["dmarc", "warn"])
    assert any("no rua=" in m for m in findings["dmarc", "warn"])


def test_direct_send_exposure_is_called_out_with_the_remediation(
    dns: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, findings = audit(dns, capsys, "exchange.test")
    assert status == 1
    (message,) = findings["direct-send", "fail"]
    assert "Direct Send can deliver spoofed internal mail" in message
    assert "p=quarantine" in message
    capsys.readouterr()
    cli.main(["dns-audit", "exchange.test", "--nameserver", dns.host, "--port", str(dns.port)])
    text = capsys.readouterr().out
    assert "reject Direct Send in the tenant" in text and "partner (inbound) connector" in text
    assert "DMARC p=reject" in text


def test_two_spf_records_and_no_dmarc(dns: DnsServer, capsys: pytest.CaptureFixture[str]) -> None:
    status, findings = audit(dns, capsys, "broken.test")
    assert status == 1
    assert findings["spf", "fail"] == ["broken.test publishes 2 SPF records (permerror)"]
    assert findings["dmarc", "fail"] == ["no DMARC record at _dmarc.broken.test"]
    assert findings["mx", "warn"] == ["broken.test has no MX record"]


def test_spf_syntax_error_and_invalid_dmarc_policy(
    dns: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, findings = audit(dns, capsys, "typo.test")
    assert status == 1
    assert "SPF syntax: typo.test: unknown mechanism 'inclde:x.test'" in findings["spf", "fail"]
    assert "SPF ends with ?all: anyone may send as typo.test" in findings["spf", "fail"]
    assert findings["dmarc", "fail"] == ["DMARC policy p=rejct is invalid"]


def test_dkim_selectors_checked_against_keys_on_disk(
    dns: DnsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    dkim_keys.generate(keys, "good.test", "published", "ed25519")
    dkim_keys.generate(keys, "good.test", "other", "rsa")
    published = dkim_keys.load_keys(keys, "good.test")[0]
    dns.update("good.test", ZONES["good.test"] + record(published))
    status, findings = audit(dns, capsys, "good.test", "--key-directory", str(keys))
    assert status == 1
    assert findings["dkim", "pass"] == [
        "ed25519 published._domainkey.good.test: published and matches"
    ]
    assert findings["dkim", "fail"] == ["other._domainkey.good.test: no TXT record"]


# --- the key lifecycle -----------------------------------------------------------------------


def record(key: dkim_keys.SigningKey) -> str:
    return dkim_keys.zone_line(key).replace(f".{key.domain}. ", " ", 1) + "\n"


def dkim(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = cli.main(["dkim", *args])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_rotation_switches_only_once_dns_serves_the_new_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    config = tmp_path / "relayguard.toml"
    config.write_text(f'[dkim]\nkey_directory = "{keys}"\ngrace_days = 7\n')
    base = ["--config", str(config), "--domain", "rot.test"]
    assert dkim(capsys, "generate", *base, "--selector", "old-rsa")[0] == 0
    assert dkim(capsys, "generate", *base, "--selector", "old-ed", "--algorithm", "ed25519")[0] == 0
    old = dkim_keys.load_keys(keys, "rot.test")
    assert {k.selector for k in old} == {"old-rsa", "old-ed"}
    mode = (keys / "rot.test" / "old-rsa.key").stat().st_mode & 0o777
    assert mode == 0o600

    with DnsServer({"rot.test": "".join(record(k) for k in old)}) as server:
        resolve = ["--nameserver", server.host, "--port", str(server.port)]
        assert dkim(capsys, "verify-dns", *base, *resolve)[0] == 0

        status, out = dkim(capsys, "rotate", *base, *resolve, "--selector", "new")
        assert status == 0 and "publish it" in out
        pending = dkim_keys.load_keys(keys, "rot.test", ("pending",))
        assert {k.selector for k in pending} == {"new-rsa", "new-ed25519"}
        assert dkim_keys.load_keys(keys, "rot.test") == old  # still signing with the old keys

        status, out = dkim(capsys, "rotate", *base, *resolve)
        assert status == 3 and "not yet: new-rsa._domainkey.rot.test: no TXT record" in out
        assert dkim(capsys, "verify-dns", *base, *resolve)[0] == 1

        status, out = dkim(capsys, "dns", *base)
        assert status == 0 and out.count("IN TXT") == 4
        assert all(len(part) <= 255 for part in out.split('"')[1::2])

        server.update("rot.test", "".join(record(k) for k in (*old, *pending)))
        status, out = dkim(capsys, "rotate", *base, *resolve)
        assert status == 0, out
        assert {k.selector for k in dkim_keys.load_keys(keys, "rot.test")} == {
            "new-rsa",
            "new-ed25519",
        }
        retired = dkim_keys.load_keys(keys, "rot.test", ("retired",))
        assert {k.selector for k in retired} == {"old-rsa", "old-ed"}
        status, out = dkim(capsys, "dns", *base)
        assert "old-rsa: retired; keep until" in out.replace("selector ", "")

    # After the grace period the retired private keys go and their records may be removed.
    config.write_text(f'[dkim]\nkey_directory = "{keys}"\ngrace_days = 0\n')
    status, out = dkim(capsys, "rotate", *base, "--nameserver", "127.0.0.1", "--port", "9")
    assert "old-rsa: grace period over, key deleted; remove TXT old-rsa._domainkey.rot.test" in out
    assert not (keys / "rot.test" / "old-rsa.key").exists()


def test_verify_dns_records_its_result_for_the_metrics(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys, status_file = tmp_path / "keys", tmp_path / "dkim-status.json"
    config = tmp_path / "relayguard.toml"
    config.write_text(f'[dkim]\nkey_directory = "{keys}"\n')
    base = ["--config", str(config), "--domain", "st.test"]
    assert dkim(capsys, "generate", *base, "--selector", "served")[0] == 0
    assert dkim(capsys, "generate", *base, "--selector", "lost", "--algorithm", "ed25519")[0] == 0
    served = dkim_keys.load_keys(keys, "st.test", ("active",))
    created = {e.selector: e.created for e in dkim_keys.read_manifest(keys, "st.test")}
    zone = "".join(record(k) for k in served if k.selector == "served")
    with DnsServer({"st.test": zone}) as server:
        resolve = ["--nameserver", server.host, "--port", str(server.port)]
        args = ["verify-dns", *base, *resolve, "--metrics-file", str(status_file)]
        assert dkim(capsys, *args)[0] == 1  # "lost" is not in DNS
    written = json.loads(status_file.read_text())["domains"]["st.test"]
    assert written["checked"] > created["lost"] - 1
    assert sorted(written["keys"], key=lambda k: k["selector"]) == [
        {"selector": "lost", "algorithm": "ed25519", "status": "active",
         "created": created["lost"], "dns_match": 0},
        {"selector": "served", "algorithm": "rsa", "status": "active",
         "created": created["served"], "dns_match": 1},
    ]  # fmt: skip


# --- outbound paths -------------------------------------------------------------------------

PATHS = """
[[outbound_paths]]
name = "bulk"
bind_address = "192.0.2.10"
helo_name = "bulk.good.test"

[[outbound_paths]]
name = "partner"
relayhost = "[smtp.partner.example]:587"
"""

BAD_PATHS = """
[[outbound_paths]]
name = "wrong-helo"
bind_address = "192.0.2.11"
helo_name = "bulk.good.test"

[[outbound_paths]]
name = "no-forward"
bind_address = "192.0.2.12"
helo_name = "nowhere.good.test"

[[outbound_paths]]
name = "no-ptr"
bind_address = "192.0.2.13"

[[outbound_paths]]
name = "outside-spf"
bind_address = "198.51.100.9"
"""


def paths_config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "keys").mkdir(exist_ok=True)
    config = tmp_path / "relayguard.toml"
    source = '[[sources]]\nname = "news"\nsasl_users = ["news"]\nsenders = ["@good.test"]\n'
    config.write_text(f'[dkim]\nkey_directory = "{tmp_path / "keys"}"\n{source}{text}')
    return config


def test_outbound_path_with_matching_reverse_dns_helo_and_spf_passes(
    dns: DnsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = paths_config(tmp_path, PATHS)
    status, findings = audit(dns, capsys, "good.test", "--config", str(config))
    assert not [key for key in findings if key[1] == "fail"], findings
    assert "relay address 192.0.2.10 is covered by SPF" in findings["spf", "pass"]
    assert findings["outbound", "pass"] == [
        "path bulk: 192.0.2.10 has reverse DNS bulk.good.test, confirmed",
        "path bulk: HELO bulk.good.test matches reverse DNS",
        "path partner sends through [smtp.partner.example]:587: no address of its own to check",
    ]
    assert status == 0


def test_outbound_path_without_reverse_dns_helo_or_spf_fails(
    dns: DnsServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = paths_config(tmp_path, BAD_PATHS)
    status, findings = audit(dns, capsys, "good.test", "--config", str(config))
    assert status == 1
    assert findings["outbound", "fail"] == [
        "path wrong-helo: HELO bulk.good.test is not the reverse DNS of 192.0.2.11"
        " (mail2.good.test)",
        "path no-forward: reverse DNS of 192.0.2.12 (nowhere.good.test) does not resolve back"
        " to it",
        "path no-ptr: 192.0.2.13 has no reverse DNS (PTR)",
        "path outside-spf: 198.51.100.9 has no reverse DNS (PTR)",
    ]
    assert findings["spf", "fail"] == ["relay address 198.51.100.9 is not in SPF's ip4/ip6 terms"]
