"""DKIM signing time per message: RSA-2048 through dkimpy's pure Python vs through OpenSSL, and
Ed25519, measured in one run on one machine with relayguard's own signing function.

    .venv/bin/python bench/dkim_bench.py [--size 10240] [--repeats 7] [--count 200]

Each repeat signs `count` messages with every variant, in a rotated order, and the report gives
the median over repeats of milliseconds per message (signer.prepare and signer.sign: body and
header canonicalisation, hashing, the private-key operation, header construction), and the same
through dkimpy's own DKIM.sign (its body canonicalisation, the way before dkim/canonical.py).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dkim

from relayguard.dkim import keys as dkim_keys
from relayguard.dkim import openssl as dkim_openssl
from relayguard.dkim import signer
from relayguard.parsing.rfc5322 import split_header_block
from relayguard.transforms import signing

VARIANTS = (
    "rsa-2048 pure Python",
    "rsa-2048 OpenSSL",
    "ed25519",
    "rsa-2048 OpenSSL, dkimpy's body canonicalisation",
    "rsa-2048 + ed25519, one body hash",
)


def message(size: int) -> bytes:
    head = (
        b"From: Scanner <scanner@example.com>\r\nTo: alice@example.com\r\n"
        b"Subject: benchmark\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <bench@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=10240, help="message size in bytes")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--count", type=int, default=200, help="signatures per variant per repeat")
    args = parser.parse_args(argv)

    directory = Path(tempfile.mkdtemp(prefix="dkim-bench-"))
    dkim_keys.generate(directory, "example.com", "rsa", "rsa", 2048)
    dkim_keys.generate(directory, "example.com", "ed", "ed25519")
    keys = {k.algorithm: k for k in dkim_keys.load_keys(directory, "example.com")}
    raw = message(args.size)
    include = signing.header_list(
        [(name, b"") for name in (b"from", b"to", b"subject", b"date", b"message-id")]
    )

    headers, offset = split_header_block(raw)
    header_bytes = [(name.encode("latin-1"), value) for name, value in headers]

    def sign_once(variant: str) -> None:
        if variant.endswith("dkimpy's body canonicalisation"):  # the way before dkim/canonical
            dkim.DKIM(raw, linesep=b"\n").sign(
                b"rsa",
                b"example.com",
                keys["rsa"].private,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=include,
            )
            return
        chosen: tuple[dkim_keys.SigningKey, ...] = (keys["rsa"],)
        if variant == "ed25519":
            chosen = (keys["ed25519"],)
        if variant.endswith("one body hash"):
            chosen = (keys["rsa"], keys["ed25519"])
        signer.sign(signer.prepare(header_bytes, raw[offset:]), chosen, include)

    def run(variant: str) -> float:
        if variant.endswith("pure Python"):
            dkim_openssl.uninstall()
        else:
            dkim_openssl.install()
        try:
            sign_once(variant)  # warm-up (and the OpenSSL key cache)
            start = time.perf_counter()
            for _ in range(args.count):
                sign_once(variant)
            return (time.perf_counter() - start) * 1000 / args.count
        finally:
            dkim_openssl.install()

    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for repeat in range(args.repeats):
        shift = repeat % len(VARIANTS)
        order = VARIANTS[shift:] + VARIANTS[:shift]
        for variant in order:
            samples[variant].append(run(variant))
    report(samples, args, platform.node())
    return 0


def report(samples: dict[str, list[float]], args: argparse.Namespace, node: str) -> None:
    fmt: Callable[[float], str] = lambda ms: f"{ms:.3f}"  # noqa: E731
    print(f"# DKIM signing, {args.size}-byte message, {args.count} signatures x {args.repeats}")
    print(f"machine: {node}, Python {platform.python_version()}\n")
    print("| variant | median ms/signature | min | max |")
    print("| --- | --- | --- | --- |")
    for variant, values in samples.items():
        print(
            f"| {variant} | {fmt(statistics.median(values))} | {fmt(min(values))}"
            f" | {fmt(max(values))} |"
        )
    speedup = statistics.median(samples[VARIANTS[0]]) / statistics.median(samples[VARIANTS[1]])
    print(f"\nRSA-2048 through OpenSSL: {speedup:.1f}x faster than pure Python")


if __name__ == "__main__":
    sys.exit(main())
