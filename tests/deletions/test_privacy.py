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


# ---- the URL's credentials are never shown --------------------------------------------------

URL_PASSWORD = "url-PASSWORD-31"


def with_userinfo(url: str) -> str:
    return url.replace("http://", f"http://someone:{URL_PASSWORD}@", 1)


def test_the_repr_and_every_message_show_the_url_without_its_credentials(
    scripted: list[ScriptedServer]
) -> None:
    refused = ScriptedServer([Scripted(status=400, body=b"{}")])
    down = ScriptedServer([Scripted(status=503, body=b"")] * 6)
    scripted.extend([refused, down])
    shown_refused = privacy_url("us", refused.url.removesuffix("/batch"))

    client = client_for(with_userinfo(shown_refused) + "?token=query-PASSWORD", [])
    assert repr(client) == f"PrivacyClient({shown_refused!r})"
    assert client.url == shown_refused
    with pytest.raises(PrivacyApiError) as answered:
        client.delete(["alice_0001"])
    assert f"({shown_refused}) answered HTTP 400" in str(answered.value)
    assert len(refused.bodies) == 1  # the request went to the URL as given

    with pytest.raises(PrivacyApiError) as retried:
        client_for(with_userinfo(down.url), []).delete(["alice_0001"])
    assert "after 6 attempts (HTTP 503)" in str(retried.value)

    with pytest.raises(PrivacyApiError) as unreachable:  # a closed port: ConnectError
        client_for(with_userinfo("http://127.0.0.1:9/api/2/deletions/users"), []).scheduled(
            "2026-01-01", "2026-01-02")
    assert "ConnectError from http://127.0.0.1:9/api/2/deletions/users" in str(unreachable.value)

    # A password with a raw '/': httpx cannot parse the URL (and its own message quotes a
    # piece of the password); ours names the URL without it.
    broken = client_for(f"http://someone:pa/{URL_PASSWORD}@127.0.0.1:9/x", [])
    with pytest.raises(ConfigurationError) as invalid:
        broken.delete(["alice_0001"])
    assert "percent-encoded" in str(invalid.value) and "'pa'" not in str(invalid.value)

    for text in (repr(client), str(answered.value), str(retried.value), str(unreachable.value),
                 str(invalid.value), repr(broken)):
        assert URL_PASSWORD not in text and "someone" not in text, text
    assert "query-PASSWORD" not in repr(client)
