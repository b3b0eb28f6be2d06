"""Braze's at-least-once copies: the event ids seen recently in a run."""

from __future__ import annotations

from array import array

DEDUP_WINDOW = 200_000  # event ids remembered for in-run duplicate detection
_CLEARED_PER_STEP = 4096  # slots zeroed per slice when a table is reused


class SeenIds:
    """The Braze event ids seen recently in this run; the reader's alone (no lock).

    A bounded window, so memory stays flat: the last ``window`` ids at least, at most twice
    as many (two generations). Ids are kept as 64-bit hashes in open addressing over one
    array of machine integers, each generation filled to at most 40 %; a hash collision
    takes an event for a copy about once in 4·10¹³. Repeats further apart are still sent,
    and Amplitude drops them by ``insert_id`` (within 7 days).

    The generations are interleaved (slot ``i`` of generation ``g`` at ``2*i + g``), so one
    id's two first probes share a cache line; the array is allocated once, and a switch
    zeroes the older generation's half in place.
    """

    def __init__(self, window: int = DEDUP_WINDOW) -> None:
        if window < 1:
            raise ValueError("the duplicate window must hold at least one id")
        self.window = window
        size = 1  # slots per generation
        while size < window * 2.5:
            size <<= 1
        self._wrap = 2 * size - 1  # keeps an index in the array, and its parity
        self._pairs = self._wrap - 1  # a hash's even index: its slot pair
        self._table: array[int] = array("q", bytes(16 * size))
        self._half = 0  # the current generation's parity
        self._room = window  # ids the current generation takes before the switch

    @property
    def nbytes(self) -> int:
        """Bytes held by the table: fixed by the window, flat over a run."""
        return self._table.buffer_info()[1] * self._table.itemsize

    def first_time(self, event_id: str) -> bool:
        """Record ``event_id``; True unless it was seen within the window.

        Called once per record, so written for the interpreter: the usual case (an empty
        first slot in both generations) runs straight through, without a loop or a tuple.
        """
        key = hash(event_id) or 1  # 0 marks an empty slot
        table = self._table
        wrap = self._wrap
        slot = (key & self._pairs) + self._half  # the current generation's
        probe = slot ^ 1  # the previous generation's
        found = table[probe]
        while found:  # linear probing within a generation: one or two steps at this load
            if found == key:
                return False
            probe = (probe + 2) & wrap
            found = table[probe]
        found = table[slot]
        while found:  # ``slot`` ends on the current generation's free slot for ``key``
            if found == key:
                return False
            slot = (slot + 2) & wrap
            found = table[slot]
        if not self._room:
            self._next_generation()
            slot = (key & self._pairs) + self._half  # the fresh generation is empty
        table[slot] = key
        self._room -= 1
        return True

    def first_time_of(self, value: object) -> bool:
        """Record a record's raw ``id``; True unless it is an id seen within the window.

        The reader's checks in one call: an int (a drifted schema) counts as its text, as
        the mapper sends it; None, "" and any other type are never repeats and are not
        recorded.
        """
        if type(value) is not str:
            if type(value) is int:
                return self.first_time(str(value))
            if not isinstance(value, str):
                return True
        return not value or self.first_time(value)

    def _next_generation(self) -> None:
        """Switch generations: the previous one's ids are forgotten, its half of the table
        zeroed in place (no new allocation) to take the current one's."""
        self._half ^= 1
        table = self._table
        zeros = array("q", bytes(8 * min(len(table) // 2, _CLEARED_PER_STEP)))
        step = 2 * len(zeros)
        for start in range(self._half, len(table), step):
            table[start:start + step:2] = zeros
        self._room = self.window
