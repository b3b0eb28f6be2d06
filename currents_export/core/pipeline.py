"""A run: objects → records → events → requests → outcomes → ledger.

Three kinds of thread, one owner of every object's state::

    reader (the caller of run)      lanes (core.lanes)         object owner (core.owner)
    claim ───────────────────────────────────────────────────► ledger: state, begin
    decode, map, check ─ events ─► requests ─► Amplitude
          └─ settled / refused ──────────────────────────────► dead letter, checkpoints
                                    delivered / rejected ────► ledger: complete / fail

One stream, never drained between objects: requests carry events of several objects, and
each object finishes when its own records are all accounted for. At most
``max_open_objects`` objects are open; the lanes bound the events in flight.

Faults are contained at the level ``currents_export.errors`` draws: a bad record is
dead-lettered and its object goes on; a failing object is reported and the run goes on; a
configuration error, a stop or an Amplitude outage ends the run, and the objects it did
not reach are reported not started.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO

from currents_export.amplitude.validation import DEFAULT_MIN_ID_LENGTH
from currents_export.core.lanes import Outbox, Sink
from currents_export.core.owner import (
    MAX_OPEN_OBJECTS,
    EventRef,
    ObjectOwner,
    OwnerSettings,
)
from currents_export.core.reader import ObjectReader
from currents_export.core.seen import SeenIds
from currents_export.counts import ObjectReport, ProgressSnapshot, RunSummary
from currents_export.deadletter import DeadLetter
from currents_export.deletions.tracker import DeletionTracker, NoDeletions
from currents_export.errors import (
    AmplitudeUnavailable,
    ConfigurationError,
    CurrentsExportError,
    Interrupted,
)
from currents_export.ledger import Ledger, NoLedger
from currents_export.mapping import MappingOptions
from currents_export.sources import SourceObject
from currents_export.stopping import Stop

log = logging.getLogger(__name__)

OpenOutbox = Callable[[Sink[EventRef]], Outbox[EventRef]]


@dataclass
class Pipeline:
    """Everything a run shares, built by ``compose.build_pipeline``.

    ``open_outbox(sink)``: the run's outbox reporting to ``sink`` — upload lanes over a
    client, or a dry run's (which also sets ``dry_run``: no ledger is read or written).
    """

    open_outbox: OpenOutbox
    ledger: Ledger
    dead_letter: DeadLetter
    stop: Stop
    dry_run: bool = False
    options: MappingOptions = field(default_factory=MappingOptions)
    min_id_length: int = DEFAULT_MIN_ID_LENGTH
    output: IO[bytes] | None = None
    force: bool = False
    checkpoint_every: int = 10_000  # records accounted for between progress checkpoints
    retry_failed: bool = False  # try objects the ledger says failed permanently again
    on_object: Callable[[ObjectReport], None] | None = None  # progress display, logs
    log_failures: bool = True  # off when ``on_object`` logs every object itself
    seen_ids: SeenIds = field(default_factory=SeenIds)
    # [deletions]: learn user ids, record delete requests, skip deleted users' events
    deletions: DeletionTracker | NoDeletions = field(default_factory=NoDeletions)
    max_open_objects: int = MAX_OPEN_OBJECTS
    _owner: ObjectOwner | None = field(default=None, init=False, repr=False)
    _last: ProgressSnapshot = field(default_factory=ProgressSnapshot, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.dry_run:
            self.ledger = NoLedger()  # a dry run neither reads nor writes one

    def run(self, objects: Iterable[SourceObject]) -> RunSummary:
        """Process every object; one failing object never stops the others.

        A configuration error, a stop or an Amplitude outage ends the run: the objects not
        reached are reported as not started (pending), and the summary says why.
        """
        started = time.monotonic()
        self.deletions.refresh()  # the tombstones recorded since the last run
        owner = self._owner = ObjectOwner(OwnerSettings(
            ledger=self.ledger, dead_letter=self.dead_letter, stop=self.stop,
            options=self.options, deletions=self.deletions,
            checkpoint_every=self.checkpoint_every, force=self.force,
            retry_failed=self.retry_failed, dry_run=self.dry_run,
            max_open_objects=self.max_open_objects, on_object=self.on_object,
            log_failures=self.log_failures))
        try:
            outbox = self.open_outbox(owner)
        except BaseException:
            owner.close(None)
            raise
        reader = ObjectReader(outbox, owner, self.stop, self.options, self.min_id_length,
                              self.output, self.seen_ids, self.deletions)
        ending = _Ending()
        run_error: BaseException | None = None
        try:
            for source in objects:
                if ending.why is None:
                    with contextlib.suppress(Interrupted):  # the check below sees a stop
                        owner.wait_for_room(lambda: ending.check(self.stop, outbox),
                                            outbox.flush)
                    ending.check(self.stop, outbox)
                if ending.why is not None:
                    owner.not_started(source, ending.why)
                    continue
                try:
                    handle = owner.claim(source)
                    if handle is not None:
                        reader.read(handle)
                except (ConfigurationError, AmplitudeUnavailable) as exc:
                    ending.ended_by(exc)
                except Interrupted:
                    pass  # the next object sees the stop
                except Exception as exc:  # contained at the object: the owner has its failure
                    if not isinstance(exc, (OSError, CurrentsExportError)):
                        log.debug("%s failed unexpectedly", source.uri, exc_info=True)
        finally:
            try:
                outbox.drain()
            except Exception as exc:  # the objects it left unanswered fail with it
                run_error = exc
                ending.ended_by(exc)
            finally:
                outbox.close()
            summary = owner.close(run_error)
            self._last = owner.snapshot()
            self._owner = None
            # The run's own figures, counted per request (a request may carry several
            # objects' events): each object's repeats_dropped is its share of this one.
            stats = outbox.take_stats()
            summary.requests, summary.retries = stats.requests, stats.retries
            summary.repeats_dropped = stats.repeats_dropped
            summary.elapsed_s = time.monotonic() - started
            summary.interrupted = self.stop.requested
            summary.configuration_error = ending.configuration_error
            summary.dead_letter_files = list(self.dead_letter.files)
            if self.deletions.active:
                summary.deletions = reader.deletion_counts.to_json()
        return summary

    def summary_so_far(self) -> RunSummary:
        """The objects finished so far, the open ones counted not finished (a second
        Ctrl-C's summary)."""
        owner = self._owner
        return owner.summary_so_far() if owner is not None else RunSummary(dry_run=self.dry_run)

    def snapshot(self) -> ProgressSnapshot:
        """Where this pipeline stands (the owner publishes it a few times a second)."""
        owner = self._owner
        return owner.snapshot() if owner is not None else self._last


@dataclass(slots=True)
class _Ending:
    """Why no further object starts, once something ended the run (the reader's own)."""

    why: str | None = None
    configuration_error: str | None = None

    def check(self, stop: Stop, outbox: Outbox[EventRef]) -> str | None:
        if self.why is None:
            if stop.stopped:
                self.why = f"not started: {stop.why()}"
            elif outbox.failed is not None:
                self.ended_by(outbox.failed)
        return self.why

    def ended_by(self, error: BaseException) -> None:
        """What objects not started are told when ``error`` ends the run."""
        if isinstance(error, ConfigurationError):
            if self.configuration_error is None:
                self.configuration_error = str(error)
            self.why = f"not started: {error}"
        elif self.why is None:
            self.why = f"not started: {error}"
