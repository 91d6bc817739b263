"""The real clamd (Debian's clamav-daemon) on a unix socket in a temp dir, for tests.

No signatures can be downloaded here, so the test generates its database: an ``.hdb`` line with
the MD5 and size of the EICAR test file (found when EICAR is a file of its own: an attachment, a
zip member) and an ``.ndb`` body signature (found when EICAR sits inside a larger text part). clamd
runs in the foreground as a child of the test process, its output in a file, stopped by PID.

    with Clamd(make_dir("clamd-")) as clamd:
        clamd.spec          # "unix:/tmp/.../clamd.sock", the [clamav] socket setting
        clamd.stop_process_only(); clamd.start()   # simulate an outage and the return
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

from tests.support.daemon import Daemon, stop_process_group

CLAMD = "/usr/sbin/clamd"
# The EICAR anti-virus test file (eicar.org): harmless, detected by every scanner by design.
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE = "Eicar-Test-Signature"


class ClamdError(RuntimeError):
    """clamd failed to start or answer."""


def write_database(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5(EICAR).hexdigest()  # noqa: S324  (the .hdb format is MD5 by definition)
    (directory / "relayguard-test.hdb").write_text(f"{digest}:{len(EICAR)}:{SIGNATURE}\n")
    # Name:TargetType:Offset:HexSignature, target 0 = any file, offset * = anywhere.
    (directory / "relayguard-test.ndb").write_text(f"{SIGNATURE}-Body:0:*:{EICAR.hex()}\n")


class Clamd(Daemon):
    def __init__(self, directory: Path, stream_max_length: str = "64M") -> None:
        self.directory = directory
        self.socket_path = directory / "clamd.sock"
        self.config_path = directory / "clamd.conf"
        self.log_path = directory / "clamd.log"
        self.database = directory / "db"
        self.stream_max_length = stream_max_length
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def spec(self) -> str:
        return f"unix:{self.socket_path}"

    def write_config(self) -> None:
        write_database(self.database)
        tmp = self.directory / "tmp"
        tmp.mkdir(exist_ok=True)
        self.config_path.write_text(
            "\n".join(
                [
                    "Foreground yes",
                    f"LocalSocket {self.socket_path}",
                    "LocalSocketMode 660",
                    f"DatabaseDirectory {self.database}",
                    f"TemporaryDirectory {tmp}",
                    f"LogFile {self.directory / 'clamd-own.log'}",
                    f"PidFile {self.directory / 'clamd.pid'}",
                    "User root",
                    f"StreamMaxLength {self.stream_max_length}",
                    "MaxScanSize 200M",
                    "MaxFileSize 100M",
                    "ScanMail yes",
                    "ScanArchive yes",
                    # As the appliance runs it (the relayguard_clamav role): what clamd cannot
                    # look inside is a Heuristics.* FOUND, never an OK.
                    "AlertExceedsMax yes",
                    "AlertEncrypted yes",
                    "AlertEncryptedArchive yes",
                    "AlertEncryptedDoc yes",
                    "Bytecode no",
                    "",
                ]
            )
        )

    def start(self, timeout: float = 60.0) -> Self:
        if not self.config_path.exists():
            self.write_config()
        self.socket_path.unlink(missing_ok=True)
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [CLAMD, "-c", str(self.config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ClamdError(f"clamd did not start:\n{self.log_text()}")
            time.sleep(0.1)
        return self

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(2)
                conn.connect(str(self.socket_path))
                conn.sendall(b"zPING\0")
                return conn.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 20.0) -> None:
        process, self.process = self.process, None
        stop_process_group(process, timeout)

    def kill(self) -> None:
        """Kill clamd abruptly, as a crash would; its socket file stays behind."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def log_text(self) -> str:
        parts = []
        for path in (self.log_path, self.directory / "clamd-own.log"):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)
