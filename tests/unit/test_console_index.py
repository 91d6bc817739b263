"""The console's audit index follows the log like `tail -F`: whole lines only, across rotation
(rename + new file, and copytruncate) and restarts, each line once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relayguard.services.console.audit_index import AuditIndex, Query

pytestmark = pytest.mark.unit


def line(n: int) -> str:
    return json.dumps({
        "v": 2, "time": f"2026-05-01T08:{n // 60:02d}:{n % 60:02d}.000Z", "stage": "end",
        "mode": "enforce", "action": "accept", "outcome": "accept", "queue_id": f"4QIDX{n:05d}",
        "source": "printer", "mail_from": "scanner@example.com", "recipients": ["a@example.com"],
    }) + "\n"  # fmt: skip


def found(index: AuditIndex) -> list[str]:
    hits = index.search(Query(), page_size=1000).hits
    return sorted(str(getattr(h.record, "queue_id", "")) for h in hits)


def ids(*numbers: int) -> list[str]:
    return sorted(f"4QIDX{n:05d}" for n in numbers)


def test_a_torn_last_line_waits_for_its_end(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    first, second = line(1), line(2)
    log.write_text(first + second[:20])
    index = AuditIndex(tmp_path / "index.sqlite3", log)
    assert index.update() == 1 and found(index) == ids(1)
    with log.open("a") as out:
        out.write(second[20:])
    assert index.update() == 1 and found(index) == ids(1, 2)


def test_rotation_by_rename_reads_the_old_tail_then_the_new_file(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text(line(1))
    index = AuditIndex(tmp_path / "index.sqlite3", log)
    index.update()
    with log.open("a") as out:
        out.write(line(2))  # written after the last look, before the rotation
    log.rename(tmp_path / "audit.jsonl.1")
    log.write_text(line(3))
    index.update()
    assert found(index) == ids(1, 2, 3)
    with log.open("a") as out:
        out.write(line(4))
    index.update()
    assert found(index) == ids(1, 2, 3, 4)


def test_copytruncate_starts_again_at_the_top(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text(line(1) + line(2))
    index = AuditIndex(tmp_path / "index.sqlite3", log)
    index.update()
    log.write_text(line(3))  # same inode, shorter than the offset
    index.update()
    assert found(index) == ids(1, 2, 3)


def test_a_restart_neither_loses_nor_repeats_a_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text(line(1) + "not json\n" + line(2))
    AuditIndex(tmp_path / "index.sqlite3", log).update()
    with log.open("a") as out:
        out.write(line(3))
    again = AuditIndex(tmp_path / "index.sqlite3", log)
    assert again.update() == 1
    assert found(again) == ids(1, 2, 3)


def test_search_words_are_data_not_fts_syntax(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text(line(1))
    index = AuditIndex(tmp_path / "index.sqlite3", log)
    index.update()
    for hostile in ('"', "a OR b NOT c", "sender:*", "NEAR(x y)", ")(", "\x00"):
        index.search(Query(sender=hostile, recipient=hostile, check=hostile))
    assert found(index) == ids(1)
    assert len(index.search(Query(sender="scanner@example.com")).hits) == 1
    assert index.search(Query(sender="other@example.com")).hits == []
