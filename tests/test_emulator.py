"""The local Amplitude emulator, exercised over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from currents_export.amplitude.emulator import (
    Emulator,
    EmulatorConfig,
    EndpointLimits,
    Reply,
    ValidBatch,
    derive_device_id,
    may_contain_long_strings,
    validate_ingest,
)

API_KEY = "test-key-0123456789"
BASE_TIME = 1_700_000_000_000
EMPTY_MAPS = {
    "events_with_missing_fields": {},
    "events_with_invalid_fields": {},
    "events_with_invalid_id_lengths": {},
}


@pytest.fixture(scope="module")
def amp() -> Iterator[Emulator]:
    """One emulator for this module (named apart from conftest's shared ``emulator``)."""
    with Emulator() as server:
        yield server


@pytest.fixture
def client(amp: Emulator) -> Iterator[httpx.Client]:
    """A client on a freshly reset emulator (state cleared, default config restored)."""
    with httpx.Client(base_url=amp.url, timeout=10) as http:
        assert http.post("/_emulator/reset").status_code == 200
        yield http


def make_event(i: int = 0, **overrides: Any) -> dict[str, Any]:
    event = {
        "event_type": "purchase",
        "user_id": f"user-{i:04d}",
        "device_id": f"device-{i:04d}",
        "time": BASE_TIME + i,
        "insert_id": f"insert-{i:04d}",
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def post(
    http: httpx.Client,
    events: list[Any],
    *,
    path: str = "/2/httpapi",
    api_key: str = API_KEY,
    **extra: Any,
) -> httpx.Response:
    body = orjson.dumps({"api_key": api_key, "events": events, **extra})
    return http.post(path, content=body, headers={"Content-Type": "application/json"})


def stored(http: httpx.Client, **filters: str) -> list[dict[str, Any]]:
    response = http.get("/_emulator/events", params=filters)
    assert response.status_code == 200
    data = response.json()
    assert data["count"] == len(data["events"])
    return data["events"]


def patch_config(http: httpx.Client, **patch: Any) -> dict[str, Any]:
    response = http.patch("/_emulator/config", json=patch)
    assert response.status_code == 200, response.text
    return response.json()


# -- success --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/2/httpapi", "/batch"])
def test_success_body_and_storage(client: httpx.Client, path: str) -> None:
    events = [make_event(i, event_properties={"n": i}, custom_key=[1, 2]) for i in range(3)]
    body = orjson.dumps({"api_key": API_KEY, "events": events})

    response = client.post(path, content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"code", "events_ingested", "payload_size_bytes", "server_upload_time"}
    assert data["code"] == 200
    assert data["events_ingested"] == 3
    assert data["payload_size_bytes"] == len(body)
    assert isinstance(data["server_upload_time"], int)
    assert data["server_upload_time"] > BASE_TIME
    saved = stored(client)
    assert [e["insert_id"] for e in saved] == ["insert-0000", "insert-0001", "insert-0002"]
    assert saved[1]["event_properties"] == {"n": 1}
    assert saved[1]["custom_key"] == [1, 2]
    assert all(e["server_upload_time"] == data["server_upload_time"] for e in saved)
    assert all("api_key" not in e for e in saved)


def test_device_id_derived_from_user_id(client: httpx.Client) -> None:
    events = [make_event(i, device_id=None, user_id="user-only-1") for i in range(2)]

    assert post(client, events).status_code == 200

    saved = stored(client)
    assert [e["device_id"] for e in saved] == [derive_device_id("user-only-1")] * 2
    assert derive_device_id("user-only-1") != derive_device_id("user-only-2")


# -- deduplication --------------------------------------------------------------------------


def test_insert_id_dedup_is_per_device(client: httpx.Client) -> None:
    first = make_event(1, device_id="device-AAAA", insert_id="same-insert")
    again = make_event(2, device_id="device-AAAA", insert_id="same-insert", event_type="late")
    other_device = make_event(3, device_id="device-BBBB", insert_id="same-insert")

    assert post(client, [first]).json()["events_ingested"] == 1
    retry = post(client, [again, other_device])

    assert retry.status_code == 200
    assert retry.json()["events_ingested"] == 2  # duplicates are counted as ingested
    saved = stored(client, insert_id="same-insert")
    assert [(e["device_id"], e["event_type"]) for e in saved] == [
        ("device-AAAA", "purchase"),
        ("device-BBBB", "purchase"),
    ]
    assert client.get("/_emulator/stats").json()["duplicates_dropped"] == 1


def test_dedup_within_one_request_and_events_without_insert_id(client: httpx.Client) -> None:
    twice = [make_event(1), make_event(1, event_type="second")]
    no_insert_id = [make_event(2, insert_id=None), make_event(2, insert_id=None)]

    assert post(client, twice + no_insert_id).status_code == 200

    saved = stored(client)
    assert [e["event_type"] for e in saved if e.get("insert_id")] == ["purchase"]
    assert len([e for e in saved if "insert_id" not in e]) == 2


# -- size limits ----------------------------------------------------------------------------


def test_413_on_body_size(client: httpx.Client) -> None:
    patch_config(client, v2={"max_body_bytes": 400})
    big = [make_event(i) for i in range(5)]

    response = post(client, big)

    assert response.status_code == 413
    assert response.json() == {"code": 413, "error": "Payload too large"}
    assert stored(client) == []
    assert post(client, [make_event(0)]).status_code == 200  # same connection still usable
    assert post(client, big, path="/batch").status_code == 200  # batch limits unaffected


def test_413_on_event_count(client: httpx.Client) -> None:
    patch_config(client, batch={"max_events": 2})

    too_many = post(client, [make_event(i) for i in range(3)], path="/batch")
    at_limit = post(client, [make_event(i) for i in range(2)], path="/batch")

    assert too_many.status_code == 413
    assert too_many.json() == {"code": 413, "error": "Payload too large"}
    assert at_limit.status_code == 200
    assert len(stored(client)) == 2


# -- request-level 400s ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"{not json", "Invalid JSON request body"),
        (b"[1, 2]", "Invalid JSON request body"),
        (b"", "Missing request body"),
    ],
)
def test_unreadable_bodies(client: httpx.Client, content: bytes, error: str) -> None:
    response = client.post("/2/httpapi", content=content)

    assert response.status_code == 400
    assert response.json() == {"code": 400, "error": error}


@pytest.mark.parametrize(
    ("payload", "missing"),
    [
        ({"events": [make_event()]}, "api_key"),
        ({"api_key": "", "events": [make_event()]}, "api_key"),
        ({"api_key": API_KEY}, "events"),
        ({"api_key": API_KEY, "Events": [make_event()]}, "events"),
        ({"api_key": API_KEY, "events": {"0": make_event()}}, "events"),
    ],
)
def test_missing_required_field(
    client: httpx.Client, payload: dict[str, Any], missing: str
) -> None:
    response = client.post("/batch", content=orjson.dumps(payload))

    assert response.status_code == 400
    assert response.json() == {
        "code": 400,
        "error": "Request missing required field",
        "missing_field": missing,
    }


def test_invalid_api_key(client: httpx.Client) -> None:
    patch_config(client, valid_api_keys=[API_KEY])

    rejected = post(client, [make_event()], api_key="wrong-key-987654")
    accepted = post(client, [make_event()])

    assert rejected.status_code == 400
    assert rejected.json() == {"code": 400, "error": "Invalid API key: wrong-key-987654"}
    assert accepted.status_code == 200
    log_text = client.get("/_emulator/requests").text
    assert "wrong-key-987654" not in log_text
    assert API_KEY not in log_text
    assert "wron…" in log_text


@pytest.mark.parametrize("mode", ["ok_200", "reject_400"])
def test_empty_events_modes(client: httpx.Client, mode: str) -> None:
    patch_config(client, empty_events_mode=mode)

    response = post(client, [])

    if mode == "ok_200":
        assert response.status_code == 200
        assert response.json()["events_ingested"] == 0
    else:
        assert response.status_code == 400
        assert response.json()["missing_field"] == "events"


# -- event-level 400s -----------------------------------------------------------------------


def test_event_level_400_lists_every_bad_index(client: httpx.Client) -> None:
    events = [
        make_event(0),
        make_event(1, event_type=None),  # missing event_type
        make_event(2, time="2023-11-14T22:13:20Z"),  # not an integer
        make_event(3, user_id="abc", device_id=None),  # short id
        make_event(4, device_id="NULL"),  # blocklisted, case-insensitive
        make_event(5, time=1.7e12),  # float time
        make_event(6, event_type=None, user_id=None, device_id=None),  # two problems
        make_event(7, event_type=""),  # empty event_type
    ]

    response = post(client, events)

    assert response.status_code == 400
    assert response.json() == {
        "code": 400,
        "error": "Request missing required field",
        "events_with_missing_fields": {"event_type": [1, 6], "user_id": [6]},
        "events_with_invalid_fields": {"time": [2, 5], "event_type": [7]},
        "events_with_invalid_id_lengths": {"user_id": [3], "device_id": [4]},
    }
    assert stored(client) == []


def test_invalid_fields_error_wins_over_id_length(client: httpx.Client) -> None:
    events = [make_event(0, user_id="abc"), make_event(1, time="soon")]

    response = post(client, events)

    assert response.json() == {
        **EMPTY_MAPS,
        "code": 400,
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"time": [1]},
        "events_with_invalid_id_lengths": {"user_id": [0]},
    }


def test_event_without_any_id(client: httpx.Client) -> None:
    events = [make_event(0), make_event(1, user_id=None, device_id=None)]

    response = post(client, events)

    assert response.json() == {
        **EMPTY_MAPS,
        "code": 400,
        "error": "Request missing required field",
        "events_with_missing_fields": {"user_id": [1]},
    }
    assert "missing_field" not in response.json()
    assert stored(client) == []


@pytest.mark.parametrize(
    "blocked", ["anonymous", "Undefined", "00000000-0000-0000-0000-000000000000", '""', "-1"]
)
def test_blocklisted_ids(client: httpx.Client, blocked: str) -> None:
    events = [make_event(0), make_event(1, user_id=blocked)]

    response = post(client, events, options={"min_id_length": 1})

    assert response.status_code == 400
    assert response.json() == {
        **EMPTY_MAPS,
        "code": 400,
        "error": "Invalid id length for user_id or device_id",
        "events_with_invalid_id_lengths": {"user_id": [1]},
    }


def test_min_id_length_option_overrides_default(client: httpx.Client) -> None:
    short = [make_event(0, user_id="abc", device_id=None)]

    default = post(client, short)
    relaxed = post(client, short, options={"min_id_length": 3})
    blocked = post(client, [make_event(1, user_id="0")], options={"min_id_length": 1})

    assert default.status_code == 400
    assert relaxed.status_code == 200
    assert blocked.status_code == 400
    assert [e["user_id"] for e in stored(client)] == ["abc"]


def test_short_id_strip_mode_removes_the_id(client: httpx.Client) -> None:
    patch_config(client, short_id_mode="strip")

    response = post(client, [make_event(0, user_id="abc", device_id="device-long-enough")])

    assert response.status_code == 200
    [event] = stored(client)
    assert "user_id" not in event
    assert event["device_id"] == "device-long-enough"


def test_silenced_devices(client: httpx.Client) -> None:
    patch_config(client, silenced_device_ids=["device-0001"])
    events = [make_event(0), make_event(1), make_event(2), make_event(1, insert_id="x-1")]

    response = post(client, events)

    assert response.status_code == 400
    assert response.json() == {
        "code": 400,
        "error": "Events silenced for device_id",
        "eps_threshold": 30,
        "exceeded_daily_quota_devices": {},
        "silenced_devices": ["device-0001"],
        "silenced_events": [1, 3],
        "throttled_devices": {},
        "throttled_events": [],
    }
    assert stored(client) == []


# -- throttling -----------------------------------------------------------------------------


def test_rate_limit_429_when_enabled(client: httpx.Client) -> None:
    patch_config(client, rate_limits=True, v2={"eps_threshold": 2, "eps_window_s": 30})
    heavy = {"device_id": "device-HEAVY", "user_id": "user-HEAVY"}
    warmup = [make_event(i, **heavy) for i in range(60)]  # exactly 2 events/s over 30 s
    burst = [make_event(100 + i, **heavy) for i in range(30)] + [make_event(200)]

    assert post(client, warmup).status_code == 200
    response = post(client, burst)

    assert response.status_code == 429
    assert response.json() == {
        "code": 429,
        "error": "Too many requests for some devices and users",
        "eps_threshold": 2,
        "throttled_devices": {"device-HEAVY": 3},
        "throttled_users": {"user-HEAVY": 3},
        "throttled_events": list(range(30)),
    }
    assert len(stored(client)) == 60
    assert post(client, [make_event(200)]).status_code == 200  # other ids unaffected


def test_rate_limit_batch_body_and_off_by_default(client: httpx.Client) -> None:
    heavy = [make_event(i, device_id="device-HEAVY") for i in range(40)]
    patch_config(client, batch={"eps_threshold": 1})

    assert post(client, heavy, path="/batch").status_code == 200  # rate_limits is off

    patch_config(client, rate_limits=True)
    response = post(client, heavy, path="/batch")

    assert response.status_code == 429
    body = response.json()
    assert body["exceeded_daily_quota_devices"] == {}
    assert body["exceeded_daily_quota_users"] == {}
    # windows only fill while rate_limits is on: 40 / 30 events/s, reported rounded
    assert body["throttled_devices"] == {"device-HEAVY": 1}
    assert body["throttled_users"] == {}
    assert body["throttled_events"] == list(range(40))


# -- storage transformations ----------------------------------------------------------------


def test_long_strings_are_truncated(client: httpx.Client) -> None:
    patch_config(client, truncate_strings_at=10)
    long = "x" * 25
    event = make_event(
        0,
        platform=long,
        country="short",
        event_properties={"a": long, "nested": {"b": [long, 7, "ok"]}, "quote": 'q"' * 10},
        user_properties={"$set": {"c": long}},
        groups={"untouched": long},
    )

    assert post(client, [event]).status_code == 200

    [saved] = stored(client)
    assert saved["platform"] == "x" * 10
    assert saved["country"] == "short"
    assert saved["event_properties"] == {
        "a": "x" * 10,
        "nested": {"b": ["x" * 10, 7, "ok"]},
        "quote": 'q"' * 5,
    }
    assert saved["user_properties"] == {"$set": {"c": "x" * 10}}
    assert saved["groups"] == {"untouched": long}


def test_long_string_prescan_is_conservative() -> None:
    assert may_contain_long_strings(b'{"a":"' + b"y" * 11 + b'"}', 10)
    assert not may_contain_long_strings(b'{"a":"' + b"y" * 10 + b'"}', 10)
    assert may_contain_long_strings(b'{"a":"y\\"y"}', 10)


# -- inspection and control -----------------------------------------------------------------


def test_event_filters(client: httpx.Client) -> None:
    post(client, [make_event(1), make_event(2, event_type="refund"), make_event(3)])
    post(client, [make_event(4, user_id="user-0001")], api_key="other-key-1234")

    assert len(stored(client)) == 4
    assert [e["insert_id"] for e in stored(client, user_id="user-0001")] == [
        "insert-0001",
        "insert-0004",
    ]
    assert [e["insert_id"] for e in stored(client, api_key=API_KEY, user_id="user-0001")] == [
        "insert-0001"
    ]
    assert [e["insert_id"] for e in stored(client, event_type="refund")] == ["insert-0002"]
    assert [e["user_id"] for e in stored(client, device_id="device-0003")] == ["user-0003"]
    assert [e["user_id"] for e in stored(client, insert_id="insert-0004")] == ["user-0001"]
    assert stored(client, event_type="nothing") == []
    bad = client.get("/_emulator/events", params={"colour": "red"})
    assert bad.status_code == 400
    assert "colour" in bad.json()["error"]


def test_requests_log_and_stats(client: httpx.Client) -> None:
    body = orjson.dumps({"api_key": API_KEY, "events": [make_event(0), make_event(1)]})
    client.post("/batch", content=body)
    post(client, [make_event(2, time="later")])
    client.get("/nowhere")

    log = client.get("/_emulator/requests").json()["requests"]
    stats = client.get("/_emulator/stats").json()

    assert [(r["route"], r["status"]) for r in log] == [
        ("/batch", 200),
        ("/2/httpapi", 400),
        ("/nowhere", 404),
    ]
    assert log[0]["body_bytes"] == len(body)
    assert log[0]["event_count"] == 2
    assert log[0]["api_key"] == API_KEY[:4] + "…"
    assert log[1]["response"]["events_with_invalid_fields"] == {"time": [0]}
    assert stats["requests"] == 3
    assert stats["by_status"] == {"200": 1, "400": 1, "404": 1}
    assert stats["events_stored"] == 2
    assert stats["duplicates_dropped"] == 0


def test_config_get_and_patch(client: httpx.Client) -> None:
    before = client.get("/_emulator/config").json()

    after = patch_config(client, v2={"max_events": 7}, rate_limits=True)

    assert before["v2"] == {
        "max_body_bytes": 1_048_576,
        "max_events": 2_000,
        "eps_threshold": 30,
        "eps_window_s": 30,
    }
    assert before["valid_api_keys"] is None
    assert after["v2"]["max_events"] == 7
    assert after["v2"]["max_body_bytes"] == 1_048_576
    assert after["rate_limits"] is True
    assert client.get("/_emulator/config").json() == after


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ({"colour": "red"}, "colour"),
        ({"v2": {"max_event": 1}}, "v2.max_event"),
        ({"short_id_mode": "drop"}, "short_id_mode"),
        ({"dedup_window_s": "1d"}, "dedup_window_s"),
        ({"silenced_device_ids": "device-1"}, "silenced_device_ids"),
    ],
)
def test_config_patch_rejects_bad_keys(
    client: httpx.Client, patch: dict[str, Any], named: str
) -> None:
    before = client.get("/_emulator/config").json()

    response = client.patch("/_emulator/config", json=patch)

    assert response.status_code == 400
    assert named in response.json()["error"]
    assert client.get("/_emulator/config").json() == before


def test_reset_clears_state_and_restores_config(client: httpx.Client, amp: Emulator) -> None:
    patch_config(client, rate_limits=True)
    post(client, [make_event(0)])
    assert len(amp.events()) == 1
    assert len(amp.requests_log()) == 1

    assert client.post("/_emulator/reset").status_code == 200

    assert stored(client) == []
    assert client.get("/_emulator/stats").json()["requests"] == 0
    assert client.get("/_emulator/config").json()["rate_limits"] is False
    assert post(client, [make_event(0)]).json()["events_ingested"] == 1
    assert len(stored(client)) == 1  # dedup index was cleared too


def test_in_process_accessors_return_copies(client: httpx.Client, amp: Emulator) -> None:
    post(client, [make_event(0)])

    amp.events()[0]["event_type"] = "mutated"

    assert amp.events(insert_id="insert-0000")[0]["event_type"] == "purchase"
    assert amp.requests_log()[0]["status"] == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/3/httpapi"), ("GET", "/2/httpapi"), ("POST", "/batch/"), ("GET", "/_emulator/x")],
)
def test_unknown_routes_are_404(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path, content=b'{"api_key": "k"}')

    assert response.status_code == 404
    assert response.json() == {"code": 404, "error": "Invalid request path"}


def test_keep_alive_reuses_one_connection(amp: Emulator) -> None:
    with httpx.Client(base_url=amp.url) as http:
        opened_before = http.get("/_emulator/stats").json()["connections_opened"]
        statuses = [post(http, [make_event(i)]).status_code for i in range(3)] + [
            http.get("/nowhere").status_code,
            post(http, [make_event(0, time="bad")]).status_code,
            http.post("/2/httpapi", content=b"x" * 2_000_000).status_code,
        ]
        opened_after = http.get("/_emulator/stats").json()["connections_opened"]
    with httpx.Client(base_url=amp.url) as other:
        opened_by_other = other.get("/_emulator/stats").json()["connections_opened"]

    assert statuses == [200, 200, 200, 404, 400, 413]
    assert opened_after == opened_before
    assert opened_by_other == opened_after + 1  # the counter does count connections


# -- identify -------------------------------------------------------------------------------


def test_identify_form(client: httpx.Client) -> None:
    identification = orjson.dumps([{"user_id": "user-0001", "user_properties": {"$set": {"a": 1}}}])

    ok = client.post(
        "/identify", data={"api_key": API_KEY, "identification": identification.decode()}
    )
    missing = client.post("/identify", data={"api_key": API_KEY})
    no_id = client.post(
        "/identify", data={"api_key": API_KEY, "identification": '{"user_properties": {}}'}
    )

    assert ok.status_code == 200
    assert ok.json()["code"] == 200
    assert missing.json() == {
        "code": 400,
        "error": "Request missing required field",
        "missing_field": "identification",
    }
    assert no_id.status_code == 400
    identifies = client.get("/_emulator/identifies").json()
    assert identifies["count"] == 1
    assert identifies["identifies"][0]["user_id"] == "user-0001"
    assert identifies["identifies"][0]["kind"] == "identify"
    assert stored(client) == []  # identifies are not events


# -- pure validation ------------------------------------------------------------------------


def test_validate_ingest_check_order() -> None:
    config = EmulatorConfig(valid_api_keys=frozenset({"k"}))
    tiny = EndpointLimits(max_body_bytes=10, max_events=1, eps_threshold=1)
    one_event = EndpointLimits(max_body_bytes=1_000, max_events=1, eps_threshold=1)

    too_big = validate_ingest(b"{not json at all}", tiny, config)
    bad_key = validate_ingest(b'{"api_key":"x","events":[{}, {}]}', one_event, config)
    valid = validate_ingest(
        orjson.dumps({"api_key": "k", "events": [make_event()]}), one_event, config
    )

    assert isinstance(too_big, Reply)
    assert too_big.body == {"code": 413, "error": "Payload too large"}  # before JSON parsing
    assert isinstance(bad_key, Reply)
    assert bad_key.body == {"code": 400, "error": "Invalid API key: x"}  # before the count
    assert isinstance(valid, ValidBatch)
    assert valid.api_key == "k"
    assert valid.events == [make_event()]
