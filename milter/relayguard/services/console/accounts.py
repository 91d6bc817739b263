"""The console's local accounts: a JSON file of argon2id hashes and roles, owner-only (0600).

Two roles: a `viewer` reads every page; an `operator` also acts (kill switch, quarantine). The
file is replaced atomically (write beside, fsync, rename) with mode 0600, and re-read when it
changes, so `relayguard console user passwd|remove` ends that user's sessions at once (a session
carries a fingerprint of the hash it was opened with).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from relayguard.core.errors import RelayguardError

ROLES = ("viewer", "operator")
USER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MIN_PASSWORD = 12
_hasher = PasswordHasher()
# Verified when the user is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("relayguard console: no such user")


class AccountError(RelayguardError):
    """A name, role or password that cannot be used, or an unreadable accounts file."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: str
    password_hash: str

    @property
    def fingerprint(self) -> str:
        """Changes with the password: sessions opened before a change end."""
        return hashlib.sha256(self.password_hash.encode()).hexdigest()[:16]

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


class Accounts:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], dict[str, Account]] | None = None

    def all(self) -> dict[str, Account]:
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                return {}
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._cache is None or self._cache[0] != stamp:
                self._cache = (stamp, self._read())
            return self._cache[1]

    def get(self, name: str) -> Account | None:
        return self.all().get(name)

    def verify(self, name: str, password: str) -> Account | None:
        """The account when the password is right, else None (as slow for an unknown name)."""
        account = self.get(name)
        try:
            _hasher.verify(account.password_hash if account else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        if account is not None and _hasher.check_needs_rehash(account.password_hash):
            self._store({**self.all(), name: Account(name, account.role, _hasher.hash(password))})
        return account

    def add(self, name: str, role: str, password: str) -> None:
        _check_name(name)
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        users = self.all()
        if name in users:
            raise AccountError(f"user {name!r} exists (use passwd to change the password)")
        self._store({**users, name: Account(name, role, _hash(password))})

    def passwd(self, name: str, password: str) -> None:
        account = self._existing(name)
        self._store({**self.all(), name: Account(name, account.role, _hash(password))})

    def remove(self, name: str) -> None:
        self._existing(name)
        self._store({k: v for k, v in self.all().items() if k != name})

    def _existing(self, name: str) -> Account:
        account = self.get(name)
        if account is None:
            raise AccountError(f"no user {name!r} in {self.path}")
        return account

    def _read(self) -> dict[str, Account]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {
                name: Account(name, str(entry["role"]), str(entry["hash"]))
                for name, entry in data["users"].items()
                if entry.get("role") in ROLES
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise AccountError(f"{self.path}: unreadable accounts file: {exc}") from exc

    def _store(self, users: dict[str, Account]) -> None:
        data = {
            "version": 1,
            "users": {a.name: {"role": a.role, "hash": a.password_hash} for a in users.values()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        with self._lock:
            self._cache = None


def _check_name(name: str) -> None:
    if not USER_NAME.fullmatch(name):
        raise AccountError(f"user name {name!r}: lower-case letters, digits, '.', '_', '-' only")


def _hash(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)
