"""A real authoritative DNS server (NSD, from Debian) on a loopback port, for tests.

    with DnsServer({"example.com": 'example.com. TXT "v=spf1 -all"'}) as dns:
        resolver = dns.resolver()           # dnspython, pointed at this server only
        dns.update("example.com", new_text)  # rewritten, reloaded, served when this returns

Zone text is ordinary zone-file text for the origin (``$ORIGIN`` is set to it, relative names
work). When the text has no SOA record, one is added with a serial this class manages, plus an NS
record, so a test only writes the records it cares about; ``update`` raises the serial and waits
until NSD serves it. NSD runs in the foreground as a child of the test process, in a 0755
temporary directory, its output in a file, and is stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Self

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import dns.resolver

from tests.support.daemon import Daemon

NSD = "/usr/sbin/nsd"
NSD_CHECKCONF = "/usr/sbin/nsd-checkconf"
LOOPBACK = "127.0.0.1"
SOA_RECORD = re.compile(r"^\S*\s+(?:\d+\s+)?(?:IN\s+)?SOA\s", re.MULTILINE | re.IGNORECASE)


class DnsServerError(RuntimeError):
    """NSD failed to start, reload or answer."""


def _free_port() -> int:
    """A port free for both UDP and TCP on loopback (NSD listens on both)."""
    import socket

    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
            return port
    raise DnsServerError("no free port on loopback for both UDP and TCP")


def _session_alive(sid: int) -> bool:
    """Whether a live (non-zombie) process of session `sid` remains: NSD's server children
    exit shortly after their parent."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            return True
    return False


def _origin(name: str) -> str:
    return name.rstrip(".").lower() + "."


class DnsServer(Daemon):
    """NSD serving `zones` (origin -> zone-file text) on ``127.0.0.1:port``."""

    def __init__(self, zones: Mapping[str, str], *, directory: Path | None = None) -> None:
        self._own_directory = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="relayguard-dns-"))
        self.directory.chmod(0o755)
        self.host = LOOPBACK
        self.port = _free_port()
        self.zones: dict[str, str] = {_origin(o): text for o, text in zones.items()}
        self._serials: dict[str, int] = dict.fromkeys(self.zones, 1)
        self.conf_file = self.directory / "nsd.conf"
        self.log_file = self.directory / "nsd.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    # --- files ------------------------------------------------------------------------------

    def zone_file(self, origin: str) -> Path:
        return self.directory / f"{_origin(origin)}zone"

    def _zone_text(self, origin: str) -> str:
        text = self.zones[origin]
        header = f"$ORIGIN {origin}\n$TTL 60\n"
        if not SOA_RECORD.search(text):
            header += (
                f"@ IN SOA ns.{origin} hostmaster.{origin} {self._serials[origin]} 3600 600"
                f" 86400 60\n@ IN NS ns.{origin}\n"
            )
        return header + text.rstrip("\n") + "\n"

    def _write_zones(self) -> None:
        for origin in self.zones:
            self.zone_file(origin).write_text(self._zone_text(origin))

    def _write_conf(self) -> None:
        d = self.directory
        zones = "".join(
            f'zone:\n\tname: "{origin}"\n\tzonefile: "{self.zone_file(origin)}"\n'
            for origin in self.zones
        )
        self.conf_file.write_text(
            "server:\n"
            f"\tip-address: {self.host}@{self.port}\n"
            f"\tport: {self.port}\n"
            '\tusername: ""\n'
            '\tchroot: ""\n'
            f'\tzonesdir: "{d}"\n'
            '\tdatabase: ""\n'
            f'\tzonelistfile: "{d}/zone.list"\n'
            f'\txfrdfile: "{d}/xfrd.state"\n'
            f'\txfrdir: "{d}"\n'
            f'\tpidfile: "{d}/nsd.pid"\n'
            f'\tlogfile: "{self.log_file}"\n'
            "\tserver-count: 1\n"
            "\tverbosity: 1\n"
            "\thide-version: yes\n"
            "remote-control:\n"
            "\tcontrol-enable: no\n" + zones
        )

    # --- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        self._write_zones()
        self._write_conf()
        checked = subprocess.run(
            [NSD_CHECKCONF, str(self.conf_file)],
            capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if checked.returncode != 0:
            raise DnsServerError(f"nsd-checkconf: {checked.stdout}{checked.stderr}")
        self._output = (self.directory / "nsd.stdout").open("ab")
        self._process = subprocess.Popen(
            [NSD, "-d", "-c", str(self.conf_file)],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            for origin in self.zones:
                self._wait_serving(origin, None, timeout)
        except DnsServerError:
            # __exit__ does not run when __enter__ raises: stop what was started here.
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # NSD's main process stops its server children on SIGTERM; wait for the session.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _session_alive(process.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _session_alive(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        if self._output is not None:
            self._output.close()
            self._output = None
        if self._own_directory and not os.environ.get("RELAYGUARD_KEEP_TMP"):
            shutil.rmtree(self.directory, ignore_errors=True)

    # --- changing zones while running -------------------------------------------------------

    def update(self, origin: str, text: str, timeout: float = 10.0) -> None:
        """Replace one zone's records; returns once NSD serves the new version.

        A new origin means a new zone: NSD is restarted on the same port with the new
        configuration (NSD only learns zones from its configuration)."""
        key = _origin(origin)
        if key not in self.zones:
            self.zones[key] = text
            self._serials[key] = 1
            self.stop_process_only()
            self.start(timeout)
            return
        self.zones[key] = text
        self._serials[key] += 1
        self.zone_file(key).write_text(self._zone_text(key))
        assert self._process is not None
        # NSD 4: SIGHUP re-reads zone files that changed on disk.
        os.kill(self._process.pid, signal.SIGHUP)
        wanted = None if SOA_RECORD.search(text) else self._serials[key]
        self._wait_serving(key, wanted, timeout)

    def stop_process_only(self) -> None:
        own, self._own_directory = self._own_directory, False
        try:
            self.stop()
        finally:
            self._own_directory = own

    # --- asking it --------------------------------------------------------------------------

    def resolver(self) -> dns.resolver.Resolver:
        """A dnspython resolver that asks this server and nothing else."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.host]
        resolver.port = self.port
        resolver.lifetime = 5.0
        resolver.timeout = 2.0
        resolver.cache = None
        return resolver

    def serial(self, origin: str) -> int | None:
        """The SOA serial NSD serves for `origin`, or None when it does not answer for it."""
        query = dns.message.make_query(_origin(origin), dns.rdatatype.SOA)
        try:
            answer = dns.query.udp(query, self.host, port=self.port, timeout=1.0)
        except (dns.exception.Timeout, OSError):
            return None
        for rrset in answer.answer:
            for rdata in rrset:
                return int(rdata.serial)  # type: ignore[attr-defined]
        return None

    def _wait_serving(self, origin: str, serial: int | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._process is None or self._process.poll() is not None:
                raise DnsServerError(f"nsd exited:\n{self.log_text()}")
            served = self.serial(origin)
            if served is not None and (serial is None or served == serial):
                return
            if time.monotonic() > deadline:
                raise DnsServerError(
                    f"nsd does not serve {origin} (serial {serial}) after {timeout}s:\n"
                    f"{self.log_text()}"
                )
            time.sleep(0.05)

    def log_text(self) -> str:
        parts = []
        for path in (self.log_file, self.directory / "nsd.stdout"):
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)
