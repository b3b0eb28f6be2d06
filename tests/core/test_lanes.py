"""Concurrent delivery: per-id order, no id in two requests at once, 429 holds."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from currents_export.amplitude.api import RequestLimits, RetryPolicy
from currents_export.amplitude.batching import PendingEvent
from currents_export.amplitude.client import AmplitudeClient
from currents_export.core.lanes import Lanes
from currents_export.errors import EventTooLarge, SendInterrupted
from tests.support.lane_events import in_lane, per_id_order, workload
from tests.support.servers import RecordingServer
from tests.support.sinks import RecordingSink

SMALL_REQUESTS = RequestLimits(max_events=20, max_body_bytes=100_000)


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    recording = RecordingServer(delay_s=0.003)
    yield recording
    recording.close()


def deliver(url: str, events: list[dict[str, str]], lanes: int = 4,
            batch: int = 1) -> tuple[list, list]:
    client = AmplitudeClient(
        url, "key-123", throttle_pause_s=0.05,
        retry=RetryPolicy(initial_delay_s=0.01, max_delay_s=0.05, horizon_s=30),
    )
    sink = RecordingSink()
    pipeline: Lanes[str] = Lanes(client, SMALL_REQUESTS, lanes=lanes, sink=sink, horizon_s=30)
    try:
        pending = [PendingEvent(orjson.dumps(event), event["insert_id"],
                                tuple(event[k] for k in ("user_id", "device_id") if k in event))
                   for event in events]
        for start in range(0, len(pending), batch):
            if batch == 1:
                pipeline.submit(pending[start])
            else:
                assert pipeline.submit_many(pending[start:start + batch]) == []
        pipeline.drain()
        stats = pipeline.take_stats()
        assert stats.requests >= len(events) // SMALL_REQUESTS.max_events
        assert stats.repeats_dropped == 0  # the server ingests every event it is sent
    finally:
        pipeline.close()
        client.close()
    assert sink.abandoned_refs == []
    return sink.delivered_refs, [(ref, reason) for ref, reason, _ in sink.rejected_refs]


def test_every_event_once_in_per_id_order_and_never_two_requests_per_id(
    server: RecordingServer,
) -> None:
    events = workload(900)
    delivered, rejected = deliver(server.url, events)
    assert sorted(delivered) == sorted(e["insert_id"] for e in events)
    assert rejected == []
    assert len(server.stored) == len(events)
    assert per_id_order(server.stored) == per_id_order(events)
    assert server.overlaps == []


@pytest.mark.parametrize("batch", [7, 256])
def test_events_handed_over_in_batches_keep_each_ids_order(
    server: RecordingServer, batch: int,
) -> None:
    """A batch holds events of one user in several lanes' requests and users linked by a
    shared device: each id's events still reach Amplitude in order, each once."""
    events = workload(1500)
    delivered, rejected = deliver(server.url, events, batch=batch)
    assert sorted(delivered) == sorted(e["insert_id"] for e in events) and rejected == []
    assert per_id_order(server.stored) == per_id_order(events)


def test_throttled_ids_wait_while_the_others_flow(server: RecordingServer) -> None:
    events = workload(600)
    server.throttle = {"user-005": 3, "anon-004": 2}
    delivered, _ = deliver(server.url, events)
    assert sorted(delivered) == sorted(e["insert_id"] for e in events)
    assert server.throttle == {"user-005": 0, "anon-004": 0}  # every scripted 429 was met
    assert 3 <= server.throttled_requests <= 5  # one request may name both ids
    assert per_id_order(server.stored) == per_id_order(events)
    assert server.overlaps == []
    # The throttled user's first event arrived after events submitted later by others.
    arrival = [e["insert_id"] for e in server.stored]
    first_of_user_5 = next(e["insert_id"] for e in events if e.get("user_id") == "user-005")
    assert any(later > first_of_user_5 for later in arrival[: arrival.index(first_of_user_5)])


def test_one_lane_keeps_global_order(server: RecordingServer) -> None:
    events = workload(200)
    deliver(server.url, events, lanes=1)
    assert [e["insert_id"] for e in server.stored] == [e["insert_id"] for e in events]


def test_an_idle_lane_sends_its_open_request_after_the_linger(server: RecordingServer) -> None:
    """No drain and no full request: the events still leave, once the lane is idle."""
    client = AmplitudeClient(server.url, "key-123")
    sink = RecordingSink()
    lanes: Lanes[str] = Lanes(client, SMALL_REQUESTS, lanes=2, sink=sink, horizon_s=30,
                              linger_s=0.05)
    try:
        for n in range(3):  # fewer than a request holds
            event = {"event_type": "e", "insert_id": f"i-{n}", "user_id": "user-00001"}
            lanes.submit(PendingEvent(orjson.dumps(event), event["insert_id"], ("user-00001",)))
        assert sink.delivered_once.wait(10), "the open request was never sent"
        assert sink.delivered_refs == ["i-0", "i-1", "i-2"]  # in one request, in order
    finally:
        lanes.close()
        client.close()


class _BrokenFor:
    """A client that fails with a bug (not a delivery error) on the requests holding the
    ``broken`` events, once all of them are being sent, and delivers the others."""

    def __init__(self, broken: set[str]) -> None:
        from currents_export.amplitude.batching import Envelope
        from currents_export.stopping import Stop

        self.stop = Stop()
        self.envelope = Envelope.build("key-123")
        self.broken = broken
        self.together = threading.Barrier(len(broken), timeout=10)
        self.sent: list[str] = []

    def send(self, events: list[PendingEvent[str]]) -> Any:
        from currents_export.amplitude.client import SendOutcome

        if any(event.ref in self.broken for event in events):
            self.together.wait()  # each in its own lane: both fail
            raise RuntimeError("a bug in sending")
        self.sent.extend(event.ref for event in events)
        outcome: SendOutcome[str] = SendOutcome()
        outcome.delivered.extend(events)
        return outcome


def test_a_request_that_fails_with_a_bug_lets_go_of_its_ids() -> None:
    """Requests in two lanes fail with a bug: once the failure is drained, an event sharing
    an id with each of them is delivered (it does not wait for lanes that will never let
    go of those ids)."""
    client = _BrokenFor({"first", "second"})
    user, device = in_lane(0, "user", 2), in_lane(1, "device", 2)
    sink = RecordingSink()
    lanes: Lanes[str] = Lanes(client, SMALL_REQUESTS, lanes=2,  # type: ignore[arg-type]
                              sink=sink, horizon_s=30)
    try:
        lanes.submit(PendingEvent(b"{}", "first", (user,)))
        lanes.submit(PendingEvent(b"{}", "second", (device,)))
        with pytest.raises(RuntimeError, match="a bug in sending"):
            lanes.drain()
        finished = threading.Event()

        def both() -> None:
            lanes.submit(PendingEvent(b"{}", "both", (user, device)))
            lanes.drain()
            finished.set()

        threading.Thread(target=both, daemon=True).start()
        assert finished.wait(10), "the event waited for ids nobody will release"
    finally:
        lanes.close()
    assert sink.delivered_refs == client.sent == ["both"]


class _Acknowledging(_BrokenFor):
    """A client that delivers every request at once."""

    def __init__(self) -> None:
        super().__init__({"never"})


def test_the_ids_of_answered_events_are_forgotten() -> None:
    """A long run of distinct users: the lanes remember the ids of events in flight, not
    every id ever sent (memory stays flat)."""
    from currents_export.core import lanes as lanes_module

    client = _Acknowledging()
    sink = RecordingSink()
    lanes: Lanes[str] = Lanes(client, SMALL_REQUESTS, lanes=4,  # type: ignore[arg-type]
                              sink=sink, horizon_s=30)
    users = 400 * 500  # over 3 times the ids remembered before forgetting
    assert users > 3 * lanes_module._PRUNE_AT_LEAST
    try:
        for start in range(0, users, 500):
            lanes.submit_many([PendingEvent(b"{}", f"e-{i}", (f"user-{i}", f"device-{i}"))
                               for i in range(start, start + 500)])
        lanes.drain()
        remembered = len(lanes._owners)
    finally:
        lanes.close()
    assert len(sink.delivered_refs) == users
    assert remembered < 2 * lanes_module._PRUNE_AT_LEAST  # ids of six times as many were sent


def test_events_too_large_for_any_request_are_handed_back_untaken() -> None:
    client = _Acknowledging()
    sink = RecordingSink()
    limits = RequestLimits(max_events=20, max_body_bytes=1_000)
    lanes: Lanes[str] = Lanes(client, limits, lanes=2,  # type: ignore[arg-type]
                              sink=sink, horizon_s=30)
    big = PendingEvent(b'"' + b"x" * 1_000 + b'"', "big", ("user-1",))
    try:
        back = lanes.submit_many([PendingEvent(b"{}", "before", ("user-1",)), big,
                                  PendingEvent(b"{}", "after", ("user-1",))])
        lanes.drain()
        with pytest.raises(EventTooLarge, match="exceeds the request limit of 1000 bytes"):
            lanes.submit(big)
    finally:
        lanes.close()
    assert back == [big]
    assert sink.delivered_refs == ["before", "after"] and sink.abandoned_refs == []


def test_a_stop_while_handing_over_reports_each_event_once() -> None:
    """The lanes stop while a batch waits for room: every event of it is reported once,
    delivered or abandoned."""
    class _Slow(_Acknowledging):
        def send(self, events: list[PendingEvent[str]]) -> Any:
            self.stop.sleep(10)  # until the stop
            return super().send(events)

    client = _Slow()
    sink = RecordingSink()
    lanes: Lanes[str] = Lanes(client, SMALL_REQUESTS, lanes=1,  # type: ignore[arg-type]
                              sink=sink, horizon_s=30)
    refs = [f"e-{i}" for i in range(200)]
    timer = threading.Timer(0.5, client.stop.request, args=("SIGINT",))
    timer.start()
    try:
        # It raises when the stop finds it waiting for room; or, when the stopped lane
        # makes room first, takes them all and the lane abandons them.
        with contextlib.suppress(SendInterrupted):
            lanes.submit_many([PendingEvent(b"{}", ref, (f"user-{i % 7}",))
                               for i, ref in enumerate(refs)])
        with pytest.raises(SendInterrupted):
            lanes.drain()
    finally:
        timer.cancel()
        lanes.close()
    reported = sink.delivered_refs + [ref for ref, _ in sink.abandoned_refs]
    assert sorted(reported) == sorted(refs)
    assert len(sink.abandoned_refs) >= len(refs) - 2 * SMALL_REQUESTS.max_events
