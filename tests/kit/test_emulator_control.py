"""The emulator answers only requests addressed to it, and its control API only its own
origin and JSON writes; its config names API keys by fingerprint (issue 23, "smaller ones").

A web page open in the user's browser must not reach the emulator: not by a name rebound to
127.0.0.1 (DNS rebinding: a foreign ``Host``), not by a cross-site request (a foreign
``Origin``, or a form or ``no-cors`` fetch, whose content types need no preflight).
"""

from __future__ import annotations

import socket
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner

from currents_export.cli import main
from currents_export.kit.emulator import Emulator, EmulatorConfig
from currents_export.kit.emulator.server import HostCheck, shown_config

API_KEY = "test-key-0123456789"




def port_of(amp: Emulator) -> int:
    return int(amp.url.rsplit(":", 1)[1])


def ingest(http: httpx.Client, n: int = 1, **headers: str) -> httpx.Response:
    events = [{"event_type": "e", "user_id": f"user-{i:04d}", "time": 1_700_000_000_000 + i,
               "insert_id": f"insert-{i:04d}"} for i in range(n)]
    return http.post("/2/httpapi", content=orjson.dumps({"api_key": API_KEY, "events": events}),
                     headers={"Content-Type": "application/json", **headers})


def snapshot(amp: Emulator) -> tuple[Any, ...]:
    return (len(amp.events()), len(amp.requests_log()), amp.faults(), shown_config(amp.config))


def assert_refused(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == status and words in body["error"]


# -- Host ---------------------------------------------------------------------------------


FOREIGN_HOSTS = [
    "attacker.example:{port}",  # a name rebound to 127.0.0.1
    "attacker.example",
    "127.0.0.1.attacker.example:{port}",
    "localhost.attacker.example:{port}",
    "127.0.0.1:{other}",  # another port: another origin
    "localhost",
    "127.0.0.1:{port}@attacker.example",
    "",
]


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/_emulator/reset", None),
        ("PATCH", "/_emulator/config", {"rate_limits": True}),
        ("POST", "/_emulator/faults", {"rules": [{"action": "status", "status": 503}]}),
        ("DELETE", "/_emulator/faults", None),
        ("GET", "/_emulator/events", None),  # what it stored is personal data
        ("GET", "/_emulator/counts?by=user_id", None),  # so are its users
        ("GET", "/_emulator/config", None),
        ("POST", "/2/httpapi", {"api_key": API_KEY, "events": [{"event_type": "e",
                                                                 "user_id": "user-1"}]}),
        ("GET", "/api/2/deletions/users", None),
    ],
)
def test_a_foreign_host_is_refused_and_changes_nothing(
    amp: Emulator, client: httpx.Client, host: str, method: str, path: str, body: Any
) -> None:
    assert ingest(client, 3).status_code == 200
    amp.set_faults([{"action": "status", "status": 500, "times": 1, "route": "/batch"}])
    before = snapshot(amp)
    port = port_of(amp)
    headers = {"Host": host.format(port=port, other=port + 1)}
    if body is not None:
        headers["Content-Type"] = "application/json"
    response = client.request(method, path, headers=headers,
                              content=None if body is None else orjson.dumps(body))
    assert_refused(response, 403, "Host not allowed")
    assert "user-0000" not in response.text
    assert snapshot(amp) == before  # nothing reset, changed, stored nor even logged


def test_the_emulators_own_names_are_answered(amp: Emulator, client: httpx.Client) -> None:
    port = port_of(amp)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}",
                 f"LocalHost:{port}"):
        response = client.get("/_emulator/stats", headers={"Host": host})
        assert response.status_code == 200, host
        assert ingest(client, 1, Host=host).status_code == 200, host
    assert client.post("/_emulator/reset", headers={"Host": f"localhost:{port}"}).json() == {
        "reset": True}


def raw_request(amp: Emulator, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port_of(amp)), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_no_host_two_hosts_or_a_foreign_absolute_target_are_refused(
    amp: Emulator, client: httpx.Client
) -> None:
    assert ingest(client, 2).status_code == 200
    port = port_of(amp)
    requests = [
        b"POST /_emulator/reset HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
        b"POST /_emulator/reset HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nHost: attacker.example\r\n"
        b"Content-Length: 0\r\n\r\n" % port,
        b"POST http://attacker.example/_emulator/reset HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Content-Length: 0\r\n\r\n" % port,
    ]
    for request in requests:
        answer = raw_request(amp, request)
        assert answer.startswith(b"HTTP/1.1 403 "), answer[:80]
        assert b'"Host not allowed' in answer
    assert len(amp.events()) == 2
    same = b"POST http://127.0.0.1:%d/_emulator/reset HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" \
           b"Content-Length: 0\r\nConnection: close\r\n\r\n" % (port, port)
    assert raw_request(amp, same).startswith(b"HTTP/1.1 200 ")
    assert amp.events() == []


def test_allowed_hosts_and_the_bound_address_are_answered() -> None:
    with Emulator(allowed_hosts=["host.docker.internal", "Emulator.Test"]) as server, \
            httpx.Client(base_url=server.url, timeout=10) as http:
        port = port_of(server)
        for host in ("host.docker.internal", "emulator.test", "127.0.0.1"):
            response = http.get("/_emulator/stats", headers={"Host": f"{host}:{port}"})
            assert response.status_code == 200, host
        assert http.get("/_emulator/stats", headers={"Host": f"other.test:{port}"}
                        ).status_code == 403


def test_which_hosts_name_the_emulator() -> None:
    local = HostCheck("127.0.0.1", 8787)
    assert all(local.allows(h) for h in ("127.0.0.1:8787", "localhost:8787", "[::1]:8787",
                                         " LOCALHOST:8787 "))
    assert not any(local.allows(h) for h in (
        None, "", "127.0.0.1", "127.0.0.1:8788", "192.0.2.1:8787", "attacker.example:8787",
        "[::1]", "::1:8787", "127.0.0.1:+8787", "127.0.0.1:８７８７", "[::1:8787",
        "127.0.0.1:8787/x", "a b:8787"))
    assert HostCheck("127.0.0.1", 80).allows("localhost")  # no port: 80
    # every interface: any IP address with the port (a rebound page names a domain), no name
    everywhere = HostCheck("0.0.0.0", 8787, ["host.docker.internal"])
    assert all(everywhere.allows(h) for h in ("192.0.2.1:8787", "[2001:db8::1]:8787",
                                              "0.0.0.0:8787", "host.docker.internal:8787"))
    assert not any(everywhere.allows(h) for h in ("attacker.example:8787", "192.0.2.1:1"))
    named = HostCheck("192.0.2.7", 8787)
    assert named.allows("192.0.2.7:8787") and not named.allows("192.0.2.8:8787")


# -- Origin and content type ---------------------------------------------------------------


@pytest.mark.parametrize("origin", [
    "http://attacker.example", "https://attacker.example", "null",
    "http://localhost:{other}", "https://127.0.0.1:{port}", "http://attacker.example:{port}",
    "http://127.0.0.1:{port}/path", "file://",
])
def test_a_foreign_origin_is_refused(
    amp: Emulator, client: httpx.Client, origin: str
) -> None:
    before = snapshot(amp)
    port = port_of(amp)
    headers = {"Origin": origin.format(port=port, other=port + 1)}
    patched = client.patch("/_emulator/config", json={"rate_limits": True, "latency_ms": 5},
                           headers=headers)
    assert_refused(patched, 403, "Origin not allowed")
    assert_refused(client.post("/_emulator/reset", headers=headers), 403, "Origin not allowed")
    assert_refused(client.post("/_emulator/faults", json={"rules": []}, headers=headers),
                   403, "Origin not allowed")
    assert_refused(client.get("/_emulator/events", headers=headers), 403, "Origin not allowed")
    assert_refused(client.get("/_emulator/counts", headers=headers), 403, "Origin not allowed")
    assert snapshot(amp) == before
    assert amp.config.rate_limits is False and amp.config.latency_ms == 0


def test_the_emulators_own_origin_is_answered(amp: Emulator, client: httpx.Client) -> None:
    port = port_of(amp)
    for origin in (f"http://127.0.0.1:{port}", f"http://LOCALHOST:{port}"):
        host = origin.removeprefix("http://")
        response = client.patch("/_emulator/config", json={"rate_limits": True},
                                headers={"Origin": origin, "Host": host})
        assert response.status_code == 200, response.text
    # the origin must be the host the request names: a page of localhost:PORT calling
    # 127.0.0.1:PORT is another origin
    response = client.patch("/_emulator/config", json={"rate_limits": False},
                            headers={"Origin": f"http://localhost:{port}"})
    assert_refused(response, 403, "Origin not allowed")


@pytest.mark.parametrize(
    ("method", "path", "content", "content_type"),
    [
        ("POST", "/_emulator/reset", b"", "application/x-www-form-urlencoded"),
        ("POST", "/_emulator/reset", b"a=1", "application/x-www-form-urlencoded"),
        ("POST", "/_emulator/reset", b"--x--\r\n", "multipart/form-data; boundary=x"),
        ("POST", "/_emulator/reset", b"{}", "text/plain"),
        ("POST", "/_emulator/reset", b"{}", None),  # a body without a type
        ("POST", "/_emulator/faults",
         b'{"rules": [{"action": "status", "status": 503}]}', "text/plain;charset=UTF-8"),
        ("PATCH", "/_emulator/config", b'{"rate_limits": true}', "text/plain"),
        ("DELETE", "/_emulator/faults", b"", "text/plain"),
        ("POST", "/_emulator/clock", b'{"advance_s": 100}', "application/jsonx"),
    ],
)
def test_a_control_write_a_page_could_send_without_asking_is_refused(
    amp: Emulator, client: httpx.Client, method: str, path: str, content: bytes,
    content_type: str | None,
) -> None:
    assert ingest(client, 2).status_code == 200
    amp.set_faults([{"action": "status", "status": 500, "times": 1, "route": "/batch"}])
    before = snapshot(amp)
    clock = amp.state.clock_info()
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = client.request(method, path, content=content, headers=headers)
    assert_refused(response, 415, "application/json")
    assert snapshot(amp) == before
    after = amp.state.clock_info()  # the real clock still, not advanced by 100 s
    assert after["mode"] == clock["mode"] and after["now"] - clock["now"] < 50


def test_the_normal_json_control_calls_work(amp: Emulator, client: httpx.Client) -> None:
    assert ingest(client, 2).status_code == 200
    assert client.get("/_emulator/events").json()["count"] == 2
    assert client.patch("/_emulator/config", json={"rate_limits": True}).json()[
        "rate_limits"] is True
    assert client.patch("/_emulator/config", content=b'{"latency_ms": 0}',
                        headers={"Content-Type": "application/json; charset=utf-8"}
                        ).status_code == 200
    assert client.patch("/_emulator/config", content=b'{"rate_limits": false}',
                        headers={"Content-Type": "application/merge-patch+json"}
                        ).json()["rate_limits"] is False
    rules = client.post("/_emulator/faults", json={"seed": 1, "rules": [
        {"action": "status", "status": 503, "times": 1}]})
    assert rules.status_code == 200 and len(rules.json()["rules"]) == 1
    assert client.post("/_emulator/clock", json={"advance_s": 5}).status_code == 200
    assert client.delete("/_emulator/faults").json()["rules"] == []  # no body, no type
    assert client.post("/_emulator/reset").json() == {"reset": True}  # no body, no type
    assert client.post("/_emulator/reset", json={}).status_code == 200
    assert amp.events() == []
    # a body that is not JSON under the JSON type is still the 400 it was
    bad = client.patch("/_emulator/config", content=b"{",
                       headers={"Content-Type": "application/json"})
    assert bad.status_code == 400


def test_ingestion_keeps_every_content_type(client: httpx.Client) -> None:
    """Amplitude's own endpoints take what Amplitude takes (SDKs in browsers post to it)."""
    body = orjson.dumps({"api_key": API_KEY, "events": [
        {"event_type": "e", "user_id": "user-1", "insert_id": "i-1"}]})
    assert client.post("/2/httpapi", content=body).status_code == 200
    assert client.post("/batch", content=body, headers={"Content-Type": "text/plain",
                                                        "Origin": "https://app.example"}
                       ).status_code == 200


# -- API keys -------------------------------------------------------------------------------


def test_the_config_shows_api_keys_by_fingerprint() -> None:
    config = EmulatorConfig(valid_api_keys=frozenset({API_KEY, "prod-key-abcdef"}),
                            secret_keys={API_KEY: "s3cret-1", "test-key-other": "s3cret-2"})
    with Emulator(config) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        shown = http.get("/_emulator/config")
        assert shown.json()["valid_api_keys"] == ["prod…", "test…"]
        # two keys of one fingerprint stay two entries
        assert shown.json()["secret_keys"] == {"test…": "<redacted>",
                                               "test… (2)": "<redacted>"}
        patched = http.patch("/_emulator/config", json={
            "valid_api_keys": ["live-key-0000000001"],
            "secret_keys": {"live-key-0000000001": "s3cret-3"}})
        assert patched.json()["valid_api_keys"] == ["live…"]
        assert patched.json()["secret_keys"] == {"live…": "<redacted>"}
        texts = shown.text + patched.text + http.get("/_emulator/config").text
        for secret in (API_KEY, "prod-key-abcdef", "test-key-other", "live-key-0000000001",
                       "s3cret"):
            assert secret not in texts
        # the keys still work: only their display changed
        assert server.config.valid_api_keys == frozenset({"live-key-0000000001"})
        assert ingest(http).status_code == 400  # test-key-… is no longer accepted
    assert shown_config(EmulatorConfig())["valid_api_keys"] is None


def test_the_emulator_command_takes_allow_host() -> None:
    result = CliRunner().invoke(main, ["emulator", "--help"])
    assert result.exit_code == 0 and "--allow-host" in result.output
