"""A fake Amplitude behind ``httpx.MockTransport``: no sockets, no emulator.

The handler runs on the calling lane's thread, so several lanes really call it at once. It
records every request (the events of each, in arrival order), watches which user and
device ids are in a request at the same time, and stores what it acknowledges. A ``rule``
(a function of one request's events) may answer instead of the acknowledgement: a 400
listing event indexes, a 429 naming events, a 503, … (``None``: acknowledge).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import orjson

URL = "https://api2.amplitude.com/batch"
API_KEY = "fake-key-0123456789"

Rule = Callable[[list[dict[str, Any]]], "httpx.Response | None"]


def ack(count: int) -> httpx.Response:
    """Amplitude's acknowledgement of ``count`` events."""
    return httpx.Response(200, json={"code": 200, "events_ingested": count,
                                     "payload_size_bytes": 50,
                                     "server_upload_time": 1396381378123})


def status(code: int, **body: Any) -> httpx.Response:
    """A JSON answer whose ``code`` is the HTTP status, as Amplitude's always is."""
    return httpx.Response(code, json={"code": code, **body})


def event_ids(event: dict[str, Any]) -> set[str]:
    return {event[key] for key in ("user_id", "device_id") if event.get(key)}


class FakeAmplitude:
    """The handler of ``httpx.MockTransport(FakeAmplitude(...))``."""

    def __init__(self, rule: Rule | None = None,
                 on_request: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.rule = rule
        self.on_request = on_request  # called while the request is "in flight"
        self.lock = threading.Lock()
        self.requests: list[list[dict[str, Any]]] = []  # every request's events, in order
        self.stored: list[dict[str, Any]] = []  # acknowledged events, in arrival order
        self.overlaps: list[str] = []  # ids seen in two requests at once
        self.max_in_flight = 0  # requests answered at the same time, at most
        self._in_flight = 0
        self._active: Counter[str] = Counter()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        events: list[dict[str, Any]] = body["events"]
        ids: set[str] = set().union(*(event_ids(e) for e in events)) if events else set()
        with self.lock:
            self.requests.append(events)
            self.overlaps.extend(sorted(i for i in ids if self._active[i]))
            self._active.update(ids)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.on_request is not None:
                self.on_request(events)
            answer = self.rule(events) if self.rule is not None else None
            if answer is None:
                with self.lock:
                    self.stored.extend(events)
                answer = ack(len(events))
            return answer
        finally:
            with self.lock:
                self._active.subtract(ids)
                self._in_flight -= 1

    # ---- what it saw ----------------------------------------------------------------------

    def stored_ids(self) -> list[str]:
        """The insert_ids acknowledged, in arrival order."""
        with self.lock:
            return [event["insert_id"] for event in self.stored]

    def sent_ids(self) -> list[str]:
        """The insert_ids of every request, in order (retries and refusals included)."""
        with self.lock:
            return [event["insert_id"] for events in self.requests for event in events]


class VirtualTime:
    """A clock that only the client's backoff sleeps move: retries cost no real time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


class DedupingAmplitude:
    """A ``FakeAmplitude`` rule: an Amplitude that keeps each insert_id once and counts only
    the events it had not stored yet in ``events_ingested``; the first request holding one
    of ``fail_after_store`` is stored, then answered 500 (so its retry repeats it all)."""

    def __init__(self, fail_after_store: set[str]) -> None:
        self.fail_after_store = set(fail_after_store)
        self.lock = threading.Lock()
        self.stored: list[str] = []  # in arrival order
        self._seen: set[str] = set()
        self.faulted: list[int] = []  # the size of each request answered 500 after storing

    def __call__(self, events: list[dict[str, Any]]) -> httpx.Response:
        ids = [event["insert_id"] for event in events]
        with self.lock:
            new = [i for i in ids if i not in self._seen]
            self._seen.update(new)
            self.stored.extend(new)
            if self.fail_after_store & set(ids):
                self.fail_after_store -= set(ids)
                self.faulted.append(len(ids))
                return status(500, error="Internal Server Error")
        return httpx.Response(200, json={"code": 200, "events_ingested": len(new)})
