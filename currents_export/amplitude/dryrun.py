"""A dry run's stand-in for the Amplitude client: every event is answered at once, unsent.

``Pipeline(client=DryRun(), …)`` maps and checks every record (and writes ``--output``) as a
real run does, then counts each event it would have sent as skipped (``dry_run``) instead of
handing it to upload lanes. A dry run keeps no ledger (see ``Pipeline``): objects already
done are read again, and nothing is recorded.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from currents_export.amplitude.batching import PendingEvent
from currents_export.amplitude.lanes import (
    OnAbandoned,
    OnDelivered,
    OnRejected,
    OnSkipped,
    Outbox,
)
from currents_export.config import RequestLimits
from currents_export.stopping import Stop
from currents_export.summary import DRY_RUN

__all__ = ["DRY_RUN", "DryRun", "Sender"]

Ref = TypeVar("Ref")


class Sender(Protocol):
    """What a pipeline sends through: an ``AmplitudeClient`` or a ``DryRun``."""

    stop: Stop

    def open_lanes(
        self,
        limits: RequestLimits,
        *,
        lanes: int,
        on_delivered: OnDelivered[Ref],
        on_rejected: OnRejected[Ref],
        on_abandoned: OnAbandoned[Ref],
        on_skipped: OnSkipped[Ref],
    ) -> Outbox[Ref]: ...


class DryRun:
    """Sends nothing: its outbox answers each event at once as skipped (``dry_run``)."""

    def __init__(self, stop: Stop | None = None) -> None:
        self.stop = stop or Stop()

    def __repr__(self) -> str:
        return "DryRun()"

    def open_lanes(
        self,
        limits: RequestLimits,
        *,
        lanes: int,
        on_delivered: OnDelivered[Ref],
        on_rejected: OnRejected[Ref],
        on_abandoned: OnAbandoned[Ref],
        on_skipped: OnSkipped[Ref],
    ) -> Outbox[Ref]:
        return _Unsent(on_skipped)


class QuietOutbox(Generic[Ref]):
    """An outbox that sends nothing, so has nothing to drain, close or count; subclasses
    say what ``submit`` does."""

    def submit(self, event: PendingEvent[Ref]) -> None:
        raise NotImplementedError

    @property
    def failed(self) -> BaseException | None:
        return None

    def drain(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take_stats(self) -> tuple[int, int]:
        return 0, 0


class _Unsent(QuietOutbox[Ref]):
    """The dry run's outbox: ``submit`` answers on the caller's thread; no requests."""

    def __init__(self, on_skipped: OnSkipped[Ref]) -> None:
        self._on_skipped = on_skipped

    def submit(self, event: PendingEvent[Ref]) -> None:
        self._on_skipped(event.ref, DRY_RUN)
