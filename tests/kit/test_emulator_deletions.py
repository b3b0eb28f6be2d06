"""The emulator's User Privacy API v1 (/api/2/deletions/users), over real HTTP on loopback."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from currents_export.kit.emulator import Emulator, EmulatorConfig

API_KEY = "test-key-0123456789"
SECRET = "secret-key-9876543210"
OTHER_KEY = "other-key-0123456789"
PATH = "/api/2/deletions/users"
AUTH = (API_KEY, SECRET)


@pytest.fixture(scope="module")
def amp() -> Iterator[Emulator]:
    config = EmulatorConfig(secret_keys={API_KEY: SECRET, OTHER_KEY: "other-secret"})
    with Emulator(config) as server:
        yield server


@pytest.fixture
def client(amp: Emulator) -> Iterator[httpx.Client]:
    """A client on a freshly reset emulator whose clock is frozen, with no rate limit."""
    with httpx.Client(base_url=amp.url, timeout=10) as http:
        assert http.post("/_emulator/reset").status_code == 200
        assert http.post("/_emulator/clock", json={"advance_s": 0}).status_code == 200
        patch = {"deletion_requests_per_second": None}
        assert http.patch("/_emulator/config", json=patch).status_code == 200
        yield http


def ingest(http: httpx.Client, *user_ids: str, api_key: str = API_KEY) -> None:
    events = [{"event_type": "e", "user_id": u, "insert_id": f"i-{u}"} for u in user_ids]
    response = http.post("/batch", json={"api_key": api_key, "events": events})
    assert response.status_code == 200, response.text


def delete(http: httpx.Client, auth: Any = AUTH, **body: Any) -> httpx.Response:
    return http.post(PATH, content=orjson.dumps(body), auth=auth,
                     headers={"Content-Type": "application/json"})


def today(http: httpx.Client) -> dt.date:
    now = http.get("/_emulator/clock").json()["now"]
    return dt.datetime.fromtimestamp(now, dt.UTC).date()


def jobs(http: httpx.Client, start: dt.date, end: dt.date, auth: Any = AUTH) -> httpx.Response:
    params = {"start_day": start.isoformat(), "end_day": end.isoformat()}
    return http.get(PATH, params=params, auth=auth)


# -- auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic dGVzdC1rZXktMDEyMzQ1Njc4OQ=="},  # no colon, no secret
    ],
)
def test_missing_or_malformed_auth_is_401(client: httpx.Client, headers: dict[str, str]) -> None:
    ingest(client, "user-1")

    response = client.post(PATH, json={"user_ids": ["user-1"]}, headers=headers)

    assert response.status_code == 401
    assert client.get("/_emulator/deletions").json()["jobs"] == []


@pytest.mark.parametrize(
    "auth", [(API_KEY, "wrong"), ("unknown-key-000", SECRET), (OTHER_KEY, SECRET)]
)
def test_wrong_key_or_secret_is_401(client: httpx.Client, auth: tuple[str, str]) -> None:
    ingest(client, "user-1")

    assert delete(client, auth, user_ids=["user-1"]).status_code == 401
    assert jobs(client, dt.date(2020, 1, 1), dt.date(2020, 2, 1), auth).status_code == 401


def test_any_secret_is_accepted_by_default() -> None:
    config = EmulatorConfig(deletion_requests_per_second=None)
    with Emulator(config) as server, httpx.Client(base_url=server.url) as http:
        ingest(http, "user-1")
        assert delete(http, ("any-key-123", "x"), user_ids=["user-1"]).status_code == 400
        assert delete(http, (API_KEY, "anything"), user_ids=["user-1"]).status_code == 200


def test_the_secret_is_never_shown(client: httpx.Client, amp: Emulator) -> None:
    ingest(client, "user-1")
    delete(client, user_ids=["user-1"])
    delete(client, (API_KEY, "wrong"), user_ids=["user-1"])

    shown = [
        client.get("/_emulator/config").text,
        client.get("/_emulator/deletions").text,
        client.get("/_emulator/requests").text,
        repr(amp.config),
        repr(amp.state.requests_log()),
    ]

    # the API keys by their fingerprint (issue 23), the secrets not at all
    assert client.get("/_emulator/config").json()["secret_keys"] == {
        "othe…": "<redacted>", "test…": "<redacted>"
    }
    assert not [text for text in shown if SECRET in text or "other-secret" in text]
    assert API_KEY not in shown[0] and OTHER_KEY not in shown[0]


# -- POST ---------------------------------------------------------------------------------


def test_schedules_known_user_ids(client: httpx.Client, amp: Emulator) -> None:
    ingest(client, "user-1", "user-2")
    day = today(client)

    response = delete(client, user_ids=["user-1", "user-2"], requester="dpo@example.com")

    assert response.status_code == 200, response.text
    body = response.json()
    job_day = (day + dt.timedelta(days=10)).isoformat()
    assert body == {
        "day": job_day,
        "status": "staging",
        "amplitude_ids": [
            {"amplitude_id": amp.amplitude_id(user), "requester": "dpo@example.com",
             "requested_on_day": day.isoformat(), "user_id": user}
            for user in ("user-1", "user-2")
        ],
    }
    assert all(isinstance(e["amplitude_id"], int) for e in body["amplitude_ids"])
    assert [job["day"] for job in amp.deletion_jobs()] == [job_day]


def test_amplitude_ids_are_stable_per_user_and_project(client: httpx.Client, amp: Emulator) -> None:
    ingest(client, "user-1", "user-2")
    ingest(client, "user-1")
    ingest(client, "user-1", api_key=OTHER_KEY)

    first, second = amp.amplitude_id("user-1"), amp.amplitude_id("user-2")
    other = amp.amplitude_id("user-1", api_key=OTHER_KEY)

    assert first is not None and second is not None and other is not None
    assert len({first, second, other}) == 3
    assert amp.amplitude_id("user-1", api_key=API_KEY) == first
    assert amp.amplitude_id("nobody") is None
    by_amplitude_id = delete(client, amplitude_ids=[first])
    assert by_amplitude_id.json()["amplitude_ids"][0]["user_id"] == "user-1"
    # another project's amplitude id is unknown here
    assert delete(client, amplitude_ids=[other]).status_code == 400


def test_101_ids_is_400_and_100_is_fine(client: httpx.Client, amp: Emulator) -> None:
    users = [f"user-{i:03d}" for i in range(101)]
    ingest(client, *users)

    too_many = delete(client, user_ids=users[:60], amplitude_ids=[
        amp.amplitude_id(u) for u in users[60:]
    ])
    hundred = delete(client, user_ids=users[:100])

    assert too_many.status_code == 400
    assert hundred.status_code == 200
    assert len(hundred.json()["amplitude_ids"]) == 100
    log = amp.deletion_requests()
    assert [(r["ids"], r["status"]) for r in log] == [(101, 400), (100, 200)]
    assert log[1]["user_ids"] == users[:100]


def test_unknown_id_without_ignore_is_400_and_schedules_nothing(
    client: httpx.Client, amp: Emulator
) -> None:
    ingest(client, "user-1")

    response = delete(client, user_ids=["user-1", "ghost"], amplitude_ids=[999])

    assert response.status_code == 400
    assert response.json()["invalid_ids"] == ["ghost", 999]
    assert amp.deletion_jobs() == []


@pytest.mark.parametrize(
    "flag",
    [{"ignore_invalid_id": True}, {"ignore_invalid_id": "true"}, {"ignore_invalid_id": "True"},
     {"ignore_invalid_ids": True}, {"delete_from_org": True}],
)
def test_ignore_invalid_id_lists_them(
    client: httpx.Client, amp: Emulator, flag: dict[str, Any]
) -> None:
    ingest(client, "user-1")

    response = delete(client, user_ids=["user-1", "ghost"], **flag)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["invalid_ids"] == ["ghost"]
    assert [e["user_id"] for e in body["amplitude_ids"]] == ["user-1"]
    assert [len(job["amplitude_ids"]) for job in amp.deletion_jobs()] == [1]


def test_only_unknown_ids_with_ignore_schedule_nothing(client: httpx.Client, amp: Emulator) -> None:
    response = delete(client, user_ids=["ghost"], ignore_invalid_id="false")
    assert response.status_code == 400

    response = delete(client, user_ids=["ghost"], ignore_invalid_id=True)

    assert response.status_code == 200
    assert response.json()["amplitude_ids"] == []
    assert response.json()["invalid_ids"] == ["ghost"]
    assert amp.deletion_jobs() == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"user_ids": []},
        {"user_ids": "user-1"},
        {"user_ids": [1]},
        {"amplitude_ids": ["1"]},
        {"user_ids": ["user-1"], "requester": 5},
        {"user_ids": ["user-1"], "ignore_invalid_id": "yes"},
        {"user_ids": ["user-1"], "ignore_invalid_id": True, "ignore_invalid_ids": False},
        {"userIds": ["user-1"]},
    ],
)
def test_malformed_bodies_are_400(client: httpx.Client, body: dict[str, Any]) -> None:
    ingest(client, "user-1")

    assert delete(client, **body).status_code == 400


def test_repeated_id_in_a_staging_job_is_not_added_twice(
    client: httpx.Client, amp: Emulator
) -> None:
    ingest(client, "user-1", "user-2")
    first = delete(client, user_ids=["user-1", "user-1"], requester="a").json()

    client.post("/_emulator/clock", json={"advance_s": 60})
    again = delete(client, user_ids=["user-1", "user-2"], requester="b").json()

    assert again["day"] == first["day"]
    assert again["amplitude_ids"][0] == first["amplitude_ids"][0]  # the first entry is kept
    [job] = amp.deletion_jobs()
    assert [(e["user_id"], e["requester"]) for e in job["amplitude_ids"]] == [
        ("user-1", "a"), ("user-2", "b")
    ]


def test_a_request_on_another_day_makes_another_job(client: httpx.Client, amp: Emulator) -> None:
    ingest(client, "user-1")
    first = delete(client, user_ids=["user-1"]).json()

    client.post("/_emulator/clock", json={"advance_s": 86_400})
    second = delete(client, user_ids=["user-1"]).json()

    assert second["day"] > first["day"]
    assert len(amp.deletion_jobs()) == 2


# -- GET ----------------------------------------------------------------------------------


def test_get_lists_the_jobs_in_range(client: httpx.Client) -> None:
    ingest(client, "user-1")
    ingest(client, "user-9", api_key=OTHER_KEY)
    day = today(client)
    job_day = day + dt.timedelta(days=10)
    delete(client, user_ids=["user-1"], requester="r")
    delete(client, ("other-key-0123456789", "other-secret"), user_ids=["user-9"])

    response = jobs(client, day, day + dt.timedelta(days=30))

    assert response.status_code == 200
    [job] = response.json()  # a JSON array; only this project's job
    assert job["day"] == job_day.isoformat()
    assert job["status"] == "staging"
    assert job["active_scrub_done_date"] is None
    assert [e["user_id"] for e in job["amplitude_ids"]] == ["user-1"]
    assert jobs(client, day, job_day - dt.timedelta(days=1)).json() == []
    assert jobs(client, job_day, job_day).json() == [job]


def test_job_status_follows_the_clock(client: httpx.Client) -> None:
    ingest(client, "user-1")
    day = today(client)
    delete(client, user_ids=["user-1"])
    job_day = day + dt.timedelta(days=10)

    def state() -> tuple[str, str | None]:
        [job] = jobs(client, day, job_day).json()
        return job["status"], job["active_scrub_done_date"]

    client.post("/_emulator/clock", json={"advance_s": 7 * 86_400})
    assert state() == ("submitted", None)
    client.post("/_emulator/clock", json={"advance_s": 3 * 86_400})
    assert state() == ("submitted", job_day.isoformat())
    client.post("/_emulator/clock", json={"advance_s": 5 * 86_400})
    assert state() == ("done", job_day.isoformat())


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"start_day": "2024-01-01"},
        {"start_day": "2024-01-01", "end_day": "2024-13-01"},
        {"start_day": "2024/01/01", "end_day": "2024-02-01"},
        {"start_day": "2024-02-01", "end_day": "2024-01-01"},
        {"start_day": "2024-01-01", "end_day": "2024-07-02"},
        {"start_day": "2024-08-31", "end_day": "2025-03-01"},
    ],
)
def test_get_with_a_bad_range_is_400(client: httpx.Client, params: dict[str, str]) -> None:
    assert client.get(PATH, params=params, auth=AUTH).status_code == 400


def test_get_range_of_six_months_is_fine(client: httpx.Client) -> None:
    assert jobs(client, dt.date(2024, 1, 1), dt.date(2024, 7, 1)).status_code == 200
    assert jobs(client, dt.date(2024, 8, 31), dt.date(2025, 2, 28)).status_code == 200


# -- DELETE -------------------------------------------------------------------------------


def test_delete_removes_an_id_from_a_staging_job(client: httpx.Client, amp: Emulator) -> None:
    ingest(client, "user-1", "user-2")
    body = delete(client, user_ids=["user-1", "user-2"], requester="r").json()
    amplitude_id = amp.amplitude_id("user-1")

    response = client.delete(f"{PATH}/{amplitude_id}/{body['day']}", auth=AUTH)

    assert response.status_code == 200
    assert response.json() == {
        "amplitude_id": amplitude_id,
        "requested_on_day": today(client).isoformat(),
        "requester": "r",
    }
    [job] = amp.deletion_jobs()
    assert [e["user_id"] for e in job["amplitude_ids"]] == ["user-2"]
    assert client.delete(f"{PATH}/{amplitude_id}/{body['day']}", auth=AUTH).status_code == 404


def test_delete_of_an_absent_id_or_job(client: httpx.Client, amp: Emulator) -> None:
    ingest(client, "user-1")
    day = delete(client, user_ids=["user-1"]).json()["day"]
    amplitude_id = amp.amplitude_id("user-1")

    assert client.delete(f"{PATH}/{amplitude_id}/2000-01-01", auth=AUTH).status_code == 404
    assert client.delete(f"{PATH}/123/{day}", auth=AUTH).status_code == 404
    assert client.delete(f"{PATH}/{amplitude_id}/not-a-day", auth=AUTH).status_code == 400
    other = ("other-key-0123456789", "other-secret")
    assert client.delete(f"{PATH}/{amplitude_id}/{day}", auth=other).status_code == 404
    assert client.delete(f"{PATH}/{amplitude_id}/{day}").status_code == 401


def test_delete_from_a_submitted_job_is_400(client: httpx.Client, amp: Emulator) -> None:
    ingest(client, "user-1")
    day = delete(client, user_ids=["user-1"]).json()["day"]
    client.post("/_emulator/clock", json={"advance_s": 7 * 86_400})

    response = client.delete(f"{PATH}/{amp.amplitude_id('user-1')}/{day}", auth=AUTH)

    assert response.status_code == 400
    assert len(amp.deletion_jobs()[0]["amplitude_ids"]) == 1


# -- limits -------------------------------------------------------------------------------


def test_one_request_per_second_then_429(client: httpx.Client, amp: Emulator) -> None:
    client.patch("/_emulator/config", json={"deletion_requests_per_second": 1})
    ingest(client, "user-1")
    day = today(client)

    codes = [delete(client, user_ids=["user-1"]).status_code]
    codes.append(jobs(client, day, day).status_code)  # every method counts
    client.post("/_emulator/clock", json={"advance_s": 0.5})
    codes.append(delete(client, user_ids=["user-1"]).status_code)
    client.post("/_emulator/clock", json={"advance_s": 0.5})
    codes.append(delete(client, user_ids=["user-1"]).status_code)
    codes.append(delete(client, ("other-key-0123456789", "other-secret"),
                        user_ids=["ghost"], ignore_invalid_id=True).status_code)

    assert codes == [200, 429, 429, 200, 200]  # the limit is per project
    log = amp.deletion_requests()
    assert [r["status"] for r in log] == codes
    accepted = [r["at"] for r in log if r["status"] != 429 and r["api_key"] == "test…"]
    assert all(b - a >= 1 for a, b in itertools.pairwise(accepted))


def test_the_rate_is_configurable(client: httpx.Client) -> None:
    client.patch("/_emulator/config", json={"deletion_requests_per_second": 3})
    ingest(client, "user-1")

    codes = [delete(client, user_ids=["user-1"]).status_code for _ in range(4)]

    assert codes == [200, 200, 200, 429]


def test_requests_in_flight_are_limited() -> None:
    config = EmulatorConfig(
        deletion_requests_per_second=None, deletion_max_in_flight=1, latency_ms=1_000
    )
    with (
        Emulator(config) as server,
        httpx.Client(base_url=server.url, timeout=10) as first,
        httpx.Client(base_url=server.url, timeout=10) as second,
    ):
        ingest(first, "user-1")
        result: list[int] = []
        slow = threading.Thread(
            target=lambda: result.append(delete(first, user_ids=["user-1"]).status_code)
        )
        slow.start()
        while not server.deletion_requests():  # logged on arrival, answered a second later
            threading.Event().wait(0.01)
        busy = delete(second, user_ids=["user-1"]).status_code
        slow.join()
        after = delete(second, user_ids=["user-1"]).status_code

    assert (result, busy, after) == ([200], 429, 200)


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ({"secret_keys": ["s"]}, "secret_keys"),
        ({"secret_keys": {"k": ""}}, "secret_keys"),
        ({"deletion_requests_per_second": 0}, "deletion_requests_per_second"),
        ({"deletion_max_in_flight": None}, "deletion_max_in_flight"),
    ],
)
def test_config_patch_rejects_bad_deletion_keys(
    client: httpx.Client, patch: dict[str, Any], named: str
) -> None:
    response = client.patch("/_emulator/config", json=patch)

    assert response.status_code == 400
    assert named in response.json()["error"]


def test_config_patch_sets_secret_keys(client: httpx.Client) -> None:
    ingest(client, "user-1")
    response = client.patch("/_emulator/config", json={"secret_keys": {API_KEY: "new-secret"}})
    assert response.json()["secret_keys"] == {"test…": "<redacted>"}

    assert delete(client, user_ids=["user-1"]).status_code == 401
    assert delete(client, (API_KEY, "new-secret"), user_ids=["user-1"]).status_code == 200


# -- control API --------------------------------------------------------------------------


def test_control_api_shows_jobs_and_requests_and_reset_clears_them(
    client: httpx.Client, amp: Emulator
) -> None:
    ingest(client, "user-1")
    delete(client, user_ids=["user-1"], requester="r")
    delete(client, user_ids=["ghost"])

    shown = client.get("/_emulator/deletions").json()

    assert shown == {"jobs": amp.deletion_jobs(), "requests": amp.deletion_requests()}
    [job] = shown["jobs"]
    assert job["api_key"] == "test…"
    assert job["status"] == "staging"
    assert [e["user_id"] for e in job["amplitude_ids"]] == ["user-1"]
    requests = shown["requests"]
    assert [(r["ids"], r["status"], r["user_ids"]) for r in requests] == [
        (1, 200, ["user-1"]), (1, 400, ["ghost"])
    ]
    assert all(isinstance(r["at"], float) for r in requests)
    assert [e["route"] for e in amp.requests_log()][-2:] == [PATH, PATH]

    assert client.post("/_emulator/reset").status_code == 200

    assert client.get("/_emulator/deletions").json() == {"jobs": [], "requests": []}
    assert amp.amplitude_id("user-1") is None


def test_unknown_deletion_routes_are_404(client: httpx.Client) -> None:
    assert client.put(PATH, auth=AUTH).status_code == 404
    assert client.get(f"{PATH}/1/2024-01-01", auth=AUTH).status_code == 404
    assert client.post(f"{PATH}/x", auth=AUTH).status_code == 404
