"""Fixtures that run the real relay stack: Postfix + Dovecot SASL + an SMTP sink.

``postfix_stack`` is a factory: each call renders ``postfix/*.j2`` into a
fresh instance directory, runs ``postfix check`` and ``postfix start``, and
returns a :class:`RelayStack` with the ports and helpers. Every instance it
started is stopped at teardown.

Set ``RELAYGUARD_KEEP_TMP=1`` to keep the instance directories (configs,
logs, queues) after the run for inspection.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.milter_process import MilterProcess
from tests.support.stack import (
    LOOPBACK,
    DovecotSasl,
    PostfixInstance,
    RelayStack,
    SmtpSink,
    StackFactory,
    TlsFiles,
    free_ports,
    make_dir,
    make_self_signed,
    milter_spec,
    postfix_settings,
)

DEVICE_USER = "printer-1"
DEVICE_PASSWORD = "correct horse battery staple"

__all__ = ["DEVICE_PASSWORD", "DEVICE_USER", "StackFactory"]


@pytest.fixture(scope="module")
def e2e_dir() -> Iterator[Path]:
    """A 0755 directory under /tmp for this module's daemons (pytest's tmp_path is 0700)."""
    path = make_dir("relayguard-e2e-")
    yield path
    if not os.environ.get("RELAYGUARD_KEEP_TMP"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_files(e2e_dir: Path) -> TlsFiles:
    """The relay's self-signed server certificate and key."""
    return make_self_signed(make_dir("tls-", e2e_dir))


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    """The smarthost stand-in: every message the relay delivers lands here."""
    with SmtpSink() as server:
        yield server


@pytest.fixture(scope="module")
def dovecot(e2e_dir: Path) -> Iterator[DovecotSasl]:
    """Dovecot SASL with one device account: ``DEVICE_USER`` / ``DEVICE_PASSWORD``."""
    server = DovecotSasl(make_dir("dovecot-", e2e_dir), {DEVICE_USER: DEVICE_PASSWORD})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postfix_stack(
    e2e_dir: Path, tls_files: TlsFiles, sink: SmtpSink, dovecot: DovecotSasl
) -> Iterator[StackFactory]:
    """Factory: ``postfix_stack(milter_socket=None, *, listen_host=LOOPBACK, **settings)``.

    ``milter_socket`` is a path (``unix:`` is added) or a full Postfix milter
    spec; None means no milter. ``settings`` override keys of the template
    mapping ``postfix`` (e.g. ``mynetworks=["127.0.0.1/32"]``).
    """
    started: list[PostfixInstance] = []

    def start(
        milter_socket: str | Path | None = None,
        *,
        listen_host: str = LOOPBACK,
        **settings: Any,
    ) -> RelayStack:
        base_dir = make_dir("postfix-", e2e_dir)
        smtp_port, submission_port, smtps_port = free_ports(3, listen_host)
        mapping = postfix_settings(
            base_dir,
            tls=tls_files,
            relayhost=sink.relayhost,
            ports={"smtp": smtp_port, "submission": submission_port, "smtps": smtps_port},
            listen_host=listen_host,
            milter_socket=milter_spec(milter_socket),
            **settings,
        )
        instance = PostfixInstance(mapping)
        instance.write_config()
        instance.check()
        _link_sasl_socket(instance, dovecot)
        started.append(instance)
        instance.start()
        return RelayStack(
            postfix=instance,
            sink=sink,
            base_dir=base_dir,
            host=listen_host,
            smtp_port=smtp_port,
            submission_port=submission_port,
            smtps_port=smtps_port,
            tls=tls_files,
            username=DEVICE_USER,
            password=DEVICE_PASSWORD,
        )

    try:
        yield start
    finally:
        for instance in started:
            instance.stop()


def _link_sasl_socket(instance: PostfixInstance, dovecot: DovecotSasl) -> None:
    """Make ``private/auth`` of this instance reach the module's Dovecot.

    In production Dovecot's listener *is* ``QUEUE_DIR/private/auth``. Here one
    Dovecot serves many short-lived Postfix instances, so each instance gets a
    symlink there, owned like the socket would be (``postfix check`` warns
    about anything in ``private/`` not owned by the mail owner).
    """
    link = instance.queue_directory / "private" / "auth"
    link.symlink_to(dovecot.socket_path)
    owner = pwd.getpwnam(instance.settings["mail_owner"])
    os.lchown(link, owner.pw_uid, owner.pw_gid)


# --- the relay with the real relayguard milter ------------------------------------------------

CONFIG = """
[relay]
mode = "{mode}"
internal_domains = ["example.com"]
audit_log = "{audit}"

[milter]
workers = 2
socket_group = "postfix"

[[sources]]
name = "printer"
sasl_users = ["{user}"]
senders = ["scanner@example.com"]

[[sources]]
name = "legacy-ups"
networks = ["127.0.0.1/32"]
senders = ["ups@example.com"]

[[sources]]
name = "erp"
client_cert_subjects = ["CN=erp.devices.test"]
senders = ["erp@example.com"]
"""


class Relay:
    """The running stack plus the milter feeding it, and what they recorded."""

    def __init__(self, stack: RelayStack, milter: MilterProcess, audit: Path) -> None:
        self.stack = stack
        self.milter = milter
        self.audit = audit

    def audit_lines(self) -> list[dict[str, object]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def assert_nothing_delivered(self) -> None:
        """Nothing was accepted: Postfix writes its queue file before it answers 250 and removes
        it only after the sink answered, so with the queue empty (listed twice: one listing can
        miss a file being moved) a wrongly accepted message would already be at the sink."""
        assert self.stack.postfix.queue() == []
        assert self.stack.postfix.queue() == []
        assert self.stack.sink.messages == []


@pytest.fixture
def relay(e2e_dir: Path, postfix_stack: StackFactory) -> Iterator[Callable[..., Relay]]:
    milters: list[MilterProcess] = []

    def start(mode: str = "enforce", extra_config: str = "", **settings: object) -> Relay:
        """`extra_config` is appended to the TOML (more tables, e.g. a DLP profile)."""
        directory = make_dir("milter-", e2e_dir)
        audit = directory / "audit.jsonl"
        config = directory / "relayguard.toml"
        config.write_text(CONFIG.format(mode=mode, audit=audit, user=DEVICE_USER) + extra_config)
        milter = MilterProcess(config, directory / "milter.sock", directory / "milter.log")
        milters.append(milter.start())
        settings.setdefault("mynetworks", ["127.0.0.1/32"])
        stack = postfix_stack(milter.socket_path, **settings)
        return Relay(stack, milter, audit)

    yield start
    for milter in milters:
        milter.stop()
