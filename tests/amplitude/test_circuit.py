"""One circuit per run: while Amplitude fails, one probe at a time; a stop wakes every wait."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson
import pytest

from currents_export.amplitude.api import RetryPolicy
from currents_export.amplitude.batching import PendingEvent
from currents_export.amplitude.client import AmplitudeClient
from currents_export.errors import AmplitudeUnavailable, SendInterrupted
from currents_export.stopping import Stop


class FailingServer:
    """Answers 503 to the first ``failures`` requests (each after ``delay_s``), then 200;
    records how many failing requests were in flight at once once the circuit had opened."""

    def __init__(self, failures: int, delay_s: float = 0.05, opened_after: int = 8) -> None:
        self.failures, self.delay_s, self.opened_after = failures, delay_s, opened_after
        self.seen = 0
        self.in_flight = 0
        self.max_in_flight_while_open = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.seen += 1
                    ordinal = owner.seen
                    owner.in_flight += 1
                    if ordinal > owner.opened_after and ordinal <= owner.failures:
                        owner.max_in_flight_while_open = max(
                            owner.max_in_flight_while_open, owner.in_flight)
                time.sleep(owner.delay_s)
                with owner.lock:
                    owner.in_flight -= 1
                if ordinal <= owner.failures:
                    status, payload = 503, b'{"code":503}'
                else:
                    status, payload = 200, orjson.dumps(
                        {"code": 200, "events_ingested": len(body["events"])})
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/batch"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[list[FailingServer]]:
    made: list[FailingServer] = []
    yield made
    for server in made:
        server.close()


def events(prefix: str, n: int = 3) -> list[PendingEvent[int]]:
    return [PendingEvent(orjson.dumps({"event_type": "e", "user_id": f"{prefix}-user-{i}",
                                       "insert_id": f"{prefix}-{i}"}), i) for i in range(n)]


def send_from_threads(client: AmplitudeClient, senders: int) -> list[BaseException | int]:
    results: list[BaseException | int] = []

    def send(n: int) -> None:
        try:
            results.append(len(client.send(events(f"s{n}")).delivered))
        except BaseException as exc:  # collected for the assertions
            results.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)  # a guard against a hang, not a timing check
    return results


def test_an_open_circuit_sends_one_probe_at_a_time_and_closes_on_success(
    servers: list[FailingServer],
) -> None:
    server = FailingServer(failures=20)
    servers.append(server)
    policy = RetryPolicy(initial_delay_s=0.02, max_delay_s=0.1, horizon_s=60)
    client = AmplitudeClient(server.url, "key-0123456789", retry=policy)
    try:
        results = send_from_threads(client, senders=4)
    finally:
        client.close()
    assert results == [3, 3, 3, 3]  # every sender delivered once Amplitude came back
    assert server.max_in_flight_while_open == 1  # four senders, one probe at a time
    assert not client.circuit.open


def test_the_horizon_counts_for_the_run_not_for_each_request(
    servers: list[FailingServer],
) -> None:
    server = FailingServer(failures=10_000, delay_s=0.0)
    servers.append(server)
    policy = RetryPolicy(initial_delay_s=0.05, max_delay_s=0.2, horizon_s=1.0)
    client = AmplitudeClient(server.url, "key-0123456789", retry=policy)
    try:
        with pytest.raises(AmplitudeUnavailable, match="unavailable since"):
            client.send(events("a"))
        used = server.seen
        # A later send in the same run does not get a horizon of its own.
        with pytest.raises(AmplitudeUnavailable):
            client.send(events("b"))
        assert server.seen == used
        # A new run (a warm Lambda's next invocation) builds a new client: a fresh circuit.
        fresh = AmplitudeClient(server.url, "key-0123456789", retry=policy, stop=Stop())
        try:
            with pytest.raises(AmplitudeUnavailable):
                fresh.send(events("c"))
        finally:
            fresh.close()
        assert server.seen > used
    finally:
        client.close()


def test_a_stop_wakes_a_send_waiting_out_an_outage(servers: list[FailingServer]) -> None:
    server = FailingServer(failures=10_000, delay_s=0.0)
    servers.append(server)
    stop = Stop()
    policy = RetryPolicy(initial_delay_s=30, max_delay_s=60, horizon_s=900)
    client = AmplitudeClient(server.url, "key-0123456789", retry=policy, stop=stop)
    outcome: list[BaseException] = []

    def send() -> None:
        try:
            client.send(events("z"))
        except BaseException as exc:  # collected for the assertions
            outcome.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    while server.seen < 1:
        time.sleep(0.01)
    stop.request("interrupted by SIGINT")  # while it sleeps a 15-30 s backoff
    thread.join(10)  # a guard against a hang, not a timing check
    client.close()
    assert not thread.is_alive()
    [error] = outcome
    assert isinstance(error, SendInterrupted) and "interrupted by SIGINT" in str(error)
    assert error.partial is not None and error.partial.delivered == []
    assert server.seen == 1


def test_a_deadline_bounds_the_request_timeout() -> None:
    """A server that accepts the connection and never answers, a client whose own timeout is
    an hour: the request gives up at the deadline, not after the hour."""
    stop = Stop.after(0.5)
    outcome: list[BaseException] = []
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/batch"
        client = AmplitudeClient(url, "key-0123456789", stop=stop,
                                 retry=RetryPolicy(horizon_s=900),
                                 timeout=httpx.Timeout(3_600.0))

        def send() -> None:
            try:
                client.send(events("d"))
            except BaseException as exc:  # collected for the assertions
                outcome.append(exc)

        thread = threading.Thread(target=send, daemon=True)
        thread.start()
        thread.join(30)  # a hang guard: unbounded, the request would wait an hour
        alive = thread.is_alive()
        client.close()
    assert not alive
    [error] = outcome
    assert isinstance(error, SendInterrupted) and "deadline" in str(error)
