"""A private redis-server on a loopback port for the state tests: no persistence, own directory."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

from tests.support.daemon import Daemon
from tests.support.stack import LOOPBACK, free_ports


class RedisServer(Daemon):
    """`redis-server` in the foreground, output to a file, stopped by PID; restartable on the
    same port (to test a backend that goes away and comes back); with `password`, it requires
    AUTH as a shared Redis in production does."""

    def __init__(self, directory: Path, port: int | None = None, password: str = "") -> None:
        self.directory = directory
        self.port = port or free_ports(1)[0]
        self.password = password
        self.log = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}{LOOPBACK}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Self:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
                 "--appendonly", "no", "--dir", str(self.directory), "--daemonize", "no",
                 "--protected-mode", "yes",
                 *(["--requirepass", self.password] if self.password else [])],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=1) as sock:
                    auth = f"AUTH {self.password}\r\n".encode() if self.password else b""
                    sock.sendall(auth + b"PING\r\n")
                    if b"+PONG" in _read_replies(sock, 1 + bool(auth)):
                        return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def _read_replies(sock: socket.socket, count: int) -> bytes:
    """Read until `count` reply lines arrived (or the server closed the connection)."""
    data = b""
    while data.count(b"\r\n") < count:
        chunk = sock.recv(64)
        if not chunk:
            break
        data += chunk
    return data
