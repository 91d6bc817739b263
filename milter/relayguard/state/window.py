"""The sliding-window arithmetic both backends share (the Redis Lua script mirrors it line by line).

A window of W seconds is cut into BUCKETS buckets of W/BUCKETS seconds; a counter is one integer per
bucket. The amount in the window is the sum of the buckets whose time overlaps the last W seconds,
*including* the oldest, partly expired bucket. So the count is never lower than the true sliding
count: nobody gets more than `limit` into any W-second span. The price is that an event is
forgotten between W and W + W/BUCKETS after it happened (1 s late for a minute window, 24 min for a
day), which only ever errs on the strict side. Storage and work are O(BUCKETS) per counter, whatever
the traffic, and bytes are counted as cheaply as messages.

A refused amount is not recorded: a device that retries while over its limit does not push its own
window further out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from relayguard.state import Usage

BUCKETS = 60


def current_bucket(window: float, now: float) -> int:
    return math.floor(now / (window / BUCKETS))


def oldest_live_bucket(window: float, now: float) -> int:
    """Buckets older than this no longer count and may be deleted."""
    return current_bucket(window, now) - BUCKETS


def evaluate(
    buckets: Mapping[int, int], amount: int, limit: int, window: float, now: float
) -> Usage:
    """Where the counter stands if `amount` were added now; retry_after when it does not fit."""
    width = window / BUCKETS
    oldest = oldest_live_bucket(window, now)
    live = sorted((bucket, value) for bucket, value in buckets.items() if bucket >= oldest)
    used = sum(value for _, value in live) + amount
    if used <= limit:
        return Usage(used, limit, 0.0)
    if amount > limit:
        return Usage(used, limit, float(window))  # never fits; the check refuses it for good
    excess = used - limit
    freed = 0
    for bucket, value in live:
        freed += value
        if freed >= excess:
            # Bucket b counts while floor(now / width) <= b + BUCKETS.
            return Usage(used, limit, max(0.0, (bucket + BUCKETS + 1) * width - now))
    return Usage(used, limit, float(window))
