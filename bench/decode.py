"""(a) Decode only: a bare fastavro loop over the files, in this process."""

from __future__ import annotations

import time
from dataclasses import dataclass

import fastavro

from bench.inputs import Workload


@dataclass(frozen=True, slots=True)
class DecodeRun:
    records: int
    best_s: float  # the fastest of the repeats

    @property
    def events_per_s(self) -> float:
        return self.records / self.best_s


def measure_decode(workload: Workload, repeats: int) -> DecodeRun:
    """Best of ``repeats`` passes of ``for record in fastavro.reader(f): pass``."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for path in workload.paths:
            with path.open("rb") as f:
                for _record in fastavro.reader(f):
                    pass
        best = min(best, time.perf_counter() - started)
    return DecodeRun(workload.records, best)
