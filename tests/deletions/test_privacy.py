"""The User Privacy API client: Basic auth, pacing, retries, and answers it verifies."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from currents_export.deletions.privacy_api import PrivacyClient, privacy_url
from currents_export.errors import ConfigurationError, PrivacyApiError
from currents_export.kit.emulator import Emulator
from tests.support.servers import Scripted, ScriptedServer

JOB = orjson.dumps({"day": "2026-12-12", "status": "staging", "invalid_ids": ["ghost_001"],
                    "amplitude_ids": [{"amplitude_id": 1, "user_id": "alice_0001",
                                       "requester": "r", "requested_on_day": "2026-12-02"}]})


@pytest.fixture
def scripted() -> Iterator[list[ScriptedServer]]:
    servers: list[ScriptedServer] = []
    yield servers
    for server in servers:
        server.close()


def client_for(url: str, slept: list[float], secret: str = "secret-key-000") -> PrivacyClient:
    clock = iter(float(n) for n in range(1000))
    return PrivacyClient(url, "api-key-000", secret, sleep=slept.append,
                         clock=lambda: next(clock))


def test_urls_follow_the_region_or_the_base_url() -> None:
    assert privacy_url("us") == "https://amplitude.com/api/2/deletions/users"
    assert privacy_url("eu") == "https://analytics.eu.amplitude.com/api/2/deletions/users"
    assert privacy_url("us", "http://127.0.0.1:9/") == "http://127.0.0.1:9/api/2/deletions/users"


def test_a_job_is_taken_only_when_it_accounts_for_every_id(
    scripted: list[ScriptedServer]
) -> None:
    server = ScriptedServer([Scripted(body=JOB), Scripted(body=JOB)])
    scripted.append(server)
    slept: list[float] = []
    client = client_for(server.url, slept)
    job = client.delete(["alice_0001", "ghost_001"])
    assert (job.day, job.status, job.invalid_ids) == ("2026-12-12", "staging",
                                                      frozenset({"ghost_001"}))
    sent = server.bodies[0]
    assert sent["ignore_invalid_id"] is True and sent["user_ids"] == ["alice_0001", "ghost_001"]
    with pytest.raises(PrivacyApiError, match="accounts for 1 of 2 users"):
        client.delete(["alice_0001", "bob_000002"])  # bob is neither scheduled nor invalid
    assert slept and slept[0] > 0  # the second request waited for the pace
    with pytest.raises(ValueError, match="1 to 100 ids"):
        client.delete([f"u{n}" for n in range(101)])


def test_retries_429_and_5xx_then_fails_and_a_200_that_is_not_amplitude_is_refused(
    scripted: list[ScriptedServer]
) -> None:
    server = ScriptedServer([Scripted(status=429, body=b"{}"), Scripted(status=503, body=b""),
                             Scripted(body=JOB)])
    scripted.append(server)
    slept: list[float] = []
    assert client_for(server.url, slept).delete(["alice_0001"]).day == "2026-12-12"
    assert len(server.bodies) == 3 and [s for s in slept if s >= 2] == [2.0, 4.0]
    html = ScriptedServer([Scripted(body=b"<html>captive portal</html>")] * 2)
    scripted.append(html)
    with pytest.raises(PrivacyApiError, match="without a deletion job"):
        client_for(html.url, []).delete(["alice_0001"])
    down = ScriptedServer([Scripted(status=502, body=b"")] * 6)
    scripted.append(down)
    with pytest.raises(PrivacyApiError, match="after 6 attempts"):
        client_for(down.url, []).delete(["alice_0001"])


def test_a_refused_secret_key_is_a_configuration_error_without_the_key(
    emulator: Emulator
) -> None:
    import httpx

    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"secret_keys": {"api-key-000": "right-secret"}}).raise_for_status()
    client = client_for(privacy_url("us", emulator.url), [], secret="wrong-SECRET-77")
    with pytest.raises(ConfigurationError) as info:
        client.delete(["alice_0001"])
    assert "HTTP 401" in str(info.value) and "wrong-SECRET-77" not in str(info.value)
    assert "wrong-SECRET-77" not in repr(client) and "api-key-000" not in repr(client)
