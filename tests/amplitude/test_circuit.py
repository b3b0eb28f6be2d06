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
from currents_export.amplitude.circuit import Circuit
from currents_export.amplitude.client import AmplitudeClient, SendOutcome
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


# ---- the run's horizon, in virtual time ------------------------------------------------------


class SteppedTime:
    """Virtual time for ``threads`` threads: it moves only when every one of them sleeps, and
    then to the earliest wake-up, so that threads failing "at once" fail at the same time."""

    def __init__(self, threads: int) -> None:
        self.now = 0.0
        self._running = threads
        self._sleepers: dict[object, float] = {}  # a sleeping thread's token → wake-up time
        self._changed = threading.Condition()

    def clock(self) -> float:
        with self._changed:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._changed:
            token = object()
            self._sleepers[token] = self.now + max(0.0, seconds)
            self._running -= 1
            self._advance()
            while token in self._sleepers:
                self._changed.wait()

    def done(self) -> None:
        """A thread taking part ends."""
        with self._changed:
            self._running -= 1
            self._advance()

    def _advance(self) -> None:  # the lock held
        if self._running or not self._sleepers:
            return
        self.now = max(self.now, min(self._sleepers.values()))
        for token, wake in list(self._sleepers.items()):
            if wake <= self.now:  # running again from now on (before it even wakes)
                del self._sleepers[token]
                self._running += 1
        self._changed.notify_all()


class Outage:
    """A fake Amplitude answering 501 to everything; records when each attempt came. The
    first ``together`` requests are answered together (all in flight at once, as lanes)."""

    def __init__(self, time: SteppedTime, together: int) -> None:
        self.time = time
        self.attempts: list[float] = []
        self.lock = threading.Lock()
        self.first_wave = threading.Barrier(together)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.attempts.append(self.time.clock())
            first = len(self.attempts) <= self.first_wave.parties
        if first:
            self.first_wave.wait(10)  # a guard against a hang, not a timing check
        return httpx.Response(501, text="Not Implemented")


def concurrent_sends(horizon_s: float, senders: int = 8) -> tuple[SteppedTime, Outage,
                                                                  list[BaseException]]:
    """``senders`` threads (lanes) each send one request to an outage, in virtual time."""
    time_ = SteppedTime(senders)
    outage = Outage(time_, senders)
    client = AmplitudeClient("https://api2.amplitude.com/batch", "key-0123456789",
                             transport=httpx.MockTransport(outage),
                             retry=RetryPolicy(horizon_s=horizon_s), clock=time_.clock,
                             sleep=time_.sleep, jitter=lambda: 0.5)
    errors: list[BaseException] = []

    def send(n: int) -> None:
        try:
            client.send(events(f"lane{n}"))
        except BaseException as exc:  # collected for the assertions
            errors.append(exc)
        finally:
            time_.done()

    threads = [threading.Thread(target=send, args=(n,), daemon=True) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)  # a guard against a hang, not a timing check
    client.close()
    assert not any(thread.is_alive() for thread in threads)
    return time_, outage, errors


def test_eight_lanes_failing_at_once_keep_trying_until_the_horizon() -> None:
    """Eight failures at once push the backoff (24 s) past a 20 s horizon at the first
    failures: the wait is cut to what is left, the last attempt goes at the horizon, then
    the run gives up, saying how long Amplitude failed."""
    time_, outage, errors = concurrent_sends(horizon_s=20.0)
    assert len(errors) == 8 and all(isinstance(e, AmplitudeUnavailable) for e in errors)
    assert time_.now >= 19.0  # gave up at the horizon, not at the first failures
    assert time_.now <= 21.0  # and not long after it
    assert outage.attempts[:8] == [0.0] * 8
    assert outage.attempts[8:] and outage.attempts[-1] >= 19.0  # the last attempt was made
    assert all("every request failed for 20 s" in str(e) for e in errors)
    counted = 0
    for error in errors:  # every attempt is counted, retries are attempts after the first
        assert isinstance(error, AmplitudeUnavailable)
        partial = error.partial
        assert isinstance(partial, SendOutcome)
        assert partial.requests >= 1 and partial.retries == partial.requests - 1
        counted += partial.requests
    assert counted == len(outage.attempts)


def test_a_long_horizon_keeps_probing_past_the_longest_backoff() -> None:
    time_, outage, errors = concurrent_sends(horizon_s=900.0)
    assert len(errors) == 8 and all(isinstance(e, AmplitudeUnavailable) for e in errors)
    late = [at for at in outage.attempts if at > 60.0]
    assert len(late) >= 10  # a probe every minute or so (60 s at most, jittered)
    assert max(outage.attempts) == time_.now == 900.0  # the last one at the horizon
    assert all("every request failed for 900 s" in str(e) for e in errors)


def test_a_backoff_past_the_horizon_is_cut_and_the_failure_at_the_horizon_gives_up() -> None:
    """The circuit alone: open, a backoff longer than what is left is cut to it; a failure
    at the horizon gives up, and every later request is refused at once."""
    now = [0.0]
    circuit = Circuit(RetryPolicy(initial_delay_s=16, max_delay_s=60, horizon_s=20.0),
                      stop=Stop(), host="api2.amplitude.com", clock=lambda: now[0],
                      sleep=lambda s: now.__setitem__(0, now[0] + s), jitter=lambda: 0.5)
    for _ in range(3):  # the threshold: open
        assert circuit.admit() is False
        delay = circuit.failed("HTTP 501", 1)
    assert circuit.open and delay == 12.0
    now[0] = 12.0
    assert circuit.admit() is True  # the probe
    assert circuit.failed("HTTP 501", 2) == 8.0  # 24 s, cut to the 8 s left
    assert circuit.admit() is True and now[0] == 20.0  # the last probe, at the horizon
    with pytest.raises(AmplitudeUnavailable, match="failed for 20 s"):
        circuit.failed("HTTP 501", 3)
    with pytest.raises(AmplitudeUnavailable, match="failed for 20 s"):
        circuit.admit()
