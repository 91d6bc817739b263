"""7z archives made by the real `7z` (Debian's p7zip-full): formats the milter's walker cannot open.

The MIME walker opens zip only; clamd opens 7z, RAR and more. These archives let a test show
that clamd's path is the one that catches an encrypted or oversized archive. (RAR needs the
non-free `rar` to create, which Debian's main archive does not ship.)

    seven_zip({"invoice.txt": b"..."}, password="s3cret")   # encrypted, names hidden too
    seven_zip({"invoice.txt": b"..."}, "s3cret", kind="zip")  # a ZipCrypto zip
    seven_zip_of_zeros("disk.img", 101 * 2**20)              # tiny archive, huge member
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

SEVEN_ZIP = "/usr/bin/7z"
BLOCK = 2**20


def seven_zip(members: Mapping[str, bytes], password: str = "", kind: str = "7z") -> bytes:
    """A `kind` (7z or zip) archive of `members`; a 7z with a password hides the names too."""
    with tempfile.TemporaryDirectory(prefix="relayguard-7z-") as tmp:
        base = Path(tmp)
        for name, data in members.items():
            (base / name).write_bytes(data)
        secret = [f"-p{password}"] if password else []
        if password and kind == "7z":
            secret.append("-mhe=on")
        subprocess.run(
            [SEVEN_ZIP, "a", "-bd", f"-t{kind}", *secret, str(base / "out.7z"), *members],
            cwd=base,
            check=True,
            capture_output=True,
            timeout=60,
        )
        return (base / "out.7z").read_bytes()


def seven_zip_of_zeros(name: str, size: int) -> bytes:
    """A 7z holding one member of `size` zero bytes, streamed in: a few KB for 100 MB."""
    with tempfile.TemporaryDirectory(prefix="relayguard-7z-") as tmp:
        out = Path(tmp) / "out.7z"
        with subprocess.Popen(
            [SEVEN_ZIP, "a", "-bd", "-mx=1", f"-si{name}", str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as process:
            assert process.stdin is not None
            zeros = bytes(BLOCK)
            for offset in range(0, size, BLOCK):
                process.stdin.write(zeros[: min(BLOCK, size - offset)])
            process.stdin.close()
            if process.wait(timeout=120) != 0:
                raise RuntimeError(f"7z failed to archive {name}")
        return out.read_bytes()
