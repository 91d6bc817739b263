"""[[outbound_paths]]: Postfix transports with their own sending address, HELO name or relayhost
(transforms/outbound.py, docs/outbound.md).

The values are written into Postfix's main.cf and master.cf (postfix/*.j2, from the same list in
the Ansible role), so each is held to a strict shape: no character that Postfix's configuration
or an inline pcre: table would read as syntax.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from relayguard.config.declare import Place, text

if TYPE_CHECKING:
    from relayguard.config.sources import Source

# A master.cf service name suffix (relayguard-path-NAME) and a literal in a pcre: pattern.
PATH_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
# Postfix's next hop: host, host:port, [host] or [host]:port (brackets: no MX lookup).
RELAYHOST = re.compile(r"^(\[[A-Za-z0-9.:-]{1,253}\]|[A-Za-z0-9.-]{1,253})(:\d{1,5})?$")


def path_name(name: str) -> str:
    if not name:
        raise ValueError("missing: every outbound path needs a name")
    if not PATH_NAME.fullmatch(name):
        raise ValueError(f"{name!r} must be 1-32 of a-z 0-9 - (letter/digit first)")
    return name


def address(text: str) -> str:
    if text:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address") from None
    return text


def hostname(text: str) -> str:
    if text and not HOSTNAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a host name")
    return text


def relayhost(text: str) -> str:
    if text and not RELAYHOST.fullmatch(text):
        raise ValueError(f"{text!r} is not a next hop such as '[smtp.example.net]:587'")
    return text


@dataclass(frozen=True, slots=True)
class OutboundPath:
    name: str = text("", parse=path_name)
    bind_address: str = text("", parse=address)  # Postfix smtp_bind_address (or ...6)
    helo_name: str = text("", parse=hostname)  # Postfix smtp_helo_name
    relayhost: str = text("", parse=relayhost)  # "": the relay's own relayhost

    def verify(self, given: Mapping[str, Any], at: Place) -> None:
        if not (self.bind_address or self.helo_name or self.relayhost):
            at.key("name").problem(
                f"path {self.name!r} sets none of bind_address, helo_name, relayhost:"
                " it would be the default path"
            )


def link_paths(
    paths: tuple[OutboundPath, ...], sources: tuple[Source, ...], root: Place
) -> Mapping[str, OutboundPath]:
    """The paths by name; every source's outbound_path must name one."""
    named: dict[str, OutboundPath] = {}
    for index, path in enumerate(paths):
        if path.name in named:
            root.key("outbound_paths").item(index).key("name").problem(
                f"duplicate outbound path {path.name!r}"
            )
        named.setdefault(path.name, path)
    for index, source in enumerate(sources):
        if source.outbound_path and source.outbound_path not in named:
            root.key("sources").item(index).key("outbound_path").problem(
                f"no [[outbound_paths]] entry named {source.outbound_path!r}"
            )
    return MappingProxyType(named)
