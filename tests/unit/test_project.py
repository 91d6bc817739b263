"""Project rules a test can hold: documented schema, thin adapter."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relayguard.config import SCHEMA

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]


def test_every_schema_key_is_documented() -> None:
    documented = set(
        re.findall(r"`([a-z_]+\.[a-z_]+)`", (ROOT / "docs/configuration.md").read_text())
    )
    keys = {f"{table}.{key}" for table, keys in SCHEMA.items() if table for key in keys}
    assert keys - documented == set()


def test_only_the_adapter_imports_pymilter() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+(Milter|milter)\b", re.MULTILINE)
    importers = {
        path.relative_to(ROOT / "milter").as_posix()
        for path in (ROOT / "milter/relayguard").rglob("*.py")
        if pattern.search(path.read_text())
    }
    assert importers == {"relayguard/daemon/adapter.py"}
