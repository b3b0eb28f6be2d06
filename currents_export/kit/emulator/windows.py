"""Counters of accepted events over time, driven by whatever clock the caller passes in.

* ``SlidingWindows`` — exact sliding windows (per-id rates, the project caps).
* ``BucketCounts`` — counts in fixed buckets over a span of buckets (the daily quota: 1-hour
  buckets over 24 h), so memory stays bounded by the ids active in the span.

Neither is thread-safe: the emulator calls them under its lock. Times are seconds (floats);
a clock that jumps backwards (virtual clock switched back to real time) is tolerated: entries
stamped "in the future" simply keep counting until time passes them.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Hashable
from typing import Any


class _Window:
    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def prune(self, horizon: float) -> None:
        entries = self.entries
        while entries and entries[0][0] <= horizon:
            self.total -= entries.popleft()[1]


class SlidingWindows:
    """Event counts per key within a sliding window of ``window_s`` seconds before ``now``.

    An entry added at ``t`` counts while ``now - t < window_s``. Entries older than
    ``retain_s`` (the longest window anyone asks about) are dropped; keys left empty are
    swept once per ``retain_s`` of clock time, so memory follows the active keys.
    """

    def __init__(self) -> None:
        self._windows: dict[Hashable, _Window] = {}
        self._swept_at = -math.inf

    def __len__(self) -> int:
        return len(self._windows)

    def count(self, key: Hashable, now: float, window_s: float, retain_s: float) -> int:
        """Events counted for ``key`` in the last ``window_s`` seconds (``<= retain_s``)."""
        window = self._windows.get(key)
        if window is None:
            return 0
        window.prune(now - retain_s)
        if window_s >= retain_s:
            return window.total
        horizon = now - window_s
        return sum(n for t, n in window.entries if t > horizon)

    def add(self, key: Hashable, now: float, n: int) -> None:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        window.entries.append((now, n))
        window.total += n

    def sweep(self, now: float, retain_s: float) -> None:
        """Forget keys with nothing left in the window (at most once per ``retain_s``)."""
        if not self._swept_at <= now < self._swept_at + retain_s:
            self._sweep(now, retain_s)

    def rates(self, now: float, retain_s: float) -> list[tuple[Any, float]]:
        """``(key, events/s)`` of every key with events in the last ``retain_s`` seconds."""
        self._sweep(now, retain_s)
        return [(key, round(w.total / retain_s, 3)) for key, w in self._windows.items()]

    def _sweep(self, now: float, retain_s: float) -> None:
        self._swept_at = now
        horizon = now - retain_s
        for key in list(self._windows):
            window = self._windows[key]
            window.prune(horizon)
            if not window.entries:
                del self._windows[key]


class BucketCounts:
    """Event counts per key over the last ``span`` buckets of ``bucket_s`` seconds.

    The bucket holding ``now`` and the ``span - 1`` before it count; older buckets are
    dropped whole, subtracting their counts from the running totals.
    """

    def __init__(self, bucket_s: float, span: int) -> None:
        self.bucket_s = bucket_s
        self.span = span
        self._buckets: dict[int, Counter[Hashable]] = {}
        self._totals: Counter[Hashable] = Counter()

    def __len__(self) -> int:
        """Keys with a non-zero count."""
        return len(self._totals)

    def expire(self, now: float) -> None:
        """Drop the buckets that fell out of the span ending at ``now``."""
        oldest = int(now // self.bucket_s) - self.span + 1
        if not self._buckets or min(self._buckets) >= oldest:
            return
        totals = self._totals
        for bucket in [b for b in self._buckets if b < oldest]:
            for key, n in self._buckets.pop(bucket).items():
                left = totals[key] - n
                if left > 0:
                    totals[key] = left
                else:
                    del totals[key]

    def count(self, key: Hashable) -> int:
        """The key's total over the span as of the last ``expire``."""
        return self._totals.get(key, 0)

    def add(self, key: Hashable, now: float, n: int) -> None:
        bucket = int(now // self.bucket_s)
        counts = self._buckets.get(bucket)
        if counts is None:
            counts = self._buckets[bucket] = Counter()
        counts[key] += n
        self._totals[key] += n
