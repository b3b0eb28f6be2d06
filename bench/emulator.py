"""The Amplitude emulator in its own process, driven through its ``/_emulator/`` API; and
(e), the emulator alone: pre-serialised ``/batch`` bodies over one HTTP connection."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import orjson

from bench.checks import require
from bench.events import mapped_events
from bench.inputs import Workload
from bench.process import child_env, cli_command
from bench.settings import API_KEY

# The same for every contender: no per-id throttling, no daily quota, no project cap (the
# rate-limited workload turns its limits on per case, on top of this).
BENCH_CONFIG: dict[str, Any] = {
    "rate_limits": False,
    "daily_quota": None,
    "project_eps_cap": None,
    "project_rps_cap": None,
}
_START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmulatorProcess:
    """``currents-export emulator`` as a child process; reset and configured per measurement."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(base_url=self.url, timeout=60.0)

    def start(self) -> Self:
        """Start the emulator and wait until its control API answers."""
        command = [*cli_command(), "emulator", "--host", "127.0.0.1", "--port", str(self.port)]
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=child_env()
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            require(
                self._process.poll() is None,
                f"the emulator exited at start-up (see {self._log_path})",
            )
            try:
                if self._http.get("/_emulator/config").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            require(time.monotonic() < deadline, "the emulator did not answer within 30 s")
            time.sleep(0.05)
        self.reset()
        return self

    def reset(
        self, latency_ms: int = 0, limits: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Forget all events, logs and rate windows, then apply :data:`BENCH_CONFIG` with
        ``limits`` over it (config keys, e.g. ``{"project_eps_cap": 1000}``; ``{"batch":
        {...}}`` changes only the keys given) and answer every ingestion request
        ``latency_ms`` after handling it; returns the config."""
        self._http.post("/_emulator/reset").raise_for_status()
        wanted = {**BENCH_CONFIG, **(limits or {}), "latency_ms": latency_ms}
        response = self._http.patch("/_emulator/config", json=wanted)
        response.raise_for_status()
        config: dict[str, Any] = response.json()
        for key, value in wanted.items():
            got = config.get(key)
            if isinstance(value, dict) and isinstance(got, dict):
                got = {name: got.get(name) for name in value}
            require(got == value, f"emulator config {key} is {config.get(key)!r}")
        require(self.stored() == 0, "the emulator still holds events after a reset")
        return config

    def config(self) -> dict[str, Any]:
        response = self._http.get("/_emulator/config")
        response.raise_for_status()
        return dict(response.json())

    def stats(self) -> dict[str, Any]:
        response = self._http.get("/_emulator/stats")
        response.raise_for_status()
        return dict(response.json())

    def statuses(self) -> str:
        """Answers given since the last reset, by status: ``200: 50`` or ``200: 48, 503: 2``."""
        by_status = self.stats()["by_status"]
        return ", ".join(f"{status}: {count}" for status, count in by_status.items()) or "none"

    def stored(self) -> int:
        """Events the emulator stored since the last reset."""
        return int(self.stats()["events_stored"])

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after 10 s) and close the HTTP client."""
        self._http.close()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# ---- (e) the emulator alone -----------------------------------------------------------------

BATCH_SIZE = 2_000  # events per request (the Batch API's limit)


@dataclass(frozen=True, slots=True)
class EmulatorRun:
    events: int
    requests: int
    best_s: float  # the fastest of the repeats, POSTs only
    stored: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.best_s

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": self.events_per_s}


def batch_bodies(workload: Workload) -> tuple[list[bytes], int]:
    """The mapped events of ``workload`` as ready ``/batch`` bodies, and their event count."""
    events = [
        event for f in workload.files for event in mapped_events(f.path, f.event_type)
    ]
    bodies = [
        orjson.dumps({"api_key": API_KEY, "events": events[i : i + BATCH_SIZE]})
        for i in range(0, len(events), BATCH_SIZE)
    ]
    return bodies, len(events)


def measure_emulator(workload: Workload, emulator: EmulatorProcess, repeats: int) -> EmulatorRun:
    """Best of ``repeats`` uploads of the same bodies, each into a freshly reset emulator."""
    bodies, events = batch_bodies(workload)
    require(events > 0, "no events to send to the emulator")
    best = float("inf")
    stored = 0
    headers = {"Content-Type": "application/json"}
    for _ in range(repeats):
        emulator.reset()
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(base_url=emulator.url, timeout=120.0, limits=limits) as client:
            started = time.perf_counter()
            for body in bodies:
                response = client.post("/batch", content=body, headers=headers)
                require(
                    response.status_code == 200,
                    f"emulator answered {response.status_code}: {response.text[:300]}",
                )
            best = min(best, time.perf_counter() - started)
        stored = emulator.stored()
        require(stored == events, f"the emulator stored {stored} of {events} posted events")
    return EmulatorRun(events, len(bodies), best, stored)
