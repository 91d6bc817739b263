"""Deployment tier: the README's first command applied to this machine, twice, then real SMTP.

`scripts/appliance.sh` (what `make appliance` runs) installs ansible-core into its own venv and
applies ansible/site.yml to this machine, with an extra-vars file that points the relayhost at an
SMTP sink on loopback and skips the freshclam download (no internet here; the local signature
set is installed instead, as it would be on any offline machine). The second run must change
nothing. Then a device talks to the deployed relay on port 587 like a printer would.

Every feature is on (issue 15 "done when", issue 17 part 1): YARA and DLP with a custom detector
from a site rules directory, URL block lists answered by a DNS server on loopback, Redis state
(this machine is also the inventory's `state` host, through a second inventory file), Rspamd
spam scoring, the unsubscribe endpoint, the send API, the console, the milter's metrics and the
Postfix exporter; each is proved with one SMTP message or one HTTP request.

The appliance uses the standard ports (25, 587, 465) and the system's Postfix instance; the other
tiers use private instances on random loopback ports, so they do not collide. At the end the
appliance's services are stopped; its files stay (a later run starts them again). Set
RELAYGUARD_KEEP_TMP=1 to keep the runs' logs and recap lines (/tmp/relayguard-deploy-*).
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import re
import shutil
import smtplib
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
import redis

from tests.deploy.playbook import service_vars
from tests.support.dns_server import DnsServer
from tests.support.rspamd import GTUBE
from tests.support.stack import SmtpSink, device_tls_context, make_dir, make_message, wait_until

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "ansible"
APPLIANCE = ROOT / "scripts" / "appliance.sh"
ANSIBLE_VENV = Path("/opt/relayguard-ansible")
VENV_BIN = ROOT / ".venv" / "bin"
RELAYGUARD = Path("/opt/relayguard/bin/relayguard")
MILTER_CONFIG = Path("/etc/relayguard/relayguard.toml")
DEMO_PASSWORD = Path("/etc/relayguard/demo.password")
DEMO_USER = "demo-device"
DEMO_SENDER = "demo-device@example.com"
SUBMISSION = ("127.0.0.1", 587)
SERVICES = (
    "relayguard-milter", "relayguard-clamd", "dovecot", "postfix", "relayguard-redis", "rspamd",
    "relayguard-postfix-exporter", "relayguard-api", "relayguard-unsubscribe",
    "relayguard-console", "relayguard-quarantine-helper",
)  # fmt: skip
# The features' fixed loopback ports and test values.
REDIS_PORT = 6390
REDIS_PASSWORD = "deploy-test-redis-password-0123456789"
METRICS_PORT = 9489
EXPORTER_PORT = 9154
UNSUBSCRIBE_PORT = 8025
API_PORT = 8580
CONSOLE_PORT = 8443
BLOCKLIST_ZONE = "bl.deploy.test"
LISTED_DOMAIN = "phish.example.net"
YARA_MARKER = "RELAYGUARD-DEPLOY-YARA-MARKER"
DLP_MARKER = "badge EMP123456"
# One machine, one appliance: two test sessions (two engineers, or CI and a developer) must not
# deploy at the same time.
LOCK = Path("/run/relayguard-deploy-tests.lock")
RECAP = re.compile(
    r"^localhost\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Run:
    """One ansible-playbook run: its exit status, output and PLAY RECAP counters."""

    returncode: int
    output: str
    seconds: float

    def recap(self) -> dict[str, int]:
        matches = list(RECAP.finditer(self.output))
        assert matches, f"no PLAY RECAP line for localhost in:\n{self.output[-3000:]}"
        return {key: int(value) for key, value in matches[-1].groupdict().items()}

    def recap_line(self) -> str:
        return next(line for line in self.output.splitlines() if RECAP.match(line))


@dataclass(frozen=True)
class Appliance:
    sink: SmtpSink
    first: Run
    second: Run
    workdir: Path
    dns: DnsServer


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_CONFIG"] = str(ANSIBLE_DIR / "ansible.cfg")
    return env


def _run(argv: list[str], log: Path, cwd: Path = ROOT, timeout: float = 600) -> Run:
    started = time.monotonic()
    with log.open("wb") as out:
        result = subprocess.run(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_environment(),
            timeout=timeout,
            check=False,
        )
    return Run(result.returncode, log.read_text(errors="replace"), time.monotonic() - started)


def _appliance_playbook(
    workdir: Path, name: str, args: list[str], variables: dict[str, object]
) -> Run:
    """The appliance venv's ansible-playbook from ansible/, VARIABLES as extra vars (NAME.json),
    its output in NAME.log."""
    extra_vars = workdir / f"{name}.json"
    extra_vars.write_text(json.dumps(variables))
    return _run(
        [str(ANSIBLE_VENV / "bin" / "ansible-playbook"), *args, "-e", f"@{extra_vars}"],
        workdir / f"{name}.log",
        cwd=ANSIBLE_DIR,
        timeout=300,
    )


def _stop_services() -> None:
    for name in SERVICES:
        subprocess.run(
            ["service", name, "stop"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def appliance() -> Iterator[Appliance]:
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield from _deploy()


def _site_rules(workdir: Path) -> Path:
    """A site's rules directory: one YARA rule and a DLP custom detector every source gets."""
    rules = workdir / "site-rules"
    (rules / "yara").mkdir(parents=True)
    (rules / "yara" / "deploy.yar").write_text(
        f'rule deploy_marker {{ strings: $m = "{YARA_MARKER}" condition: $m }}\n'
    )
    (rules / "dlp.toml").write_text(
        '[dlp]\ndefault_profile = "deploy"\n\n'
        "[[dlp_detectors]]\nname = \"badge_number\"\npattern = 'EMP\\d{6}'\n\n"
        '[[dlp_profiles]]\nname = "deploy"\ndetectors = { badge_number = 1 }\naction = "reject"\n'
    )
    return rules


def _features(workdir: Path, dns: DnsServer) -> dict[str, object]:
    """The extra variables that turn every feature on."""
    return {
        "relayguard_milter__rules_src": str(_site_rules(workdir)),
        "relayguard_milter__config": {
            "yara": {"default_action": "reject"},
            "urls": {"nameservers": [dns.host], "port": dns.port, "timeout": 2},
            "url_blocklists": [{"zone": BLOCKLIST_ZONE, "action": "reject"}],
            "state": {"backend": "redis", "redis_url": f"redis://127.0.0.1:{REDIS_PORT}/0"},
            "metrics": {"port": METRICS_PORT, "address": "127.0.0.1"},
            "unsubscribe": {
                "sources": [DEMO_USER],
                "base_url": "https://relay.deploy.test",
                "secrets": ["a-deploy-test-secret-of-32-chars!!"],
            },
        },
        "relayguard_redis__port": REDIS_PORT,
        "relayguard_redis__password": REDIS_PASSWORD,
        "relayguard_milter__redis_password": REDIS_PASSWORD,
        "relayguard_rspamd__enabled": True,
        # No internet here: Rspamd's remaining lookups fail at once instead of timing out.
        "relayguard_rspamd__dns_servers": ["127.0.0.1:1"],
        "relayguard_unsubscribe__enabled": True,
        "relayguard_unsubscribe__sqlite_state": "",
        "relayguard_api__enabled": True,
        "relayguard_api__sqlite_state": "",
        "relayguard_console__enabled": True,
    }


def _deploy() -> Iterator[Appliance]:
    workdir = make_dir("relayguard-deploy-")
    sink = SmtpSink()
    sink.start()
    # The URL block list, on a DNS server on loopback.
    dns = DnsServer({BLOCKLIST_ZONE: f"{LISTED_DOMAIN}.{BLOCKLIST_ZONE}. A 127.0.0.2"}).start()
    # This machine is the inventory's `state` host too (the Redis the relays share).
    state_inventory = workdir / "state-inventory.yml"
    state_inventory.write_text(
        "state:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: /usr/bin/python3\n"
    )
    extra_vars = workdir / "extra-vars.json"
    extra_vars.write_text(
        json.dumps(
            {
                # A fixed name: the host's FQDN is whatever this machine says.
                "relayguard_postfix__myhostname": "relay.deploy.test",
                # The smarthost is a sink on loopback; no TLS towards it.
                "relayguard_postfix__relayhost": sink.relayhost,
                "relayguard_postfix__smtp_tls_security_level": "none",
                # freshclam needs the internet (about 40 s to give up here).
                "relayguard_clamav__freshclam_on_deploy": False,
                **_features(workdir, dns),
            }
        )
    )
    argv = [str(APPLIANCE), "-i", str(state_inventory), "-e", f"@{extra_vars}"]
    try:
        first = _run(argv, workdir / "first-run.log")
        second = _run(argv, workdir / "second-run.log")
        (workdir / "recaps.txt").write_text(
            "".join(
                f"{name} ({run.seconds:.0f} s): "
                f"{run.recap_line() if run.returncode == 0 else run.returncode}\n"
                for name, run in (("first", first), ("second", second))
            )
        )
        yield Appliance(sink, first, second, workdir, dns)
    finally:
        _stop_services()
        dns.stop()
        sink.stop()
        if not os.environ.get("RELAYGUARD_KEEP_TMP"):
            shutil.rmtree(workdir, ignore_errors=True)


def test_first_run_builds_the_relay(appliance: Appliance) -> None:
    run = appliance.first
    assert run.returncode == 0, run.output[-4000:]
    recap = run.recap()
    assert recap["failed"] == 0 and recap["unreachable"] == 0
    assert "swaks --server 127.0.0.1:587 --tls --auth-user demo-device" in run.output
    # Without freshclam's databases the fallback signature set is installed and announced, loudly.
    official = [p for p in Path("/var/lib/clamav").glob("daily.c[lv]d")]
    assert ("ClamAV has NO official signatures" in run.output) == (not official)
    assert Path("/var/lib/clamav/relayguard-local.hdb").exists() == (not official)
    # ... and `relayguard check` says so too, as a warning: the relay still works.
    check = subprocess.run(
        [str(RELAYGUARD), "check", "--config", str(MILTER_CONFIG)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert ("no official ClamAV signatures" in check.stdout) == (not official)


def test_second_run_changes_nothing(appliance: Appliance) -> None:
    run = appliance.second
    assert run.returncode == 0, run.output[-4000:]
    recap = run.recap()
    changed = [line for line in run.output.splitlines() if line.startswith("changed:")]
    assert recap["changed"] == 0, f"{run.recap_line()}\n{changed}\n{run.output[-4000:]}"
    assert recap["failed"] == 0


def test_secrets_and_files_have_their_modes(appliance: Appliance) -> None:
    assert appliance.first.returncode == 0
    assert DEMO_PASSWORD.stat().st_mode & 0o777 == 0o600
    config = MILTER_CONFIG.stat()
    assert config.st_mode & 0o777 == 0o640
    socket_path = Path("/var/spool/postfix/relayguard/milter.sock")
    assert socket_path.is_socket()
    assert socket_path.stat().st_mode & 0o777 == 0o660
    passwd = Path("/etc/dovecot/relayguard.passwd").read_text()
    assert re.search(r"^demo-device:\{SHA512-CRYPT\}\$6\$", passwd, re.MULTILINE)
    assert DEMO_PASSWORD.read_text().strip() not in passwd


def test_auth_is_offered_only_after_starttls(appliance: Appliance) -> None:
    assert appliance.second.returncode == 0
    with smtplib.SMTP(*SUBMISSION, local_hostname="device.test", timeout=30) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        code, _ = client.docmd("AUTH", "PLAIN")
        assert code == 530  # 5.7.0 Must issue a STARTTLS command first
        client.starttls(context=device_tls_context())
        client.ehlo()
        assert "PLAIN" in client.esmtp_features["auth"].upper()


def _demo_password() -> str:
    return DEMO_PASSWORD.read_text().strip()


def _dkim_txt(domain: str) -> dict[bytes, bytes]:
    """The TXT records `relayguard dkim dns` says to publish, keyed by DNS name."""
    result = subprocess.run(
        [str(RELAYGUARD), "dkim", "dns", "--config", str(MILTER_CONFIG), "--domain", domain],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    records = {}
    for match in re.finditer(r"^(\S+)\.\s+\d+\s+IN\s+TXT\s+\((.*?)\)", result.stdout, re.M | re.S):
        text = "".join(re.findall(r'"([^"]*)"', match.group(2)))
        records[match.group(1).encode()] = text.encode()
    return records


def test_demo_source_sends_a_signed_message(appliance: Appliance) -> None:
    assert appliance.second.returncode == 0
    before = len(appliance.sink.messages)
    message = make_message(
        "first message through the appliance", sender=DEMO_SENDER, recipient="someone@example.com"
    )
    with smtplib.SMTP(*SUBMISSION, local_hostname="device.test", timeout=60) as client:
        client.starttls(context=device_tls_context())
        client.login(DEMO_USER, _demo_password())
        client.send_message(message)
    received = appliance.sink.wait_for(before + 1, timeout=60)[before]
    assert received.mail_from == DEMO_SENDER
    parsed = received.message()
    assert "source=demo-device" in str(parsed["X-Relayguard"])
    assert "verdict=accept" in str(parsed["X-Relayguard"])
    signature = str(parsed["DKIM-Signature"])
    assert "d=example.com" in signature.replace(" ", "")
    assert "s=relayguard1" in signature.replace(" ", "")
    records = _dkim_txt("example.com")

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.rstrip(b"."), b"")

    assert dkim.verify(received.data, dnsfunc=dnsfunc)


def test_spoofed_from_is_refused(appliance: Appliance) -> None:
    assert appliance.second.returncode == 0
    before = len(appliance.sink.messages)
    spoofed = make_message("spoof", sender="ceo@example.com", recipient="someone@example.com")
    with smtplib.SMTP(*SUBMISSION, local_hostname="device.test", timeout=60) as client:
        client.starttls(context=device_tls_context())
        client.login(DEMO_USER, _demo_password())
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.send_message(spoofed, from_addr=DEMO_SENDER)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1")
    assert b"ceo@example.com" in refused.value.smtp_error
    time.sleep(1.0)  # a wrongly accepted message would reach the sink within this time
    assert all(m.message()["Subject"] != "spoof" for m in appliance.sink.messages[before:])


def _send(message: EmailMessage, to: list[str] | None = None) -> None:
    with smtplib.SMTP(*SUBMISSION, local_hostname="device.test", timeout=60) as client:
        client.starttls(context=device_tls_context())
        client.login(DEMO_USER, _demo_password())
        client.send_message(message, from_addr=DEMO_SENDER, to_addrs=to)


def _refusal(message: EmailMessage) -> tuple[int, str]:
    """The SMTP code and text that refused MESSAGE, at whichever stage."""
    try:
        _send(message)
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return code, text.decode()
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        error = exc.smtp_error
        return exc.smtp_code, error.decode() if isinstance(error, bytes) else error
    raise AssertionError(f"{message['Subject']!r} was accepted")


def _demo_message(subject: str, body: str, recipient: str = "someone@example.com") -> EmailMessage:
    return make_message(subject, sender=DEMO_SENDER, recipient=recipient, body=body)


def _relayguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RELAYGUARD), *args, "--config", str(MILTER_CONFIG)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _http(
    method: str, port: int, path: str, body: bytes = b"", **headers: str
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (f"Scan attached. {YARA_MARKER}\n", "deploy_marker"),  # YARA, from the site's rules
        (f"Access card: {DLP_MARKER}\n", "badge_number"),  # DLP, the site's custom detector
        (f"Please log in at http://{LISTED_DOMAIN}/login\n", BLOCKLIST_ZONE),  # URL block list
        (f"{GTUBE}\n", "spam"),  # Rspamd spam scoring
    ],
    ids=["yara", "dlp", "urls", "spam"],
)
def test_each_content_feature_refuses_its_message(
    appliance: Appliance, body: str, named: str
) -> None:
    assert appliance.second.returncode == 0
    before = len(appliance.sink.messages)
    code, text = _refusal(_demo_message(f"refused by {named}", body))
    assert (code, text[:5]) == (550, "5.7.1"), text
    assert named in text
    assert "EMP123456" not in text  # the rule is named, never the matched data
    time.sleep(1.0)  # a wrongly accepted message would reach the sink within this time
    assert len(appliance.sink.messages) == before


def test_the_kill_switch_lives_in_the_roles_redis(appliance: Appliance) -> None:
    assert appliance.second.returncode == 0
    assert REDIS_PASSWORD not in MILTER_CONFIG.read_text()
    disabled = _relayguard("sources", "disable", DEMO_USER, "--reason", "deploy test")
    assert disabled.returncode == 0, disabled.stdout + disabled.stderr
    try:
        shared = redis.Redis(host="127.0.0.1", port=REDIS_PORT, password=REDIS_PASSWORD)
        assert shared.keys("relayguard:*"), "nothing in the role's Redis"
        code, text = _refusal(_demo_message("while disabled", "hello\n"))
        assert code == 550, text
    finally:
        enabled = _relayguard("sources", "enable", DEMO_USER)
        assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    before = len(appliance.sink.messages)
    _send(_demo_message("enabled again", "hello\n"))
    appliance.sink.wait_for(before + 1, timeout=60)


def test_one_click_unsubscribe_suppresses_the_recipient(appliance: Appliance) -> None:
    assert appliance.second.returncode == 0
    # A new reader each run: the role's Redis keeps suppressions from an earlier run on this host.
    reader = f"reader-{uuid.uuid4().hex[:12]}@example.com"
    before = len(appliance.sink.messages)
    _send(_demo_message("newsletter", "News.\n", recipient=reader))
    received = appliance.sink.wait_for(before + 1, timeout=60)[before].message()
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = re.search(r"<https://relay\.deploy\.test(/u/[^>]+)>", str(received["List-Unsubscribe"]))
    assert link, received["List-Unsubscribe"]
    # What the HTTPS reverse proxy would forward to the endpoint on loopback.
    status, _ = _http(
        "POST", UNSUBSCRIBE_PORT, link.group(1), b"List-Unsubscribe=One-Click",
        **{"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert status == 200
    code, text = _refusal(_demo_message("after unsubscribing", "News.\n", recipient=reader))
    assert code == 550, text


def test_the_send_api_hands_a_message_to_the_relay(appliance: Appliance) -> None:
    assert appliance.second.returncode == 0
    created = _relayguard("api", "token", "create", "--source", DEMO_USER)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    before = len(appliance.sink.messages)
    payload = {"from": DEMO_SENDER, "to": ["someone@example.com"], "subject": "via the API",
               "text": "Sent through the send API."}  # fmt: skip
    status, answer = _http(
        "POST", API_PORT, "/v1/messages", json.dumps(payload).encode(),
        **{"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 202, answer
    received = appliance.sink.wait_for(before + 1, timeout=60)[before]
    assert received.message()["Subject"] == "via the API"


def test_the_console_answers_on_loopback(appliance: Appliance) -> None:
    assert appliance.second.returncode == 0
    status, page = _http("GET", CONSOLE_PORT, "/login")
    assert status == 200 and b"<form" in page


def test_metrics_and_the_postfix_exporter_are_served(appliance: Appliance) -> None:
    assert appliance.second.returncode == 0
    _send(_demo_message("counted", "hello\n"))
    status, milter = _http("GET", METRICS_PORT, "/metrics")
    assert status == 200 and b"relayguard_messages_total{" in milter
    status, postfix = _http("GET", EXPORTER_PORT, "/metrics")
    assert status == 200
    assert re.search(rb'^postfix_up\{path="/var/spool/postfix/public/showq"\} 1$', postfix, re.M)
    assert b'postfix_showq_message_size_bytes_count{queue="deferred"}' in postfix


@pytest.mark.parametrize(
    ("extra", "variable", "complaint"),
    [
        (
            {"relayguard_postfix__inet_protocols": "ipv5"},
            "relayguard_postfix__inet_protocols",
            "one of",
        ),
        ({"relayguard_milter__workers": "many"}, "relayguard_milter__workers", "int"),
        (
            {"relayguard_sasl__users": [{"name": "printer"}]},
            "password_hash",
            "missing required arguments",
        ),
    ],
)
def test_invalid_role_variables_stop_the_play(
    appliance: Appliance, tmp_path: Path, extra: dict[str, object], variable: str, complaint: str
) -> None:
    # Argument-spec validation is tagged "always": with a tag nothing else carries, the play
    # validates every role and runs no other task.
    assert appliance.first.returncode == 0  # the appliance venv exists
    args = ["-i", "inventories/local/hosts.yml", "site.yml", "--tags", "relayguard-validate-only"]
    run = _appliance_playbook(tmp_path, "bad", args, extra)
    assert run.returncode != 0
    assert run.recap()["failed"] == 1
    assert "Validating arguments against arg spec" in run.output
    assert variable in run.output
    assert complaint in run.output
    assert run.recap()["changed"] == 0


def test_ansible_lint_production_profile_is_clean(tmp_path: Path) -> None:
    run = _run(
        [str(VENV_BIN / "ansible-lint"), "--profile", "production", "--nocolor", "-q"],
        tmp_path / "lint.log",
        cwd=ANSIBLE_DIR,
        timeout=300,
    )
    assert run.returncode == 0, run.output
    assert "violation" not in run.output.lower(), run.output


def test_vagrantfile_validates(tmp_path: Path) -> None:
    env = {
        **_environment(),
        "VAGRANT_CWD": str(ROOT / "vagrant"),
        "VAGRANT_DOTFILE_PATH": str(tmp_path / "dotfile"),
        "VAGRANT_HOME": str(tmp_path / "home"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
    }
    result = subprocess.run(
        ["vagrant", "validate", "--ignore-provider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Vagrantfile validated successfully" in result.stdout


def test_systemd_units_verify_and_are_hardened(appliance: Appliance, tmp_path: Path) -> None:
    # Rendered from the roles' own service definitions, as a systemd host would get them; the
    # role runs `systemd-analyze verify` itself (and fails the play if it complains).
    assert appliance.first.returncode == 0  # ExecStart's binaries exist
    units = tmp_path / "units"
    units.mkdir()
    args = ["-i", "localhost,", str(ROOT / "tests" / "deploy" / "render_units.yml")]
    run = _appliance_playbook(tmp_path, "units", args, service_vars(units))
    assert run.returncode == 0, run.output[-3000:]
    assert "Verify the unit of relayguard-milter" in run.output
    for name in ("relayguard-milter", "relayguard-clamd"):
        unit = units / f"{name}.service"
        text = unit.read_text()
        for directive in (
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=\n",
            "SystemCallFilter=@system-service",
            "RestrictAddressFamilies=",
            "ReadWritePaths=",
        ):
            assert directive in text, f"{name}: {directive!r} missing"
        assert "User=root" not in text
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
        security = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        level = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", security.stdout)
        assert level, security.stdout + security.stderr
        with contextlib.suppress(OSError):
            (appliance.workdir / f"{name}.security.txt").write_text(security.stdout)
        assert level.group(2) == "OK", security.stdout  # systemd's best rating band


def test_a_changed_console_setting_reloads_the_console(appliance: Appliance) -> None:
    """A setting the console rereads (session length) is applied with SIGHUP, not a restart: the
    same process goes on (sessions and lock-outs kept) and logs the reload. Last in this module:
    it leaves the changed setting deployed."""
    assert appliance.second.returncode == 0
    pid = Path("/run/relayguard-console.pid").read_text().strip()
    log = Path("/var/log/relayguard-console.log")
    offset = log.stat().st_size
    argv = [
        str(APPLIANCE),
        "-i", str(appliance.workdir / "state-inventory.yml"),
        "-e", f"@{appliance.workdir / 'extra-vars.json'}",
        "-e", "relayguard_console__session_minutes=60",
    ]  # fmt: skip
    run = _run(argv, appliance.workdir / "console-reload-run.log")
    assert run.returncode == 0, run.output[-4000:]
    assert "RUNNING HANDLER [relayguard_console : Reload the relayguard console]" in run.output
    assert "RUNNING HANDLER [relayguard_console : Restart the relayguard console]" not in run.output
    assert Path("/run/relayguard-console.pid").read_text().strip() == pid
    assert wait_until(lambda: b" reloaded" in log.read_bytes()[offset:], 30)
    assert "\nsession_minutes = 60\n" in MILTER_CONFIG.read_text()
    status, page = _http("GET", CONSOLE_PORT, "/login")
    assert status == 200 and b"<form" in page
