"""DKIM signing on parsed messages: the OpenSSL RSA path, the header list, the transform."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from unittest import mock

import dkim
import dkim.crypto
import pytest
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from relayguard.checks import Subject
from relayguard.config import Config, load_config
from relayguard.core.message import Client, Envelope, message_from_bytes
from relayguard.core.verdict import Action, Decision, Mode, Verdict
from relayguard.dkim import canonical as dkim_canonical
from relayguard.dkim import keys as dkim_keys
from relayguard.dkim import openssl as dkim_openssl
from relayguard.dkim import signer as dkim_signer
from relayguard.engine.runtime import prepare_process
from relayguard.parsing.rfc5322 import split_header_block
from relayguard.transforms import signing

pytestmark = pytest.mark.unit

MESSAGE = (
    b"From: Scanner <scanner@example.com>\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: scan\r\n\tfolded\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Scanned document.\r\n"
)

CONFIG = """
[relay]
trace_header = "X-Relayguard"
[dkim]
key_directory = "{keys}"
domains = ["example.com"]
missing_key = "{missing}"
[[sources]]
name = "printer"
sasl_users = ["printer"]
senders = ["@example.com", "@sub.example.com", "@other.test"]
"""


@pytest.fixture(scope="module", autouse=True)
def openssl_rsa() -> None:
    """Sign as a worker does: it installs the OpenSSL RSA path at start (importing does not)."""
    prepare_process()


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    dkim_keys.generate(directory, "example.com", "rsa1", "rsa")
    dkim_keys.generate(directory, "example.com", "ed1", "ed25519")
    return directory


@pytest.fixture
def config(tmp_path: Path, key_dir: Path) -> Callable[..., Config]:
    def make(missing: str = "refuse") -> Config:
        path = tmp_path / "relayguard.toml"
        path.write_text(CONFIG.format(keys=key_dir, missing=missing))
        return load_config(path)

    return make


def dnsfunc(keys: tuple[dkim_keys.SigningKey, ...]) -> Callable[..., bytes | None]:
    records = {
        f"{dkim_keys.record_name(k.domain, k.selector)}.".encode(): dkim_keys.record_text(
            k
        ).encode()
        for k in keys
    }
    return lambda name, timeout=5: records.get(name)


# What Transaction carries from MAIL FROM into end of data for an identified, allowed sender.
MAIL_STAGE_ACCEPTED = (Verdict("source", Action.ACCEPT), Verdict("envelope_sender", Action.ACCEPT))


def subject_for(config: Config, raw: bytes = MESSAGE) -> Subject:
    envelope = Envelope(Client(sasl_user="printer"), "scanner@example.com", ("alice@example.com",))
    return Subject(config, config.sources[0], envelope, message=message_from_bytes(raw, envelope))


def signer(raw: bytes = MESSAGE) -> dkim_signer.PreparedMessage:
    headers, offset = split_header_block(raw)
    return dkim_signer.prepare([(name.encode(), value) for name, value in headers], raw[offset:])


def dkimpy_sign(
    raw: bytes, keys: Sequence[dkim_keys.SigningKey], include: Sequence[bytes]
) -> list[tuple[str, str]]:
    """The reference: dkimpy's own DKIM.sign over the whole message, one call per key, in the
    (name, value) form signing.sign returns."""
    fields = []
    for key in keys:
        header = dkim.DKIM(raw, linesep=b"\n").sign(
            key.selector.encode(),
            key.domain.encode(),
            key.private,
            signature_algorithm=key.dkim_algorithm,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(include),
            length=False,
        )
        name, _, value = header.decode("ascii").partition(":")
        fields.append((name, value.strip().replace("\n ", "\n\t").rstrip("\n")))
    return fields


def accepted() -> Decision:
    return Decision(Action.ACCEPT, Action.ACCEPT, Mode.ENFORCE, ())


def delivered(subject: Subject, decision: Decision) -> bytes:
    """The message as Postfix delivers it: added headers appended in order."""
    headers = signing.delivered_headers(subject, decision)
    assert subject.message is not None
    return dkim_signer.render(headers, subject.message.body)


# --- RSA through OpenSSL -------------------------------------------------------------------------


def test_openssl_rsa_is_byte_identical_to_dkimpy_pure_python(key_dir: Path) -> None:
    rsa_key = next(k for k in dkim_keys.load_keys(key_dir, "example.com") if k.algorithm == "rsa")
    key_dict = dkim.crypto.parse_pem_private_key(rsa_key.private)
    for data in (b"", b"one message", bytes(range(256)) * 40):
        expected = dkim_openssl.PURE_PYTHON_SIGN(dkim_openssl.sha256(data), key_dict)
        assert dkim_openssl.rsassa_pkcs1_v1_5_sign(dkim_openssl.sha256(data), key_dict) == expected


def test_whole_signature_is_identical_with_either_rsa_path(key_dir: Path) -> None:
    rsa_key = next(k for k in dkim_keys.load_keys(key_dir, "example.com") if k.algorithm == "rsa")
    include = signing.header_list([(b"from", b"x")])
    with mock.patch("time.time", return_value=1_800_000_000):
        fast = dkim_signer.sign(signer(), (rsa_key,), include)
        dkim_openssl.uninstall()
        try:
            slow = dkim_signer.sign(signer(), (rsa_key,), include)
        finally:
            dkim_openssl.install()
    assert fast == slow


def test_dkimpy_signs_through_the_openssl_function(key_dir: Path) -> None:
    """The path in use: dkimpy's module-level name is ours, and signing really calls it."""
    assert dkim_openssl.installed()
    assert dkim.RSASSA_PKCS1_v1_5_sign is dkim_openssl.rsassa_pkcs1_v1_5_sign
    rsa_key = next(k for k in dkim_keys.load_keys(key_dir, "example.com") if k.algorithm == "rsa")
    with (
        mock.patch.object(
            dkim, "RSASSA_PKCS1_v1_5_sign", wraps=dkim_openssl.rsassa_pkcs1_v1_5_sign
        ) as spy,
        mock.patch.object(dkim.crypto, "rsa_decrypt", side_effect=AssertionError("pure Python")),
    ):
        dkim_signer.sign(signer(), (rsa_key,), signing.header_list([]))
    assert spy.call_count == 1


WORKER_START = """
import sys
from pathlib import Path
from relayguard.config import load_config
from relayguard.daemon import server
from relayguard.dkim import openssl
from relayguard.transforms import signing

print("after import:", openssl.installed())
seen = []
server.run_worker = lambda holder, gauge: seen.append(openssl.installed())
supervisor = server.Supervisor(Path(sys.argv[1]), load_config(Path(sys.argv[1])), "unix:/unused")
supervisor.flush.value = True  # no traffic to wait for
supervisor._worker(0)
print("in the worker:", seen[0])
"""


def test_importing_installs_nothing_and_a_worker_installs_at_start(
    config: Callable[..., Config],
) -> None:
    """A fresh interpreter: importing signing leaves dkimpy's own RSA in place; a worker
    process (daemon/server.py) puts OpenSSL's in place before it takes any connection."""
    result = subprocess.run(
        [sys.executable, "-c", WORKER_START, str(config().path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.splitlines() == ["after import: False", "in the worker: True"]


def test_a_key_is_parsed_once_however_many_messages_it_signs(key_dir: Path) -> None:
    """dkimpy reads the PEM on every signature; the installed cache makes that once per key."""
    rsa_key = next(k for k in dkim_keys.load_keys(key_dir, "example.com") if k.algorithm == "rsa")
    dkim_openssl.cached_pem_parse.cache_clear()
    for _ in range(3):
        dkim_signer.sign(signer(), (rsa_key,), signing.header_list([]))
    info = dkim_openssl.cached_pem_parse.cache_info()
    assert (info.misses, info.hits) == (1, 2)


@pytest.mark.parametrize(
    "body",
    [
        b"Scanned document.\r\n",
        b"",
        b"\r\n\r\n",
        b"bare\nline feeds\n",
        b"mixed\r\nand\nbare\r\r\n  trailing  \t\r\n\r\n\r\n",
    ],
)
def test_signer_sees_the_body_as_dkimpy_parsing_the_whole_message_would(
    key_dir: Path, body: bytes
) -> None:
    """signer_for skips rendering and re-splitting a (possibly 40 MB) message: same signature."""
    keys = dkim_keys.load_keys(key_dir, "example.com")
    head = MESSAGE[: MESSAGE.index(b"\r\n\r\n") + 4]
    include = signing.header_list([(b"from", b"x")])
    with mock.patch("time.time", return_value=1_800_000_000):
        ours = dkim_signer.sign(signer(head + body), keys, include)
        whole = dkimpy_sign(head + body, keys, include)
    assert ours == whole


# Bodies and header values from the characters canonicalisation cares about: WSP runs, line ends
# of every kind (CRLF, bare LF, lone CR), empty lines at the end, and some text.
BODY_BYTES = st.lists(
    st.sampled_from([b" ", b"\t", b"\r\n", b"\n", b"\r", b"a", b"Z", b"0", b"\xe9", b"  \t "]),
    max_size=60,
).map(b"".join)
HEADER_VALUE = st.lists(
    st.sampled_from([b" ", b"\t", b"x", b"Y", b"1", b"\r\n\t", b"\r\n "]), min_size=1, max_size=20
).map(lambda parts: b"v" + b"".join(parts))


@settings(max_examples=150, deadline=None)
@given(
    body=BODY_BYTES,
    subject=HEADER_VALUE,
    extra=st.lists(st.sampled_from(["To", "Cc", "Subject", "Reply-To"]), max_size=4),
)
def test_bh_and_b_equal_dkimpy_on_random_bodies_and_headers(
    key_dir: Path, body: bytes, subject: bytes, extra: list[str]
) -> None:
    """The shared relaxed body hash (dkim/canonical.py) and the signature built from it: the very
    bytes dkimpy's own sign writes for the same message, both algorithms."""
    keys = dkim_keys.load_keys(key_dir, "example.com")
    head = MESSAGE[: MESSAGE.index(b"\r\n\r\n") + 2]
    head += b"".join(name.encode() + b": " + subject + b"\r\n" for name in extra)
    raw = head + b"\r\n" + body
    include = signing.header_list(
        [(name.encode(), b"") for name in ("From", "To", "Subject", "Date", *extra)]
    )
    with mock.patch("time.time", return_value=1_800_000_000):
        assert dkim_signer.sign(signer(raw), keys, include) == dkimpy_sign(raw, keys, include)


@pytest.mark.parametrize(
    ("body", "canonical"),
    [
        (b" " * 100_000 + b"x\r\n", b" x\r\n"),
        (b"\r\n" * 70_000, b""),
        (b"a" + b"\t \t  " * 20_000 + b"\r\n\r\n", b"a\r\n"),
        (b"a" + b"\t \t  " * 20_000 + b"b", b"a b\r\n"),
    ],
)
def test_body_hash_of_long_runs(body: bytes, canonical: bytes) -> None:
    """Long WSP runs (past the halving passes) and many trailing empty lines. The expected forms
    are written out: dkimpy's `[\\t ]+\\r\\n` backtracks quadratically over a long WSP run that
    no line end follows (100,000 spaces: 13 s here), which is one more reason not to use it."""
    assert dkim_canonical.relaxed_body_digest(body) == hashlib.sha256(canonical).digest()


def test_the_body_is_canonicalised_once_whatever_the_number_of_keys(key_dir: Path) -> None:
    keys = dkim_keys.load_keys(key_dir, "example.com")
    assert len(keys) == 2
    with (
        mock.patch.object(
            dkim_canonical, "relaxed_body_digest", wraps=dkim_canonical.relaxed_body_digest
        ) as ours,
        mock.patch.object(Relaxed, "canonicalize_body", side_effect=AssertionError("dkimpy")),
    ):
        dkim_signer.sign(signer(), keys, signing.header_list([]))
    assert ours.call_count == 1


# --- the header list -----------------------------------------------------------------------------


def test_header_list_oversigns_present_and_absent_names() -> None:
    headers = [(b"From", b"a@example.com"), (b"Subject", b"s"), (b"Date", b"d"), (b"To", b"t")]
    include = signing.header_list(headers, ["X-Relayguard"])
    assert include.count(b"from") == 2 and include.count(b"subject") == 2
    assert include.count(b"cc") == 1 and include.count(b"list-unsubscribe-post") == 1
    assert include.count(b"x-relayguard") == 1
    # Postfix adds a missing Message-ID for local clients after signing: never sign its absence.
    assert b"message-id" not in include


# --- the transform -------------------------------------------------------------------------------


def test_transform_signs_with_both_keys_and_covers_the_added_header(
    config: Callable[..., Config],
) -> None:
    cfg = config()
    subject = subject_for(cfg)
    decision = replace(accepted(), headers=(("X-Relayguard", "source=printer; verdict=accept"),))
    signed = signing.sign_delivered(subject, decision)
    names = [name for name, _ in signed.headers]
    assert names == ["X-Relayguard", "DKIM-Signature", "DKIM-Signature"]
    assert signed.verdicts[-1].reason == "signed d=example.com s=rsa1(rsa),ed1(ed25519)"
    message = b"".join(
        f"{n}: {v}".encode().replace(b"\n", b"\r\n") + b"\r\n" for n, v in signed.headers[1:]
    ) + delivered(subject, decision)
    lookup = dnsfunc(cfg.dkim.keys["example.com"])
    assert [dkim.DKIM(message).verify(idx=i, dnsfunc=lookup) for i in (0, 1)] == [True, True]
    tampered = message.replace(b"verdict=accept", b"verdict=reject")
    assert not dkim.DKIM(tampered).verify(idx=0, dnsfunc=lookup)


def test_subdomain_signs_with_parent_domain(config: Callable[..., Config]) -> None:
    raw = MESSAGE.replace(b"scanner@example.com", b"scanner@sub.example.com")
    signed = signing.sign_delivered(subject_for(config(), raw), accepted())
    assert signed.verdicts[-1].reason.startswith("signed d=example.com ")


def test_sender_supplied_trace_header_is_left_out_like_the_adapter_deletes_it(
    config: Callable[..., Config],
) -> None:
    raw = b"X-Relayguard: forged\r\n" + MESSAGE
    subject = subject_for(config(), raw)
    names = [name for name, _ in signing.delivered_headers(subject, accepted())]
    assert b"X-Relayguard" not in names and b"From" in names


def test_missing_key_refused_or_passed_unsigned_with_a_warning(
    config: Callable[..., Config],
) -> None:
    raw = MESSAGE.replace(b"scanner@example.com", b"scanner@other.test")
    refused = signing.sign_delivered(subject_for(config("refuse"), raw), accepted())
    assert refused.action is Action.REJECT
    assert refused.reply is not None and refused.reply.code == "550"
    assert "no DKIM key for From domain other.test" in refused.reply.text
    passed = signing.sign_delivered(subject_for(config("unsigned"), raw), accepted())
    assert passed.action is Action.ACCEPT and passed.headers == ()
    assert passed.verdicts[-1].reason == "not signed: no DKIM key for From domain other.test"


def test_monitor_mode_audits_would_reject_and_keeps_headers(
    config: Callable[..., Config],
) -> None:
    raw = MESSAGE.replace(b"scanner@example.com", b"scanner@other.test")
    monitor = Decision(Action.ACCEPT, Action.ACCEPT, Mode.MONITOR, (), headers=(("X-A", "1"),))
    result = signing.sign_delivered(subject_for(config(), raw), monitor)
    assert (result.action, result.outcome, result.headers) == (
        Action.ACCEPT,
        "would_reject",
        (("X-A", "1"),),
    )


def test_signing_error_raises_so_the_pipeline_tempfails(config: Callable[..., Config]) -> None:
    cfg = config()
    broken = tuple(
        replace(k, private=base64.b64encode(b"short")) if k.algorithm == "ed25519" else k
        for k in cfg.dkim.keys["example.com"]
    )
    keys = {"example.com": broken}
    cfg = replace(cfg, dkim=replace(cfg.dkim, keys=keys))
    with pytest.raises(dkim_signer.SigningError):
        signing.sign_delivered(subject_for(cfg), accepted())


def test_pipeline_turns_a_signing_error_into_tempfail(config: Callable[..., Config]) -> None:
    from relayguard.engine.pipeline import Pipeline

    cfg = config()
    broken = {"example.com": (replace(cfg.dkim.keys["example.com"][0], private=b"not a key"),)}
    cfg = replace(cfg, dkim=replace(cfg.dkim, keys=broken))
    pipeline = Pipeline.for_config(cfg)
    assert pipeline.transforms[-1].name == "dkim"  # signing is the last transform
    subject = subject_for(cfg)
    assert subject.message is not None
    decision = pipeline.at_end(cfg.sources[0], subject.message, MAIL_STAGE_ACCEPTED)
    assert decision.action is Action.TEMPFAIL
    assert decision.reply is not None and decision.reply.code == "451"
    assert decision.headers == ()
