"""[urls] and [[url_blocklists]]: URL hosts checked against DNS block lists."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from relayguard.config.declare import CONTENT_ACTIONS, FAILURE_ACTIONS, actions, number, text, texts
from relayguard.core.verdict import Action

ZONE = re.compile(
    r"^(?=.{1,200}$)([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\.?$"
)


def zone(text: str) -> str:
    name = text.rstrip(".").lower()
    if not ZONE.fullmatch(name):
        raise ValueError(f"{name!r} is not a DNS zone name")
    return name


def answer_code(code: str) -> str:
    try:
        return str(ipaddress.IPv4Address(code))
    except ValueError:
        raise ValueError(f"{code!r} is not an IPv4 address") from None


def nameserver(server: str) -> str:
    try:
        return str(ipaddress.ip_address(server))
    except ValueError:
        raise ValueError(f"{server!r} is not an IP address") from None


@dataclass(frozen=True, slots=True)
class Blocklist:
    zone: str = text("", parse=zone)
    action: Action = actions("reject", CONTENT_ACTIONS)
    # Answers that count; empty = any 127.0.0.0/8.
    codes: frozenset[str] = texts(each=answer_code, parse=frozenset)


@dataclass(frozen=True, slots=True)
class UrlSettings:
    nameservers: tuple[str, ...] = texts(each=nameserver)
    port: int = number(53, 1, 65535)
    timeout: int = number(2, 1, 60)
    failure_action: Action = actions("tag", FAILURE_ACTIONS)
    max_domains: int = number(20, 1, 1000)
    blocklists: tuple[Blocklist, ...] = ()  # the [[url_blocklists]], joined by config/reader.py
