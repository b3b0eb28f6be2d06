"""A lanes sink that records what it is told (tests of outboxes without a pipeline)."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

Ref = TypeVar("Ref")


class RecordingSink(Generic[Ref]):
    """Keeps every report, in order, under a lock (lane threads call it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.delivered_refs: list[Ref] = []
        self.rejected_refs: list[tuple[Ref, str, str]] = []
        self.abandoned_refs: list[tuple[Ref, str]] = []
        self.skipped_refs: list[tuple[Ref, str]] = []
        self.delivered_once = threading.Event()

    def delivered(self, refs: list[Ref]) -> None:
        with self._lock:
            self.delivered_refs.extend(refs)
        self.delivered_once.set()

    def rejected(self, refused: list[tuple[Ref, str, str]]) -> None:
        with self._lock:
            self.rejected_refs.extend(refused)

    def abandoned(self, refs: list[Ref], error: BaseException) -> None:
        with self._lock:
            self.abandoned_refs.extend((ref, str(error)) for ref in refs)

    def skipped(self, refs: list[Ref], reason: str) -> None:
        with self._lock:
            self.skipped_refs.extend((ref, reason) for ref in refs)
