"""The client's status policy, through ``httpx.MockTransport``: no sockets, no waiting.

A fake Amplitude (a handler function, as in httpx's own ``tests/client/test_event_hooks.py``)
answers from a script and then acknowledges whatever it is sent; backoff sleeps are
recorded and advance a virtual clock. Each test follows one row of the client-behaviour
table of ``reference/amplitude-api.md`` §10.6, with the response bodies of §5.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from currents_export.amplitude.api import RetryPolicy
from currents_export.amplitude.batching import PendingEvent
from currents_export.amplitude.client import (
    BAD_REQUEST,
    SILENCED,
    TOO_LARGE,
    AmplitudeClient,
    SendOutcome,
)
from currents_export.errors import (
    AmplitudeSetupError,
    AmplitudeUnavailable,
    ConfigurationError,
    DeliveryFailed,
    SendInterrupted,
)
from currents_export.stopping import Stop
from tests.support.fake_amplitude import ack, status

URL = "https://api2.amplitude.com/batch"
SECRET = "secret-api-key-42"
THROTTLE_PAUSE_S = 15.0

# What the script may hold: a response, an httpx error to raise (a type, raised with the
# request), or a function of the request.
Answer = httpx.Response | type[httpx.HTTPError] | Callable[[httpx.Request], httpx.Response]


class FakeAmplitude:
    """The handler behind ``httpx.MockTransport``: the script first, then acknowledgements."""

    def __init__(self, *script: Answer) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.script:
            return ack(len(orjson.loads(request.content)["events"]))
        answer = self.script.pop(0)
        if isinstance(answer, httpx.Response):
            return answer
        if isinstance(answer, type):
            raise answer("scripted failure", request=request)  # type: ignore[call-arg]
        return answer(request)

    def sent(self) -> list[list[str]]:
        """The insert_ids of each request, in order."""
        return [[e["insert_id"] for e in orjson.loads(r.content)["events"]]
                for r in self.requests]


def events(n: int, ids: list[tuple[str, ...]] | None = None) -> list[PendingEvent[int]]:
    """``n`` serialised events; ``ids`` (user, device) per event when the test needs them."""
    made = []
    for i in range(n):
        body = {"event_type": "e", "user_id": f"user-{i:04d}", "insert_id": f"i-{i}"}
        if ids is not None:
            body["user_id"], body["device_id"] = ids[i]
        made.append(PendingEvent(orjson.dumps(body), i, ids[i] if ids is not None else ()))
    return made


@pytest.fixture
def slept() -> list[float]:
    """The backoff sleeps of the client under test; their sum is its clock."""
    return []


@pytest.fixture
def make(slept: list[float]) -> Iterator[Callable[..., AmplitudeClient]]:
    made: list[AmplitudeClient] = []

    def build(amplitude: FakeAmplitude, **kwargs: Any) -> AmplitudeClient:
        client = AmplitudeClient(
            URL, SECRET, transport=httpx.MockTransport(amplitude),
            sleep=slept.append, clock=lambda: sum(slept), jitter=lambda: 0.5,
            throttle_pause_s=kwargs.pop("throttle_pause_s", THROTTLE_PAUSE_S), **kwargs,
        )
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


def refs(outcome: SendOutcome[int]) -> dict[str, Any]:
    """Where each event ended, by ref."""
    return {
        "delivered": [e.ref for e in outcome.delivered],
        "rejected": [(e.ref, reason) for e, reason, _ in outcome.rejected],
        "throttled": [(e.ref, pause) for e, pause in outcome.throttled],
    }


# --- what is sent ----------------------------------------------------------------------


def test_one_post_with_json_headers_and_the_key_only_in_the_body(make: Any) -> None:
    amplitude = FakeAmplitude()
    batch = events(3)
    make(amplitude).send(batch)
    [request] = amplitude.requests
    assert request.method == "POST" and str(request.url) == URL
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "currents-export"
    # No auth header: the key travels in the body, and nowhere else.
    assert "authorization" not in request.headers
    assert all(SECRET not in value for value in request.headers.values())
    assert SECRET not in str(request.url)
    # The body is the envelope around the events exactly as serialised (never re-encoded).
    assert request.content == (
        b'{"api_key":"' + SECRET.encode() + b'","events":['
        + b",".join(e.payload for e in batch) + b"]}"
    )
    assert orjson.loads(request.content) == {
        "api_key": SECRET, "events": [orjson.loads(e.payload) for e in batch]}
    assert request.extensions["timeout"]["connect"] == 10.0  # §10.8: ~10 s connect


def test_min_id_length_is_sent_as_the_documented_option(make: Any) -> None:
    amplitude = FakeAmplitude()
    make(amplitude, min_id_length=1).send(events(1))
    body = orjson.loads(amplitude.requests[0].content)
    assert body["options"] == {"min_id_length": 1}
    assert set(body) == {"api_key", "events", "options"}


# --- 200 -------------------------------------------------------------------------------


def test_a_verified_acknowledgement_delivers_every_event(
    make: Any, slept: list[float]
) -> None:
    amplitude = FakeAmplitude(ack(3))
    outcome = make(amplitude).send(events(3))
    assert refs(outcome) == {"delivered": [0, 1, 2], "rejected": [], "throttled": []}
    assert (outcome.requests, outcome.retries) == (1, 0)
    assert outcome.repeats_dropped == 0
    assert slept == []


def acknowledged(ingested: Any) -> httpx.Response:
    """Amplitude's 200 body with ``events_ingested`` as given (any JSON value)."""
    return httpx.Response(200, json={"code": 200, "events_ingested": ingested,
                                     "payload_size_bytes": 50,
                                     "server_upload_time": 1396381378123})


@pytest.mark.parametrize(("sent", "ingested"), [(3, 2), (5, 0), (1, 0), (4, 1)])
def test_a_shortfall_is_delivered_and_counted_as_repeats_never_retried(
    make: Any, slept: list[float], sent: int, ingested: int
) -> None:
    """Amplitude's own answer with fewer events ingested than sent (insert_ids it already
    had: a retry after a 5xx that came after storing, a copy two workers both send) is a
    delivery of every event of the request; re-sending would get the same answer forever."""
    amplitude = FakeAmplitude(acknowledged(ingested))
    outcome = make(amplitude).send(events(sent))
    assert refs(outcome) == {"delivered": list(range(sent)), "rejected": [], "throttled": []}
    assert outcome.repeats_dropped == sent - ingested
    assert (outcome.requests, outcome.retries) == (1, 0) and slept == []
    assert len(amplitude.requests) == 1


def test_repeats_add_up_over_the_requests_of_one_send(make: Any, slept: list[float]) -> None:
    """A 413 splits the send; each half's acknowledgement brings its own shortfall."""
    amplitude = FakeAmplitude(status(413, error="Payload too large"),
                              acknowledged(1), acknowledged(3))
    outcome = make(amplitude).send(events(6))
    assert refs(outcome)["delivered"] == [0, 1, 2, 3, 4, 5]
    assert outcome.repeats_dropped == (3 - 1) + (3 - 3)
    assert outcome.retries == 0 and slept == []


def test_repeats_delivered_before_a_failure_travel_with_it(make: Any) -> None:
    """The first half of a split send is acknowledged short, the second never: the error's
    ``partial`` keeps both the delivered events and their repeats."""
    policy = RetryPolicy(initial_delay_s=1, max_delay_s=4, horizon_s=10)
    amplitude = FakeAmplitude(status(413, error="Payload too large"), acknowledged(0),
                              *[status(503)] * 50)
    with pytest.raises(DeliveryFailed) as info:
        make(amplitude, retry=policy).send(events(4))
    partial = info.value.partial
    assert isinstance(partial, SendOutcome)
    assert [e.ref for e in partial.delivered] == [0, 1]
    assert partial.repeats_dropped == 2


@pytest.mark.parametrize(
    ("sent", "answer"),
    [
        pytest.param(1, acknowledged(True), id="true-for-one-event"),
        pytest.param(1, acknowledged(False), id="false-for-one-event"),
        pytest.param(3, acknowledged(3.0), id="float-equal-to-sent"),
        pytest.param(3, acknowledged(2.0), id="float-below-sent"),
        pytest.param(3, acknowledged(-1), id="negative"),
        pytest.param(3, acknowledged(4), id="more-than-sent"),
        pytest.param(3, acknowledged(None), id="null"),
        pytest.param(3, httpx.Response(200, json={"code": 200.0, "events_ingested": 3}),
                     id="code-a-float"),
        pytest.param(3, httpx.Response(200, json={"code": True, "events_ingested": 3}),
                     id="code-a-bool"),
    ],
)
def test_an_events_ingested_that_cannot_be_amplitudes_is_retried_like_a_5xx(
    make: Any, slept: list[float], sent: int, answer: httpx.Response
) -> None:
    """Only an integer from 0 to the events sent is Amplitude's count: a bool (``true`` is
    1 in Python), a float, a negative number or more than sent is not its answer."""
    amplitude = FakeAmplitude(answer)
    outcome = make(amplitude).send(events(sent))
    assert (outcome.requests, outcome.retries) == (2, 1) and len(slept) == 1
    assert refs(outcome)["delivered"] == list(range(sent))  # on the real acknowledgement
    assert outcome.repeats_dropped == 0


def test_the_retry_of_a_bad_count_says_it_does_not_look_like_amplitude(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    amplitude = FakeAmplitude(acknowledged(True))
    with caplog.at_level("WARNING", logger="currents_export.amplitude.client"):
        outcome = make(amplitude).send(events(1))
    assert outcome.retries == 1
    [warning] = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert "events_ingested True, 1 sent" in warning
    assert "does not look like Amplitude" in warning


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(httpx.Response(200, html="<html>Welcome to nginx</html>"), id="html"),
        pytest.param(httpx.Response(200), id="empty"),
        pytest.param(httpx.Response(200, json={"ok": True}), id="other-json"),
        pytest.param(httpx.Response(200, json=[{"code": 200, "events_ingested": 3}]),
                     id="json-array"),
        pytest.param(httpx.Response(200, json={"events_ingested": 3}), id="no-code"),
        pytest.param(httpx.Response(200, json={"code": 400, "events_ingested": 3}),
                     id="code-not-200"),
        pytest.param(httpx.Response(200, json={"code": 200}), id="no-events-ingested"),
        pytest.param(httpx.Response(200, json={"code": 200, "events_ingested": "3"}),
                     id="events-ingested-not-a-number"),
        pytest.param(httpx.Response(200, json={"code": 200, "events_ingested": 4}),
                     id="more-ingested-than-sent"),
        pytest.param(httpx.Response(200, json={"code": 200, "events_ingested": 1.5}),
                     id="events-ingested-a-float"),
        pytest.param(httpx.Response(200, json={"code": 200, "events_ingested": True}),
                     id="events-ingested-a-bool"),
    ],
)
def test_a_200_that_is_not_amplitudes_acknowledgement_is_not_trusted(
    make: Any, slept: list[float], answer: httpx.Response
) -> None:
    amplitude = FakeAmplitude(answer)
    outcome = make(amplitude).send(events(3))
    # Not counted as delivered on that answer: sent again, after a backoff.
    assert (outcome.requests, outcome.retries) == (2, 1) and len(slept) == 1
    assert amplitude.sent() == [["i-0", "i-1", "i-2"]] * 2
    assert refs(outcome)["delivered"] == [0, 1, 2]  # on the real acknowledgement


def test_an_endpoint_that_never_acknowledges_fails_delivery_saying_why(make: Any) -> None:
    amplitude = FakeAmplitude(*[httpx.Response(200, text="OK")] * 50)
    policy = RetryPolicy(initial_delay_s=1, max_delay_s=4, horizon_s=30)
    with pytest.raises(DeliveryFailed) as info:
        make(amplitude, retry=policy).send(events(2))
    assert "not Amplitude's answer" in str(info.value)
    assert SECRET not in str(info.value)
    assert info.value.partial is not None and list(info.value.partial.delivered) == []


# --- 400 -------------------------------------------------------------------------------


def test_a_400_with_event_indexes_rejects_exactly_those_and_resends_the_rest_at_once(
    make: Any, slept: list[float]
) -> None:
    amplitude = FakeAmplitude(status(
        400, error="Invalid field values on some events",
        events_with_invalid_fields={"time": [1]},
        events_with_missing_fields={"event_type": [3]},
        events_with_invalid_id_lengths={"user_id": [4]},
    ))
    outcome = make(amplitude).send(events(6))
    assert refs(outcome) == {
        "delivered": [0, 2, 5],
        "rejected": [(1, "amplitude_invalid_field:time"),
                     (3, "amplitude_missing_field:event_type"),
                     (4, "amplitude_invalid_id:user_id")],
        "throttled": [],
    }
    # Amplitude's own error text goes with each refused event.
    assert {message for _, _, message in outcome.rejected} == {
        "Invalid field values on some events"}
    # The others went again at once, in order, with the same insert_ids and bytes.
    assert amplitude.sent() == [[f"i-{i}" for i in range(6)], ["i-0", "i-2", "i-5"]]
    assert slept == [] and outcome.retries == 0


def test_a_400_for_silenced_devices_rejects_those_and_holds_the_throttled(
    make: Any, slept: list[float]
) -> None:
    ids = [("user-aaaaa", "device-0"), ("user-bbbbb", "device-1"),
           ("user-ccccc", "device-2"), ("user-ddddd", "device-3")]
    amplitude = FakeAmplitude(status(  # §5, "400 — silenced devices"
        400, error="Events silenced for device_id", eps_threshold=100,
        exceeded_daily_quota_devices={}, silenced_devices=["device-0"], silenced_events=[0],
        throttled_devices={"device-1": 0}, throttled_events=[1],
    ))
    outcome = make(amplitude).send(events(4, ids))
    assert refs(outcome) == {
        "delivered": [2, 3],
        "rejected": [(0, SILENCED)],
        "throttled": [(1, THROTTLE_PAUSE_S)],
    }
    assert amplitude.sent()[1] == ["i-2", "i-3"] and slept == []


def test_a_400_without_indexes_rejects_the_whole_request(make: Any) -> None:
    amplitude = FakeAmplitude(status(400, error="Invalid JSON request body"))
    outcome = make(amplitude).send(events(3))
    assert refs(outcome)["rejected"] == [(0, BAD_REQUEST), (1, BAD_REQUEST), (2, BAD_REQUEST)]
    assert refs(outcome)["delivered"] == [] and len(amplitude.requests) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": f"Invalid API key: {SECRET}"}, "rejected the API key"),
        ({"error": "Request missing required field", "missing_field": "api_key"},
         "missing 'api_key'"),
    ],
)
def test_a_400_about_the_setup_stops_without_retrying_or_leaking_the_key(
    make: Any, slept: list[float], body: dict[str, Any], message: str
) -> None:
    amplitude = FakeAmplitude(status(400, **body))
    with pytest.raises(AmplitudeSetupError, match=message) as info:
        make(amplitude).send(events(2))
    assert isinstance(info.value, ConfigurationError) and info.value.exit_code == 2
    assert SECRET not in str(info.value)
    assert len(amplitude.requests) == 1 and slept == []
    assert info.value.partial is not None and list(info.value.partial.delivered) == []


def test_a_setup_error_after_part_was_delivered_says_which_part(make: Any) -> None:
    # 413 splits; the first half is acknowledged, then the key is refused.
    amplitude = FakeAmplitude(status(413, error="Payload too large"), ack(2),
                              status(400, error="Invalid API key: x"))
    with pytest.raises(AmplitudeSetupError) as info:
        make(amplitude).send(events(4))
    assert info.value.partial is not None
    assert [e.ref for e in info.value.partial.delivered] == [0, 1]


# --- 413 -------------------------------------------------------------------------------


def too_large_above(limit: int) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        count = len(orjson.loads(request.content)["events"])
        return status(413, error="Payload too large") if count > limit else ack(count)
    return answer


@pytest.mark.parametrize(
    "too_large",
    [
        pytest.param(status(413, error="Payload too large"), id="json"),
        pytest.param(httpx.Response(413, html="<html>413 Request Entity Too Large</html>"),
                     id="load-balancer-html"),
    ],
)
def test_413_splits_the_request_in_halves_in_order(
    make: Any, slept: list[float], too_large: httpx.Response
) -> None:
    amplitude = FakeAmplitude(too_large, too_large_above(1), too_large_above(1),
                              too_large_above(1), too_large_above(1))
    outcome = make(amplitude).send(events(4))
    assert amplitude.sent() == [["i-0", "i-1", "i-2", "i-3"], ["i-0", "i-1"], ["i-0"],
                                ["i-1"], ["i-2", "i-3"], ["i-2"], ["i-3"]]
    assert refs(outcome) == {"delivered": [0, 1, 2, 3], "rejected": [], "throttled": []}
    assert slept == [] and outcome.retries == 0


def test_a_single_event_still_too_large_is_rejected_alone(make: Any) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        ids = [e["insert_id"] for e in orjson.loads(request.content)["events"]]
        return status(413, error="Payload too large") if "i-2" in ids else ack(len(ids))

    amplitude = FakeAmplitude(*[answer] * 10)
    outcome = make(amplitude).send(events(4))
    assert refs(outcome) == {"delivered": [0, 1, 3], "rejected": [(2, TOO_LARGE)],
                             "throttled": []}


# --- 429 -------------------------------------------------------------------------------


def test_a_429_naming_events_hands_them_back_throttled_and_resends_the_rest(
    make: Any, slept: list[float]
) -> None:
    ids = [("user-aaaaa", "device-a"), ("user-bbbbb", "device-b"),
           ("user-ccccc", "device-c"), ("user-bbbbb", "device-d")]
    amplitude = FakeAmplitude(status(  # §5, "429 — per device/user (v2)"
        429, error="Too many requests for some devices and users", eps_threshold=30,
        throttled_devices={"device-b": 31}, throttled_users={}, throttled_events=[1],
    ))
    outcome = make(amplitude, throttle_pause_s=30.0).send(events(4, ids))
    # Event 3 shares user-bbbbb with the throttled event 1: it waits too, or it would
    # reach Amplitude first.
    assert refs(outcome) == {
        "delivered": [0, 2], "rejected": [], "throttled": [(1, 30.0), (3, 30.0)]}
    assert amplitude.sent()[1] == ["i-0", "i-2"]
    assert slept == [] and outcome.retries == 0  # the caller holds them; nobody sleeps here


def test_a_429_for_ids_over_the_daily_quota_holds_those_much_longer(make: Any) -> None:
    ids = [("user-aaaaa", "device-a"), ("user-bbbbb", "device-b"), ("user-ccccc", "device-c")]
    policy = RetryPolicy(daily_quota_pause_s=3_600.0)
    amplitude = FakeAmplitude(status(
        429, error="Too many requests for some devices and users", eps_threshold=1000,
        throttled_devices={"device-c": 1200}, throttled_users={},
        exceeded_daily_quota_users={"user-bbbbb": 500_001}, exceeded_daily_quota_devices={},
        throttled_events=[1, 2],
    ))
    outcome = make(amplitude, retry=policy).send(events(3, ids))
    assert refs(outcome) == {
        "delivered": [0], "rejected": [],
        "throttled": [(1, 3_600.0), (2, THROTTLE_PAUSE_S)]}


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(status(429, error="Too many requests"), id="no-indexes"),
        pytest.param(status(429, throttled_events=[99]), id="indexes-not-in-this-request"),
        pytest.param(httpx.Response(429, text="slow down"), id="not-json"),
    ],
)
def test_a_429_without_usable_indexes_pauses_then_sends_everything(
    make: Any, slept: list[float], refusal: httpx.Response
) -> None:
    amplitude = FakeAmplitude(refusal)
    outcome = make(amplitude, retry=RetryPolicy(project_pause_s=60.0)).send(events(2))
    assert refs(outcome) == {"delivered": [0, 1], "rejected": [], "throttled": []}
    assert amplitude.sent() == [["i-0", "i-1"]] * 2
    assert sum(slept) >= 60.0  # the project's limit: a long pause first


# --- 5xx, connection errors, 403 -------------------------------------------------------


FAILURES = [
    pytest.param(status(500, error="Internal Server Error"), id="500"),
    pytest.param(httpx.Response(502, html="<html>Bad gateway</html>"), id="502-html"),
    pytest.param(status(503, error="Service Unavailable"), id="503"),
    pytest.param(httpx.Response(504), id="504-empty"),
    pytest.param(httpx.ConnectError, id="connect-error"),
    pytest.param(httpx.ReadTimeout, id="read-timeout"),
    pytest.param(httpx.RemoteProtocolError, id="hang-up"),
]


@pytest.mark.parametrize("failure", FAILURES)
def test_failures_are_retried_with_growing_backoff_and_the_same_events(
    make: Any, slept: list[float], failure: Answer
) -> None:
    policy = RetryPolicy(initial_delay_s=1.0, max_delay_s=60.0)
    amplitude = FakeAmplitude(failure, failure)
    outcome = make(amplitude, retry=policy).send(events(3))
    assert refs(outcome)["delivered"] == [0, 1, 2]
    assert (outcome.requests, outcome.retries) == (3, 2)
    assert slept == [policy.delay(1, 0.5), policy.delay(2, 0.5)] and slept[0] < slept[1]
    assert [r.content for r in amplitude.requests] == [amplitude.requests[0].content] * 3


@pytest.mark.parametrize("failure", FAILURES)
def test_failures_are_retried_until_the_horizon_then_the_object_stays_pending(
    make: Any, slept: list[float], failure: Answer
) -> None:
    policy = RetryPolicy(initial_delay_s=1.0, max_delay_s=8.0, horizon_s=120.0)
    amplitude = FakeAmplitude(*[failure] * 1_000)
    with pytest.raises(DeliveryFailed) as info:
        make(amplitude, retry=policy).send(events(1))
    message = str(info.value)
    assert "stay pending" in message and "api2.amplitude.com" in message
    assert SECRET not in message
    # It kept trying, never waiting longer than the cap, the last wait cut to what was left:
    # the last attempt went at the horizon, then it gave up.
    assert all(0 < pause <= policy.max_delay_s for pause in slept)
    assert sum(slept) == policy.horizon_s
    assert "for 120 s" in message
    assert len(amplitude.requests) == len(slept) + 1
    partial = info.value.partial
    assert isinstance(partial, SendOutcome) and list(partial.delivered) == []
    assert (partial.requests, partial.retries) == (len(amplitude.requests), len(slept))


def test_403_is_retried_only_a_few_times(make: Any, slept: list[float]) -> None:
    policy = RetryPolicy(max_forbidden_attempts=3)
    amplitude = FakeAmplitude(*[status(403, error="Forbidden")] * 10)
    with pytest.raises(DeliveryFailed, match="403 Forbidden"):
        make(amplitude, retry=policy).send(events(1))
    assert len(amplitude.requests) == 3 and len(slept) == 2


def test_a_403_that_clears_delivers(make: Any) -> None:
    amplitude = FakeAmplitude(status(403, error="Forbidden"))
    outcome = make(amplitude).send(events(2))
    assert refs(outcome)["delivered"] == [0, 1] and outcome.retries == 1


# --- the horizon -------------------------------------------------------------------------


def test_a_request_failing_alone_makes_its_last_attempt_at_its_horizon(
    make: Any, slept: list[float]
) -> None:
    """Other lanes' successes keep the run's circuit closed (here: a threshold never met):
    the request's own horizon decides, and its last backoff is cut to reach it exactly."""
    policy = RetryPolicy(initial_delay_s=1.0, max_delay_s=4.0, horizon_s=10.0)
    amplitude = FakeAmplitude(*[status(503)] * 50)
    client = make(amplitude, retry=policy)
    client.circuit.threshold = 1_000
    with pytest.raises(DeliveryFailed) as info:
        client.send(events(1))
    assert not isinstance(info.value, AmplitudeUnavailable)
    assert slept == [0.75, 1.5, 3.0, 3.0, 1.75]  # 3.0 cut to the 1.75 s left
    assert len(amplitude.requests) == 6  # the last one at 10 s
    assert "after 6 attempts over 10 s" in str(info.value)


def test_amplitudes_pause_after_a_project_429_counts_toward_the_horizon(
    make: Any, slept: list[float]
) -> None:
    """The pause (60 s) is longer than the horizon (20 s): the request waits it out (no
    request may go meanwhile), tries once more, and gives up, saying how long it tried."""
    policy = RetryPolicy(initial_delay_s=1.0, max_delay_s=4.0, horizon_s=20.0,
                         project_pause_s=60.0)
    amplitude = FakeAmplitude(status(429, error="Too many requests"), *[status(503)] * 50)
    with pytest.raises(DeliveryFailed) as info:
        make(amplitude, retry=policy).send(events(2))
    assert len(amplitude.requests) == 2 and sum(slept) == 60.0
    assert "after 2 attempts over 60 s" in str(info.value)


def test_a_retry_announced_but_never_made_is_not_counted() -> None:
    """A stop during the backoff: one attempt was made, so no retry."""
    stop = Stop()
    amplitude = FakeAmplitude(*[status(503)] * 5)
    client = AmplitudeClient(URL, SECRET, transport=httpx.MockTransport(amplitude), stop=stop,
                             sleep=lambda _: stop.request("interrupted by SIGINT"),
                             clock=lambda: 0.0, jitter=lambda: 0.5)
    with pytest.raises(SendInterrupted) as info:
        client.send(events(1))
    client.close()
    partial = info.value.partial
    assert isinstance(partial, SendOutcome)
    assert len(amplitude.requests) == 1 and (partial.requests, partial.retries) == (1, 0)


def test_the_client_counts_every_attempt_as_it_is_sent(make: Any) -> None:
    """``take_attempts``: the requests and retries sent since the last call, those of a
    send that failed included (the lanes' run figures; a send left in flight counts too)."""
    policy = RetryPolicy(initial_delay_s=1.0, max_delay_s=4.0, horizon_s=10.0)
    amplitude = FakeAmplitude(*[status(503)] * 50)
    client = make(amplitude, retry=policy)
    with pytest.raises(DeliveryFailed):
        client.send(events(1))
    failed_attempts = len(amplitude.requests)
    assert client.take_attempts() == (failed_attempts, failed_attempts - 1)
    assert client.take_attempts() == (0, 0)  # taken: counted once
