"""Hand freed message buffers back to the kernel at once.

glibc's malloc serves a block over its mmap threshold with its own mapping, unmapped on free; but
each such free raises the threshold (up to 32 MB), after which 10 MB message buffers come from
the heap arenas, whose freed pages stay resident behind any small block allocated later. A worker
that held sixteen 10 MB messages then keeps that memory. A fixed 4 MB threshold keeps every
message-sized buffer in its own mapping; smaller ones stay in the heap, where reuse is cheap
(16 sessions x 10 MB: milter peak PSS 506 -> 227 MB AV+DKIM, 834 -> 526 MB full; bench/README.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


def keep_large_buffers_unmapped() -> bool:
    """Fix glibc's mmap threshold; False where the C library is not glibc (nothing to do)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused: large buffers may stay resident")
        return False
    return True
