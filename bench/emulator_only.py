"""(e) The emulator alone: pre-serialised ``/batch`` bodies over one HTTP connection."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import orjson

from bench.checks import require
from bench.emulator import EmulatorProcess
from bench.events import mapped_events
from bench.inputs import Workload
from bench.settings import API_KEY

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
