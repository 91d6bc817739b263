"""Deployment tier: the README's first command applied to this machine, twice, then real SMTP.

`scripts/appliance.sh` (what `make appliance` runs) installs ansible-core into its own venv and
applies ansible/site.yml to this machine, with an extra-vars file that points the relayhost at an
SMTP sink on loopback and skips the freshclam download (no internet here; the local signature
set is installed instead, as it would be on any offline machine). The second run must change
nothing. Then a device talks to the deployed relay on port 587 like a printer would.

The appliance uses the standard ports (25, 587, 465) and the system's Postfix instance; the other
tiers use private instances on random loopback ports, so they do not collide. At the end the
appliance's services are stopped; its files stay (a later run starts them again). Set
RELAYGUARD_KEEP_TMP=1 to keep the runs' logs and recap lines (/tmp/relayguard-deploy-*).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest

from tests.support.stack import SmtpSink, device_tls_context, make_dir, make_message

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
SERVICES = ("relayguard-milter", "relayguard-clamd", "dovecot", "postfix")
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


def _deploy() -> Iterator[Appliance]:
    workdir = make_dir("relayguard-deploy-")
    sink = SmtpSink()
    sink.start()
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
            }
        )
    )
    try:
        first = _run([str(APPLIANCE), "-e", f"@{extra_vars}"], workdir / "first-run.log")
        second = _run([str(APPLIANCE), "-e", f"@{extra_vars}"], workdir / "second-run.log")
        (workdir / "recaps.txt").write_text(
            "".join(
                f"{name} ({run.seconds:.0f} s): "
                f"{run.recap_line() if run.returncode == 0 else run.returncode}\n"
                for name, run in (("first", first), ("second", second))
            )
        )
        yield Appliance(sink, first, second, workdir)
    finally:
        _stop_services()
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
    extra_vars = tmp_path / "bad.json"
    extra_vars.write_text(json.dumps(extra))
    run = _run(
        [
            str(ANSIBLE_VENV / "bin" / "ansible-playbook"),
            "-i",
            "inventories/local/hosts.yml",
            "site.yml",
            "--tags",
            "relayguard-validate-only",
            "-e",
            f"@{extra_vars}",
        ],
        tmp_path / "bad.log",
        cwd=ANSIBLE_DIR,
        timeout=300,
    )
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
    extra_vars = tmp_path / "units.json"
    extra_vars.write_text(
        json.dumps(
            {
                "relayguard_service__manager": "systemd",
                "relayguard_service__unit_dir": str(units),
                "relayguard_service__start": False,
            }
        )
    )
    run = _run(
        [
            str(ANSIBLE_VENV / "bin" / "ansible-playbook"),
            "-i",
            "localhost,",
            str(ROOT / "tests" / "deploy" / "render_units.yml"),
            "-e",
            f"@{extra_vars}",
        ],
        tmp_path / "units.log",
        cwd=ANSIBLE_DIR,
        timeout=300,
    )
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
