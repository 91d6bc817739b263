"""Run relayguard's real daemons on loopback for end-to-end tests.

Everything here starts real programs: a separate Postfix instance rendered
from ``postfix/*.j2`` (the same templates the Ansible role uses), Dovecot as
the SASL server, and an aiosmtpd sink standing in for the smarthost.

Rules these helpers keep, learned on the project's machines:

* every directory a daemon must reach is mode 0755 and not under pytest's
  0700 ``tmp_path`` (smtpd runs as user ``postfix``);
* every daemon's output goes to a file, never to pytest's stdout;
* every daemon started is stopped by PID, and its whole session is waited
  for (Postfix's children exit after their master).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import email.utils
import grp
import ipaddress
import json
import os
import pwd
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import IO, Any

import aiosmtpd.smtp
import jinja2
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = REPO_ROOT / "postfix"
LOOPBACK = "127.0.0.1"

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
POSTQUEUE = "/usr/sbin/postqueue"
DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"

RELAY_HOSTNAME = "relay.test.invalid"
SINK_HOSTNAME = "sink.test.invalid"

#: How long the helpers wait for something that goes through Postfix's queue manager or log by
#: default. Only a failing test waits this long; CI runs the whole suite on a loaded 2-core machine.
WAIT_SECONDS = 30.0


class StackError(RuntimeError):
    """A daemon of the test stack failed to start, stop or answer."""


# --- directories and ports -------------------------------------------------


def make_dir(prefix: str, parent: Path | None = None) -> Path:
    """Create a fresh directory that user ``postfix`` can traverse (mode 0755)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    return path


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct free TCP ports on ``host``.

    All sockets stay bound until every port is known, so the ports differ;
    another process could still take one before the caller binds it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port(host: str = LOOPBACK) -> int:
    """Return one free TCP port on ``host``."""
    return free_ports(1, host)[0]


def listen_address(host: str, port: int) -> str:
    """Format ``host:port`` the way Postfix's master.cf wants it (``[::1]:25``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --- TLS material ----------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate and key in PEM files (self-signed: the cert is its own CA)."""

    cert_file: Path
    key_file: Path
    common_name: str


@dataclass(frozen=True)
class ClientPki:
    """A private CA and one client certificate it issued, for device identification."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    subject_cn: str


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
    )


def make_self_signed(directory: Path, common_name: str = RELAY_HOSTNAME) -> TlsFiles:
    """Write a self-signed RSA-2048 server certificate for ``common_name`` and loopback.

    The key file is 0600 root: Postfix reads it before dropping privileges,
    as it does in production.
    """
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        _builder(name, name, key)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(common_name),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(directory / "server.crt", directory / "server.key", common_name)
    _write_key(key, files.key_file)
    _write_cert(cert, files.cert_file)
    return files


def make_client_pki(
    directory: Path,
    client_cn: str = "printer-1.devices.test",
    ca_cn: str = "relayguard test device CA",
) -> ClientPki:
    """Write a private device CA and a client certificate (clientAuth) issued by it."""
    ca_key = _new_key()
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "relayguard tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, ca_cn),
        ]
    )
    ca_cert = (
        _builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    client_key = _new_key()
    client_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, client_cn)])
    client_cert = (
        _builder(client_name, ca_name, client_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = ClientPki(
        ca_file=directory / "device-ca.crt",
        cert_file=directory / "device.crt",
        key_file=directory / "device.key",
        subject_cn=client_cn,
    )
    _write_cert(ca_cert, pki.ca_file)
    _write_cert(client_cert, pki.cert_file)
    _write_key(client_key, pki.key_file)
    return pki


def device_tls_context(client: ClientPki | None = None) -> ssl.SSLContext:
    """A TLS client context like a printer's: the relay's certificate is not verified."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if client is not None:
        context.load_cert_chain(client.cert_file, client.key_file)
    return context


# --- templates -------------------------------------------------------------

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
    # A missing variable is an error, as under Ansible: hardening settings
    # have no silent defaults.
    undefined=jinja2.StrictUndefined,
    # Ansible's template module defaults, so both render the same text.
    trim_blocks=True,
    lstrip_blocks=False,
    keep_trailing_newline=True,
    autoescape=jinja2.select_autoescape(default_for_string=False, default=False),
)


def render(template_name: str, **mapping: Any) -> str:
    """Render ``postfix/<template_name>`` with ``mapping`` as its variables.

    Example: ``render("main.cf.j2", postfix=settings)``.
    """
    return _ENV.get_template(template_name).render(**mapping)


def milter_spec(socket_path: str | Path | None) -> str | None:
    """Turn a socket path (or an explicit ``unix:``/``inet:`` spec) into a Postfix milter spec."""
    if socket_path is None or socket_path == "":
        return None
    text = str(socket_path)
    if text.startswith(("unix:", "inet:", "inet6:")):
        return text
    return f"unix:{text}"


def postfix_settings(
    base_dir: Path,
    *,
    tls: TlsFiles,
    relayhost: str,
    ports: Mapping[str, int],
    listen_host: str = LOOPBACK,
    **overrides: Any,
) -> dict[str, Any]:
    """The ``postfix`` mapping for a test instance living in ``base_dir``.

    ``ports`` maps ``smtp``, ``submission`` and ``smtps`` to loopback ports.
    Rate limits are generous so that tests are not throttled unless they ask.
    """
    log_dir = base_dir / "log"
    settings: dict[str, Any] = {
        "myhostname": RELAY_HOSTNAME,
        "config_directory": str(base_dir / "config"),
        "queue_directory": str(base_dir / "spool"),
        "data_directory": str(base_dir / "data"),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "inet_interfaces": f"127.0.0.1, [{listen_host}]" if ":" in listen_host else listen_host,
        "inet_protocols": "all" if ":" in listen_host else "ipv4",
        "smtp_listen": listen_address(listen_host, ports["smtp"]),
        "submission_listen": listen_address(listen_host, ports["submission"]),
        "smtps_listen": listen_address(listen_host, ports["smtps"]),
        "mynetworks": [],
        "tls_cert_file": str(tls.cert_file),
        "tls_key_file": str(tls.key_file),
        "tls_client_ca_file": "",
        "relayhost": relayhost,
        "smtp_tls_security_level": "none",
        "dlp_tls_security_level": "secure",
        "smtp_tls_ca_file": "/etc/ssl/certs/ca-certificates.crt",
        "message_size_limit": 10240000,
        "maillog_file": str(log_dir / "postfix.log"),
        "maillog_file_prefixes": str(log_dir),
        "milter_socket": None,
        "milter_connect_timeout": "5s",
        "milter_command_timeout": "10s",
        "milter_content_timeout": "20s",
        "smtpd_timeout": "30s",
        "anvil_rate_time_unit": "60s",
        "smtpd_client_connection_count_limit": 50,
        "smtpd_client_connection_rate_limit": 1000,
        "smtpd_client_message_rate_limit": 1000,
        "smtpd_client_recipient_rate_limit": 1000,
        "smtpd_client_auth_rate_limit": 1000,
        "smtpd_client_event_limit_exceptions": [],
    }
    settings.update(overrides)
    return settings


# --- processes -------------------------------------------------------------


def _process_state(pid: int) -> str | None:
    """Return the one-letter state of ``pid`` (``Z`` for a zombie), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may contain spaces.
    return stat.rsplit(")", 1)[1].split()[0]


def _session_members(sid: int) -> list[int]:
    """PIDs of live (non-zombie) processes in session ``sid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # fields[0] is the state, fields[3] the session id.
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _alive(pid: int) -> bool:
    state = _process_state(pid)
    return state is not None and state != "Z"


def _stop_session(pid: int, timeout: float) -> None:
    """SIGTERM ``pid`` (a session leader), wait for its session, SIGKILL what remains."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_until(lambda: not _session_members(pid), timeout):
        return
    for member in _session_members(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    if not wait_until(lambda: not _session_members(pid), 5.0):
        raise StackError(f"processes of session {pid} survived SIGKILL")


def _run(argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


# --- Postfix ---------------------------------------------------------------


class PostfixInstance:
    """One Postfix instance with its own config, queue, data directory and log.

    ``settings`` is the ``postfix`` mapping of the templates. The config and
    queue directories are created here (root, 0755); the data directory is
    left for ``postfix check`` to create with the right owner.
    """

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings: dict[str, Any] = dict(settings)
        self.config_directory = Path(self.settings["config_directory"])
        self.queue_directory = Path(self.settings["queue_directory"])
        self.maillog_file = Path(self.settings["maillog_file"])
        self._master_pid: int | None = None

    # configuration

    def render_main_cf(self) -> str:
        return render("main.cf.j2", postfix=self.settings)

    def render_master_cf(self) -> str:
        return render("master.cf.j2", postfix=self.settings)

    def write_config(self) -> None:
        for directory in (self.config_directory, self.queue_directory, self.maillog_file.parent):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            directory.chmod(0o755)
        backdated = time.time() - 60
        for name, text in (
            ("main.cf", self.render_main_cf()),
            ("master.cf", self.render_master_cf()),
        ):
            path = self.config_directory / name
            # Written aside and renamed into place, as Ansible's template module does: a daemon
            # that starts while a running instance is reconfigured (``reload``) must never read
            # a half-written file (it would run without the milter, SASL or its queue directory).
            draft = path.with_name(f".{name}.draft")
            draft.write_text(text)
            # Postfix re-reads a configuration file modified within the last
            # second until it is older (about 2 s per fresh file): backdate it.
            os.utime(draft, (backdated, backdated))
            os.replace(draft, path)

    def postfix(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``postfix -c CONFIG_DIR ARGS`` and return the finished process."""
        return _run([POSTFIX, "-c", str(self.config_directory), *args], timeout)

    def postconf(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``postconf -c CONFIG_DIR ARGS`` (e.g. ``-h``, ``-n``, ``-P``)."""
        return _run([POSTCONF, "-c", str(self.config_directory), *args])

    def value(self, name: str) -> str:
        """The effective value of one main.cf parameter (``postconf -h NAME``)."""
        result = self.postconf("-h", name)
        if result.returncode != 0:
            raise StackError(f"postconf -h {name}: {result.stderr.strip()}")
        return result.stdout.strip()

    def check(self) -> str:
        """``postfix check``; return its output (warnings), raise if it fails."""
        result = self.postfix("check")
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0:
            raise StackError(
                f"postfix check failed ({result.returncode}): {output}\n{self._log_tail()}"
            )
        return output

    # lifecycle

    def start(self) -> None:
        result = self.postfix("start")
        if result.returncode != 0:
            raise StackError(
                f"postfix start failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}\n{self._log_tail()}"
            )
        pid = self.read_master_pid()
        if pid is None:
            raise StackError(f"postfix started but wrote no master.pid\n{self._log_tail()}")
        self._master_pid = pid

    def read_master_pid(self) -> int | None:
        try:
            return int((self.queue_directory / "pid" / "master.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    @property
    def master_pid(self) -> int | None:
        return self._master_pid

    @property
    def running(self) -> bool:
        return self._master_pid is not None and _alive(self._master_pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the instance by its master's PID, as ``postfix stop`` does, and wait.

        ``postfix stop`` itself sleeps in whole seconds; signalling the master
        and polling its session is the same action, faster.
        """
        pid = self._master_pid or self.read_master_pid()
        self._master_pid = None
        if pid is None:
            return
        _stop_session(pid, timeout)

    def reload(self) -> None:
        """Rewrite main.cf/master.cf from ``settings`` and ``postfix reload``."""
        self.write_config()
        result = self.postfix("reload")
        if result.returncode != 0:
            raise StackError(f"postfix reload failed: {result.stdout}{result.stderr}")

    def flush(self) -> None:
        """Ask the queue manager to retry every deferred message now."""
        result = _run([POSTQUEUE, "-c", str(self.config_directory), "-f"])
        if result.returncode != 0:
            raise StackError(f"postqueue -f failed: {result.stderr.strip()}")

    # observation

    def log_text(self) -> str:
        try:
            return self.maillog_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_position(self) -> int:
        """Current length of the log, to wait only for lines written after it."""
        try:
            return self.maillog_file.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_for_log(
        self, pattern: str, timeout: float = WAIT_SECONDS, since: int = 0
    ) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) appears in the log after offset ``since``."""
        regex = re.compile(pattern)
        found: list[re.Match[str]] = []

        def seen() -> bool:
            match = regex.search(self.log_text()[since:])
            if match:
                found.append(match)
            return match is not None

        if not wait_until(seen, timeout):
            raise StackError(f"log pattern {pattern!r} not seen in {timeout}s\n{self._log_tail()}")
        return found[0]

    def queue(self) -> list[dict[str, Any]]:
        """The queue as ``postqueue -j`` lists it: one dict per message."""
        result = _run([POSTQUEUE, "-c", str(self.config_directory), "-j"])
        if result.returncode != 0:
            raise StackError(f"postqueue -j failed: {result.stderr.strip()}")
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def wait_queue_empty(self, timeout: float = WAIT_SECONDS) -> None:
        """Wait until two listings in a row are empty.

        showq lists the active queue before the incoming one: a message the queue manager moves
        from incoming to active between the two is in neither listing. Whatever one listing
        misses that way, the next one sees (or it was delivered in between).
        """
        empty_before = [False]

        def empty_twice() -> bool:
            empty = not self.queue()
            twice, empty_before[0] = empty and empty_before[0], empty
            return twice

        if not wait_until(empty_twice, timeout, interval=0.1):
            raise StackError(f"queue not empty after {timeout}s: {self.queue()}")

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> PostfixInstance:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- Dovecot SASL ------------------------------------------------------------


def hash_password(password: str) -> str:
    """A ``{SHA512-CRYPT}`` hash made by ``doveadm pw`` (no Dovecot config needed)."""
    result = _run([DOVEADM, "-O", "pw", "-s", "SHA512-CRYPT", "-p", password])
    if result.returncode != 0:
        raise StackError(f"doveadm pw failed: {result.stderr.strip()}")
    return result.stdout.strip()


class DovecotSasl:
    """Dovecot as a SASL-only server, from ``postfix/dovecot.conf.j2``.

    ``users`` maps login names to clear-text passwords; the passwd-file holds
    only their SHA512-CRYPT hashes. Runs in the foreground (``-F``) as a
    child of the test process and is stopped by PID.
    """

    def __init__(
        self,
        base_dir: Path,
        users: Mapping[str, str],
        *,
        socket_owner: str = "postfix",
        auth_failure_delay: str = "2 secs",
    ) -> None:
        self.base_dir = base_dir
        self.users = dict(users)
        self.conf_file = base_dir / "dovecot.conf"
        self.passwd_file = base_dir / "passwd"
        self.log_file = base_dir / "dovecot.log"
        self.socket_path = base_dir / "sasl" / "auth"
        owner = pwd.getpwnam(socket_owner)
        self.settings: dict[str, Any] = {
            "instance_name": f"relayguard-test-{base_dir.name}",
            "base_dir": str(base_dir / "run"),
            "state_dir": str(base_dir / "state"),
            "log_path": str(self.log_file),
            "internal_user": "dovecot",
            "auth_failure_delay": auth_failure_delay,
            "passwd_file": str(self.passwd_file),
            "auth_socket_path": str(self.socket_path),
            "auth_socket_user": owner.pw_name,
            "auth_socket_group": grp.getgrgid(owner.pw_gid).gr_name,
        }
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    def write_files(self) -> None:
        for directory in (self.base_dir, self.socket_path.parent):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            directory.chmod(0o755)
        # Dovecot's internal user reads the passwd-file; it holds hashes only.
        lines = [f"{user}:{hash_password(password)}::::::" for user, password in self.users.items()]
        self.passwd_file.write_text("\n".join(lines) + "\n")
        self.passwd_file.chmod(0o644)
        self.conf_file.write_text(render("dovecot.conf.j2", dovecot=self.settings))

    def start(self, timeout: float = 10.0) -> None:
        self.write_files()
        self._output = (self.base_dir / "dovecot.stdout").open("ab")
        self._process = subprocess.Popen(
            [DOVECOT, "-c", str(self.conf_file), "-F"],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process = self._process

        def ready() -> bool:
            return process.poll() is not None or self.socket_path.is_socket()

        wait_until(ready, timeout)
        if process.poll() is not None or not self.socket_path.is_socket():
            self.stop()
            raise StackError(f"dovecot did not open {self.socket_path}:\n{self.log_text()}")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            _stop_session(process.pid, timeout)
            process.wait(timeout)
        if self._output is not None:
            self._output.close()
            self._output = None

    def log_text(self) -> str:
        parts = []
        for path in (self.log_file, self.base_dir / "dovecot.stdout"):
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def __enter__(self) -> DovecotSasl:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- SMTP sink ---------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the sink received it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    peer: str
    helo: str = ""  # the name the relay announced in EHLO/HELO
    tls: bool = False  # the relay switched to TLS (STARTTLS) before sending it

    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def subject(self) -> str:
        return str(self.message()["Subject"] or "")


#: For SmtpSink.fail_next: drop the connection instead of answering the end of DATA.
CLOSE_CONNECTION = "close the connection"


@dataclass(frozen=True)
class HeldDelivery:
    """For SmtpSink.hold_next: a delivery kept in flight, the relay waiting for the sink's reply."""

    arrived: threading.Event = field(default_factory=threading.Event)  # the whole DATA is in
    release: threading.Event = field(default_factory=threading.Event)  # set it: the sink answers


@dataclass
class _SinkHandler:
    messages: list[ReceivedMessage] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    # Replies to give instead of storing (first in, first out): a smarthost that fails.
    failures: list[str] = field(default_factory=list)
    attempts: int = 0
    held: HeldDelivery | None = None

    # aiosmtpd looks hooks up by this exact name.
    async def handle_DATA(  # noqa: N802
        self,
        server: aiosmtpd.smtp.SMTP,
        session: aiosmtpd.smtp.Session,
        envelope: aiosmtpd.smtp.Envelope,
    ) -> str:
        content = envelope.original_content or b""
        received = ReceivedMessage(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(str(rcpt) for rcpt in envelope.rcpt_tos),
            data=bytes(content),
            peer=str(session.peer),
            helo=str(session.host_name or ""),
            tls=session.ssl is not None,
        )
        with self.changed:
            held, self.held = self.held, None
        if held is not None:
            held.arrived.set()
            # Off the event loop: other sessions go on while this one waits.
            await asyncio.get_running_loop().run_in_executor(None, held.release.wait)
        with self.changed:
            self.attempts += 1
            if self.failures:
                reply = self.failures.pop(0)
                if reply == CLOSE_CONNECTION:
                    # The whole DATA arrived, but the connection drops before the reply: the
                    # case where a client cannot know whether the message was taken.
                    server.transport.abort()
                    return "421 4.4.2 connection dropped"
                return reply
            self.messages.append(received)
            self.changed.notify_all()
        return "250 2.0.0 Ok: stored"


def _server_tls_context(tls: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


class SmtpSink:
    """An aiosmtpd server on loopback standing in for the smarthost; keeps every message."""

    def __init__(
        self, host: str = LOOPBACK, port: int | None = None, tls: TlsFiles | None = None
    ) -> None:
        """With `tls`, the sink offers STARTTLS with that certificate (never requires it)."""
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._handler = _SinkHandler()
        self._controller = Controller(
            self._handler,
            hostname=host,
            port=self.port,
            # Not the relay's myhostname: Postfix refuses a peer that greets
            # with its own name ("mail loops back to myself").
            server_hostname=SINK_HOSTNAME,
            tls_context=_server_tls_context(tls) if tls is not None else None,
        )

    @property
    def relayhost(self) -> str:
        """This sink as a Postfix ``relayhost`` value (no MX lookup)."""
        return f"[{self.host}]:{self.port}"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        with contextlib.suppress(AssertionError, RuntimeError):
            self._controller.stop()

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._handler.changed:
            return list(self._handler.messages)

    def fail_next(self, *replies: str) -> None:
        """Answer the next deliveries with these replies (e.g. '451 4.3.0 busy') instead of 250,
        or drop the connection for CLOSE_CONNECTION."""
        with self._handler.changed:
            self._handler.failures.extend(replies)

    def hold_next(self) -> HeldDelivery:
        """Keep the next delivery in flight: its reply waits until ``release`` is set."""
        held = HeldDelivery()
        with self._handler.changed:
            self._handler.held = held
        return held

    @property
    def attempts(self) -> int:
        """Every DATA the sink answered, stored or failed."""
        with self._handler.changed:
            return self._handler.attempts

    def wait_for(self, count: int, timeout: float = WAIT_SECONDS) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages arrived; return all of them."""
        deadline = time.monotonic() + timeout
        with self._handler.changed:
            while len(self._handler.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StackError(
                        f"sink got {len(self._handler.messages)} of {count} messages in {timeout}s"
                    )
                self._handler.changed.wait(remaining)
            return list(self._handler.messages)

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- SMTP clients ------------------------------------------------------------


def make_message(
    subject: str,
    *,
    sender: str = "scanner@example.test",
    recipient: str = "someone@example.test",
    body: str = "Scanned document attached.\n",
) -> EmailMessage:
    """A small message a device might send."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = email.utils.make_msgid(domain="example.test")
    message.set_content(body)
    return message


class RawSmtp:
    """A line-level SMTP client for what smtplib will not send (bare LF, pipelining)."""

    def __init__(
        self, host: str, port: int, *, implicit_tls: bool = False, timeout: float = 10.0
    ) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        self._sock: socket.socket = device_tls_context().wrap_socket(raw) if implicit_tls else raw
        self._buffer = b""

    def read_reply(self) -> tuple[int, str]:
        """Read one (possibly multi-line) reply: its code and its text lines joined."""
        lines = []
        while True:
            while b"\r\n" not in self._buffer:
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise StackError(f"connection closed; partial reply {self._buffer!r}")
                self._buffer += chunk
            line, self._buffer = self._buffer.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text[4:])
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), "\n".join(lines)

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def command(self, line: str) -> tuple[int, str]:
        self.send(line.encode() + b"\r\n")
        return self.read_reply()

    def starttls(self) -> None:
        code, text = self.command("STARTTLS")
        if code != 220:
            raise StackError(f"STARTTLS refused: {code} {text}")
        self._sock = device_tls_context().wrap_socket(self._sock)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> RawSmtp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass
class RelayStack:
    """A running relay: Postfix (listeners on loopback) delivering to ``sink``."""

    postfix: PostfixInstance
    sink: SmtpSink
    base_dir: Path
    host: str
    smtp_port: int
    submission_port: int
    smtps_port: int
    tls: TlsFiles
    username: str | None = None
    password: str | None = None

    @property
    def settings(self) -> dict[str, Any]:
        return self.postfix.settings

    def smtp(self, timeout: float = 10.0) -> smtplib.SMTP:
        """A client on the port-25-role listener, after EHLO."""
        client = smtplib.SMTP(
            self.host, self.smtp_port, local_hostname="device.test", timeout=timeout
        )
        client.ehlo()
        return client

    def submission(
        self, *, login: bool = True, client: ClientPki | None = None, timeout: float = 10.0
    ) -> smtplib.SMTP:
        """A client on the submission listener after EHLO, STARTTLS, EHLO (and AUTH)."""
        smtp = smtplib.SMTP(
            self.host, self.submission_port, local_hostname="device.test", timeout=timeout
        )
        smtp.ehlo()
        smtp.starttls(context=device_tls_context(client))
        smtp.ehlo()
        if login:
            self._login(smtp)
        return smtp

    def smtps(self, *, login: bool = True, timeout: float = 10.0) -> smtplib.SMTP_SSL:
        """A client on the implicit-TLS listener after EHLO (and AUTH)."""
        smtp = smtplib.SMTP_SSL(
            self.host,
            self.smtps_port,
            local_hostname="device.test",
            timeout=timeout,
            context=device_tls_context(),
        )
        smtp.ehlo()
        if login:
            self._login(smtp)
        return smtp

    def raw(self, port: int, *, implicit_tls: bool = False, timeout: float = 10.0) -> RawSmtp:
        """A line-level client on ``port`` (greeting not yet read)."""
        return RawSmtp(self.host, port, implicit_tls=implicit_tls, timeout=timeout)

    def _login(self, smtp: smtplib.SMTP) -> None:
        if self.username is None or self.password is None:
            raise StackError("this stack has no SASL user")
        smtp.login(self.username, self.password)

    def iter_log_lines(self) -> Iterator[str]:
        yield from self.postfix.log_text().splitlines()


StackFactory = Callable[..., RelayStack]
"""What the ``postfix_stack`` fixture yields: ``(milter_socket=None, **settings) -> RelayStack``."""


__all__ = [
    "CLOSE_CONNECTION",
    "LOOPBACK",
    "RELAY_HOSTNAME",
    "SINK_HOSTNAME",
    "WAIT_SECONDS",
    "ClientPki",
    "DovecotSasl",
    "HeldDelivery",
    "PostfixInstance",
    "RawSmtp",
    "ReceivedMessage",
    "RelayStack",
    "SmtpSink",
    "StackError",
    "StackFactory",
    "TlsFiles",
    "device_tls_context",
    "free_port",
    "free_ports",
    "hash_password",
    "listen_address",
    "make_client_pki",
    "make_dir",
    "make_message",
    "make_self_signed",
    "milter_spec",
    "postfix_settings",
    "render",
    "wait_until",
]
