"""The in-run duplicate window (core/seen.py): what it finds, what it forgets, its memory."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from currents_export.core.seen import DEDUP_WINDOW, SeenIds

TODAYS_BYTES = 2 * 4 * 2**20  # before: two tables of 2**19 eight-byte slots (default window)


class Hashed(str):
    """An id whose hash is chosen, to force collisions, long probe runs and wrap-around."""

    def __new__(cls, text: str, hashed: int) -> Hashed:
        made = super().__new__(cls, text)
        made.hashed = hashed
        return made

    hashed: int

    def __hash__(self) -> int:
        return self.hashed


def _table_bytes(seen: SeenIds) -> int:
    return seen._table.buffer_info()[1] * seen._table.itemsize


def test_repeats_within_the_window_are_found_across_generation_switches() -> None:
    window = 1000
    seen = SeenIds(window)
    ids = [str(uuid.uuid4()) for _ in range(5 * window)]
    for index, event_id in enumerate(ids):
        assert seen.first_time(event_id)
        # A fresh str each time (no cached hash), the last ``window`` ids, every few steps.
        if index % 97 == 0 or index % window in (0, 1, window - 1):
            for recent in ids[max(0, index - window + 1):index + 1]:
                assert not seen.first_time("".join(recent)), (index, recent)


def test_repeats_do_not_use_up_the_window() -> None:
    seen = SeenIds(window=3)
    assert all(seen.first_time(i) for i in "abc")
    for _ in range(100):
        assert not seen.first_time("a")
    assert not seen.first_time("b") and not seen.first_time("c")


def test_ids_more_than_two_windows_apart_are_forgotten() -> None:
    window = 50
    for already in range(0, 2 * window + 3):  # wherever "a" falls in its generation
        seen = SeenIds(window)
        for number in range(already):
            assert seen.first_time(f"before-{number}")
        assert seen.first_time("a")
        for number in range(2 * window):
            assert seen.first_time(f"after-{number}")
        assert seen.first_time("a"), already


def test_a_hash_of_zero_is_still_remembered() -> None:
    seen = SeenIds(window=4)
    assert seen.first_time(Hashed("zero", 0))
    assert not seen.first_time(Hashed("zero", 0))


def test_colliding_slots_probe_on_and_wrap_around_the_table() -> None:
    seen = SeenIds(window=3)  # 8 slots a generation
    same_last_slot = [Hashed(f"id-{n}", 14 + 16 * n) for n in range(3)]  # last pair: wraps
    assert all(seen.first_time(i) for i in same_last_slot)
    assert not any(seen.first_time(i) for i in same_last_slot)
    after = [Hashed(f"next-{n}", 62 + 64 * n) for n in range(3)]  # same pair; a switch
    assert all(seen.first_time(i) for i in after)
    assert not any(seen.first_time(i) for i in same_last_slot[1:] + after)


@given(st.integers(min_value=1, max_value=12),
       st.sampled_from([1, 2, 8, 16, 1024]),
       st.lists(st.integers(min_value=0, max_value=60), max_size=400))
def test_crowded_slots_never_miss_a_recent_id_nor_invent_one(
    window: int, spacing: int, stream: list[int]
) -> None:
    """Distinct hashes that pile onto few slots (a large power-of-two spacing puts them all
    on one), against the plain model of the reader's window."""
    seen = SeenIds(window)
    recorded: list[int] = []
    for number in stream:
        new = seen.first_time(Hashed(f"evt-{number}", 1 + number * spacing))
        if number not in recorded:
            assert new, number
        elif number in recorded[-window:]:
            assert not new, number
        elif number not in recorded[-2 * window:]:
            assert new, number
        if new:
            recorded.append(number)


def test_memory_for_the_default_window_is_bounded_and_flat() -> None:
    seen = SeenIds()
    assert seen.window == DEDUP_WINDOW
    assert seen.nbytes == _table_bytes(seen) <= TODAYS_BYTES
    table = seen._table
    for number in range(2 * DEDUP_WINDOW + 5):  # two generation switches
        seen.first_time(f"{number:036d}")
    assert seen._table is table  # reused, not reallocated
    assert seen.nbytes == _table_bytes(seen) <= TODAYS_BYTES


def test_tables_stay_within_forty_percent_full() -> None:
    for window in (1, 2, 3, 5, 100, 1000, DEDUP_WINDOW):
        seen = SeenIds(window)
        slots = seen.nbytes // 16
        assert window <= 0.4 * slots, window


def test_the_raw_id_method_takes_what_a_record_may_hold() -> None:
    seen = SeenIds(window=10)
    assert seen.first_time_of("abc")
    assert not seen.first_time_of("abc")
    assert not seen.first_time("abc")  # one memory for both methods
    # An int id (drifted schema) is its text, as the mapper sends it, both ways round.
    assert seen.first_time_of(123)
    assert not seen.first_time_of("123")
    assert seen.first_time_of("456")
    assert not seen.first_time_of(456)
    # Never repeats, never recorded: no id, an empty one, and other types.
    for value in (None, "", True, False, 1.5, b"abc", ["abc"], {"id": "abc"}):
        assert seen.first_time_of(value), value
        assert seen.first_time_of(value), value
    assert seen.first_time("")  # first_time itself still records the empty text
    assert not seen.first_time("")


def test_the_raw_id_method_records_str_subclasses_as_text() -> None:
    seen = SeenIds(window=10)
    assert seen.first_time_of(Hashed("xyz", hash("xyz")))
    assert not seen.first_time_of("xyz")
    assert seen.first_time_of(Hashed("", 5))  # empty: not an id
    assert seen.first_time_of(Hashed("", 5))


def test_the_raw_id_method_matches_the_readers_checks() -> None:
    """Same answers as the reader's per-record checks around ``first_time``."""

    def readers(seen: SeenIds, event_id: object) -> bool:
        if event_id.__class__ is int:
            event_id = str(event_id)
        if not isinstance(event_id, str) or not event_id:
            return True
        return seen.first_time(event_id)

    values: list[object] = [1, "1", None, "", 2, 2, "x", "x", 1.0, True, "True", 3, "3"]
    old, new = SeenIds(window=4), SeenIds(window=4)
    assert [readers(old, v) for v in values * 3] == [new.first_time_of(v) for v in values * 3]
