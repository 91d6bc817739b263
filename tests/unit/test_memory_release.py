"""Freed message-sized buffers leave the worker's resident memory (engine/memory.py).

glibc raises its mmap threshold each time a mapped block is freed, so after the first large
message the next ones come from the heap, where freed pages stay resident behind any small block
allocated after them: sixteen 10 MB messages then keep a worker 160 MB larger than it needs.
Measured in a fresh interpreter, as a worker starts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

MILTER = Path(__file__).resolve().parents[2] / "milter"

PROGRAM = """
import sys
sys.path.insert(0, {milter!r})
from relayguard.engine.memory import keep_large_buffers_unmapped

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024

if {fixed}:
    assert keep_large_buffers_unmapped()
warm = bytearray(12 * 1024 * 1024)
del warm  # freeing a mapped block raises glibc's threshold past its size
messages, pins = [], []
for _ in range(16):
    messages.append(bytearray(10 * 1024 * 1024))  # zero-filled: resident
    pins.append(bytearray(1000))  # a small block allocated after it
held = rss_mb()
messages.clear()
print(held - rss_mb())
"""


def released_mb(fixed: bool) -> int:
    program = PROGRAM.format(milter=str(MILTER), fixed=fixed)
    run = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    return int(run.stdout)


def test_freed_message_buffers_leave_resident_memory() -> None:
    assert released_mb(fixed=True) >= 150  # 16 x 10 MB handed back


def test_without_the_fixed_threshold_they_stay() -> None:
    """The reason the fix exists (if glibc changes, this shows the fix may be moot)."""
    assert released_mb(fixed=False) < 50
