"""The lanes' rules, through an ``AmplitudeClient`` over ``httpx.MockTransport``.

No sockets and no real backoff: the client's sleeps move a virtual clock, and where a
throttle pause matters the lanes get a clock the test holds still, then lets run. Each test
ends by checking that every event the lanes took was reported to the sink exactly once.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from currents_export.amplitude.api import RequestLimits, RetryPolicy
from currents_export.amplitude.batching import PendingEvent
from currents_export.amplitude.client import AmplitudeClient
from currents_export.core.lanes import Lanes
from currents_export.errors import AmplitudeSetupError, DeliveryFailed
from tests.support.fake_amplitude import (
    API_KEY,
    URL,
    DedupingAmplitude,
    FakeAmplitude,
    VirtualTime,
    status,
)
from tests.support.lane_events import in_lane, per_id_order, workload
from tests.support.sinks import RecordingSink

LIMITS = RequestLimits(max_events=20, max_body_bytes=100_000)
HORIZON_S = 900.0
THROTTLE_PAUSE_S = 0.05
# One attempt, a virtual backoff of 0.75 s, a second attempt at the 0.75 s horizon, then
# give up (two failures: the run's circuit, which opens at three, stays closed).
TINY_HORIZON = RetryPolicy(initial_delay_s=1.0, max_delay_s=4.0, horizon_s=0.75)


class HeldClock:
    """The lanes' clock: still until ``run()``, then ten times faster than real time (a
    throttle pause of 0.05 s then lasts 5 ms)."""

    def __init__(self) -> None:
        self._base = 1_000.0
        self._started: float | None = None

    def __call__(self) -> float:
        started = self._started
        if started is None:
            return self._base
        return self._base + (time.monotonic() - started) * 10

    def run(self) -> None:
        self._started = time.monotonic()


class Harness:
    def __init__(self) -> None:
        self.time = VirtualTime()
        self.sink: RecordingSink[str] = RecordingSink()
        self.taken: list[str] = []  # refs handed to the lanes (each is reported once, even
        # when submit raises: then as abandoned)
        self._clients: list[AmplitudeClient] = []
        self._lanes: list[Lanes[str]] = []

    def lanes(self, fake: FakeAmplitude, *, lanes: int = 4, limits: RequestLimits = LIMITS,
              retry: RetryPolicy | None = None, **options: Any) -> Lanes[str]:
        client = AmplitudeClient(
            URL, API_KEY, transport=httpx.MockTransport(fake),
            retry=retry or RetryPolicy(initial_delay_s=0.5, max_delay_s=2.0, horizon_s=30.0),
            sleep=self.time.sleep, clock=self.time.clock, jitter=lambda: 0.5,
            throttle_pause_s=THROTTLE_PAUSE_S)
        self._clients.append(client)
        made: Lanes[str] = Lanes(client, limits, lanes=lanes, sink=self.sink,
                                 horizon_s=HORIZON_S, **options)
        self._lanes.append(made)
        return made

    def submit(self, lanes: Lanes[str], event: dict[str, str]) -> None:
        ids = tuple(event[k] for k in ("user_id", "device_id") if k in event)
        self.taken.append(event["insert_id"])
        lanes.submit(PendingEvent(orjson.dumps(event), event["insert_id"], ids))

    def assert_each_reported_once(self) -> None:
        sink = self.sink
        reported = (list(sink.delivered_refs) + [ref for ref, _, _ in sink.rejected_refs]
                    + [ref for ref, _ in sink.abandoned_refs])
        assert Counter(reported) == Counter(self.taken)
        assert sink.skipped_refs == []

    def close(self) -> None:
        for lanes in self._lanes:
            lanes.close()
        for client in self._clients:
            client.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    made = Harness()
    yield made
    made.close()


class Overlapping:
    """``on_request`` of the fake: keep a request in flight until another one arrives (or a
    few milliseconds pass), so that lanes sending at once are seen at once. Only widens the
    window in which a broken rule would show; nothing waits on it for correctness."""

    def __init__(self) -> None:
        self.arrived = threading.Condition()
        self.count = 0

    def __call__(self, events: list[dict[str, Any]]) -> None:
        with self.arrived:
            self.count += 1
            mine = self.count
            self.arrived.notify_all()
            self.arrived.wait_for(lambda: self.count > mine, timeout=0.003)


# ---- one request per id at a time, per-id order -----------------------------------------


def test_never_two_requests_in_flight_for_one_id_and_each_ids_order_is_kept(
    harness: Harness,
) -> None:
    events = workload(600)
    fake = FakeAmplitude()
    fake.on_request = Overlapping()
    lanes = harness.lanes(fake, lanes=4)
    for event in events:
        harness.submit(lanes, event)
    lanes.drain()

    assert fake.max_in_flight >= 2  # the lanes did send at the same time
    assert fake.overlaps == []  # but never two requests holding one user or device
    assert per_id_order(fake.stored) == per_id_order(events)
    assert Counter(fake.stored_ids()) == Counter(e["insert_id"] for e in events)
    assert sorted(harness.sink.delivered_refs) == sorted(e["insert_id"] for e in events)
    stats = lanes.take_stats()
    assert stats.requests == len(fake.requests) >= len(events) // LIMITS.max_events
    assert stats.retries == 0 and stats.repeats_dropped == 0
    harness.assert_each_reported_once()


# ---- 429 naming one user ----------------------------------------------------------------------


def test_a_429_naming_one_user_holds_its_events_while_the_others_flow(
    harness: Harness,
) -> None:
    lane_count = 2
    busy = in_lane(0, "busy-user", lane_count)
    throttles = {"left": 1}

    def rule(events: list[dict[str, Any]]) -> httpx.Response | None:
        named = [n for n, e in enumerate(events) if e.get("user_id") == busy]
        if not named or throttles["left"] == 0:
            return None
        throttles["left"] -= 1
        return status(429, error="Too many requests for some devices and users",
                      eps_threshold=30, throttled_users={busy: 31}, throttled_devices={},
                      throttled_events=named)

    fake = FakeAmplitude(rule)
    clock = HeldClock()
    lanes = harness.lanes(fake, lanes=lane_count, clock=clock)
    # The busy user's events early, in between and late; others (in both lanes) around them.
    events: list[dict[str, str]] = []
    for i in range(300):
        if i in (0, 5, 120, 299):
            events.append({"event_type": "e", "insert_id": f"i-{i:04d}", "user_id": busy})
        else:
            user = f"user-{i % 23:03d}"
            events.append({"event_type": "e", "insert_id": f"i-{i:04d}", "user_id": user})
    busy_ids = [e["insert_id"] for e in events if e.get("user_id") == busy]
    same_lane = [k for k in range(23) if zlib.crc32(f"user-{k:03d}".encode()) % lane_count == 0]
    assert same_lane  # some other users share the busy user's lane: they must flow too
    others = {e["insert_id"] for e in events} - set(busy_ids)
    for event in events:
        harness.submit(lanes, event)

    seen_while_held: dict[str, Any] = {}

    def watch() -> None:
        """While the lanes' clock stands still, the throttled user's pause never ends: wait
        for every other event, note what Amplitude had, then let time run."""
        try:
            deadline = time.monotonic() + 5
            delivered: set[str] = set()
            while time.monotonic() < deadline:
                delivered = set(list(harness.sink.delivered_refs))  # a copy, taken at once
                if others <= delivered:
                    break
                threading.Event().wait(0.002)
            seen_while_held["others_delivered"] = others <= delivered
            seen_while_held["busy_stored"] = [i for i in fake.stored_ids() if i in busy_ids]
            seen_while_held["busy_sent"] = [i for i in fake.sent_ids() if i in busy_ids]
        finally:
            clock.run()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    lanes.drain()  # flushes the open requests; returns once the held events are sent
    watcher.join()

    assert seen_while_held["others_delivered"], "other users waited for the throttled one"
    assert seen_while_held["busy_stored"] == []  # held: none overtook the pause
    assert seen_while_held["busy_sent"] == ["i-0000", "i-0005"]  # only the first request's
    assert throttles["left"] == 0
    # Then all of the user's events, in order, once each; nobody else's order changed.
    assert [i for i in fake.stored_ids() if i in busy_ids] == busy_ids
    assert per_id_order(fake.stored) == per_id_order(events)
    assert Counter(fake.stored_ids()) == Counter(e["insert_id"] for e in events)
    assert fake.overlaps == []
    harness.assert_each_reported_once()
    assert harness.sink.abandoned_refs == [] and harness.sink.rejected_refs == []


# ---- a failure past the horizon ---------------------------------------------------------------


def unavailable_for(user: str) -> Any:
    def rule(events: list[dict[str, Any]]) -> httpx.Response | None:
        if any(event.get("user_id") == user for event in events):
            return httpx.Response(503, text="Service Unavailable")
        return None
    return rule


def test_events_of_a_request_failing_past_the_horizon_are_abandoned_and_others_flow(
    harness: Harness,
) -> None:
    doomed = "doomed-user"
    fake = FakeAmplitude(unavailable_for(doomed))
    lanes = harness.lanes(fake, lanes=3, retry=TINY_HORIZON,
                          limits=RequestLimits(max_events=5, max_body_bytes=100_000))
    events = [{"event_type": "e", "insert_id": f"i-{i:04d}", "user_id": f"user-{i % 17:03d}"}
              for i in range(120)]
    events[40] = {"event_type": "e", "insert_id": "i-0040", "user_id": doomed}
    for event in events:
        harness.submit(lanes, event)
    lanes.drain()  # a failure that does not end the run: drain does not raise
    assert lanes.failed is None

    failing_requests = [[e["insert_id"] for e in request] for request in fake.requests
                        if any(e.get("user_id") == doomed for e in request)]
    assert len(failing_requests) == 2 and failing_requests[0] == failing_requests[1]
    failed = failing_requests[0]
    assert "i-0040" in failed and harness.time.sleeps == [0.75]
    sink = harness.sink
    # The whole failed request is abandoned (pending), neither delivered nor rejected.
    assert sorted(ref for ref, _ in sink.abandoned_refs) == sorted(failed)
    assert all("gave up" in why for _, why in sink.abandoned_refs)
    assert not set(failed) & set(sink.delivered_refs) and sink.rejected_refs == []
    assert set(sink.delivered_refs) == {e["insert_id"] for e in events} - set(failed)
    assert set(fake.stored_ids()) == set(sink.delivered_refs)

    # The lanes go on serving: other ids (the doomed user's lane included) are delivered.
    later = [{"event_type": "e", "insert_id": f"j-{i:04d}", "user_id": f"user-{i % 17:03d}"}
             for i in range(60)]
    for event in later:
        harness.submit(lanes, event)
    lanes.drain()
    assert {e["insert_id"] for e in later} <= set(sink.delivered_refs)
    harness.assert_each_reported_once()


# ---- errors that stop the lanes ---------------------------------------------------------------


def submit_until_refused(harness: Harness, lanes: Lanes[str], limit: int = 500) -> BaseException:
    """Submit events until ``submit`` raises (the lanes stopped); returns the error."""
    for i in range(limit):
        event = {"event_type": "e", "insert_id": f"k-{i:04d}", "user_id": f"user-{i % 13:03d}"}
        try:
            harness.submit(lanes, event)
        except Exception as exc:
            return exc
    raise AssertionError(f"{limit} events taken after the lanes stopped")


def test_an_invalid_api_key_makes_drain_raise_and_later_submits_raise(
    harness: Harness,
) -> None:
    fake = FakeAmplitude(lambda events: status(400, error=f"Invalid API key: {API_KEY}"))
    lanes = harness.lanes(fake, lanes=2,
                          limits=RequestLimits(max_events=5, max_body_bytes=100_000))
    refused = submit_until_refused(harness, lanes)
    assert isinstance(refused, AmplitudeSetupError)
    assert "rejected the API key" in str(refused) and API_KEY not in str(refused)
    assert lanes.failed is refused
    # Back-pressure: the lanes were a few requests ahead at most when they stopped.
    assert len(harness.taken) <= 2 * 3 * 5
    with pytest.raises(AmplitudeSetupError):
        lanes.drain()

    sink = harness.sink
    assert sink.delivered_refs == [] and sink.rejected_refs == []
    assert sorted(ref for ref, _ in sink.abandoned_refs) == sorted(harness.taken)
    assert fake.stored == [] and 1 <= len(fake.requests) <= 2  # one per lane at most
    harness.assert_each_reported_once()


def test_with_stop_on_failure_any_failure_stops_the_lanes(harness: Harness) -> None:
    doomed = "doomed-user"
    fake = FakeAmplitude(unavailable_for(doomed))
    lanes = harness.lanes(fake, lanes=2, retry=TINY_HORIZON, stop_on_failure=True,
                          limits=RequestLimits(max_events=5, max_body_bytes=100_000))
    harness.submit(lanes, {"event_type": "e", "insert_id": "doomed-0", "user_id": doomed})
    refused = submit_until_refused(harness, lanes)
    assert isinstance(refused, DeliveryFailed) and "gave up" in str(refused)
    with pytest.raises(DeliveryFailed):
        lanes.drain()

    sink = harness.sink
    abandoned = {ref for ref, _ in sink.abandoned_refs}
    assert "doomed-0" in abandoned and sink.rejected_refs == []
    assert set(fake.stored_ids()) == set(sink.delivered_refs)
    harness.assert_each_reported_once()


def test_without_stop_on_failure_the_same_failure_leaves_the_lanes_running(
    harness: Harness,
) -> None:
    """The counterpart of the test above: the same failure, the default policy."""
    doomed = "doomed-user"
    fake = FakeAmplitude(unavailable_for(doomed))
    lanes = harness.lanes(fake, lanes=2, retry=TINY_HORIZON,
                          limits=RequestLimits(max_events=5, max_body_bytes=100_000))
    harness.submit(lanes, {"event_type": "e", "insert_id": "doomed-0", "user_id": doomed})
    for i in range(100):
        harness.submit(lanes, {"event_type": "e", "insert_id": f"k-{i:04d}",
                               "user_id": f"user-{i % 13:03d}"})
    lanes.drain()
    assert lanes.failed is None
    assert "doomed-0" in {ref for ref, _ in harness.sink.abandoned_refs}
    assert len(harness.sink.delivered_refs) >= 100 - 4  # at most the doomed request's others
    harness.assert_each_reported_once()


# ---- refusals -----------------------------------------------------------------------------


def test_refused_events_are_reported_rejected_and_the_rest_of_their_request_delivered(
    harness: Harness,
) -> None:
    bad = {"i-0003", "i-0017", "i-0042"}

    def rule(events: list[dict[str, Any]]) -> httpx.Response | None:
        listed = [n for n, e in enumerate(events) if e["insert_id"] in bad]
        if not listed:
            return None
        return status(400, error="Invalid field values on some events",
                      events_with_invalid_fields={"time": listed})

    fake = FakeAmplitude(rule)
    lanes = harness.lanes(fake, lanes=3)
    events = [{"event_type": "e", "insert_id": f"i-{i:04d}", "user_id": f"user-{i % 9:03d}"}
              for i in range(90)]
    for event in events:
        harness.submit(lanes, event)
    lanes.drain()
    sink = harness.sink
    assert sorted((ref, reason) for ref, reason, _ in sink.rejected_refs) == sorted(
        (ref, "amplitude_invalid_field:time") for ref in bad)
    assert set(sink.delivered_refs) == {e["insert_id"] for e in events} - bad
    assert Counter(fake.stored_ids()) == Counter(sink.delivered_refs)
    assert per_id_order(fake.stored) == per_id_order(
        [e for e in events if e["insert_id"] not in bad])
    harness.assert_each_reported_once()


# ---- repeats Amplitude dropped ------------------------------------------------------------


class RepeatsSink(RecordingSink[str]):
    """Also keeps, per delivered report, (events, repeats Amplitude dropped)."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[tuple[int, int]] = []
        self._reports_lock = threading.Lock()

    def delivered(self, refs: list[str], repeats_dropped: int = 0) -> None:
        with self._reports_lock:
            self.reports.append((len(refs), repeats_dropped))
        super().delivered(refs)


def test_a_retry_amplitude_answers_short_is_delivered_and_its_repeats_counted(
    harness: Harness,
) -> None:
    amplitude = DedupingAmplitude({"i-0010", "i-0050", "i-0090"})
    sink = harness.sink = RepeatsSink()
    lanes = harness.lanes(FakeAmplitude(amplitude), lanes=3,
                          limits=RequestLimits(max_events=5, max_body_bytes=100_000))
    events = [{"event_type": "e", "insert_id": f"i-{i:04d}", "user_id": f"user-{i % 7:03d}"}
              for i in range(120)]
    for event in events:
        harness.submit(lanes, event)
    lanes.drain()

    assert lanes.failed is None and sink.abandoned_refs == []
    assert len(amplitude.faulted) == 3  # each fault fired, after storing its request
    # Stored once each; every event reported delivered once, none re-sent in a loop.
    assert sorted(amplitude.stored) == sorted(e["insert_id"] for e in events)
    assert Counter(sink.delivered_refs) == Counter(e["insert_id"] for e in events)
    stats = lanes.take_stats()
    # The retries of the three faulted requests were acknowledged with 0 ingested.
    assert stats.repeats_dropped == sum(amplitude.faulted) > 0
    assert stats.retries == 3
    assert sum(repeats for _, repeats in sink.reports) == stats.repeats_dropped
    assert all(0 <= repeats <= count for count, repeats in sink.reports)
    assert lanes.take_stats() == (0, 0, 0)  # taken: counted once
    harness.assert_each_reported_once()


def test_repeats_acknowledged_before_a_send_failed_are_counted_and_reported(
    harness: Harness,
) -> None:
    """A 413 splits the request; the first half is acknowledged with none ingested, the
    second half fails past the horizon: the first half's repeats still count."""
    answers = {4: [status(413, error="Payload too large")]}

    def rule(events: list[dict[str, Any]]) -> httpx.Response | None:
        if len(events) == 4:
            return answers[4].pop(0)
        if events[0]["insert_id"] == "i-0000":
            return httpx.Response(200, json={"code": 200, "events_ingested": 0})
        return httpx.Response(503, text="Service Unavailable")

    sink = harness.sink = RepeatsSink()
    lanes = harness.lanes(FakeAmplitude(rule), lanes=1, retry=TINY_HORIZON,
                          limits=RequestLimits(max_events=4, max_body_bytes=100_000))
    for i in range(4):
        harness.submit(lanes, {"event_type": "e", "insert_id": f"i-{i:04d}",
                               "user_id": "user-001"})
    lanes.drain()

    assert sink.delivered_refs == ["i-0000", "i-0001"] and sink.reports == [(2, 2)]
    assert sorted(ref for ref, _ in sink.abandoned_refs) == ["i-0002", "i-0003"]
    stats = lanes.take_stats()
    # 413, the short acknowledgement, then two 503s (one retry) before the horizon.
    assert stats == (4, 1, 2)
    harness.assert_each_reported_once()
