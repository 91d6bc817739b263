"""docs/configuration.md against the declarations: a row per key, no row for a key that is not
declared, and the default the declaration really has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relayguard.config.declare import Key, declared_keys
from relayguard.config.reader import Document

pytestmark = pytest.mark.unit

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"
HEADER = re.compile(r"^\|\s*key\s*\|\s*type\s*\|\s*default\s*\|\s*meaning\s*\|$")
KEY_CELL = re.compile(r"^`([a-z_]+\.[a-z_]+)`$")


def cells(row: str) -> list[str]:
    """The cells of a Markdown table row; a '|' inside `code` does not split."""
    found, current, in_code = [], "", False
    for char in row.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            found.append(current.strip())
            current = ""
        else:
            current += char
    return [*found, current.strip()]


def documented_rows(text: str) -> dict[str, str]:
    """key -> default cell of every row of the key | type | default | meaning tables."""
    rows: dict[str, str] = {}
    in_table = False
    for line in text.splitlines():
        if HEADER.match(line.strip()):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        row = cells(line)
        if in_table and not set(row[0]) <= set("- "):
            match = KEY_CELL.match(row[0])
            assert match, f"a key cell is `table.key`: {line[:80]}"
            assert match[1] not in rows, f"{match[1]} has two rows"
            rows[match[1]] = row[2]
    return rows


def normalised(default: str) -> str:
    """The default cell without its explanation in parentheses: '`[]` (any)' -> '`[]`'."""
    return default.split(" (", 1)[0].strip()


def declared() -> dict[str, Key]:
    return {f"{table}.{name}": key for table, name, key in declared_keys(Document)}


ROWS = documented_rows(DOC.read_text())


def test_every_declared_key_has_a_row() -> None:
    assert sorted(declared().keys() - ROWS.keys()) == []


def test_every_row_names_a_declared_key() -> None:
    assert sorted(ROWS.keys() - declared().keys()) == []


def test_each_row_shows_the_declared_default() -> None:
    wrong = {
        name: (normalised(ROWS[name]), key.documented_default())
        for name, key in declared().items()
        if name in ROWS and normalised(ROWS[name]) != key.documented_default()
    }
    assert wrong == {}


def test_the_row_check_sees_a_wrong_default() -> None:
    rows = documented_rows(
        "| key | type | default | meaning |\n| --- | --- | --- | --- |\n"
        "| `milter.workers` | integer 1-64 | `4` (one per core) | Worker `a|b` processes. |\n"
    )
    assert rows == {"milter.workers": "`4` (one per core)"}
    assert normalised(rows["milter.workers"]) != declared()["milter.workers"].documented_default()
