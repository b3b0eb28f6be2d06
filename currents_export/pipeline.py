"""Run objects through the steps: records → events → requests → outcomes → ledger.

One stream, never drained between objects: the reader decodes and maps one object after
another and hands events to the upload lanes, whose requests carry events of several
objects. A bookkeeping thread takes what the lanes answer (and their failures), writes the
dead letter and the ledger, and finishes each object when its own records are all
accounted for, in whatever order that happens. The reader keeps at most
``max_open_objects`` objects open; the lanes bound the events and bytes in flight.

Progress inside an object is checkpointed only for the prefix of records already accounted
for, after the dead letter is flushed, and an object is marked done only when every record
is accounted for: a checkpoint is never ahead of delivered data, so a run killed at any
instant resumes without losing anything.

Faults are contained at the level ``currents_export.errors`` draws: a record that cannot
be mapped is dead-lettered (``mapping_error``) and its object goes on; an object that fails
for any reason, or whose events a failure left unanswered, is reported (retryable: pending;
permanent: recorded and skipped later) and the run goes on; a configuration error, a stop
(deadline, signal) or an Amplitude outage ends the run, with every object it did not reach
reported as not started.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import IO, Any

import orjson

from currents_export.amplitude.batching import EventTooLarge, PendingEvent
from currents_export.amplitude.dryrun import DryRun, QuietOutbox, Sender
from currents_export.amplitude.lanes import Outbox
from currents_export.amplitude.validation import INVALID_ID, id_problem
from currents_export.config import (
    DEFAULT_LANES,
    DEFAULT_MIN_ID_LENGTH,
    EVENTS_PER_REQUEST,
    REQUEST_LIMITS,
    RequestLimits,
)
from currents_export.deadletter import DeadLetter
from currents_export.deletions.tracker import (
    DELETE_REQUEST_TYPE,
    DELETED_USER,
    DELETION_REQUEST,
    DeletionCounts,
    DeletionTracker,
    NoDeletions,
)
from currents_export.display import ProgressSnapshot
from currents_export.errors import (
    MAPPING_ERROR,
    AmplitudeUnavailable,
    ConfigurationError,
    CurrentsExportError,
    DeliveryFailed,
    Interrupted,
    UnreadableObject,
    ends_run,
    is_retryable,
)
from currents_export.jsonbytes import kept_json
from currents_export.ledger import Ledger, NoLedger
from currents_export.ledger.base import AlreadyDone, LeaseError, ObjectState, Resume
from currents_export.mapping import (
    Duplicate,
    Mapped,
    MappingOptions,
    Rejected,
    Skipped,
    mapped_records,
)
from currents_export.mapping.mapper import redacted_record
from currents_export.mapping.stream import Outcome
from currents_export.progress import (
    DEAD_LETTERED,
    DUPLICATE,
    SKIPPED,
    Checkpoint,
    ObjectProgress,
)
from currents_export.sources import SourceObject
from currents_export.stopping import Stop
from currents_export.summary import ObjectReport, RunSummary, Tally

log = logging.getLogger(__name__)

EVENT_TOO_LARGE = "event_too_large"
OBJECT_FAILED = "object_failed"  # dead-letter reason of a whole object that cannot be read
_STOP_CHECK_EVERY = 256  # records between checks of the run's stop
_VALID_IDS_REMEMBERED = 100_000
# An object whose records are overwhelmingly unusable is corrupt, not drifted: after this
# many records, if more than this share could not be mapped, it stops as permanently failed
# instead of flooding the dead letter.
UNUSABLE_AFTER_RECORDS = 1_000
UNUSABLE_SHARE = 0.9
AMPLITUDE_DEDUP_DAYS = 7  # Amplitude drops a repeated insert_id only within this window
MAX_OPEN_OBJECTS = 64  # objects read but not yet finished, at most (the rest wait)


DEDUP_WINDOW = 200_000  # event ids remembered for in-run duplicate detection


class SeenIds:
    """The Braze event ids seen recently in this run.

    Only the reader touches it (the thread in ``Pipeline.run``, through ``mapped_records``'s
    ``repeated``): lane threads and the bookkeeper never do, so it has no lock. Worker
    processes each have their own. Share one between threads and it needs a lock first.

    A bounded window, so memory never grows with the run: the last ``window`` ids at least,
    and at most twice as many (two generations; the older one is dropped when the newer
    fills). Ids are kept as their 64-bit hash in two open-addressing tables of machine
    integers (``array('q')``, filled to at most 40 %): 8 MiB for the default window, where
    Python sets of ints took some 30 MiB and more of resident memory. An event is wrongly
    taken for a copy only if its hash equals one in the window: about one chance in
    4·10¹³ per event. Braze's at-least-once copies arrive close together; a repeat further
    apart is still sent, and Amplitude drops it by ``insert_id`` (within 7 days).
    """

    def __init__(self, window: int = DEDUP_WINDOW) -> None:
        if window < 1:
            raise ValueError("the duplicate window must hold at least one id")
        self.window = window
        size = 1
        while size < window * 2.5:
            size <<= 1
        self._mask = size - 1
        self._current = self._empty()
        self._previous = self._empty()
        self._count = 0  # ids in _current

    def _empty(self) -> array[int]:
        return array("q", bytes(8 * (self._mask + 1)))

    def first_time(self, event_id: str) -> bool:
        """Record ``event_id``; True unless it was seen within the window."""
        key = hash(event_id) or 1  # 0 marks an empty slot
        mask = self._mask
        for table in (self._previous, self._current):  # the current one last
            slot = key & mask
            while True:  # linear probing: one or two steps at this load
                found = table[slot]
                if found == key:
                    return False
                if not found:
                    break
                slot = (slot + 1) & mask
        # ``slot`` is now the current table's free slot for ``key``
        if self._count >= self.window:
            self._previous, self._current = table, self._empty()
            self._count = 0
            table = self._current
            slot = key & mask
            while table[slot]:
                slot = (slot + 1) & mask
        table[slot] = key
        self._count += 1
        return True


@dataclass(eq=False)
class _Open:
    """An object being read, or read and waiting for the answers to its events."""

    source: SourceObject
    report: ObjectReport
    progress: ObjectProgress
    reading: bool = True
    error: BaseException | None = None  # the first failure; it fails the object
    abandoned: int = 0  # events a failure left unanswered (pending)
    finished: bool = False
    check_queued: bool = False  # the bookkeeper has a look at it queued
    in_hand: bool = False  # the reader holds a record of it not yet settled nor handed over


@dataclass(slots=True)
class EventRef:
    """What travels with an event until Amplitude answers for it: its object, its record's
    place, and the event as sent. The Braze record is not kept (memory stays flat): an
    event Amplitude refuses is dead-lettered as sent, with its object and record index."""

    obj: _Open
    index: int
    payload: bytes
    warnings: tuple[str, ...]


@dataclass(slots=True)
class _Finished:
    """What the objects a pipeline has finished add up to (for ``Pipeline.snapshot``)."""

    done: int = 0
    already_done: int = 0
    failed: int = 0
    skipped_failed: int = 0
    tally: Tally = field(default_factory=Tally)
    resumed: int = 0
    bytes_finished: int = 0
    bytes_processed: int = 0
    records_processed: int = 0

    def add(self, report: ObjectReport, size: int | None, processed: bool) -> None:
        if report.status == "done":
            self.done += 1
        elif report.status == "already_done":
            self.already_done += 1
        elif report.status == "skipped_failed":
            self.skipped_failed += 1
        else:
            self.failed += 1
        self.tally.add_tally(report)
        self.resumed += report.resumed
        self.bytes_finished += size or 0
        if processed and size is not None:
            self.bytes_processed += size
            self.records_processed += report.records


@dataclass
class Pipeline:
    """Everything a run shares.

    ``client``: an ``AmplitudeClient``, or ``DryRun()`` to send nothing (each event is
    counted as skipped, ``dry_run``). ``ledger``: a ``Ledger``, or ``NoLedger()`` to keep
    none. A dry run keeps no ledger whatever it is given: objects already done are read
    again, and nothing is recorded.
    """

    client: Sender
    ledger: Ledger
    dead_letter: DeadLetter
    options: MappingOptions = field(default_factory=MappingOptions)
    limits: RequestLimits = REQUEST_LIMITS["batch"]
    min_id_length: int = DEFAULT_MIN_ID_LENGTH
    output: IO[bytes] | None = None
    force: bool = False
    lanes: int = DEFAULT_LANES
    events_per_request: int = EVENTS_PER_REQUEST  # at most (and within ``limits``)
    checkpoint_every: int = 10_000  # records accounted for between progress checkpoints
    retry_failed: bool = False  # try objects the ledger says failed permanently again
    stop: Stop | None = None  # a deadline or a signal; the client's when there is a client
    on_object: Callable[[ObjectReport], None] | None = None  # progress display, logs
    seen_ids: SeenIds = field(default_factory=lambda: SeenIds())
    # [deletions]: learn user ids, record delete requests, skip deleted users' events
    deletions: DeletionTracker | NoDeletions = field(default_factory=NoDeletions)
    _deletion_counts: DeletionCounts = field(default_factory=DeletionCounts, init=False,
                                             repr=False)
    max_open_objects: int = MAX_OPEN_OBJECTS
    _lanes: Outbox[EventRef] = field(init=False, repr=False)  # while running; _IDLE else
    _books: _Bookkeeper | None = field(default=None, init=False, repr=False)
    _summary: RunSummary = field(default_factory=RunSummary, init=False, repr=False)
    # The objects open (read, or waiting for their answers) and what the finished add up
    # to, under one lock (snapshot() reads both); the reader waits on it for room.
    _open: list[_Open] = field(default_factory=list, init=False, repr=False)
    _finished: _Finished = field(default_factory=_Finished, init=False, repr=False)
    _room: threading.Condition = field(default_factory=threading.Condition, init=False,
                                       repr=False)
    _valid_ids: set[str] = field(default_factory=lambda: {""}, init=False)

    @property
    def dry_run(self) -> bool:
        return isinstance(self.client, DryRun)

    def __post_init__(self) -> None:
        if self.dry_run:
            self.ledger = NoLedger()  # a dry run neither reads nor writes one
        self._lanes = _IDLE
        if self.stop is None:
            self.stop = self.client.stop

    @property
    def _stop(self) -> Stop:
        assert self.stop is not None  # set by __post_init__
        return self.stop

    def run(self, objects: Iterable[SourceObject]) -> RunSummary:
        """Process every object; one failing object never stops the others.

        A configuration error, a stop or an Amplitude outage ends the run: the objects not
        reached are reported as not started (pending), and the summary says why.
        """
        summary = self._summary = RunSummary(dry_run=self.dry_run)
        started = time.monotonic()
        self._deletion_counts = DeletionCounts()
        self.deletions.refresh()  # the tombstones recorded since the last run
        books = self._books = _Bookkeeper()
        self._lanes = self.client.open_lanes(
            replace(self.limits, max_events=min(self.limits.max_events,
                                                self.events_per_request)),
            lanes=self.lanes,
            on_delivered=self._delivered,
            on_rejected=self._rejected,
            on_abandoned=self._abandoned,
            on_skipped=self._skipped,
        )
        ended: str | None = None  # why the run stopped early
        run_error: BaseException | None = None
        try:
            for source in objects:
                if ended is None:
                    self._wait_for_room()
                    ended = self._ended()
                if ended is not None:
                    report = ObjectReport(
                        object=source.uri, event_type=source.key_event_type, status="failed",
                        error=ended, not_started=True)
                    books.put(partial(self._settle, source, report))
                    continue
                try:
                    self._start(source)
                except (ConfigurationError, AmplitudeUnavailable) as exc:
                    ended = self._run_ended_by(exc)
                except Interrupted:
                    pass  # the next object sees the stop
        finally:
            lanes, self._lanes = self._lanes, _IDLE
            try:
                lanes.drain()
            except Exception as exc:  # the objects it left unanswered fail with it
                run_error = exc
                self._run_ended_by(exc)
            finally:
                lanes.close()
            summary.requests, summary.retries = lanes.take_stats()
            books.put(partial(self._finish_open, run_error))
            books.close()
            self._books = None
            summary.elapsed_s = time.monotonic() - started
            summary.interrupted = self._stop.requested
            self.dead_letter.flush()
            summary.dead_letter_file = self.dead_letter.location
            if self.deletions.active:
                summary.deletions = self._deletion_counts.to_json()
        return summary

    def _ended(self) -> str | None:
        """Why no further object should start (a stop, the lanes gave up), or None."""
        if self._stop.stopped:
            return f"not started: {self._stop.why()}"
        failed = self._lanes.failed
        return None if failed is None else self._run_ended_by(failed)

    def _run_ended_by(self, error: BaseException) -> str:
        """What objects not started are told when ``error`` ends the run (the lanes stop
        only for errors that end it, or for a bug)."""
        if isinstance(error, ConfigurationError):
            if self._summary.configuration_error is None:
                self._summary.configuration_error = str(error)
            return "not started: the configuration must be fixed first"
        return f"not started: {error}"

    def snapshot(self) -> ProgressSnapshot:
        """Where this pipeline stands: the objects finished, and the records resolved so far
        including those of the objects in flight. Thread-safe; costs one ``totals()`` per
        object in flight, so it is for a display polling about once a second."""
        with self._room:
            done = self._finished
            records, delivered, duplicates = (done.tally.records, done.tally.delivered,
                                              done.tally.duplicates)
            skipped = sum(done.tally.skipped.values())
            dead_lettered = sum(done.tally.dead_lettered.values())
            resumed = done.resumed
            in_flight_records = 0
            for obj in self._open:
                progress = obj.progress
                tally, _unresolved = progress.totals()
                in_flight_records += tally.records
                delivered += tally.delivered
                skipped += sum(tally.skipped.values())
                dead_lettered += sum(tally.dead_lettered.values())
                duplicates += tally.duplicates
                resumed += progress.resumed_from
            return ProgressSnapshot(
                objects_done=done.done,
                objects_already_done=done.already_done,
                objects_failed=done.failed,
                objects_skipped=done.skipped_failed,
                objects_in_flight=len(self._open),
                records=records + in_flight_records,
                resumed=resumed,
                delivered=delivered,
                skipped=skipped,
                dead_lettered=dead_lettered,
                duplicates=duplicates,
                in_flight_records=in_flight_records,
                bytes_finished=done.bytes_finished,
                bytes_processed=done.bytes_processed,
                records_processed=done.records_processed,
            )

    def _settle(self, source: SourceObject, report: ObjectReport, obj: _Open | None = None
                ) -> None:
        """Count a finished object (bookkeeping thread): in the summary, in the snapshot's
        totals (moving it from the open objects when it was read), and for ``on_object``."""
        with self._room:
            if obj is not None:
                self._open.remove(obj)
                self._room.notify_all()
            self._finished.add(report, source.size, processed=obj is not None)
        self._summary.add(report)
        if self.on_object is not None:
            try:
                self.on_object(report)
            except Exception:  # a display or a log line must not lose the object's report
                log.exception("reporting %s failed", source.uri)

    def _start(self, source: SourceObject) -> None:
        """Claim the object and read it into the lanes; the bookkeeper finishes it once its
        records are accounted for. Raises what ends the run (after the object is handed
        to the bookkeeper): ConfigurationError, AmplitudeUnavailable, Interrupted."""
        books = self._books
        assert books is not None  # set by run()
        report = ObjectReport(object=source.uri, event_type=source.key_event_type)
        try:
            resume = self._begin(source, report)
        except ConfigurationError as exc:
            report.status, report.error = "failed", str(exc)
            books.put(partial(self._settle, source, report))
            raise
        except Exception as exc:  # e.g. an object outside the layout that cannot be read
            report.status, report.error = "failed", str(exc) or type(exc).__name__
            report.retryable = is_retryable(exc)
            _log_failure(source, report)
            if not report.retryable:
                self._dead_letter_object(source, report)
            books.put(partial(self._settle, source, report))
            return
        if report.status != "done":  # already done, skipped, or another worker has it
            books.put(partial(self._settle, source, report))
            return
        progress = ObjectProgress(
            report.identity,
            Checkpoint(resume.next_index, Tally.from_json(resume.figures)) if resume else None,
        )
        report.resumed = progress.resumed_from
        obj = _Open(source, report, progress)
        with self._room:
            self._open.append(obj)
        try:
            self._read(obj)
        except Exception as exc:  # contain every fault at the object
            if not isinstance(exc, (OSError, CurrentsExportError)):
                log.debug("%s failed unexpectedly", source.uri, exc_info=True)
            # The record in hand when it failed is neither settled nor with the lanes: it
            # stays pending, and must not keep the object open.
            books.put(partial(self._fail_open, obj, exc, 1 if obj.in_hand else 0))
            if ends_run(exc):
                raise
        finally:
            obj.reading = False
            books.put(partial(self._check, obj))

    def _wait_for_room(self) -> None:
        """Wait while ``max_open_objects`` objects are open (not past a stop)."""
        with self._room:
            while len(self._open) >= self.max_open_objects and self._ended() is None:
                self._room.wait(0.2)

    # ---- bookkeeping thread ------------------------------------------------------------

    def _fail_open(self, obj: _Open, error: BaseException, abandoned: int = 0) -> None:
        """Some of the object's records failed: it finishes as failed (first error wins)."""
        obj.abandoned += abandoned
        if obj.error is None:
            obj.error = error
        self._check(obj)

    def _check(self, obj: _Open) -> None:
        """Finish the object when all its records are accounted for; else checkpoint when
        due."""
        obj.check_queued = False
        if obj.finished:
            return
        progress = obj.progress
        if not obj.reading and progress.unresolved() <= obj.abandoned:
            self._complete(obj)
            return
        if progress.checkpoint_due(self.checkpoint_every):
            try:
                self._checkpoint(progress)
            except Exception as exc:  # the object fails; the next run resumes it
                log.debug("%s: could not save progress", obj.source.uri, exc_info=True)
                if obj.error is None:
                    obj.error = exc

    def _complete(self, obj: _Open, run_error: BaseException | None = None) -> None:
        obj.finished = True
        error = obj.error or run_error
        if error is None:
            try:
                self.dead_letter.flush()  # durable before the object is marked done
            except Exception as exc:
                error = exc
        self._finish(obj, error)
        self._settle(obj.source, obj.report, obj)

    def _finish_open(self, run_error: BaseException | None) -> None:
        """The run ends: objects still open have events no one will answer (a stop left a
        request behind, or the lanes failed); they fail, those events pending."""
        for obj in list(self._open):
            if not obj.finished:
                self._complete(obj, run_error or obj.error or (
                    self._stop.interrupted() if self._stop.requested else DeliveryFailed(
                        "some events were not answered when the run ended; the object "
                        "resumes on the next run")))

    def _begin(self, source: SourceObject, report: ObjectReport) -> Resume | None:
        """Look the object up in the ledger and claim it; returns where to resume.

        Leaves ``report.status`` "done" when the object is to be processed now.
        """
        ledger = self.ledger
        report.identity = identity = source.identity
        state = ledger.state(identity, legacy_id=source.uri)
        if state is not None and state.status == "done":
            if not self.force:
                report.status = "already_done"
                return None
            self._warn_redo(source, state)
        failed_for_good = state is not None and state.status == "failed" and state.permanent
        if failed_for_good and not (self.retry_failed or self.force):
            report.status, report.error = "skipped_failed", state.error if state else None
            return None
        try:
            # A permanent failure tried again starts over: its checkpoint may sit past
            # records it could not use then.
            return ledger.begin(identity, location=source.uri, legacy_id=source.uri,
                                     restart=self.force or failed_for_good)
        except AlreadyDone:  # finished by another worker since the look-up
            report.status = "already_done"
        except LeaseError as exc:  # another worker has it now; try again later
            report.status, report.error = "failed", str(exc)
            log.warning("%s: %s", source.uri, exc)
        return None

    def _warn_redo(self, source: SourceObject, state: ObjectState) -> None:
        finished = state.finished_at or state.updated_at
        age_days = (time.time() - finished) / 86_400
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(finished))
        if age_days > AMPLITUDE_DEDUP_DAYS:
            log.warning(
                "%s: --force redoes an object finished %s (%.0f days ago); Amplitude removes "
                "repeated insert_ids only for %d days, so its events will be counted twice",
                source.uri, when, age_days, AMPLITUDE_DEDUP_DAYS)
        else:
            log.warning("%s: --force redoes an object finished %s (%.1f days ago); Amplitude "
                        "drops the repeats by insert_id", source.uri, when, age_days)

    def _finish(self, obj: _Open, error: BaseException | None) -> None:
        """Total the object's report and record it in the ledger: done, or failed (the
        failure goes to the log, and to the dead letter when it is permanent)."""
        source, report, progress = obj.source, obj.report, obj.progress
        tally, report.pending = progress.totals()
        report.add_tally(tally)
        report.newest_event_ms = progress.newest_event_ms
        if error is None:
            try:
                self.deletions.flush()  # the user ids learned from it, before it is done
                self.ledger.complete(progress.object_id, report.figures())
                return
            except Exception as exc:  # delivered, but not recorded: the next run re-sends,
                error = exc           # and Amplitude drops the repeats by insert_id
                log.debug("%s: could not mark it done", source.uri, exc_info=True)
        report.status = "failed"
        report.error = str(error) or type(error).__name__
        report.retryable = is_retryable(error)  # a ConfigurationError is: fix it, run again
        _log_failure(source, report)
        if not report.retryable:
            self._dead_letter_object(source, report)
        try:
            self._checkpoint(progress)
            self.ledger.fail(progress.object_id, report.error,
                              permanent=not report.retryable)
        except LeaseError as exc:  # another worker owns the object now: leave it be
            log.warning("%s: %s", source.uri, exc)
        except Exception as exc:  # the report says it failed anyway
            log.error("%s: could not record the failure in the ledger (%s)", source.uri, exc)

    def _dead_letter_object(self, source: SourceObject, report: ObjectReport) -> None:
        """One dead-letter line for an object that can never be read, so it is not lost
        from sight (``status`` lists it too)."""
        try:
            self.dead_letter.write(
                reason=OBJECT_FAILED, detail=report.error or "", object_name=source.uri,
                record_index=-1, event_type=report.event_type or "", record=None, event=None)
            self.dead_letter.flush()
        except Exception as exc:  # the ledger and the report still say it
            log.error("%s: could not write the dead letter (%s)", source.uri, exc)

    def _resolve(
        self,
        obj: _Open,
        index: int,
        bucket: str,
        reason: str | None = None,
        warnings: tuple[str, ...] = (),
    ) -> None:
        """Account for one record; the bookkeeper checkpoints when the resolved prefix grew
        enough."""
        obj.progress.resolve(index, bucket, reason, warnings)
        if obj.progress.checkpoint_due(self.checkpoint_every):
            self._queue_check(obj)

    def _queue_check(self, obj: _Open) -> None:
        """Have the bookkeeper look at the object (once, however often it is asked before)."""
        if not obj.check_queued:
            obj.check_queued = True
            self._books_put(partial(self._check, obj))

    def _books_put(self, task: Callable[[], None]) -> None:
        books = self._books
        if books is not None:  # None: a lane answering after the run ended (events pending)
            books.put(task)

    def _checkpoint(self, progress: ObjectProgress) -> None:
        """Save how far the object got (called from the reader and from lane threads)."""
        with progress.save_lock:
            checkpoint = progress.checkpoint()
            if checkpoint.next_index <= progress.saved_index:
                return
            self.dead_letter.flush()  # the dead-lettered records before it must be durable
            self.deletions.flush()  # and the user ids learned from the records before it
            self.ledger.save_progress(
                progress.object_id, checkpoint.next_index, checkpoint.tally.tally_json()
            )
            progress.saved_index = checkpoint.next_index

    def _read(self, obj: _Open) -> None:
        source, report, progress = obj.source, obj.report, obj.progress
        stop = self._stop
        deletions = self.deletions
        with source.open() as fileobj:
            records = mapped_records(fileobj, source.uri, self.options, source.key_event_type,
                                     start=progress.resumed_from, repeated=self._repeated)
            report.event_type = records.event_type
            delete_requests = records.event_type == DELETE_REQUEST_TYPE
            read = unusable = 0
            for index, record, result in records:
                progress.read()
                obj.in_hand = True  # until it is settled or handed to the lanes
                read += 1
                if index % _STOP_CHECK_EVERY == 0:
                    if stop.stopped:
                        raise Interrupted(
                            f"{stop.why()}: progress is saved and the object resumes on its "
                            "next run"
                        )
                    if obj.error is not None:  # some of its events failed: read no further,
                        raise obj.error        # its later events would overtake them
                if deletions.active and not isinstance(result, Duplicate):
                    result = self._deletion_outcome(delete_requests, record, result)
                if isinstance(result, Mapped):
                    try:
                        payload = self._checked_payload(result.event)
                    except Exception as exc:  # one bad record never stops its object
                        result = Rejected(MAPPING_ERROR, f"{type(exc).__name__}: {exc}",
                                          type(exc).__name__)
                    else:
                        self._route(obj, index, record, result, payload)
                        obj.in_hand = False
                        continue
                if isinstance(result, Rejected):
                    self._dead_letter(obj, index, record, None, result.reason, result.detail)
                    obj.in_hand = False
                    if result.reason == MAPPING_ERROR:
                        unusable += 1
                        if read >= UNUSABLE_AFTER_RECORDS and unusable > UNUSABLE_SHARE * read:
                            # No record value: this message reaches logs, the ledger
                            # and the summary.
                            raise UnreadableObject(
                                f"{source.uri}: {unusable} of the first {read} records could "
                                f"not be mapped (last: {result.without_value or result.reason}"
                                "; each record's reason is in the "
                                "dead letter); the object looks corrupt and is not read "
                                "further")
                elif isinstance(result, Duplicate):
                    self._resolve(obj, index, DUPLICATE)
                    obj.in_hand = False
                else:
                    self._resolve(obj, index, SKIPPED, result.reason)
                    obj.in_hand = False

    def _deletion_outcome(self, delete_request: bool, record: dict[str, Any],
                          result: Outcome) -> Outcome:
        """[deletions]: a delete request is recorded (and skipped: it is not an event); a
        mapped event teaches the identity map its user id; a deleted user's record is then
        skipped whatever its outcome (nothing of theirs is sent or dead-lettered again)."""
        braze_id = record.get("user_id")
        if not isinstance(braze_id, str) or not braze_id:
            return result
        deletions = self.deletions
        key = deletions.key(braze_id)
        counts = self._deletion_counts
        if delete_request:
            time_s = record.get("time")
            when = float(time_s) if isinstance(time_s, int | float) else 0.0
            if deletions.request(key, when if math.isfinite(when) else 0.0):
                counts.requested += 1
            else:
                counts.repeated += 1
            return Skipped(DELETION_REQUEST)
        if isinstance(result, Mapped):  # learned even when not sent: an earlier run may
            deletions.observe(key, result.event.get("user_id") or "")  # have sent it
        if deletions.is_deleted(key):
            counts.skipped_deleted_user += 1
            return Skipped(DELETED_USER)
        return result

    def _checked_payload(self, event: dict[str, Any]) -> bytes | str:
        """The event as sent, or the reason its ids are refused (a str)."""
        problem = self._id_problem(event)
        if problem:
            return problem
        return kept_json(event)

    def _repeated(self, record: dict[str, Any]) -> bool:
        """True when this record's Braze event id was already seen in this run (Braze's
        at-least-once copies)."""
        event_id = record.get("id")
        if event_id.__class__ is int:  # a drifted schema: the mapper sends it as text
            event_id = str(event_id)
        if not isinstance(event_id, str) or not event_id:
            return False
        return not self.seen_ids.first_time(event_id)

    def _route(
        self,
        obj: _Open,
        index: int,
        record: dict[str, Any],
        mapped: Mapped,
        payload: bytes | str,
    ) -> None:
        """Write to --output and hand the event to the lanes (a dry run's answer at once)."""
        event = mapped.event
        if isinstance(payload, str):  # ids Amplitude would refuse
            self._dead_letter(obj, index, record, event, INVALID_ID, payload, mapped.warnings)
            return
        progress = obj.progress
        if progress.newest_event_ms is None or event["time"] > progress.newest_event_ms:
            progress.newest_event_ms = event["time"]
        if self.output is not None:
            self.output.write(payload + b"\n")
        user_id, device_id = event.get("user_id"), event.get("device_id")
        if user_id and device_id:
            ids: tuple[str, ...] = (user_id, device_id)
        else:
            ids = (user_id,) if user_id else (device_id,) if device_id else ()
        ref = EventRef(obj, index, payload, mapped.warnings)
        try:
            self._lanes.submit(PendingEvent(payload, ref, ids))
        except EventTooLarge as exc:
            self._dead_letter(obj, index, record, orjson.Fragment(payload), EVENT_TOO_LARGE,
                              str(exc), mapped.warnings)

    def _id_problem(self, event: dict[str, Any]) -> str | None:
        """``id_problem``, remembering ids already found valid (users recur in a file)."""
        valid = self._valid_ids
        if event.get("user_id", "") in valid and event.get("device_id", "") in valid:
            return None
        problem = id_problem(event, self.min_id_length)
        if problem is None:
            if len(valid) > _VALID_IDS_REMEMBERED:
                valid.clear()
                valid.add("")
            valid.update(i for i in (event.get("user_id"), event.get("device_id")) if i)
        return problem

    # ---- lane threads: account in memory, leave the writing to the bookkeeper -----------

    def _delivered(self, refs: list[EventRef]) -> None:
        """One request's delivered events (of one object or several)."""
        first = refs[0].obj
        if all(ref.obj is first for ref in refs):
            groups = {first: refs}
        else:
            groups = {}
            for ref in refs:
                groups.setdefault(ref.obj, []).append(ref)
        for obj, delivered in groups.items():
            progress = obj.progress
            progress.resolve_delivered([(ref.index, ref.warnings) for ref in delivered])
            if ((not obj.reading and progress.unresolved() <= obj.abandoned)
                    or progress.checkpoint_due(self.checkpoint_every)):
                self._queue_check(obj)

    def _skipped(self, ref: EventRef, reason: str) -> None:
        """An event not sent on purpose (a dry run's, on the reader thread)."""
        self._resolve(ref.obj, ref.index, SKIPPED, reason, ref.warnings)

    def _rejected(self, ref: EventRef, reason: str, detail: str) -> None:
        self._books_put(partial(self._dead_letter_event, ref, reason, detail))

    def _abandoned(self, refs: list[EventRef], error: BaseException) -> None:
        counts: dict[_Open, int] = {}
        for ref in refs:
            counts[ref.obj] = counts.get(ref.obj, 0) + 1
        for obj, count in counts.items():
            self._books_put(partial(self._fail_open, obj, error, count))

    def _dead_letter_event(self, ref: EventRef, reason: str, detail: str) -> None:
        """An event Amplitude refused (bookkeeping thread): its line holds the event as
        sent and its record's place, not the record (see ``EventRef``)."""
        obj = ref.obj
        if obj.finished:
            return
        try:
            self._dead_letter(obj, ref.index, None, orjson.Fragment(ref.payload), reason,
                              detail, ref.warnings)
        except Exception as exc:  # e.g. a full disk: the event stays pending
            self._fail_open(obj, exc, 1)
            return
        self._check(obj)

    def _dead_letter(
        self,
        obj: _Open,
        index: int,
        record: dict[str, Any] | None,
        event: dict[str, Any] | orjson.Fragment | None,
        reason: str,
        detail: str,
        warnings: tuple[str, ...] = (),
    ) -> None:
        event_type = obj.report.event_type or ""  # the schema's (set before any record)
        if record is not None and not self.options.dead_letter_raw_record:
            record = redacted_record(event_type, self.options, record)  # the privacy policy
        self.dead_letter.write(
            reason=reason,
            detail=detail,
            object_name=obj.source.uri,
            record_index=index,
            event_type=event_type,
            record=record,
            event=event,
        )
        self._resolve(obj, index, DEAD_LETTERED, reason, warnings)


class _Idle(QuietOutbox[EventRef]):
    """The outbox of a pipeline that is not running: it takes no event."""

    def submit(self, event: PendingEvent[EventRef]) -> None:
        raise RuntimeError("the pipeline is not running")


_IDLE: Outbox[EventRef] = _Idle()


class _Bookkeeper:
    """One thread that runs the writing side of accounting in order: dead-letter lines of
    refused events, checkpoints, finished objects (ledger, summary, ``on_object``)."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="bookkeeper", daemon=True)
        self._thread.start()

    def put(self, task: Callable[[], None]) -> None:
        self._tasks.put(task)

    def close(self) -> None:
        """Run what is queued, then stop."""
        self._tasks.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            try:
                task()
            except Exception:  # a bug: logged, and the other objects go on
                log.exception("bookkeeping failed")


def _log_failure(source: SourceObject, report: ObjectReport) -> None:
    error = report.error or ""
    log.error("%s", error if source.uri in error else f"{source.uri}: {error}")
