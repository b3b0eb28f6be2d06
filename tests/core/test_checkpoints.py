"""Checkpoints inside an object: never ahead of what is accounted for."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from currents_export.core.checkpoints import (
    DELIVERED,
    DUPLICATE,
    SKIPPED,
    Checkpoint,
    ObjectProgress,
)
from currents_export.counts import Tally


def test_the_checkpoint_is_the_first_unresolved_record() -> None:
    progress = ObjectProgress()
    progress.read_up_to(5)
    progress.resolve(1, DELIVERED)
    progress.resolve(2, SKIPPED, "no_identity")
    assert progress.checkpoint().next_index == 0
    progress.resolve(0, DUPLICATE)
    checkpoint = progress.checkpoint()
    assert checkpoint.next_index == 3
    assert checkpoint.tally.records == 3 and checkpoint.tally.delivered == 1
    assert checkpoint.tally.skipped == {"no_identity": 1} and checkpoint.tally.duplicates == 1
    tally, pending = progress.totals()
    assert tally.records == 3 and pending == 2


def test_resuming_starts_from_the_saved_prefix() -> None:
    saved = Tally(records=10, delivered=9, duplicates=1)
    progress = ObjectProgress("obj", Checkpoint(10, saved))
    progress.read_up_to(11)
    progress.resolve(10, DELIVERED, None, ("properties_not_json",))
    tally, pending = progress.totals()
    assert progress.resumed_from == 10
    assert tally.records == 11 and tally.delivered == 10 and pending == 0
    assert tally.warnings == {"properties_not_json": 1}
    assert saved.records == 10  # the saved tally is not modified


@given(st.permutations(list(range(40))), st.integers(min_value=0, max_value=40))
def test_any_resolution_order_gives_a_safe_checkpoint(order: list[int], resolved: int) -> None:
    progress = ObjectProgress()
    progress.read_up_to(len(order))
    done = set(order[:resolved])
    for index in order[:resolved]:
        progress.resolve(index, DELIVERED)
    checkpoint = progress.checkpoint()
    assert all(i in done for i in range(checkpoint.next_index))
    assert checkpoint.next_index == 40 or checkpoint.next_index not in done
    assert checkpoint.tally.records == checkpoint.next_index
    tally, pending = progress.totals()
    assert tally.records == resolved and pending == 40 - resolved


def test_duplicate_detection_remembers_a_bounded_window() -> None:
    from currents_export.core.seen import SeenIds

    seen = SeenIds(window=3)
    assert [seen.first_time(i) for i in "abcab"] == [True, True, True, False, False]
    # After two windows of new ids the oldest are forgotten: memory stays bounded.
    for i in "defghi":
        assert seen.first_time(i)
    assert seen.first_time("a") is True
    assert seen.first_time("h") is False  # recent ids are still recognised


@given(st.integers(min_value=1, max_value=40),
       st.lists(st.integers(min_value=0, max_value=120), max_size=600))
def test_duplicate_window_never_misses_a_recent_id_nor_invents_one(
    window: int, stream: list[int]
) -> None:
    """Against a plain model: an id recorded within the last ``window`` new ids is always
    recognised, one never seen is always new, and anything is remembered for at most
    twice the window (tables fill, wrap and probe past each other)."""
    from currents_export.core.seen import SeenIds

    seen = SeenIds(window=window)
    recorded: list[str] = []  # the ids first_time accepted, in order
    for number in stream:
        event_id = f"evt-{number}"
        new = seen.first_time(event_id)
        if event_id not in recorded:
            assert new, event_id
        elif event_id in recorded[-window:]:
            assert not new, event_id
        elif event_id not in recorded[-2 * window:]:
            assert new, event_id  # forgotten beyond two windows
        if new:
            recorded.append(event_id)
