"""Small loopback HTTP servers for client tests: scripted answers, and a recording one."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass
class Scripted:
    status: int = 200
    body: bytes | None = None
    delay_s: float = 0.0
    hang_up: bool = False  # close the connection without answering


class _Server:
    def __init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                step = owner.answer(body)
                if step.delay_s:
                    time.sleep(step.delay_s)
                if step.hang_up:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                payload = step.body if step.body is not None else orjson.dumps(
                    {"code": step.status, "events_ingested": len(body.get("events", []))}
                )
                if step.status == 200:  # before answering: the client may send at once
                    owner.finished(body)
                self.send_response(step.status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/batch"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def answer(self, body: dict[str, Any]) -> Scripted:
        raise NotImplementedError

    def finished(self, body: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class ScriptedServer(_Server):
    """Answers POSTs from a script, one entry per request, then 200 forever."""

    def __init__(self, script: list[Scripted]) -> None:
        self.script = list(script)
        self.bodies: list[dict[str, Any]] = []
        super().__init__()

    def answer(self, body: dict[str, Any]) -> Scripted:
        self.bodies.append(body)
        return self.script.pop(0) if self.script else Scripted()


@dataclass
class RecordingServer(_Server):
    """Accepts events like Amplitude, records them in arrival order, and checks that no
    user or device is ever in two requests at once. ``throttle`` maps an id to how many
    more requests containing it get a 429 naming it."""

    delay_s: float = 0.0
    throttle: dict[str, int] = field(default_factory=dict)
    stored: list[dict[str, Any]] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    throttled_requests: int = 0
    _active: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        super().__init__()

    def answer(self, body: dict[str, Any]) -> Scripted:
        events = body["events"]
        ids = {e[k] for e in events for k in ("user_id", "device_id") if e.get(k)}
        with self._lock:
            self.overlaps.extend(sorted(ids & self._active))
            self._active |= ids
            hit = {i for i in ids if self.throttle.get(i, 0) > 0}
            for identifier in hit:
                self.throttle[identifier] -= 1
        if hit:
            with self._lock:
                self._active -= ids
                self.throttled_requests += 1
            indexes = [n for n, e in enumerate(events)
                       if e.get("user_id") in hit or e.get("device_id") in hit]
            return Scripted(429, body=orjson.dumps({
                "code": 429, "error": "Too many requests for some devices and users",
                "eps_threshold": 1000,
                "throttled_users": {i: 1001 for i in hit},
                "throttled_devices": {},
                "throttled_events": indexes,
            }))
        return Scripted(delay_s=self.delay_s)

    def finished(self, body: dict[str, Any]) -> None:
        events = body["events"]
        with self._lock:
            self.stored.extend(events)
            self._active -= {e[k] for e in events for k in ("user_id", "device_id") if e.get(k)}
