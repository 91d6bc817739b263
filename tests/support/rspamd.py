"""The real Rspamd (Debian's rspamd 3.4) with one normal worker on a loopback port, for tests.

The configuration is tests/support/rspamd/: the stock rules and scores, the modules that need the
internet off. Rspamd runs in the foreground as a child of the test process, as user _rspamd (it
refuses to run as root), its output in a file, stopped by PID.

A cold start compiles the TLD suffixes and Hyperscan databases (about 15-20 s here); the compiled
files are kept in CACHE (/var/tmp) between runs, after which a start takes about a second. Use the
session-scoped ``rspamd`` fixture (tests/conftest.py) rather than starting one per test.

    with Rspamd(make_dir("rspamd-")) as rspamd:
        rspamd.url          # "http://127.0.0.1:PORT", the [spam] url setting
        rspamd.stop(); rspamd.start()   # simulate an outage and the return
"""

from __future__ import annotations

import http.client
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import Self

from tests.support.daemon import Daemon, stop_process_group
from tests.support.stack import LOOPBACK, free_port

RSPAMD = "/usr/bin/rspamd"
USER = "_rspamd"
CONFIG = Path(__file__).parent / "rspamd"
# Kept between runs; its owner is checked in cache_dir().
CACHE = Path("/var/tmp/relayguard-test-rspamd")
# The GTUBE test string (Rspamd's GTUBE symbol): every spam filter refuses it by design.
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class RspamdError(RuntimeError):
    """Rspamd failed to start or answer."""


def cache_dir(path: Path = CACHE) -> Path:
    """The persistent Hyperscan cache, owned by _rspamd. It sits in /var/tmp: refuse a path that
    someone else created there (a symlink, another owner) rather than follow it."""
    if not path.exists():
        path.mkdir(mode=0o755, parents=True)
        shutil.chown(path, USER, USER)
    if path.is_symlink() or path.lstat().st_uid != pwd.getpwnam(USER).pw_uid:
        raise RspamdError(f"{path}: not a directory owned by {USER}; remove it")
    return path


def owned_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.chown(path, USER, USER)
    path.chmod(0o755)
    return path


class Rspamd(Daemon):
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.work = directory / "work"
        self.log_path = self.work / "rspamd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def argv(self) -> list[str]:
        # A copy of the configuration: the repository may sit where _rspamd cannot read.
        config = self.directory / "conf"
        if not config.exists():
            shutil.copytree(CONFIG, config)
        variables = {
            "CONFDIR": "/etc/rspamd",
            "LOCAL_CONFDIR": str(config),
            "RUNDIR": str(owned_dir(self.work)),
            "LOGDIR": str(self.work),
            "DBDIR": str(owned_dir(self.directory / "db")),
            "HS_CACHE_DIR": str(cache_dir()),
            "BIND": f"{LOOPBACK}:{self.port}",
        }
        return [
            RSPAMD, "-f", "-u", USER, "-g", USER, "-c", str(config / "rspamd.conf"),
            *(f"--var={name}={value}" for name, value in variables.items()),
        ]  # fmt: skip

    def start(self, timeout: float = 120.0) -> Self:
        argv = self.argv()
        with (self.directory / "stdout.log").open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RspamdError(f"rspamd did not start:\n{self.log_text()[-4000:]}")
            time.sleep(0.1)
        return self

    def ping(self) -> bool:
        connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=2)
        try:
            connection.request("GET", "/ping")
            return connection.getresponse().read().strip() == b"pong"
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def stop(self, timeout: float = 20.0) -> None:
        process, self.process = self.process, None
        stop_process_group(process, timeout)

    def log_text(self) -> str:
        parts = []
        for path in (self.directory / "stdout.log", self.log_path):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)
