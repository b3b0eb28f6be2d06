"""The local Amplitude emulator, exercised over real HTTP on loopback."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import httpx
import orjson
import pytest

from currents_export.kit.emulator import (
    DEFAULT_PROJECT_RPS_CAP,
    BucketCounts,
    Emulator,
    EmulatorConfig,
    EndpointLimits,
    FaultRule,
    FaultRuleError,
    Reply,
    RequestFacts,
    RuleProgress,
    SlidingWindows,
    ValidBatch,
    derive_device_id,
    fake_success_reply,
    may_contain_long_strings,
    select_fault,
    validate_ingest,
)

API_KEY = "test-key-0123456789"
BASE_TIME = 1_700_000_000_000
EMPTY_MAPS = {
    "events_with_missing_fields": {},
    "events_with_invalid_fields": {},
    "events_with_invalid_id_lengths": {},
}




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


def test_events_ingested_counts_repeats_unless_told_to_count_new_events_only(
    client: httpx.Client,
) -> None:
    assert client.get("/_emulator/config").json()["ingested_counts_repeats"] is True
    assert post(client, [make_event(1), make_event(2)]).json()["events_ingested"] == 2
    # The default: every validated event counts, insert_id repeats included.
    assert post(client, [make_event(1), make_event(3)]).json()["events_ingested"] == 2

    patch_config(client, ingested_counts_repeats=False)
    again = post(client, [make_event(1), make_event(2), make_event(3), make_event(4)])
    assert again.status_code == 200
    assert again.json()["events_ingested"] == 1  # only event 4 is new
    assert post(client, [make_event(4)]).json()["events_ingested"] == 0  # a 200 all the same
    # A repeat inside one request counts once; events without insert_id always count.
    twice = post(client, [make_event(5), make_event(5, event_type="second"),
                          make_event(6, insert_id=None), make_event(6, insert_id=None)])
    assert twice.json()["events_ingested"] == 3
    # Only repeats of the same device: another device's event with that insert_id is new.
    other = post(client, [make_event(1, device_id="device-OTHER")])
    assert other.json()["events_ingested"] == 1
    assert len(stored(client)) == 8
    assert client.get("/_emulator/stats").json()["duplicates_dropped"] == 6


def test_a_repeat_past_the_dedup_window_counts_as_ingested_again(client: httpx.Client) -> None:
    patch_config(client, ingested_counts_repeats=False, dedup_window_s=100)
    freeze(client)
    assert post(client, [make_event(1)]).json()["events_ingested"] == 1
    advance(client, 99)
    assert post(client, [make_event(1)]).json()["events_ingested"] == 0
    advance(client, 2)
    assert post(client, [make_event(1)]).json()["events_ingested"] == 1  # stored again


def test_the_retry_of_a_500_after_store_is_acknowledged_short(client: httpx.Client) -> None:
    """The issue's case: Amplitude stored the events, then answered 500; the client's retry
    gets a 200 with fewer events ingested than sent when repeats do not count."""
    patch_config(client, ingested_counts_repeats=False)
    set_faults(client, [{"action": "status", "status": 500, "times": 1}])
    events = [make_event(i) for i in range(3)]
    assert post(client, events).status_code == 500
    retry = post(client, events)
    assert retry.status_code == 200
    assert retry.json() == {**retry.json(), "code": 200, "events_ingested": 0}
    assert [e["insert_id"] for e in stored(client)] == [e["insert_id"] for e in events]


def test_ingested_counts_repeats_is_a_boolean_and_reset_restores_it(
    client: httpx.Client,
) -> None:
    for bad in ("no", 0, None):
        response = client.patch("/_emulator/config", json={"ingested_counts_repeats": bad})
        assert response.status_code == 400
        assert "ingested_counts_repeats" in response.json()["error"]
    assert patch_config(client, ingested_counts_repeats=False)["ingested_counts_repeats"] is False
    assert client.post("/_emulator/reset").status_code == 200
    assert client.get("/_emulator/config").json()["ingested_counts_repeats"] is True
    with pytest.raises(ValueError, match="ingested_counts_repeats"):
        EmulatorConfig(ingested_counts_repeats="no")  # type: ignore[arg-type]
    assert EmulatorConfig(ingested_counts_repeats=False).ingested_counts_repeats is False


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


# -- helpers for faults and the clock -------------------------------------------------------

HOUR = 3_600


def set_faults(http: httpx.Client, rules: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    response = http.post("/_emulator/faults", json={"seed": seed, "rules": rules})
    assert response.status_code == 200, response.text
    return response.json()


def advance(http: httpx.Client, seconds: float) -> float:
    response = http.post("/_emulator/clock", json={"advance_s": seconds})
    assert response.status_code == 200, response.text
    assert response.json()["mode"] == "virtual"
    return response.json()["now"]


def freeze(http: httpx.Client) -> float:
    """Switch to the virtual clock without moving it."""
    return advance(http, 0)


def wait_for_events(http: httpx.Client, count: int) -> list[dict[str, Any]]:
    """Poll the stored events until ``count`` are there (bounded: about 5 s)."""
    for _ in range(100):
        events = stored(http)
        if len(events) >= count:
            return events
        time.sleep(0.05)
    return stored(http)


def wait_for_faulted_requests(http: httpx.Client, count: int) -> list[dict[str, Any]]:
    """Poll the request log until ``count`` entries carry a fault (bounded: about 5 s)."""
    faulted: list[dict[str, Any]] = []
    for _ in range(100):
        faulted = [r for r in http.get("/_emulator/requests").json()["requests"] if r["fault"]]
        if len(faulted) >= count:
            break
        time.sleep(0.05)
    return faulted


def last_log_entry(http: httpx.Client) -> dict[str, Any]:
    return http.get("/_emulator/requests").json()["requests"][-1]


def statuses(http: httpx.Client, count: int, path: str = "/2/httpapi") -> list[int]:
    return [post(http, [make_event(i)], path=path).status_code for i in range(count)]


# -- fault actions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, "Internal Server Error"), (502, "Bad Gateway"), (504, "Gateway Timeout")],
)
def test_fault_5xx_stores_then_fails(client: httpx.Client, status: int, error: str) -> None:
    set_faults(client, [{"action": "status", "status": status, "times": 1}])

    failed = post(client, [make_event(1), make_event(2)])
    retried = post(client, [make_event(1), make_event(2)])

    assert failed.status_code == status
    assert failed.json() == {"code": status, "error": error}
    assert retried.status_code == 200
    # the failed attempt was stored; the retry's copies were dropped by insert_id
    assert [e["insert_id"] for e in stored(client)] == ["insert-0001", "insert-0002"]
    assert client.get("/_emulator/stats").json()["duplicates_dropped"] == 2


def test_fault_503_stores_nothing(client: httpx.Client) -> None:
    set_faults(client, [{"action": "status", "status": 503, "times": 1}])

    failed = post(client, [make_event(1)])

    assert failed.status_code == 503
    assert failed.json() == {"code": 503, "error": "Service Unavailable"}
    assert stored(client) == []
    assert post(client, [make_event(1)]).status_code == 200
    assert len(stored(client)) == 1


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (403, {"code": 403, "error": "Forbidden"}),
        (413, {"code": 413, "error": "Payload too large"}),
        (429, {"code": 429, "error": "Too many requests"}),
    ],
)
def test_fault_rejections_store_nothing(
    client: httpx.Client, status: int, body: dict[str, Any]
) -> None:
    set_faults(client, [{"action": "status", "status": status}])

    response = post(client, [make_event(0)], path="/batch")  # a tiny body, even for 413

    assert response.status_code == status
    assert response.json() == body
    assert stored(client) == []


@pytest.mark.parametrize(
    ("path", "threshold", "quota_keys"), [("/2/httpapi", 30, False), ("/batch", 1_000, True)]
)
def test_fault_429_for_ids_lists_their_events(
    client: httpx.Client, path: str, threshold: int, quota_keys: bool
) -> None:
    set_faults(client, [{"action": "status", "status": 429, "ids": ["user-0001", "device-0003"]}])
    events = [make_event(i) for i in range(4)] + [make_event(5, user_id="user-0001")]

    response = post(client, events, path=path)

    expected = {
        "code": 429,
        "error": "Too many requests for some devices and users",
        "eps_threshold": threshold,
        "throttled_users": {"user-0001": threshold + 1},
        "throttled_devices": {"device-0003": threshold + 1},
        "throttled_events": [1, 3, 4],
    }
    if quota_keys:
        expected |= {"exceeded_daily_quota_users": {}, "exceeded_daily_quota_devices": {}}
    assert response.status_code == 429
    assert response.json() == expected
    assert stored(client) == []
    assert post(client, [make_event(0)], path=path).status_code == 200  # ids not present


def test_fault_429_for_ids_without_indexes(client: httpx.Client) -> None:
    set_faults(
        client, [{"action": "status", "status": 429, "ids": ["user-0001"], "indexes": False}]
    )

    response = post(client, [make_event(0), make_event(1)])

    assert response.status_code == 429
    assert response.json() == {"code": 429, "error": "Too many requests"}
    assert stored(client) == []


@pytest.mark.parametrize(("status", "stores"), [(502, True), (504, True), (413, False)])
def test_fault_html_body(client: httpx.Client, status: int, stores: bool) -> None:
    set_faults(client, [{"action": "status", "status": status, "body": "html"}])

    response = post(client, [make_event(0)])

    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<html>")
    assert str(status) in response.text
    with pytest.raises(ValueError):
        response.json()
    assert len(stored(client)) == (1 if stores else 0)
    assert last_log_entry(client)["response"] == response.text


@pytest.mark.parametrize("status", [500, 502, 504, 413])
def test_fault_empty_body(client: httpx.Client, status: int) -> None:
    set_faults(client, [{"action": "status", "status": status, "body": "empty"}])

    response = post(client, [make_event(0)])

    assert response.status_code == status
    assert response.content == b""
    assert response.headers["content-length"] == "0"
    assert len(stored(client)) == (0 if status == 413 else 1)


@pytest.mark.parametrize("path", ["/2/httpapi", "/batch"])
def test_fault_not_amplitude_200_is_html_and_stores_nothing(
    client: httpx.Client, path: str
) -> None:
    set_faults(client, [{"action": "not_amplitude", "route": path, "times": 1}])

    response = post(client, [make_event(0), make_event(1)], path=path)
    retried = post(client, [make_event(0), make_event(1)], path=path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")
    with pytest.raises(ValueError):
        response.json()
    assert retried.json()["events_ingested"] == 2
    assert [e["insert_id"] for e in stored(client)] == ["insert-0000", "insert-0001"]  # retry
    faulted, plain = client.get("/_emulator/requests").json()["requests"]
    assert faulted["status"] == 200
    assert faulted["route"] == path
    assert faulted["event_count"] == 2
    assert faulted["response"] == response.text
    assert faulted["fault"] == {"rule": 0, "action": "not_amplitude", "status": None}
    assert plain["fault"] is None
    stats = client.get("/_emulator/stats").json()
    assert (stats["faults_fired"], stats["by_status"], stats["events_stored"]) == (1, {"200": 2}, 2)


@pytest.mark.parametrize(
    ("rule", "ingested"),
    [
        ({}, 0),
        ({"events_ingested": 1}, 1),
        ({"ingested_offset": -1}, 2),
        ({"ingested_offset": 2}, 5),
        ({"ingested_offset": -5}, 0),  # floored at 0
    ],
)
def test_fault_wrong_count_200_stores_nothing(
    client: httpx.Client, rule: dict[str, Any], ingested: int
) -> None:
    freeze(client)
    set_faults(client, [{"action": "wrong_count", **rule}])
    body = orjson.dumps({"api_key": API_KEY, "events": [make_event(i) for i in range(3)]})

    response = client.post("/batch", content=body)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    now_ms = int(client.get("/_emulator/clock").json()["now"] * 1000)
    assert response.json() == {
        "code": 200,
        "events_ingested": ingested,
        "payload_size_bytes": len(body),
        "server_upload_time": now_ms,
    }
    assert stored(client) == []
    entry = last_log_entry(client)
    assert (entry["status"], entry["event_count"]) == (200, 3)
    assert entry["response"] == response.json()
    assert entry["fault"] == {"rule": 0, "action": "wrong_count", "status": None}
    assert client.get("/_emulator/stats").json()["faults_fired"] == 1


def test_fault_wrong_count_with_an_unreadable_body(client: httpx.Client) -> None:
    set_faults(client, [{"action": "wrong_count", "ingested_offset": 1}])

    response = client.post("/2/httpapi", content=b"not json")

    assert response.status_code == 200
    assert response.json()["events_ingested"] == 1  # no events sent: 0 + 1
    assert stored(client) == []


def test_fake_200_faults_follow_the_seeded_probability(client: httpx.Client) -> None:
    rules = [
        {"action": "not_amplitude", "probability": 0.3},
        {"action": "wrong_count", "probability": 0.3},
    ]
    set_faults(client, rules, seed=5)

    kinds: list[int | None] = []
    for i in range(30):
        response = post(client, [make_event(i)])
        assert response.status_code == 200
        if response.headers["content-type"].startswith("text/html"):
            kinds.append(0)
        elif response.json()["events_ingested"] == 0:
            kinds.append(1)
        else:
            kinds.append(None)

    draws = random.Random(5)
    expected: list[int | None] = []
    for _ in range(30):
        html, wrong = draws.random() < 0.3, draws.random() < 0.3  # every live rule draws
        expected.append(0 if html else 1 if wrong else None)
    assert kinds == expected
    assert len(stored(client)) == kinds.count(None)
    fired = [r["fired"] for r in client.get("/_emulator/faults").json()["rules"]]
    assert fired == [kinds.count(0), kinds.count(1)]


def test_fake_200_faults_match_route_and_ordinal(client: httpx.Client) -> None:
    set_faults(
        client,
        [
            {"action": "not_amplitude", "route": "/batch", "after": 1, "times": 1},
            {"action": "wrong_count", "route": "/2/httpapi", "every": 2},
        ],
    )

    html = []
    counts = []
    for i in range(4):
        batch = post(client, [make_event(i)], path="/batch")
        html.append(batch.headers["content-type"].startswith("text/html"))
        counts.append(post(client, [make_event(i)]).json()["events_ingested"])

    assert html == [False, True, False, False]
    assert counts == [1, 0, 1, 0]
    # request 1 got no store on either route; 3 only via /batch; 0 and 2 twice (deduped)
    assert [e["insert_id"] for e in stored(client)] == ["insert-0000", "insert-0002", "insert-0003"]
    stats = client.get("/_emulator/stats").json()
    assert (stats["faults_fired"], stats["duplicates_dropped"]) == (3, 2)


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({"action": "reset"}, httpx.ReadError),  # a TCP reset
        ({"action": "reset", "graceful": True}, httpx.RemoteProtocolError),  # a plain close
    ],
)
def test_fault_reset_without_store(
    client: httpx.Client, rule: dict[str, Any], error: type[Exception]
) -> None:
    set_faults(client, [{**rule, "times": 1}])

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)) as raised:
        post(client, [make_event(0)])

    assert isinstance(raised.value, error)
    assert stored(client) == []
    entry = last_log_entry(client)
    assert entry["status"] is None
    assert entry["response"] is None
    assert entry["fault"] == {"rule": 0, "action": "reset", "status": None}
    assert post(client, [make_event(0)]).status_code == 200  # the client reconnects


def test_fault_reset_with_store(client: httpx.Client) -> None:
    set_faults(client, [{"action": "reset", "store": True, "times": 1}])

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        post(client, [make_event(0), make_event(1)])

    assert [e["insert_id"] for e in stored(client)] == ["insert-0000", "insert-0001"]
    assert last_log_entry(client)["event_count"] == 2


def test_fault_delay_times_out_the_client_then_stores(client: httpx.Client) -> None:
    set_faults(client, [{"action": "delay", "delay_s": 0.3, "times": 1}])
    body = orjson.dumps({"api_key": API_KEY, "events": [make_event(7)]})

    with pytest.raises(httpx.TimeoutException):
        client.post("/2/httpapi", content=body, timeout=0.1)
    other = post(client, [make_event(8)])  # another connection is not blocked meanwhile

    assert other.status_code == 200
    events = wait_for_events(client, 2)
    assert sorted(e["insert_id"] for e in events) == ["insert-0007", "insert-0008"]
    delayed = wait_for_faulted_requests(client, 1)
    assert delayed[0]["status"] == 200
    assert delayed[0]["fault"] == {"rule": 0, "action": "delay", "status": None}


def test_stop_wakes_a_delayed_handler_and_drops_its_request() -> None:
    server = Emulator().start()
    server.set_faults([{"action": "delay", "delay_s": 30}])
    body = orjson.dumps({"api_key": API_KEY, "events": [make_event(0)]})
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server.url}/2/httpapi", content=body, timeout=0.1)
    assert server.faults()["rules"][0]["fired"] == 1  # the handler is asleep in the delay

    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(timeout=10)

    assert not stopper.is_alive()
    assert server.events() == []


# -- fault matching -------------------------------------------------------------------------


def test_fault_times_then_spent(client: httpx.Client) -> None:
    set_faults(client, [{"action": "status", "status": 503, "times": 2}])

    assert statuses(client, 4) == [503, 503, 200, 200]
    [rule] = client.get("/_emulator/faults").json()["rules"]
    assert (rule["fired"], rule["remaining"]) == (2, 0)


def test_fault_every(client: httpx.Client) -> None:
    set_faults(client, [{"action": "status", "status": 503, "every": 3}])

    assert statuses(client, 7) == [200, 200, 503, 200, 200, 503, 200]


def test_fault_after(client: httpx.Client) -> None:
    set_faults(client, [{"action": "status", "status": 503, "after": 2, "times": 1}])

    assert statuses(client, 4) == [200, 200, 503, 200]


def test_fault_every_after_counts_only_matching_requests(client: httpx.Client) -> None:
    rule = {"action": "status", "status": 503, "route": "/batch", "after": 1, "every": 2}
    set_faults(client, [rule])

    seen = []
    for i in range(6):
        seen.append(post(client, [make_event(i)], path="/2/httpapi").status_code)
        seen.append(post(client, [make_event(i)], path="/batch").status_code)

    # /batch requests 3 and 5 (after skipping 1, every 2nd); /2/httpapi never
    assert seen == [200, 200, 200, 200, 200, 503, 200, 200, 200, 503, 200, 200]


def test_fault_ids(client: httpx.Client) -> None:
    set_faults(client, [{"action": "status", "status": 503, "ids": ["device-0005", "user-x-1"]}])

    plain = post(client, [make_event(1), make_event(2)])
    with_device = post(client, [make_event(3), make_event(5)])
    with_user = post(client, [make_event(6, user_id="user-x-1")])

    assert [plain.status_code, with_device.status_code, with_user.status_code] == [200, 503, 503]
    assert [e["insert_id"] for e in stored(client)] == ["insert-0001", "insert-0002"]


def test_fault_route(client: httpx.Client) -> None:
    set_faults(client, [{"action": "status", "status": 503, "route": "/batch"}])

    assert post(client, [make_event(1)], path="/2/httpapi").status_code == 200
    assert post(client, [make_event(2)], path="/batch").status_code == 503


def test_fault_probability_is_reproducible_per_seed(client: httpx.Client) -> None:
    rule = {"action": "status", "status": 503, "probability": 0.5}

    def run(seed: int) -> list[bool]:
        set_faults(client, [rule], seed=seed)
        return [status == 503 for status in statuses(client, 24)]

    first, again, other = run(42), run(42), run(7)

    assert first == again
    assert first != other
    assert 0 < sum(first) < 24
    draws = random.Random(42)
    assert first == [draws.random() < 0.5 for _ in range(24)]


def test_first_matching_rule_fires(client: httpx.Client) -> None:
    set_faults(
        client,
        [
            {"action": "status", "status": 503, "times": 1},
            {"action": "status", "status": 502, "every": 2},
        ],
    )

    # request 2 is rule 1's 2nd although rule 0 took request 1
    assert statuses(client, 4) == [503, 502, 200, 502]


def test_faults_skip_control_and_identify_routes(client: httpx.Client) -> None:
    set_faults(client, [{"action": "status", "status": 503}])

    identify = client.post(
        "/identify", data={"api_key": API_KEY, "identification": '{"user_id": "user-0001"}'}
    )

    assert identify.status_code == 200
    assert client.get("/_emulator/stats").status_code == 200
    assert post(client, [make_event(0)]).status_code == 503


# -- fault control API ----------------------------------------------------------------------


def test_faults_get_delete_and_log(client: httpx.Client) -> None:
    rules = [
        {"action": "status", "status": 500, "route": "/batch", "times": 3},
        {"action": "delay", "delay_s": 0.01},
    ]
    posted = set_faults(client, rules, seed=9)

    post(client, [make_event(0)], path="/batch")
    listed = client.get("/_emulator/faults").json()
    entry = last_log_entry(client)
    deleted = client.delete("/_emulator/faults")

    assert posted["seed"] == 9
    assert posted["rules"][0] == {**rules[0], "seen": 0, "fired": 0, "remaining": 3}
    assert listed["rules"][0]["remaining"] == 2
    assert listed["rules"][1] == {**rules[1], "seen": 1, "fired": 0, "remaining": None}
    assert entry["status"] == 500
    assert entry["fault"] == {"rule": 0, "action": "status", "status": 500}
    assert client.get("/_emulator/stats").json()["faults_fired"] == 1
    assert deleted.status_code == 200
    assert deleted.json()["rules"] == []
    assert post(client, [make_event(1)], path="/batch").status_code == 200


def test_reset_clears_faults(client: httpx.Client) -> None:
    set_faults(client, [{"action": "status", "status": 503}])
    assert post(client, [make_event(0)]).status_code == 503

    client.post("/_emulator/reset")

    assert client.get("/_emulator/faults").json()["rules"] == []
    assert post(client, [make_event(0)]).status_code == 200


def test_in_process_fault_api(client: httpx.Client, amp: Emulator) -> None:
    listed = amp.set_faults([{"action": "status", "status": 503, "times": 1}], seed=3)

    first = post(client, [make_event(0)]).status_code
    amp.set_faults([{"action": "status", "status": 502}])
    second = post(client, [make_event(1)]).status_code
    amp.clear_faults()
    third = post(client, [make_event(2)]).status_code

    assert listed["seed"] == 3
    assert [first, second, third] == [503, 502, 200]
    assert amp.faults()["rules"] == []
    with pytest.raises(FaultRuleError):
        amp.set_faults([{"action": "explode"}])


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"rules": [{"status": 503}]}, "action"),
        ({"rules": [{"action": "status"}]}, "status"),
        ({"rules": [{"action": "status", "status": 404}]}, "status"),
        ({"rules": [{"action": "status", "status": 503, "colour": "red"}]}, "colour"),
        ({"rules": [{"action": "reset", "status": 503}]}, "status"),
        ({"rules": [{"action": "delay"}]}, "delay_s"),
        ({"rules": [{"action": "delay", "delay_s": 31}]}, "delay_s"),
        ({"rules": [{"action": "reset", "every": 0}]}, "every"),
        ({"rules": [{"action": "reset", "probability": 1.5}]}, "probability"),
        ({"rules": [{"action": "reset", "ids": []}]}, "ids"),
        ({"rules": [{"action": "reset", "route": "/identify"}]}, "route"),
        ({"rules": [{"action": "status", "status": 502, "body": "xml"}]}, "body"),
        ({"rules": [{"action": "status", "status": 200}]}, "status"),
        ({"rules": [{"action": "not_amplitude", "status": 200}]}, "status"),
        ({"rules": [{"action": "not_amplitude", "body": "html"}]}, "body"),
        ({"rules": [{"action": "not_amplitude", "events_ingested": 0}]}, "events_ingested"),
        (
            {"rules": [{"action": "status", "status": 503, "ingested_offset": -1}]},
            "ingested_offset",
        ),
        ({"rules": [{"action": "wrong_count", "events_ingested": -1}]}, "events_ingested"),
        ({"rules": [{"action": "wrong_count", "events_ingested": 1.0}]}, "events_ingested"),
        ({"rules": [{"action": "wrong_count", "ingested_offset": 0}]}, "ingested_offset"),
        ({"rules": [{"action": "wrong_count", "ingested_offset": "n-1"}]}, "ingested_offset"),
        (
            {"rules": [{"action": "wrong_count", "events_ingested": 0, "ingested_offset": -1}]},
            "ingested_offset",
        ),
        ({"rules": [{"action": "wrong_count", "store": True}]}, "store"),
        ({"rules": [{"action": "wrong_count", "probability": -0.1}]}, "probability"),
        ({"rules": {"action": "reset"}}, "rules"),
        ({"rules": [], "seed": "x"}, "seed"),
    ],
)
def test_invalid_fault_rules_are_rejected(
    client: httpx.Client, document: dict[str, Any], named: str
) -> None:
    set_faults(client, [{"action": "status", "status": 503}])

    response = client.post("/_emulator/faults", json=document)

    assert response.status_code == 400
    assert named in response.json()["error"]
    assert len(client.get("/_emulator/faults").json()["rules"]) == 1  # unchanged


# -- pure fault matching --------------------------------------------------------------------


def fired_pattern(rules: list[FaultRule], facts: list[RequestFacts], seed: int = 0) -> list:
    progress = [RuleProgress() for _ in rules]
    rng = random.Random(seed)
    return [select_fault(rules, progress, fact, rng) for fact in facts]


def test_select_fault_every_after_times() -> None:
    rule = FaultRule.from_dict({"action": "reset", "after": 1, "every": 2, "times": 2})
    facts = [RequestFacts("/batch") for _ in range(8)]

    assert fired_pattern([rule], facts) == [None, None, 0, None, 0, None, None, None]


def test_select_fault_route_and_ids() -> None:
    rule = FaultRule.from_dict({"action": "reset", "route": "/batch", "ids": ["u-1", "d-2"]})
    facts = [
        RequestFacts("/batch", ids=["u-9"]),
        RequestFacts("/2/httpapi", ids=["u-1"]),
        RequestFacts("/batch", ids=["u-0", "d-2"]),
        RequestFacts("/batch", body=orjson.dumps({"events": [{"user_id": "u-1"}]})),
        RequestFacts("/batch", body=b"not json"),
        RequestFacts("/batch", body=None),
    ]

    assert fired_pattern([rule], facts) == [None, None, 0, 0, None, None]


def test_select_fault_order_and_independent_counting() -> None:
    rules = [
        FaultRule.from_dict({"action": "reset", "times": 1}),
        FaultRule.from_dict({"action": "delay", "delay_s": 1, "every": 2}),
    ]
    progress = [RuleProgress() for _ in rules]
    rng = random.Random(0)

    picked = [select_fault(rules, progress, RequestFacts("/batch"), rng) for _ in range(4)]

    assert picked == [0, 1, None, 1]
    assert [(p.seen, p.fired) for p in progress] == [(1, 1), (4, 2)]


def test_select_fault_probability_uses_the_rng() -> None:
    rule = FaultRule.from_dict({"action": "reset", "probability": 0.3})
    facts = [RequestFacts("/2/httpapi") for _ in range(50)]
    draws = random.Random(11)

    pattern = fired_pattern([rule], facts, seed=11)

    assert pattern == [0 if draws.random() < 0.3 else None for _ in range(50)]
    assert fired_pattern([rule], facts, seed=11) == pattern
    assert fired_pattern([rule], facts, seed=12) != pattern


def test_select_fault_without_rules() -> None:
    assert select_fault([], [], RequestFacts("/batch"), random.Random(0)) is None


@pytest.mark.parametrize(
    "rule",
    [
        {"action": "status", "status": 418},
        {"action": "status", "status": 503, "after": -1},
        {"action": "status", "status": 503, "times": 1.5},
        {"action": "reset", "store": "yes"},
        {"action": "status", "status": 503, "indexes": 1},
        "reset",
    ],
)
def test_fault_rule_validation(rule: Any) -> None:
    with pytest.raises(FaultRuleError):
        FaultRule.from_dict(rule)


def test_fault_rule_round_trips() -> None:
    data = {"action": "status", "status": 429, "ids": ["b-id", "a-id"], "indexes": False}

    rule = FaultRule.from_dict(data)

    assert rule.to_dict() == {**data, "ids": ["a-id", "b-id"]}
    assert FaultRule.from_dict(rule.to_dict()) == rule


@pytest.mark.parametrize(
    "data",
    [
        {"action": "not_amplitude", "route": "/batch", "probability": 0.25},
        {"action": "wrong_count", "every": 3, "times": 2},
        {"action": "wrong_count", "events_ingested": 7},
        {"action": "wrong_count", "ingested_offset": -1, "ids": ["user-0001"]},
    ],
)
def test_fake_200_rules_round_trip_and_store_nothing(data: dict[str, Any]) -> None:
    rule = FaultRule.from_dict(data)

    assert rule.to_dict() == data
    assert FaultRule.from_dict(rule.to_dict()) == rule
    assert not rule.stores_first


def test_fake_success_reply_is_pure() -> None:
    facts = RequestFacts("/batch", orjson.dumps({"events": [make_event(i) for i in range(4)]}))
    wrong = FaultRule.from_dict({"action": "wrong_count", "ingested_offset": -1})
    html = FaultRule.from_dict({"action": "not_amplitude"})

    counted = fake_success_reply(wrong, facts, payload_size=99, now_ms=123)
    page = fake_success_reply(html, facts, payload_size=99, now_ms=123)

    assert (counted.status, counted.raw) == (200, None)
    assert counted.body == {
        "code": 200,
        "events_ingested": 3,
        "payload_size_bytes": 99,
        "server_upload_time": 123,
    }
    assert (page.status, page.content_type) == (200, "text/html")
    assert page.raw is not None and page.raw.startswith(b"<!DOCTYPE html>")
    with pytest.raises(ValueError):
        fake_success_reply(
            FaultRule.from_dict({"action": "reset"}), facts, payload_size=0, now_ms=0
        )


# -- virtual clock --------------------------------------------------------------------------


def test_virtual_clock_control(client: httpx.Client) -> None:
    real = client.get("/_emulator/clock").json()
    first = advance(client, 3_600)
    still = client.get("/_emulator/clock").json()
    second = advance(client, 10.5)
    ingested = post(client, [make_event(0)]).json()
    back = client.post("/_emulator/clock", json={"mode": "real"}).json()

    assert real["mode"] == "real"
    assert first >= real["now"] + 3_600
    assert still == {"mode": "virtual", "now": first}  # a virtual clock does not tick
    assert second == pytest.approx(first + 10.5)
    assert ingested["server_upload_time"] == int(second * 1000)
    assert stored(client)[0]["server_upload_time"] == int(second * 1000)
    assert back["mode"] == "real"
    assert back["now"] < second


@pytest.mark.parametrize(
    "command", [{"advance_s": -1}, {"advance_s": "10"}, {"mode": "fast"}, {}, [1]]
)
def test_virtual_clock_rejects_bad_commands(client: httpx.Client, command: Any) -> None:
    response = client.post("/_emulator/clock", json=command)

    assert response.status_code == 400
    assert client.get("/_emulator/clock").json()["mode"] == "real"


def test_reset_returns_to_the_real_clock(client: httpx.Client, amp: Emulator) -> None:
    amp.advance_clock(86_400 * 30)
    assert client.get("/_emulator/clock").json()["mode"] == "virtual"

    client.post("/_emulator/reset")

    assert client.get("/_emulator/clock").json()["mode"] == "real"


def test_dedup_window_follows_the_virtual_clock(client: httpx.Client) -> None:
    patch_config(client, dedup_window_s=100)
    freeze(client)
    post(client, [make_event(1)])

    advance(client, 99)
    post(client, [make_event(1, event_type="retry-1")])
    advance(client, 2)
    post(client, [make_event(1, event_type="retry-2")])

    assert [e["event_type"] for e in stored(client)] == ["purchase", "retry-2"]


def test_rate_limit_window_slides_with_the_virtual_clock(client: httpx.Client) -> None:
    patch_config(client, rate_limits=True, v2={"eps_threshold": 2, "eps_window_s": 30})
    freeze(client)
    heavy = {"device_id": "device-HEAVY", "user_id": "user-HEAVY"}

    def send(count: int, start: int) -> int:
        return post(client, [make_event(start + i, **heavy) for i in range(count)]).status_code

    results = [send(30, 0)]  # t=0: 30 in the window
    advance(client, 20)
    results.append(send(30, 100))  # t=20: 60 / 30 s = 2, not over
    results.append(send(1, 200))  # t=20: 61 / 30 s, over
    advance(client, 9)
    results.append(send(1, 300))  # t=29: the first 30 still count
    advance(client, 2)
    results.append(send(30, 400))  # t=31: the first 30 slid out: 60 / 30 s
    results.append(send(1, 500))  # t=31: over again

    assert results == [200, 200, 429, 429, 200, 429]
    assert len(stored(client)) == 90


def test_rate_limit_counts_user_only_events_by_user(client: httpx.Client) -> None:
    patch_config(client, rate_limits=True, v2={"eps_threshold": 1})
    events = [make_event(i, device_id=None, user_id="user-only-1") for i in range(31)]

    response = post(client, events)

    assert response.status_code == 429
    body = response.json()
    assert body["throttled_users"] == {"user-only-1": 1}
    assert body["throttled_devices"] == {}  # the derived device id is not a window key
    assert body["throttled_events"] == list(range(31))
    assert "exceeded_daily_quota_users" not in body  # v2 shape while the quota is off


# -- daily quota ----------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "threshold"), [("/batch", 1_000), ("/2/httpapi", 30)])
def test_daily_quota_with_the_virtual_clock(
    client: httpx.Client, path: str, threshold: int
) -> None:
    patch_config(client, daily_quota=5)
    freeze(client)
    spammy = {"user_id": "user-SPAM", "device_id": "device-SPAM"}

    first = post(client, [make_event(i, **spammy) for i in range(3)], path=path)
    over = post(
        client,
        [make_event(10 + i, **spammy) for i in range(3)] + [make_event(20)],
        path=path,
    )
    up_to_quota = post(client, [make_event(30 + i, **spammy) for i in range(2)], path=path)
    advance(client, 23 * HOUR)
    next_day_too_early = post(client, [make_event(40, **spammy)], path=path)
    advance(client, HOUR)
    next_day = post(client, [make_event(50 + i, **spammy) for i in range(5)], path=path)

    assert first.status_code == 200
    assert over.status_code == 429
    assert over.json() == {
        "code": 429,
        "error": "Too many requests for some devices and users",
        "eps_threshold": threshold,
        "throttled_devices": {},
        "throttled_users": {},
        "throttled_events": [0, 1, 2],
        "exceeded_daily_quota_users": {"user-SPAM": 6},
        "exceeded_daily_quota_devices": {"device-SPAM": 6},
    }
    assert up_to_quota.status_code == 200
    assert next_day_too_early.status_code == 429
    assert next_day_too_early.json()["exceeded_daily_quota_users"] == {"user-SPAM": 6}
    assert next_day.status_code == 200
    assert len(stored(client, user_id="user-SPAM")) == 10
    assert stored(client, user_id="user-0020") == []  # rejected with its request


def test_daily_quota_and_rate_in_one_429(client: httpx.Client) -> None:
    patch_config(client, daily_quota=40, rate_limits=True, batch={"eps_threshold": 1})
    events = [
        make_event(i, device_id="device-BOTH", user_id=f"user-{i % 2}xxxx") for i in range(50)
    ]

    response = post(client, events, path="/batch")

    body = response.json()
    assert response.status_code == 429
    assert body["exceeded_daily_quota_devices"] == {"device-BOTH": 50}
    assert body["exceeded_daily_quota_users"] == {}
    assert body["throttled_devices"] == {"device-BOTH": 2}
    assert body["throttled_events"] == list(range(50))


def test_daily_quota_knob(client: httpx.Client) -> None:
    assert client.get("/_emulator/config").json()["daily_quota"] is None

    turned_on = patch_config(client, daily_quota=True, project_eps_cap=True)
    turned_off = patch_config(client, daily_quota=False, project_eps_cap=None)
    bad = client.patch("/_emulator/config", json={"daily_quota": 0})

    assert turned_on["daily_quota"] == 500_000
    assert turned_on["project_eps_cap"] == 50_000
    assert turned_off["daily_quota"] is None
    assert turned_off["project_eps_cap"] is None
    assert bad.status_code == 400
    assert "daily_quota" in bad.json()["error"]
    with pytest.raises(ValueError, match="daily_quota"):
        EmulatorConfig(daily_quota=0)


# -- project cap ----------------------------------------------------------------------------


def test_project_eps_cap(client: httpx.Client) -> None:
    patch_config(client, project_eps_cap=10)
    freeze(client)

    under = post(client, [make_event(i) for i in range(6)])
    over = post(client, [make_event(10 + i) for i in range(5)], path="/batch")
    other_project = post(client, [make_event(20 + i) for i in range(5)], api_key="other-key-1")
    advance(client, 1.5)
    later = post(client, [make_event(30 + i) for i in range(10)], path="/batch")

    assert under.status_code == 200
    assert over.status_code == 429
    assert over.json() == {"code": 429, "error": "Too many requests"}
    assert other_project.status_code == 200
    assert later.status_code == 200
    assert len(stored(client)) == 21
    assert stored(client, insert_id="insert-0010") == []


PROJECT_THROTTLED = {"code": 429, "error": "Too many requests"}


def test_project_rps_cap(client: httpx.Client) -> None:
    patch_config(client, project_rps_cap=3)
    freeze(client)

    under = [  # both endpoints count, whatever the size, an empty request too
        post(client, [make_event(0), make_event(1)]),
        post(client, [make_event(2)], path="/batch"),
        post(client, []),
    ]
    over = post(client, [make_event(10)], path="/batch")
    other_project = post(client, [make_event(20)], api_key="other-key-1")
    advance(client, 0.5)
    still_over = post(client, [make_event(30)])  # refused: does not count in the window
    advance(client, 0.7)  # the first three slid out; the refused one would still count
    later = [post(client, [make_event(40 + i)]) for i in range(3)]
    over_again = post(client, [make_event(50)])

    assert [r.status_code for r in under] == [200, 200, 200]
    assert over.status_code == 429
    assert over.json() == PROJECT_THROTTLED
    assert other_project.status_code == 200
    assert still_over.status_code == 429
    assert still_over.json() == PROJECT_THROTTLED
    assert [r.status_code for r in later] == [200, 200, 200]
    assert over_again.status_code == 429
    refused = ("insert-0010", "insert-0030", "insert-0050")
    assert all(stored(client, insert_id=insert_id) == [] for insert_id in refused)
    assert len(stored(client)) == 3 + 1 + 3
    assert len(stored(client, api_key="other-key-1")) == 1


def test_project_eps_and_rps_caps_together(client: httpx.Client) -> None:
    patch_config(client, project_eps_cap=10, project_rps_cap=2)
    freeze(client)

    first = post(client, [make_event(i) for i in range(8)])
    over_events = post(client, [make_event(10 + i) for i in range(5)])  # 13 > 10 events
    second = post(client, [make_event(20 + i) for i in range(2)])  # the 2nd request slot
    over_requests = post(client, [], path="/batch")  # 10 + 0 events, but a 3rd request

    advance(client, 1.5)  # a fresh window
    small = [post(client, [make_event(30 + i)]) for i in range(2)]  # 2 requests, 2 events
    advance(client, 0.5)
    refused_by_rps = post(client, [make_event(40 + i) for i in range(8)])
    advance(client, 0.7)  # the two small ones slid out; the refused 8 events would not have
    full = post(client, [make_event(50 + i) for i in range(10)], path="/batch")

    assert first.status_code == 200
    assert over_events.status_code == 429
    assert over_events.json() == PROJECT_THROTTLED
    assert second.status_code == 200  # the events cap's refusal used no request slot
    assert over_requests.status_code == 429
    assert over_requests.json() == PROJECT_THROTTLED
    assert [r.status_code for r in small] == [200, 200]
    assert refused_by_rps.status_code == 429
    assert refused_by_rps.json() == PROJECT_THROTTLED
    assert full.status_code == 200  # the requests cap's refusal used no event slots
    assert stored(client, insert_id="insert-0010") == []
    assert stored(client, insert_id="insert-0040") == []
    assert len(stored(client)) == 8 + 2 + 2 + 10


def test_project_rps_cap_knob(client: httpx.Client) -> None:
    assert client.get("/_emulator/config").json()["project_rps_cap"] is None

    turned_on = patch_config(client, project_rps_cap=True)
    freeze(client)
    starter = [post(client, []).status_code for _ in range(DEFAULT_PROJECT_RPS_CAP + 1)]
    assert patch_config(client, project_rps_cap=False)["project_rps_cap"] is None
    assert post(client, [make_event(0)]).status_code == 200  # off: the full window is ignored
    assert patch_config(client, project_rps_cap=7)["project_rps_cap"] == 7
    turned_off = patch_config(client, project_rps_cap=None)

    assert DEFAULT_PROJECT_RPS_CAP == 100  # the Starter plan's requests/s
    assert turned_on["project_rps_cap"] == 100
    assert starter == [200] * 100 + [429]
    assert turned_off["project_rps_cap"] is None
    for bad in (0, -1, 1.5, "x"):
        response = client.patch("/_emulator/config", json={"project_rps_cap": bad})
        assert response.status_code == 400, bad
        assert "project_rps_cap" in response.json()["error"]
    assert client.get("/_emulator/config").json()["project_rps_cap"] is None
    assert EmulatorConfig().project_rps_cap is None
    assert EmulatorConfig(project_rps_cap=100).project_rps_cap == 100
    for bad_value in (0, -1):
        with pytest.raises(ValueError, match="project_rps_cap"):
            EmulatorConfig(project_rps_cap=bad_value)


# -- windows (pure) -------------------------------------------------------------------------


def test_sliding_windows_count_and_sweep() -> None:
    windows = SlidingWindows()
    windows.add("a", 100.0, 5)
    windows.add("a", 110.0, 3)
    windows.add("b", 100.0, 1)

    assert windows.count("a", 115.0, 30, 30) == 8
    assert windows.count("a", 115.0, 10, 30) == 3  # a shorter window inside the retained one
    assert windows.count("a", 130.0, 30, 30) == 3  # the entry at 100 slid out
    windows.sweep(200.0, 30)
    assert len(windows) == 0  # memory follows the active keys


def test_bucket_counts_expire_whole_hours() -> None:
    quota = BucketCounts(HOUR, 24)
    quota.add("id", 10 * HOUR + 5, 4)
    quota.add("id", 20 * HOUR, 1)

    quota.expire(33 * HOUR + 3_599)
    before = quota.count("id")
    quota.expire(34 * HOUR)
    after_first_hour = quota.count("id")
    quota.expire(44 * HOUR)

    assert (before, after_first_hour, quota.count("id")) == (5, 1, 0)
    assert len(quota) == 0


# -- latency --------------------------------------------------------------------------------

LATENCY_MS = 300


def test_latency_overlaps_concurrent_requests() -> None:
    """Four requests on four connections are all handled before any answer leaves: the
    latency is waited out side by side, not one request after another."""
    arrived_ms: list[float] = []
    answers: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def send(amp: Emulator, i: int) -> None:
        with httpx.Client(base_url=amp.url, timeout=30) as http:
            start.wait(timeout=30)
            response = post(http, [make_event(i)], path="/batch")
            with lock:
                arrived_ms.append(time.time() * 1000)
                answers.append(response.status_code)

    with Emulator(EmulatorConfig(latency_ms=LATENCY_MS)) as amp:
        senders = [threading.Thread(target=send, args=(amp, i)) for i in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(timeout=60)  # a hang guard, not a timing
        log = amp.requests_log()
        events = amp.events()

    assert not any(sender.is_alive() for sender in senders)
    assert answers == [200] * 4
    assert len(events) == 4
    handled_ms = [entry["time"] for entry in log]  # logged when handled, before the wait
    assert [entry["status"] for entry in log] == [200] * 4
    assert max(handled_ms) <= min(arrived_ms)  # every request in before any answer out
    assert min(arrived_ms) >= min(handled_ms) + LATENCY_MS - 5  # and the answers did wait


def test_latency_knob_patch_validation_and_reset(client: httpx.Client) -> None:
    assert client.get("/_emulator/config").json()["latency_ms"] == 0

    assert patch_config(client, latency_ms=LATENCY_MS)["latency_ms"] == LATENCY_MS
    for bad in (-1, 60_001, "100", 1.5, True, None):
        response = client.patch("/_emulator/config", json={"latency_ms": bad})
        assert response.status_code == 400, bad
        assert "latency_ms" in response.json()["error"]
    assert client.get("/_emulator/config").json()["latency_ms"] == LATENCY_MS
    assert post(client, [make_event(0)]).status_code == 200  # answered, after the latency

    assert client.post("/_emulator/reset").status_code == 200
    assert client.get("/_emulator/config").json()["latency_ms"] == 0


def test_latency_is_validated_at_construction() -> None:
    assert EmulatorConfig(latency_ms=100).latency_ms == 100
    for bad in (-1, 60_001):
        with pytest.raises(ValueError, match="latency_ms"):
            EmulatorConfig(latency_ms=bad)


def test_latency_delays_amplitude_routes_only(client: httpx.Client) -> None:
    """The control API answers at once: with a minute of latency set, its requests still
    return within the client's timeout (a hang guard), while an ingestion request does not."""
    patch_config(client, latency_ms=60_000)

    assert client.get("/_emulator/stats", timeout=10).status_code == 200
    assert client.get("/_emulator/config", timeout=10).json()["latency_ms"] == 60_000
    assert client.post("/_emulator/reset", timeout=10).status_code == 200


def test_latency_delays_identify_and_fault_answers() -> None:
    """Identify and fault replies wait too; both are handled (logged) before the wait."""
    server = Emulator(EmulatorConfig(latency_ms=30_000)).start()
    server.set_faults([{"action": "status", "status": 503, "route": "/batch"}])
    identification = orjson.dumps([{"user_id": "user-0001"}]).decode()
    identify = {"api_key": API_KEY, "identification": identification}
    try:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{server.url}/identify", data=identify, timeout=0.3)
        body = orjson.dumps({"api_key": API_KEY, "events": [make_event(0)]})
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{server.url}/batch", content=body, timeout=0.3)
        log = server.requests_log()
    finally:
        server.stop()

    assert [(entry["route"], entry["status"]) for entry in log] == [
        ("/identify", 200),
        ("/batch", 503),
    ]


def test_stop_wakes_a_handler_waiting_out_the_latency() -> None:
    server = Emulator(EmulatorConfig(latency_ms=30_000)).start()
    body = orjson.dumps({"api_key": API_KEY, "events": [make_event(0)]})
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server.url}/batch", content=body, timeout=0.2)
    assert len(server.requests_log()) == 1  # handled; its handler waits out the latency

    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(timeout=10)

    assert not stopper.is_alive()


def test_emulator_command_takes_a_latency() -> None:
    from click.testing import CliRunner

    from currents_export.cli import main

    result = CliRunner().invoke(main, ["emulator", "--help"])

    assert result.exit_code == 0
    assert "--latency-ms" in result.output
