"""What the emulator stored, by pages and by counts: ``GET /_emulator/events`` with
``limit``/``offset`` (a default page, the total and the next page named) and
``GET /_emulator/counts``; over real HTTP on loopback."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import orjson
import pytest

from currents_export.kit.emulator import Emulator
from tests.support.emulator import raw_events, stored_events

API_KEY = "test-key-0123456789"
EVENTS = 2_500




def event(i: int) -> dict[str, Any]:
    """Every fifth a purchase; users 0-6, every tenth (from the fourth) device-only."""
    made: dict[str, Any] = {"event_type": "purchase" if i % 5 == 0 else "view",
                            "device_id": f"device-{i % 11:02d}", "time": 1_700_000_000_000 + i,
                            "insert_id": f"insert-{i:06d}"}
    if i % 10 != 3:
        made["user_id"] = f"user-{i % 7}"
    return made


def send(http: httpx.Client, start: int, stop: int) -> None:
    for first in range(start, stop, 1_000):
        body = {"api_key": API_KEY, "events": [event(i) for i in range(first,
                                                                       min(first + 1_000, stop))]}
        response = http.post("/batch", content=orjson.dumps(body),
                             headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text


def ids(page: dict[str, Any]) -> list[str]:
    return [e["insert_id"] for e in page["events"]]


def every_page(http: httpx.Client, **params: str) -> list[dict[str, Any]]:
    pages = [http.get("/_emulator/events", params=params).json()]
    while pages[-1]["next"] is not None:
        pages.append(http.get(pages[-1]["next"]).json())
    return pages


def expected(**wanted: Any) -> list[str]:
    return [e["insert_id"] for e in map(event, range(EVENTS))
            if all(e.get(k) == v for k, v in wanted.items())]


def test_pages_of_a_thousand_by_default_each_naming_the_next(client: httpx.Client) -> None:
    send(client, 0, EVENTS)
    first = client.get("/_emulator/events").json()
    assert (first["count"], first["total"], first["offset"], first["limit"]) == \
        (1_000, EVENTS, 0, 1_000)
    assert first["next_offset"] == 1_000
    assert first["next"] == "/_emulator/events?limit=1000&offset=1000"
    pages = every_page(client)
    assert [p["count"] for p in pages] == [1_000, 1_000, 500]
    assert [p["next_offset"] for p in pages] == [1_000, 2_000, None]
    assert [i for p in pages for i in ids(p)] == expected()  # arrival order, each once
    assert all(p["total"] == EVENTS for p in pages)
    stored = pages[0]["events"][0]
    assert stored["device_id"] == "device-00" and "server_upload_time" in stored


def test_limit_and_offset_pick_a_page_and_filters_stay_on_the_next(
    client: httpx.Client
) -> None:
    send(client, 0, EVENTS)
    one = client.get("/_emulator/events", params={"limit": "1"})
    assert one.status_code == 200  # it was a 400 (an unknown filter)
    assert ids(one.json()) == ["insert-000000"] and one.json()["next_offset"] == 1
    middle = client.get("/_emulator/events", params={"limit": "3", "offset": "10"}).json()
    assert ids(middle) == expected()[10:13] and middle["next_offset"] == 13
    pages = every_page(client, event_type="purchase", limit="150")
    assert [p["count"] for p in pages] == [150, 150, 150, 50]
    assert all(p["total"] == EVENTS // 5 for p in pages)
    assert "event_type=purchase" in pages[0]["next"]
    assert [i for p in pages for i in ids(p)] == expected(event_type="purchase")
    user = every_page(client, user_id="user-3", event_type="view", limit="10000")
    assert [i for p in user for i in ids(p)] == expected(user_id="user-3", event_type="view")


def test_a_count_only_page_and_a_page_past_the_end(client: httpx.Client) -> None:
    send(client, 0, 30)
    counted = client.get("/_emulator/events", params={"limit": "0"}).json()
    assert counted == {"events": [], "count": 0, "total": 30, "offset": 0, "limit": 0,
                       "next_offset": None, "next": None}
    past = client.get("/_emulator/events", params={"offset": "40"}).json()
    assert (past["events"], past["total"], past["next"]) == ([], 30, None)
    last = client.get("/_emulator/events", params={"offset": "29"}).json()
    assert ids(last) == ["insert-000029"] and last["next"] is None


def test_offsets_stay_stable_while_events_arrive(client: httpx.Client) -> None:
    send(client, 0, 1_500)
    first = client.get("/_emulator/events").json()
    send(client, 1_500, EVENTS)  # arrive between two pages: appended, nothing moves
    rest = [first]
    while rest[-1]["next"] is not None:
        rest.append(client.get(rest[-1]["next"]).json())
    assert [i for p in rest for i in ids(p)] == expected()
    assert [p["total"] for p in rest] == [1_500, EVENTS, EVENTS]


@pytest.mark.parametrize(("params", "words"), [
    ({"limit": "-1"}, "limit: '-1' is not a whole number from 0 to 10,000"),
    ({"limit": "10001"}, "limit: '10001' is not a whole number from 0 to 10,000"),
    ({"limit": "ten"}, "limit: 'ten'"),
    ({"limit": "١٢"}, "limit:"),  # digits, but not ASCII ones
    ({"offset": "-5"}, "offset: '-5' is not a whole number, 0 or more"),
    ({"colour": "red"}, "Unknown filter: colour"),
    ({"by": "event_type"}, "Unknown filter: by"),
])
def test_bad_paging_is_a_400_naming_it(
    client: httpx.Client, params: dict[str, str], words: str
) -> None:
    response = client.get("/_emulator/events", params=params)
    assert response.status_code == 400
    assert words in response.json()["error"]


def test_counts_by_event_type_user_and_device(amp: Emulator, client: httpx.Client) -> None:
    send(client, 0, EVENTS)
    events = list(map(event, range(EVENTS)))
    by_type = client.get("/_emulator/counts").json()
    assert by_type == {"by": "event_type", "total": EVENTS, "without": 0, "distinct": 2,
                       "counts": {"view": 2_000, "purchase": 500}, "limit": 1_000}
    users = Counter(e["user_id"] for e in events if "user_id" in e)
    by_user = client.get("/_emulator/counts", params={"by": "user_id"}).json()
    assert by_user["counts"] == dict(users) and by_user["without"] == EVENTS // 10
    assert list(by_user["counts"].values()) == sorted(users.values(), reverse=True)
    assert amp.event_counts("user_id") == dict(users)
    purchases = client.get("/_emulator/counts", params={
        "by": "device_id", "event_type": "purchase", "limit": "2"}).json()
    devices = Counter(e["device_id"] for e in events if e["event_type"] == "purchase")
    assert purchases["total"] == 500 and purchases["distinct"] == len(devices)
    assert len(purchases["counts"]) == 2  # the two largest, most first
    assert list(purchases["counts"].values()) == sorted(devices.values(), reverse=True)[:2]
    assert amp.event_counts("device_id", event_type="purchase") == dict(devices)


@pytest.mark.parametrize(("params", "words"), [
    ({"by": "insert_id"}, "by: 'insert_id' is not one of event_type, user_id, device_id"),
    ({"offset": "3"}, "Unknown filter: offset"),
    ({"limit": "x"}, "limit: 'x'"),
])
def test_bad_counts_are_a_400_naming_it(
    client: httpx.Client, params: dict[str, str], words: str
) -> None:
    response = client.get("/_emulator/counts", params=params)
    assert response.status_code == 400 and words in response.json()["error"]


def test_the_test_helpers_read_every_page(amp: Emulator, client: httpx.Client) -> None:
    """More events than the largest page: the helpers follow ``next``."""
    send(client, 0, 10_500)
    found = stored_events(amp)
    assert len(found) == 10_500
    assert [e["insert_id"] for e in found] == [f"insert-{i:06d}" for i in range(10_500)]
    assert len(stored_events(amp, event_type="purchase")) == 2_100
    raw = raw_events(amp)
    assert b'"insert-000000"' in raw and b'"insert-010499"' in raw
