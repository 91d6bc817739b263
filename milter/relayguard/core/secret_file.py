"""Secret files (the Redis password, the send API's SASL password): one reader, so every secret
is refused the same way when other users could read it, and read the same way (its first line)."""

from __future__ import annotations

import stat
from pathlib import Path

from relayguard.core.errors import RelayguardError


class SecretFileError(RelayguardError):
    """The file cannot serve as a secret; the message names the file and the fix."""


def read_secret_file(path: Path) -> str:
    """The secret on the file's first line, without the line ending or surrounding blanks.

    Refused when the file cannot be read, when every user may read or change it (a secret
    is for its owner and group only) or when it holds no secret.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(
            f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from exc
    if mode & 0o007:
        raise SecretFileError(
            f"{path}: every user may read or change it (mode {mode:04o}): chmod o-rwx {path}"
        )
    lines = text.splitlines()
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise SecretFileError(f"{path} is empty")
    return secret
