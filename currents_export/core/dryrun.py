"""A dry run's outbox: every event is reported skipped (``dry_run``), nothing is sent.

A dry run maps and checks every record (and writes ``--output``) as a real run does, then
counts each event it would have sent as skipped instead of handing it to upload lanes. It
keeps no ledger (see ``compose``): objects already done are read again, nothing recorded.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from currents_export.amplitude.batching import PendingEvent
from currents_export.core.lanes import SendStats, Sink
from currents_export.counts import DRY_RUN

__all__ = ["DRY_RUN", "DryRunOutbox"]

Ref = TypeVar("Ref")

_REPORT_EVERY = 256  # events reported to the sink at a time


class DryRunOutbox(Generic[Ref]):
    """Takes events and reports them skipped (``dry_run``) in batches; sends nothing."""

    def __init__(self, sink: Sink[Ref]) -> None:
        self._sink = sink
        self._taken: list[Ref] = []

    def submit(self, event: PendingEvent[Ref]) -> None:
        self.submit_many([event])

    def submit_many(self, events: list[PendingEvent[Ref]]) -> list[PendingEvent[Ref]]:
        """Every event is taken (none is too large for a request that is never sent)."""
        taken = self._taken
        taken.extend(event.ref for event in events)
        if len(taken) >= _REPORT_EVERY:
            self._report()
        return []

    def _report(self) -> None:
        taken, self._taken = self._taken, []
        if taken:
            self._sink.skipped(taken, DRY_RUN)

    @property
    def failed(self) -> BaseException | None:
        return None

    def flush(self) -> None:
        self._report()

    def drain(self) -> None:
        self._report()

    def close(self) -> None:
        self._report()

    def take_stats(self) -> SendStats:
        return SendStats()
