"""[milter]: where the milter listens, who may connect, how many workers run.

The user and group names are looked up in the I/O pass (config/resolve.py), not here.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from relayguard.config.declare import number, text

SOCKET_SPEC = re.compile(r"^(unix|local):(/.+)$|^(inet|inet6):(\d{1,5})@(.+)$")


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or the name localhost: a listener only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def milter_socket_problem(spec: str) -> str | None:
    """Why SPEC may not be the milter's socket, or None. Whoever can connect to the milter sends
    its own {auth_authen} macro: on a reachable address it would be a DKIM signing oracle."""
    found = SOCKET_SPEC.fullmatch(spec)
    if found is None:
        return f"{spec!r} is not 'unix:/absolute/path' or 'inet:PORT@HOST'"
    host = found.group(5)
    if host is not None and host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # libmilter's bracketed address literal, as in inet6:8891@[::1]
    if host is not None and not is_loopback_host(host):
        return (
            f"{spec!r}: the milter listens on a unix socket or a loopback address only"
            " (127.0.0.0/8, ::1, localhost)"
        )
    return None


def milter_socket(spec: str) -> str:
    problem = milter_socket_problem(spec)
    if problem:
        raise ValueError(problem)
    return spec


def socket_mode(text: str) -> int:
    """An octal mode such as '0660' that gives other users nothing."""
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ValueError(f"{text!r} is not an octal mode such as '0660'")
    if mode & 0o007:
        raise ValueError("must not grant access to other users (e.g. '0660')")
    return mode


@dataclass(frozen=True, slots=True)
class MilterSettings:
    socket: str = text("unix:/var/spool/postfix/relayguard/milter.sock", parse=milter_socket)
    socket_owner: str = text("")
    socket_group: str = text("")
    socket_mode: int = text("0660", parse=socket_mode)
    workers: int = number(2, 1, 64)
    timeout: int = number(60, 1, 3600)
    user: str = text("")
