"""Packing events into requests: never over the limits, nothing lost, order kept."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from currents_export.amplitude.api import REQUEST_LIMITS, RequestLimits
from currents_export.amplitude.batching import (
    Envelope,
    PendingEvent,
    RequestPacker,
    pack_all,
)
from currents_export.errors import EventTooLarge

ENVELOPE = Envelope.build("key-123", {"min_id_length": 3})


def events_of_sizes(sizes: list[int]) -> list[PendingEvent[int]]:
    return [
        PendingEvent(orjson.dumps({"event_type": "e", "insert_id": str(i), "pad": "x" * size}), i)
        for i, size in enumerate(sizes)
    ]


def test_body_is_valid_json_and_its_size_is_computed_without_serialising() -> None:
    events = events_of_sizes([0, 10, 1000])
    body = ENVELOPE.body(events)
    decoded = orjson.loads(body)
    assert decoded["api_key"] == "key-123"
    assert decoded["options"] == {"min_id_length": 3}
    assert [e["insert_id"] for e in decoded["events"]] == ["0", "1", "2"]
    assert ENVELOPE.body_size(events) == len(body)


def test_count_limit_closes_a_request_at_exactly_max_events() -> None:
    limits = REQUEST_LIMITS["batch"]
    requests = list(pack_all(events_of_sizes([1] * 4_500), limits, ENVELOPE.overhead))
    assert [len(r) for r in requests] == [2_000, 2_000, 500]


def test_byte_limit_of_http_v2_is_respected_on_the_serialised_body() -> None:
    limits = REQUEST_LIMITS["http"]
    requests = list(pack_all(events_of_sizes([5_000] * 500), limits, ENVELOPE.overhead))
    assert len(requests) > 1
    assert all(len(ENVELOPE.body(r)) <= limits.max_body_bytes for r in requests)
    # A request is only closed when the next event would not fit.
    for request, following in itertools.pairwise(requests):
        assert ENVELOPE.body_size([*request, following[0]]) > limits.max_body_bytes


def test_an_event_larger_than_a_request_is_refused() -> None:
    packer: RequestPacker[int] = RequestPacker(RequestLimits(10, 500), ENVELOPE.overhead)
    with pytest.raises(EventTooLarge, match="exceeds the request limit"):
        packer.add(events_of_sizes([600])[0])
    assert len(packer) == 0


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3_000), max_size=300),
    max_events=st.integers(min_value=1, max_value=50),
    max_body=st.integers(min_value=3_200, max_value=40_000),
)
def test_packing_never_exceeds_limits_nor_loses_or_duplicates_events(
    sizes: list[int], max_events: int, max_body: int
) -> None:
    limits = RequestLimits(max_events=max_events, max_body_bytes=max_body)
    events = events_of_sizes(sizes)
    requests = list(pack_all(events, limits, ENVELOPE.overhead))
    assert all(0 < len(r) <= max_events for r in requests)
    assert all(len(ENVELOPE.body(r)) <= max_body for r in requests)
    assert [e.ref for r in requests for e in r] == list(range(len(sizes)))
