"""Braze's at-least-once copies: the event ids seen recently in a run."""

from __future__ import annotations

from array import array

DEDUP_WINDOW = 200_000  # event ids remembered for in-run duplicate detection


class SeenIds:
    """The Braze event ids seen recently in this run; the reader's alone (no lock).

    A bounded window, so memory stays flat: the last ``window`` ids at least, at most twice
    as many (two generations). Ids are kept as 64-bit hashes in two open-addressing tables
    of machine integers, filled to at most 40 %; a hash collision takes an event for a
    copy about once in 4·10¹³. Repeats further apart are still sent, and Amplitude drops
    them by ``insert_id`` (within 7 days).
    """

    def __init__(self, window: int = DEDUP_WINDOW) -> None:
        if window < 1:
            raise ValueError("the duplicate window must hold at least one id")
        self.window = window
        size = 1
        while size < window * 2.5:
            size <<= 1
        self._mask = size - 1
        self._current = self._empty()
        self._previous = self._empty()
        self._count = 0  # ids in _current

    def _empty(self) -> array[int]:
        return array("q", bytes(8 * (self._mask + 1)))

    def first_time(self, event_id: str) -> bool:
        """Record ``event_id``; True unless it was seen within the window."""
        key = hash(event_id) or 1  # 0 marks an empty slot
        mask = self._mask
        for table in (self._previous, self._current):  # the current one last
            slot = key & mask
            while True:  # linear probing: one or two steps at this load
                found = table[slot]
                if found == key:
                    return False
                if not found:
                    break
                slot = (slot + 1) & mask
        # ``slot`` is now the current table's free slot for ``key``
        if self._count >= self.window:
            self._previous, self._current = table, self._empty()
            self._count = 0
            table = self._current
            slot = key & mask
            while table[slot]:
                slot = (slot + 1) & mask
        table[slot] = key
        self._count += 1
        return True
