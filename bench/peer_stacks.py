"""The peers relayguard is measured against: the classic pair (clamav-milter + OpenDKIM) and Rspamd.

A sysadmin choosing a relay filter compares relayguard with what they would otherwise run, so the
benchmark runs both peers itself, from Debian's packages (installed with apt-get when missing: the
bench runs as root), with the configuration files in bench/peers/ (a comment on every choice).
Both use the same clamd as relayguard's variants and sign with an RSA-2048 key for example.com
that the bench generates; `bench/work_check.py` proves on a sample that each really scanned and
signed every message.

    stack = ClassicStack(directory, clamd_socket)   # or RspamdStack(directory, clamd, cache)
    stack.start()                                   # every daemon up and its socket reachable
    stack.milter_spec                               # "unix:A, unix:B": Postfix's smtpd_milters
    stack.pids()                                    # the processes whose CPU the bench counts
    stack.stop()
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from string import Template

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from tests.support.daemon import stop_process_group

PEERS_DIR = Path(__file__).resolve().parent / "peers"
# OpenDKIM refuses keys below a world-writable directory (/tmp, /var/tmp): the peers' files live
# under a root-owned 0755 directory instead, one fresh subdirectory per run.
PRIVATE_BASE = Path("/var/lib/relayguard-bench")
# Rspamd compiles its Hyperscan databases in about 20 s on a cold start, about 1 s once they are
# cached: the cache survives runs here (file names carry a hash of the rules, so a changed rule
# set is compiled again). --rspamd-cache chooses another directory.
RSPAMD_CACHE = Path("/var/tmp/relayguard-bench-rspamd")  # noqa: S108 (owner checked on use)
DKIM_DOMAIN = "example.com"
APT_GET = [
    "apt-get", "-q", "-y", "--no-install-recommends",
    # Other engineers may be installing on this machine: wait for dpkg's lock, do not fail.
    "-o", "DPkg::Lock::Timeout=600",
]  # fmt: skip


class PeerError(RuntimeError):
    """A peer could not be installed, configured or started."""


# --- packages ---------------------------------------------------------------------------------


def missing_packages(names: tuple[str, ...]) -> list[str]:
    """The Debian packages of `names` that dpkg does not have installed."""
    missing = []
    for name in names:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True, check=False
        )
        if status.stdout.strip() != "install ok installed":
            missing.append(name)
    return missing


def ensure_packages(names: tuple[str, ...]) -> None:
    """Install what is missing with apt-get (once more after `apt-get update` if that fails:
    a fresh machine may have no package lists yet)."""
    missing = missing_packages(names)
    if not missing:
        return
    print(f"installing {' '.join(missing)} for the benchmark's peers", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*APT_GET, "install", *missing]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode == 0:
        return
    subprocess.run([*APT_GET, "update"], env=env, capture_output=True, check=False)
    result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PeerError(f"apt-get install {' '.join(missing)} failed:\n{result.stderr[-2000:]}")


# --- keys and files ---------------------------------------------------------------------------


def dkim_record(private_pem: bytes) -> bytes:
    """The DKIM TXT record (RFC 6376 §3.6.1; RFC 8463 for Ed25519) of a PEM private key, so that
    signatures are verified against the key on disk with no DNS."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    raise PeerError(f"not an RSA or Ed25519 key: {type(key).__name__}")


def write_rsa_key(path: Path, owner: str) -> bytes:
    """A new RSA-2048 key, 0600 and owned by the daemon that signs with it; returns its PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    shutil.chown(path, owner, owner)
    return pem


def owned_dir(path: Path, owner: str, mode: int = 0o755) -> Path:
    """A directory the daemon's user owns (it writes its socket, pid or cache there)."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.chown(path, owner, owner)
    path.chmod(mode)
    return path


def render(template: Path, target: Path, **values: str) -> Path:
    """One of bench/peers/ with its ${name} placeholders filled in."""
    target.write_text(Template(template.read_text()).substitute(values))
    target.chmod(0o644)
    return target


def private_dir(prefix: str) -> Path:
    """A fresh 0755 directory under PRIVATE_BASE (never under a world-writable directory)."""
    PRIVATE_BASE.mkdir(mode=0o755, exist_ok=True)
    PRIVATE_BASE.chmod(0o755)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=PRIVATE_BASE))
    path.chmod(0o755)
    return path


def wait_for(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, timeout: float
) -> None:
    """Poll `ready()` until true; a daemon that exits first, or a timeout, is a PeerError."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise PeerError(f"{what} exited with {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise PeerError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Rspamd's workers under its main process)."""
    with contextlib.suppress(FileNotFoundError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A daemon in the foreground, in its own session, its output in `log` (never the bench's
    stdout: a daemon holding it open would hang whoever reads it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip


# --- the stacks -------------------------------------------------------------------------------


class PeerStack(ABC):
    """One peer: its daemons, the milter sockets Postfix uses, the key it signs with."""

    packages: tuple[str, ...] = ()

    def __init__(self, clamd_socket: Path) -> None:
        self.clamd_socket = clamd_socket
        self.directory: Path | None = None
        self.processes: list[subprocess.Popen[bytes]] = []
        self.dkim_records: dict[bytes, bytes] = {}  # b"sel._domainkey.example.com." -> TXT

    @property
    @abstractmethod
    def milter_spec(self) -> str:
        """The value of Postfix's smtpd_milters for this stack."""

    @abstractmethod
    def start(self) -> None:
        """Write the configuration and keys, start every daemon, return once they serve."""

    def add_key(self, selector: str, path: Path, owner: str) -> None:
        self.dkim_records[f"{selector}._domainkey.{DKIM_DOMAIN}.".encode()] = dkim_record(
            write_rsa_key(path, owner)
        )

    def pids(self) -> list[int]:
        """Every process of the stack, children included: whose CPU is the stack's."""
        pids = []
        for process in self.processes:
            if process.poll() is None:
                pids += [process.pid, *children(process.pid)]
        return pids

    def stop(self, keep: bool = False) -> None:
        for process in self.processes:
            stop_process_group(process)
        self.processes = []
        if self.directory is not None and not keep:
            shutil.rmtree(self.directory, ignore_errors=True)


class ClassicStack(PeerStack):
    """Postfix + clamav-milter (to the shared clamd) + OpenDKIM (RSA-2048), in that order."""

    packages = ("clamav-milter", "opendkim")

    def __init__(self, clamd_socket: Path) -> None:
        super().__init__(clamd_socket)
        self.clamav_socket = Path()
        self.opendkim_socket = Path()

    @property
    def milter_spec(self) -> str:
        # Postfix runs the milters in this order: scan first, then sign what is delivered.
        return f"unix:{self.clamav_socket}, unix:{self.opendkim_socket}"

    def start(self) -> None:
        ensure_packages(self.packages)
        directory = self.directory = private_dir("classic-")
        self.processes.append(self._start_clamav_milter(directory))
        self.processes.append(self._start_opendkim(directory))

    def _start_clamav_milter(self, directory: Path) -> subprocess.Popen[bytes]:
        work = owned_dir(directory / "clamav-milter", "clamav")
        owned_dir(work / "tmp", "clamav", 0o700)
        self.clamav_socket = work / "milter.sock"
        config = render(
            PEERS_DIR / "classic" / "clamav-milter.conf", work / "clamav-milter.conf",
            socket=str(self.clamav_socket), directory=str(work),
            clamd_socket=str(self.clamd_socket),
        )  # fmt: skip
        process = spawn(["/usr/sbin/clamav-milter", f"--config-file={config}"], work / "stdout.log")
        wait_for(self.clamav_socket.is_socket, process, "clamav-milter", 30)
        return process

    def _start_opendkim(self, directory: Path) -> subprocess.Popen[bytes]:
        work = owned_dir(directory / "opendkim", "opendkim")
        keys = owned_dir(work / "keys", "opendkim", 0o700)
        owned_dir(work / "run", "opendkim")
        key_file = keys / "opendkim.private"
        self.add_key("opendkim", key_file, "opendkim")
        self.opendkim_socket = work / "run" / "milter.sock"
        config = render(
            PEERS_DIR / "classic" / "opendkim.conf", work / "opendkim.conf",
            socket=str(self.opendkim_socket), directory=str(work), key_file=str(key_file),
        )  # fmt: skip
        process = spawn(["/usr/sbin/opendkim", "-f", "-x", str(config)], work / "stdout.log")
        wait_for(self.opendkim_socket.is_socket, process, "opendkim", 30)
        return process


class RspamdStack(PeerStack):
    """Rspamd 3.4 as a milter (rspamd_proxy, self_scan, 2 processes) with its stock rules, the
    antivirus module to the shared clamd and dkim_signing with RSA-2048 (bench/peers/rspamd/)."""

    packages = ("rspamd",)

    def __init__(self, clamd_socket: Path, cache: Path = RSPAMD_CACHE) -> None:
        super().__init__(clamd_socket)
        self.cache = cache
        self.socket = Path()

    @property
    def milter_spec(self) -> str:
        return f"unix:{self.socket}"

    @property
    def log(self) -> Path:
        assert self.directory is not None
        return self.directory / "work" / "rspamd.log"

    def start(self, timeout: float = 180.0) -> None:
        ensure_packages(self.packages)
        directory = self.directory = private_dir("rspamd-")
        # A copy of bench/peers/rspamd/ as LOCAL_CONFDIR: the repository may sit where _rspamd
        # cannot read (a clone under /root), and the copy is what this run used.
        config = shutil.copytree(PEERS_DIR / "rspamd", directory / "conf")
        work = owned_dir(directory / "work", "_rspamd")
        database = owned_dir(directory / "db", "_rspamd")
        keys = owned_dir(directory / "keys", "_rspamd", 0o700)
        self.add_key("rspamd", keys / "example.com.rspamd.key", "_rspamd")
        self.socket = work / "milter.sock"
        variables = {
            "CONFDIR": "/etc/rspamd",
            "LOCAL_CONFDIR": str(config),
            "RUNDIR": str(work),
            "LOGDIR": str(work),
            "DBDIR": str(database),
            "HS_CACHE_DIR": str(self._cache_dir()),
            "MILTER_SOCKET": str(self.socket),
            "CLAMD_SOCKET": str(self.clamd_socket),
            "DKIM_KEY": str(keys / "example.com.rspamd.key"),
        }
        argv = [
            "/usr/bin/rspamd", "-f", "-u", "_rspamd", "-g", "_rspamd",
            "-c", str(config / "rspamd.conf"),
            *(f"--var={name}={value}" for name, value in variables.items()),
        ]  # fmt: skip
        process = spawn(argv, directory / "stdout.log")
        self.processes.append(process)
        # Ready once the socket exists and the Hyperscan database is loaded: before that the
        # workers fall back to PCRE, and a cold start would be measured slower than Rspamd is.
        wait_for(self._ready, process, f"rspamd (log: {self.log})", timeout)

    def _ready(self) -> bool:
        if not self.socket.is_socket() or not self.log.exists():
            return False
        return "full hyperscan database of" in self.log.read_text(errors="replace")

    def _cache_dir(self) -> Path:
        """The persistent Hyperscan cache, owned by _rspamd. It sits in /var/tmp: refuse a path
        that someone else created there (a symlink or another owner) rather than follow it."""
        uid = pwd.getpwnam("_rspamd").pw_uid
        if not self.cache.exists():
            self.cache.mkdir(mode=0o755, parents=True)
            shutil.chown(self.cache, "_rspamd", "_rspamd")
        status = self.cache.lstat()
        if self.cache.is_symlink() or status.st_uid != uid:
            raise PeerError(f"{self.cache}: not a directory owned by _rspamd; remove it or pass"
                            " --rspamd-cache")  # fmt: skip
        return self.cache
