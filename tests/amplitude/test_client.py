"""The upload client against real HTTP: a scripted loopback server and the emulator."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from currents_export.amplitude.api import RetryPolicy, endpoint_url
from currents_export.amplitude.batching import PendingEvent
from currents_export.amplitude.client import (
    BAD_REQUEST,
    TOO_LARGE,
    AmplitudeClient,
)
from currents_export.errors import AmplitudeSetupError, DeliveryFailed
from currents_export.kit.emulator import Emulator
from tests.support.servers import Scripted, ScriptedServer

SECRET = "secret-api-key-42"


@pytest.fixture
def scripted() -> Iterator[type[ScriptedServer]]:
    servers: list[ScriptedServer] = []

    class Factory(ScriptedServer):
        def __init__(self, script: list[Scripted]) -> None:
            super().__init__(script)
            servers.append(self)

    yield Factory
    for server in servers:
        server.close()


def events(n: int) -> list[PendingEvent[int]]:
    return [
        PendingEvent(orjson.dumps({"event_type": "e", "user_id": f"user-{i:04d}",
                                   "insert_id": f"i-{i}"}), i)
        for i in range(n)
    ]


def client(url: str, slept: list[float], **kwargs: object) -> AmplitudeClient:
    """A client whose backoff sleeps are recorded and advance a virtual clock instantly."""

    def clock() -> float:
        return sum(slept)

    return AmplitudeClient(url, SECRET, sleep=slept.append, clock=clock, jitter=lambda: 0.5,
                           **kwargs)  # type: ignore[arg-type]


def test_5xx_resets_and_non_json_bodies_are_retried_with_growing_backoff(
    scripted: type[ScriptedServer],
) -> None:
    server = scripted([
        Scripted(503), Scripted(502, body=b"<html>Bad gateway</html>"), Scripted(hang_up=True),
        Scripted(500), Scripted(429, body=b'{"code":429,"error":"Too many requests"}'),
    ])
    slept: list[float] = []
    outcome = client(server.url, slept).send(events(3))
    assert [e.ref for e in outcome.delivered] == [0, 1, 2]
    assert outcome.requests == 6 and outcome.retries == 5
    assert slept == sorted(slept) and slept[0] < slept[-1]
    # Every attempt re-sent the same events with the same insert_ids.
    assert all([e["insert_id"] for e in b["events"]] == ["i-0", "i-1", "i-2"]
               for b in server.bodies)


def test_a_response_slower_than_the_timeout_is_retried(scripted: type[ScriptedServer]) -> None:
    server = scripted([Scripted(delay_s=0.6)])
    slept: list[float] = []
    outcome = client(server.url, slept, timeout=httpx.Timeout(0.2)).send(events(2))
    assert len(outcome.delivered) == 2 and outcome.retries == 1


def test_giving_up_after_the_horizon_says_so_without_the_key(
    scripted: type[ScriptedServer],
) -> None:
    server = scripted([Scripted(500)] * 10)
    slept: list[float] = []
    policy = RetryPolicy(initial_delay_s=1, max_delay_s=4, horizon_s=10)
    with pytest.raises(DeliveryFailed) as info:
        client(server.url, slept, retry=policy).send(events(1))
    message = str(info.value)
    assert "unavailable since" in message and "stay pending" in message
    assert "HTTP 500" in message and "127.0.0.1" in message
    assert SECRET not in message
    # The last backoff is cut to what is left: the last attempt goes at the horizon.
    assert sum(slept) == 10 and "every request failed for 10 s" in message


def test_repeated_403_stops_after_a_few_attempts(scripted: type[ScriptedServer]) -> None:
    server = scripted([Scripted(403)] * 5)
    with pytest.raises(DeliveryFailed, match="403 Forbidden"):
        client(server.url, []).send(events(1))
    assert len(server.bodies) == RetryPolicy().max_forbidden_attempts


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"code": 400, "error": f"Invalid API key: {SECRET}"}, "rejected the API key"),
        ({"code": 400, "error": "Request missing required field", "missing_field": "api_key"},
         "missing 'api_key'"),
    ],
)
def test_configuration_errors_stop_without_retrying_or_leaking_the_key(
    scripted: type[ScriptedServer], body: dict, message: str
) -> None:
    server = scripted([Scripted(400, body=orjson.dumps(body))])
    with pytest.raises(AmplitudeSetupError, match=message) as info:
        client(server.url, []).send(events(2))
    assert SECRET not in str(info.value)
    assert len(server.bodies) == 1


def test_400_without_indexes_refuses_the_chunk(scripted: type[ScriptedServer]) -> None:
    server = scripted([Scripted(400, body=b'{"code":400,"error":"Invalid JSON request body"}')])
    outcome = client(server.url, []).send(events(3))
    assert [(e.ref, reason) for e, reason, _ in outcome.rejected] == [
        (0, BAD_REQUEST), (1, BAD_REQUEST), (2, BAD_REQUEST)
    ]


def test_413_splits_down_to_a_single_refused_event(scripted: type[ScriptedServer]) -> None:
    # 4 events: 413, then halves [0,1] → 413, [0] → 413, [1] ok, [2,3] ok.
    server = scripted([Scripted(413), Scripted(413), Scripted(413)])
    outcome = client(server.url, []).send(events(4))
    assert [e.ref for e, reason, _ in outcome.rejected if reason == TOO_LARGE] == [0]
    assert [e.ref for e in outcome.delivered] == [1, 2, 3]
    assert [len(b["events"]) for b in server.bodies] == [4, 2, 1, 1, 2]


def test_indexed_400_from_the_emulator_refuses_exactly_the_listed_events() -> None:
    with Emulator() as emulator:
        batch = events(5)
        bad = {"event_type": "e", "user_id": "user-bad", "insert_id": "t", "time": "yesterday"}
        batch[2] = PendingEvent(orjson.dumps(bad), 2)
        outcome = AmplitudeClient(f"{emulator.url}/batch", SECRET).send(batch)
        assert [(e.ref, reason) for e, reason, _ in outcome.rejected] == [
            (2, "amplitude_invalid_field:time")
        ]
        assert [e.ref for e in outcome.delivered] == [0, 1, 3, 4]
        assert outcome.requests == 2
        assert sorted(e["insert_id"] for e in emulator.events()) == ["i-0", "i-1", "i-3", "i-4"]


def test_client_repr_hides_the_key() -> None:
    amplitude = AmplitudeClient("http://127.0.0.1:9/batch", SECRET)
    assert SECRET not in repr(amplitude)
    amplitude.close()


@pytest.mark.parametrize(
    ("api", "region", "base", "url"),
    [
        ("http", "us", None, "https://api2.amplitude.com/2/httpapi"),
        ("batch", "us", None, "https://api2.amplitude.com/batch"),
        ("http", "eu", None, "https://api.eu.amplitude.com/2/httpapi"),
        ("batch", "eu", None, "https://api.eu.amplitude.com/batch"),
        ("batch", "eu", "http://127.0.0.1:8787/", "http://127.0.0.1:8787/batch"),
    ],
)
def test_endpoint_table(api: str, region: str, base: str | None, url: str) -> None:
    assert endpoint_url(api, region, base) == url


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_delay_s=1, max_delay_s=8)
    assert [policy.delay(n, 0.0) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    assert [policy.delay(n, 0.999) for n in range(1, 3)] == pytest.approx([1, 2], rel=1e-2)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=2_500), min_size=1, max_size=60),
    max_events=st.integers(min_value=1, max_value=25),
    max_body=st.integers(min_value=400, max_value=20_000),
)
def test_splitting_on_413_loses_and_duplicates_nothing(
    emulator: Emulator, sizes: list[int], max_events: int, max_body: int
) -> None:
    """Whatever the server's real limits, every event ends delivered once or refused."""
    httpx.post(f"{emulator.url}/_emulator/reset").raise_for_status()
    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"batch": {"max_events": max_events, "max_body_bytes": max_body}})
    batch = [
        PendingEvent(orjson.dumps({"event_type": "e", "user_id": f"user-{i:04d}",
                                   "insert_id": f"i-{i}", "pad": "x" * size}), i)
        for i, size in enumerate(sizes)
    ]
    amplitude = AmplitudeClient(f"{emulator.url}/batch", SECRET)
    outcome = amplitude.send(batch)
    amplitude.close()
    delivered = [e.ref for e in outcome.delivered]
    refused = [e.ref for e, reason, _ in outcome.rejected if reason == TOO_LARGE]
    assert sorted(delivered + refused) == list(range(len(sizes)))
    for index in refused:  # refused only when it cannot fit even alone
        assert len(amplitude.envelope.body([batch[index]])) > max_body
    stored = [e["insert_id"] for e in emulator.events()]
    assert stored == [f"i-{i}" for i in sorted(delivered)]  # once each, in order


def test_a_429_without_usable_indexes_pauses_the_whole_stream(
    scripted: type[ScriptedServer],
) -> None:
    server = scripted([
        Scripted(429, body=b'{"code":429,"error":"Too many requests"}'),
        Scripted(429, body=b'{"code":429,"throttled_events":[99]}'),  # not in this request
    ])
    slept: list[float] = []
    policy = RetryPolicy(project_pause_s=7.0)
    amplitude = client(server.url, slept, retry=policy)
    outcome = amplitude.send(events(2))
    assert [e.ref for e in outcome.delivered] == [0, 1] and outcome.throttled == []
    # each refusal pauses every sender 7 s (a backoff, then the rest of the pause): twice
    assert sum(slept) >= 2 * 7.0 and amplitude.pacer.report().refused == 2


def test_after_a_413_split_a_later_part_never_overtakes_a_throttled_event() -> None:
    """The first half of a split request is throttled for a device; the second half holds a
    later event of the same user on another device: it waits too, instead of arriving
    before the throttled one."""
    def event(n: int, device: str) -> PendingEvent[int]:
        body = {"event_type": "e", "user_id": "user-00001", "device_id": device,
                "insert_id": f"i-{n}", "time": 1_768_471_200_000 + n}
        return PendingEvent(orjson.dumps(body), n, ("user-00001", device))

    with Emulator() as emulator:
        emulator.set_faults([
            {"action": "status", "status": 413, "times": 1},
            {"action": "status", "status": 429, "ids": ["device-aaaa"], "times": 1},
        ], seed=1)
        sent = [event(0, "device-aaaa"), event(1, "device-aaaa"), event(2, "device-bbbb"),
                event(3, "device-bbbb")]
        outcome = AmplitudeClient(f"{emulator.url}/batch", SECRET,
                                  throttle_pause_s=0.5).send(sent)
        assert [e.ref for e, _ in outcome.throttled] == [0, 1, 2, 3]
        assert outcome.delivered == [] and emulator.events() == []
