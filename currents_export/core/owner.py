"""The object owner: one thread that owns every open object's state and all the writing.

It alone claims objects in the ledger, resolves their records, writes the dead letter,
saves checkpoints and completes objects (ledger, summary, ``on_object``). The reader and
the lanes never touch an object's state: they post typed messages (:class:`Claim`,
:class:`Settled`, :class:`ReadEnded`, :class:`Delivered`, …) and the owner applies them
in order. The owner is the lanes' :class:`~currents_export.core.lanes.Sink`.

Rules it keeps: a checkpoint is never ahead of delivered data (the first unresolved
record, saved after the dead letter is flushed); an object is done only when every record
it read is resolved; one failing object never stops the others.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import orjson

from currents_export.core.checkpoints import (
    DEAD_LETTERED,
    SKIPPED,
    Checkpoint,
    ObjectProgress,
)
from currents_export.counts import ObjectReport, ProgressSnapshot, RunSummary, Tally
from currents_export.deadletter import DeadLetter
from currents_export.deletions.tracker import DeletionTracker, NoDeletions
from currents_export.errors import (
    AlreadyDone,
    ConfigurationError,
    DeliveryFailed,
    LeaseError,
    ends_run,
    is_retryable,
)
from currents_export.ledger import Ledger
from currents_export.ledger.base import ObjectState, Resume
from currents_export.mapping import MappingOptions
from currents_export.mapping.mapper import redacted_record
from currents_export.sources import SourceObject
from currents_export.stopping import Stop

log = logging.getLogger(__name__)

OBJECT_FAILED = "object_failed"  # dead-letter reason of a whole object that cannot be read
AMPLITUDE_DEDUP_DAYS = 7  # Amplitude drops a repeated insert_id only within this window
MAX_OPEN_OBJECTS = 64  # objects read but not yet finished, at most (the rest wait)
_QUEUE_DEPTH = 64  # messages waiting for the owner: a stalled owner holds the others back
_SNAPSHOT_EVERY_S = 0.25


class ObjectHandle:
    """What the reader and the lanes hold of an open object: its source, where reading
    resumes, and whether the owner has failed it (so the reader stops reading it).

    The object's state is the owner's; a handle carries no mutable state but the
    failure, set once by the owner and published through an event."""

    __slots__ = ("_failed", "_failure", "resumed_from", "source")

    def __init__(self, source: SourceObject, resumed_from: int) -> None:
        self.source = source
        self.resumed_from = resumed_from
        self._failure: BaseException | None = None
        self._failed = threading.Event()

    def __repr__(self) -> str:
        return f"ObjectHandle({self.source.uri!r})"

    @property
    def failure(self) -> BaseException | None:
        """The error the owner failed the object with, once it has (else None)."""
        return self._failure if self._failed.is_set() else None

    def _fail(self, error: BaseException) -> None:
        if not self._failed.is_set():
            self._failure = error
            self._failed.set()


@dataclass(slots=True)
class EventRef:
    """What travels with an event until Amplitude answers for it: its object, its record's
    place, and the event as sent (a refused event is dead-lettered as sent)."""

    obj: ObjectHandle
    index: int
    payload: bytes
    warnings: tuple[str, ...]


@dataclass(slots=True)
class Refusal:
    """A record the reader could not send: it goes to the dead letter."""

    index: int
    record: dict[str, Any] | None  # the Braze record, redacted by the owner
    event: dict[str, Any] | orjson.Fragment | None
    reason: str
    detail: str
    warnings: tuple[str, ...] = ()


# A record settled by the reader: (index, bucket, reason) — skipped or duplicate.
Resolution = tuple[int, str, str | None]


# ---- messages ------------------------------------------------------------------------------

@dataclass(slots=True)
class Claim:
    """Look the object up in the ledger and claim it; the answer is a handle (read it) or
    None (already done, skipped, held by another worker, or failed at once)."""

    source: SourceObject
    answer: Future[ObjectHandle | None]


@dataclass(slots=True)
class NotStarted:
    source: SourceObject
    why: str


@dataclass(slots=True)
class Opened:
    handle: ObjectHandle
    event_type: str


@dataclass(slots=True)
class Settled:
    """Records the reader settled itself (skipped, duplicates, refused), and how far it
    has read."""

    handle: ObjectHandle
    entries: list[Resolution | Refusal]
    read: int


@dataclass(slots=True)
class ReadEnded:
    handle: ObjectHandle
    entries: list[Resolution | Refusal]
    read: int
    newest_event_ms: int | None
    error: BaseException | None = None
    in_hand: int = 0  # a record read but neither settled nor handed over (it stays pending)


@dataclass(slots=True)
class Delivered:
    """One send's delivered events: (object, record index, warnings) each; and how many of
    them Amplitude did not ingest (repeats it dropped, see ``Sink.delivered``)."""

    events: list[tuple[ObjectHandle, int, tuple[str, ...]]]
    repeats_dropped: int = 0


@dataclass(slots=True)
class Rejected:
    refused: list[tuple[EventRef, str, str]]


@dataclass(slots=True)
class Abandoned:
    refs: list[EventRef]
    error: BaseException


@dataclass(slots=True)
class Skipped:
    refs: list[EventRef]
    reason: str


@dataclass(slots=True)
class RunEnded:
    error: BaseException | None


_QUIET = RunEnded(None)  # no message for a while: time to publish what changed
Message = (Claim | NotStarted | Opened | Settled | ReadEnded | Delivered | Rejected
           | Abandoned | Skipped | RunEnded)


@dataclass(eq=False, slots=True)
class _Open:
    """An open object, as the owner keeps it."""

    handle: ObjectHandle
    report: ObjectReport
    progress: ObjectProgress
    reading: bool = True
    error: BaseException | None = None  # the first failure; it fails the object
    abandoned: int = 0  # records a failure left unanswered (pending)
    finished: bool = False
    repeats_dropped: int = 0  # its share of the repeats Amplitude dropped, this run


@dataclass
class OwnerSettings:
    """What the owner needs to decide about objects."""

    ledger: Ledger
    dead_letter: DeadLetter
    stop: Stop
    options: MappingOptions = field(default_factory=MappingOptions)
    deletions: DeletionTracker | NoDeletions = field(default_factory=NoDeletions)
    checkpoint_every: int = 10_000
    force: bool = False
    retry_failed: bool = False
    dry_run: bool = False
    max_open_objects: int = MAX_OPEN_OBJECTS
    on_object: Callable[[ObjectReport], None] | None = None
    # Log an object failing on its own at ERROR (off where ``on_object`` logs each object
    # itself: the Lambda's one line per object).
    log_failures: bool = True


class ObjectOwner:
    """The owner thread of one run (see the module docstring). Other threads call only
    its posting methods: ``claim``, ``opened``, ``settled``, ``read_ended``,
    ``not_started``, the sink's methods, ``wait_for_room`` and ``close``."""

    def __init__(self, settings: OwnerSettings) -> None:
        self._settings = settings
        self._queue: queue.Queue[Message | None] = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._room = threading.Semaphore(settings.max_open_objects)
        self._open: dict[ObjectHandle, _Open] = {}
        self._summary = RunSummary(dry_run=settings.dry_run)
        self._finished = ProgressSnapshot()  # what the finished objects add up to
        self._snapshot = ProgressSnapshot()
        self._snapshot_at = 0.0
        self._watched = threading.Event()  # set by snapshot(), from a watching thread
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._work, name="object-owner", daemon=True)
        self._thread.start()

    # ---- posting side (any thread) ------------------------------------------------------

    def _post(self, message: Message) -> None:
        if not self._closed.is_set():  # a lane answering after the run: its events pend
            self._queue.put(message)

    def wait_for_room(self, ended: Callable[[], object], waiting: Callable[[], None]) -> bool:
        """Wait for a free place among the open objects, calling ``waiting()`` first when
        there is none (the outbox hands over what it holds back: the open objects may be
        waiting for it); False when ``ended()`` says the run is over first."""
        if self._room.acquire(blocking=False):
            return True
        waiting()
        while not self._room.acquire(timeout=0.2):
            if ended() is not None:
                return False
        return True

    def claim(self, source: SourceObject) -> ObjectHandle | None:
        """Claim ``source`` (holding a place from ``wait_for_room``); raises the
        ConfigurationError that ends the run."""
        answer: Future[ObjectHandle | None] = Future()
        self._post(Claim(source, answer))
        while True:
            try:
                return answer.result(timeout=1.0)
            except TimeoutError:
                if not self._thread.is_alive():
                    raise DeliveryFailed("the object owner stopped (a bug: see the log); "
                                         "the objects left resume on the next run") from None

    def not_started(self, source: SourceObject, why: str) -> None:
        self._post(NotStarted(source, why))

    def opened(self, handle: ObjectHandle, event_type: str) -> None:
        self._post(Opened(handle, event_type))

    def settled(self, handle: ObjectHandle, entries: list[Resolution | Refusal],
                read: int) -> None:
        self._post(Settled(handle, entries, read))

    def read_ended(self, ended: ReadEnded) -> None:
        self._post(ended)

    def delivered(self, refs: list[EventRef], repeats_dropped: int = 0) -> None:
        # Only where each event belongs travels on: the payloads are freed at once.
        self._post(Delivered([(ref.obj, ref.index, ref.warnings) for ref in refs],
                             repeats_dropped))

    def rejected(self, refused: list[tuple[EventRef, str, str]]) -> None:
        self._post(Rejected(refused))

    def abandoned(self, refs: list[EventRef], error: BaseException) -> None:
        self._post(Abandoned(refs, error))

    def skipped(self, refs: list[EventRef], reason: str) -> None:
        self._post(Skipped(refs, reason))

    def snapshot(self) -> ProgressSnapshot:
        """The latest published snapshot: refreshed a few times a second once anyone asks
        (a run nobody watches pays nothing for it)."""
        self._watched.set()
        return self._snapshot

    def summary_so_far(self) -> RunSummary:
        """A copy of the summary of the objects finished so far, the open ones counted not
        finished (what a second Ctrl-C writes on its way out, while this thread works)."""
        summary = RunSummary(dry_run=self._summary.dry_run)
        summary.merge(self._summary)
        summary.objects_unfinished += len(self._open)
        return summary

    def close(self, run_error: BaseException | None) -> RunSummary:
        """Finish what is still open (with ``run_error``, or as unanswered), flush the
        dead letter, stop the thread, and hand over the summary."""
        self._queue.put(RunEnded(run_error))
        self._queue.put(None)
        self._closed.set()
        self._thread.join()
        return self._summary

    # ---- the owner thread ----------------------------------------------------------------

    def _work(self) -> None:
        changed = False
        while True:
            try:
                message = self._queue.get(timeout=_SNAPSHOT_EVERY_S)
            except queue.Empty:
                message = _QUIET
            if message is None:
                break
            if message is not _QUIET:
                changed = True
                try:
                    self._handle(message)
                except Exception:  # a bug: logged, and the other objects go on
                    log.exception("the object owner failed on %s", type(message).__name__)
            if changed and self._watched.is_set():
                now = time.monotonic()
                if now - self._snapshot_at >= _SNAPSHOT_EVERY_S:
                    changed = False
                    try:
                        self._publish(now)
                    except Exception:  # a display must not stop the owner
                        log.exception("publishing the progress snapshot failed")
        try:
            self._settings.dead_letter.flush()
        except Exception as exc:
            log.error("could not flush the dead letter (%s)", exc)
        try:
            self._publish(time.monotonic())
        except Exception:
            log.exception("publishing the progress snapshot failed")

    def _handle(self, message: Message) -> None:
        match message:
            case Delivered(events, repeats_dropped):
                self._delivered(events, repeats_dropped)
            case Settled(handle, entries, read):
                obj = self._open.get(handle)
                if obj is not None and not obj.finished:
                    self._settle_entries(obj, entries)
                    obj.progress.read_up_to(read)
                    self._check(obj)
            case Rejected(refused):
                for ref, reason, detail in refused:
                    self._dead_letter_event(ref, reason, detail)
            case Abandoned(refs, error):
                counts: dict[ObjectHandle, int] = {}
                for ref in refs:
                    counts[ref.obj] = counts.get(ref.obj, 0) + 1
                for handle, count in counts.items():
                    obj = self._open.get(handle)
                    if obj is not None:
                        self._fail_open(obj, error, count)
            case Skipped(refs, reason):
                touched = set()
                for ref in refs:
                    obj = self._open.get(ref.obj)
                    if obj is not None and not obj.finished:
                        obj.progress.resolve(ref.index, SKIPPED, reason, ref.warnings)
                        touched.add(ref.obj)
                for handle in touched:
                    self._check(self._open[handle])
            case Claim(source, answer):
                self._claim(source, answer)
            case Opened(handle, event_type):
                obj = self._open.get(handle)
                if obj is not None:
                    obj.report.event_type = event_type
            case ReadEnded():
                self._read_ended(message)
            case NotStarted(source, why):
                report = ObjectReport(object=source.uri, event_type=source.key_event_type,
                                      status="failed", error=why, not_started=True)
                self._settle(source, report, None, held_place=False)
            case RunEnded(error):
                self._finish_open(error)

    def _delivered(self, events: list[tuple[ObjectHandle, int, tuple[str, ...]]],
                   repeats_dropped: int = 0) -> None:
        """One send's delivered events (of one object or several)."""
        groups: dict[ObjectHandle, list[tuple[int, tuple[str, ...]]]] = {}
        for handle, index, warnings in events:
            group = groups.get(handle)
            if group is None:
                group = groups[handle] = []
            group.append((index, warnings))
        shares = (_shares(repeats_dropped, {h: len(g) for h, g in groups.items()})
                  if repeats_dropped else {})
        for handle, delivered in groups.items():
            obj = self._open.get(handle)
            if obj is None or obj.finished:
                continue
            obj.repeats_dropped += shares.get(handle, 0)  # before _check may finish it
            obj.progress.resolve_delivered(delivered)
            self._check(obj)

    def _settle_entries(self, obj: _Open, entries: list[Resolution | Refusal]) -> None:
        progress = obj.progress
        for entry in entries:
            if isinstance(entry, Refusal):
                try:
                    self._dead_letter(obj, entry)
                except Exception as exc:  # e.g. a full disk: the record stays pending
                    self._fail_open(obj, exc, 1, check=False)
            else:
                progress.resolve(*entry)

    def _read_ended(self, ended: ReadEnded) -> None:
        obj = self._open.get(ended.handle)
        if obj is None or obj.finished:
            return
        self._settle_entries(obj, ended.entries)
        obj.progress.read_up_to(ended.read)
        obj.progress.newest_event_ms = ended.newest_event_ms
        obj.reading = False
        self._mark_reading(obj, None)
        if ended.error is not None:
            self._fail_open(obj, ended.error, ended.in_hand, check=False)
        self._check(obj)

    def _mark_reading(self, obj: _Open, index: int | None) -> None:
        """Tell the ledger the object is no longer being decoded (its claim marked it), so
        that only an object whose decoding kills the process is blamed for it (a mark that
        cannot be cleared only loses that protection: logged, never fatal)."""
        try:
            self._settings.ledger.reading(obj.report.identity, index)
        except Exception as exc:
            log.warning("%s: could not mark its reading in the ledger (%s)",
                        obj.handle.source.uri, type(exc).__name__)

    # ---- claiming ------------------------------------------------------------------------

    def _claim(self, source: SourceObject, answer: Future[ObjectHandle | None]) -> None:
        report = ObjectReport(object=source.uri, event_type=source.key_event_type)
        try:
            self._claim_or_settle(source, report, answer)
        except Exception as exc:  # a bug, or a ledger row it cannot use: the object fails
            log.debug("%s: could not be claimed", source.uri, exc_info=True)
            if answer.done():  # opened already: it fails as an open object
                return
            claimed = report.status == "done"  # begin took the lease: give it back
            report.status, report.error = "failed", str(exc) or type(exc).__name__
            _log_failure(source, report)
            if claimed and report.identity:
                try:
                    self._settings.ledger.fail(report.identity, report.error)
                except Exception as fail_exc:  # the report says it failed anyway
                    log.debug("%s: %s", source.uri, fail_exc)
            self._settle(source, report, None)
            answer.set_result(None)

    def _claim_or_settle(self, source: SourceObject, report: ObjectReport,
                         answer: Future[ObjectHandle | None]) -> None:
        try:
            resume = self._begin(source, report)
        except ConfigurationError as exc:
            report.status, report.error = "failed", str(exc)
            self._settle(source, report, None)
            answer.set_exception(exc)
            return
        except Exception as exc:  # e.g. an object outside the layout that cannot be read
            report.status, report.error = "failed", str(exc) or type(exc).__name__
            report.retryable = is_retryable(exc)
            _log_failure(source, report)
            if not report.retryable:
                self._dead_letter_object(source, report)
            self._settle(source, report, None)
            answer.set_result(None)
            return
        if report.status != "done":  # already done, skipped, or another worker has it
            self._settle(source, report, None)
            answer.set_result(None)
            return
        progress = ObjectProgress(
            report.identity,
            Checkpoint(resume.next_index, Tally.from_json(resume.figures)) if resume else None,
        )
        report.resumed = progress.resumed_from
        handle = ObjectHandle(source, progress.resumed_from)
        self._open[handle] = _Open(handle, report, progress)
        answer.set_result(handle)

    def _begin(self, source: SourceObject, report: ObjectReport) -> Resume | None:
        """Look the object up in the ledger and claim it; returns where to resume.

        Leaves ``report.status`` "done" when the object is to be processed now.
        """
        settings = self._settings
        ledger = settings.ledger
        report.identity = identity = source.identity
        state = ledger.state(identity, legacy_id=source.uri)
        if state is not None and state.status == "done":
            if not settings.force:
                report.status = "already_done"
                return None
            _warn_redo(source, state)
        failed_for_good = state is not None and state.status == "failed" and state.permanent
        if failed_for_good and not (settings.retry_failed or settings.force):
            report.status, report.error = "skipped_failed", state.error if state else None
            return None
        try:
            # A permanent failure tried again starts over: its checkpoint may sit past
            # records it could not use then.
            return ledger.begin(identity, location=source.uri, legacy_id=source.uri,
                                restart=settings.force or failed_for_good)
        except AlreadyDone:  # finished by another worker since the look-up
            report.status = "already_done"
        except LeaseError as exc:  # another worker has it now; try again later
            report.status, report.error = "failed", str(exc)
            log.warning("%s: %s", source.uri, exc)
        return None

    # ---- records -------------------------------------------------------------------------

    def _dead_letter_event(self, ref: EventRef, reason: str, detail: str) -> None:
        """An event Amplitude refused: its line holds the event as sent and its record's
        place, not the record (see ``EventRef``)."""
        obj = self._open.get(ref.obj)
        if obj is None or obj.finished:
            return
        refusal = Refusal(ref.index, None, orjson.Fragment(ref.payload), reason, detail,
                          ref.warnings)
        try:
            self._dead_letter(obj, refusal)
        except Exception as exc:  # e.g. a full disk: the event stays pending
            self._fail_open(obj, exc, 1)
            return
        self._check(obj)

    def _dead_letter(self, obj: _Open, refusal: Refusal) -> None:
        options = self._settings.options
        event_type = obj.report.event_type or ""  # the schema's (set before any record)
        record = refusal.record
        if record is not None and not options.dead_letter_raw_record:
            record = redacted_record(event_type, options, record)  # the privacy policy
        self._settings.dead_letter.write(
            reason=refusal.reason,
            detail=refusal.detail,
            object_name=obj.handle.source.uri,
            record_index=refusal.index,
            event_type=event_type,
            record=record,
            event=refusal.event,
        )
        obj.progress.resolve(refusal.index, DEAD_LETTERED, refusal.reason, refusal.warnings)

    def _dead_letter_object(self, source: SourceObject, report: ObjectReport) -> None:
        """One dead-letter line for an object that can never be read, so it is not lost
        from sight (``status`` lists it too)."""
        dead_letter = self._settings.dead_letter
        try:
            dead_letter.write(
                reason=OBJECT_FAILED, detail=report.error or "", object_name=source.uri,
                record_index=-1, event_type=report.event_type or "", record=None, event=None)
            dead_letter.flush()
        except Exception as exc:  # the ledger and the report still say it
            log.error("%s: could not write the dead letter (%s)", source.uri, exc)

    # ---- objects -------------------------------------------------------------------------

    def _fail_open(self, obj: _Open, error: BaseException, abandoned: int = 0,
                   *, check: bool = True) -> None:
        """Some of the object's records failed: it finishes as failed (first error wins),
        and the reader stops reading it."""
        obj.abandoned += abandoned
        if obj.error is None:
            obj.error = error
        obj.handle._fail(error)
        if check:
            self._check(obj)

    def _check(self, obj: _Open) -> None:
        """Finish the object when all its records are accounted for; else checkpoint when
        due."""
        if obj.finished:
            return
        progress = obj.progress
        if not obj.reading and progress.unresolved() <= obj.abandoned:
            self._complete(obj)
            return
        if progress.checkpoint_due(self._settings.checkpoint_every):
            try:
                self._checkpoint(progress)
            except Exception as exc:  # the object fails; the next run resumes it
                log.debug("%s: could not save progress", obj.handle.source.uri, exc_info=True)
                self._fail_open(obj, exc, check=False)

    def _checkpoint(self, progress: ObjectProgress) -> None:
        """Save how far the object got: the dead letter and the user ids learned from the
        records before it are made durable first."""
        checkpoint = progress.checkpoint()
        if checkpoint.next_index <= progress.saved_index:
            return
        settings = self._settings
        settings.dead_letter.flush()
        settings.deletions.flush()
        settings.ledger.save_progress(
            progress.object_id, checkpoint.next_index, checkpoint.tally.tally_json())
        progress.saved_index = checkpoint.next_index

    def _complete(self, obj: _Open, run_error: BaseException | None = None) -> None:
        obj.finished = True
        error = obj.error or run_error
        if error is None:
            try:
                self._settings.dead_letter.flush()  # durable before the object is done
            except Exception as exc:
                error = exc
        self._finish(obj, error)
        del self._open[obj.handle]
        self._settle(obj.handle.source, obj.report, obj)

    def _finish(self, obj: _Open, error: BaseException | None) -> None:
        """Total the object's report and record it in the ledger: done, or failed (the
        failure goes to the log, and to the dead letter when it is permanent)."""
        settings = self._settings
        source, report, progress = obj.handle.source, obj.report, obj.progress
        tally, report.pending = progress.totals()
        report.add_tally(tally)
        report.repeats_dropped += obj.repeats_dropped
        report.newest_event_ms = progress.newest_event_ms
        if error is None:
            try:
                settings.deletions.flush()  # the user ids learned from it, before it is done
                settings.ledger.complete(progress.object_id, report.figures())
                return
            except Exception as exc:  # delivered, but not recorded: the next run re-sends,
                error = exc           # and Amplitude drops the repeats by insert_id
                log.debug("%s: could not mark it done", source.uri, exc_info=True)
        report.status = "failed"
        report.error = str(error) or type(error).__name__
        report.retryable = is_retryable(error)  # a ConfigurationError is: fix it, run again
        report.unfinished = ends_run(error)  # the run's cause, said once in its summary
        if report.unfinished or not settings.log_failures:
            log.debug("%s: %s (%s)", source.uri,
                      "not finished" if report.unfinished else "failed", report.error)
        else:
            _log_failure(source, report)
        if not report.retryable:
            self._dead_letter_object(source, report)
        try:
            self._checkpoint(progress)
            settings.ledger.fail(progress.object_id, report.error,
                                 permanent=not report.retryable)
        except LeaseError as exc:  # another worker owns the object now: leave it be
            log.warning("%s: %s", source.uri, exc)
        except Exception as exc:  # the report says it failed anyway
            log.error("%s: could not record the failure in the ledger (%s)", source.uri, exc)

    def _finish_open(self, run_error: BaseException | None) -> None:
        """The run ends: objects still open have events no one will answer (a stop left a
        request behind, or the lanes failed); they fail, those events pending."""
        stop = self._settings.stop
        for obj in list(self._open.values()):
            if not obj.finished:
                self._complete(obj, run_error or obj.error or (
                    stop.interrupted() if stop.requested else DeliveryFailed(
                        "some events were not answered when the run ended; the object "
                        "resumes on the next run")))

    def _settle(self, source: SourceObject, report: ObjectReport, obj: _Open | None,
                *, held_place: bool = True) -> None:
        """Count a finished object in the summary and for ``on_object``, and free its
        place (``wait_for_room``) when it held one."""
        self._summary.add(report)
        self._finished += ProgressSnapshot.of_finished(report, source.size, read=obj is not None)
        if held_place:
            self._room.release()
        on_object = self._settings.on_object
        if on_object is not None:
            try:
                on_object(report)
            except Exception:  # a display or a log line must not lose the object's report
                log.exception("reporting %s failed", source.uri)

    def _publish(self, now: float) -> None:
        """Publish where the run stands (for a display polling from another thread): the
        finished objects, and the records resolved so far in the open ones."""
        self._snapshot_at = now
        in_flight = ProgressSnapshot(objects_in_flight=len(self._open))
        for obj in self._open.values():
            tally, _unresolved = obj.progress.totals()
            in_flight += ProgressSnapshot(
                records=tally.records, resumed=obj.progress.resumed_from,
                delivered=tally.delivered, skipped=tally.skipped_total,
                dead_lettered=tally.dead_lettered_total, duplicates=tally.duplicates,
                in_flight_records=tally.records)
        self._snapshot = self._finished + in_flight


def _shares(total: int, weights: dict[ObjectHandle, int]) -> dict[ObjectHandle, int]:
    """``total`` split among the objects in proportion to ``weights`` (their events in the
    send), by largest remainder: the shares add up to ``total`` and none exceeds its weight.

    Amplitude says how many events of a request it did not ingest, not which: a send that
    carried several objects' events shares its repeats among them this way.
    """
    whole = sum(weights.values())
    if whole <= 0:
        return {}
    shares = {handle: total * weight // whole for handle, weight in weights.items()}
    left = total - sum(shares.values())
    by_remainder = sorted(weights, key=lambda h: total * weights[h] % whole, reverse=True)
    for handle in by_remainder[:left]:
        shares[handle] += 1
    return shares


def _warn_redo(source: SourceObject, state: ObjectState) -> None:
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


def _log_failure(source: SourceObject, report: ObjectReport) -> None:
    error = report.error or ""
    log.error("%s", error if source.uri in error else f"{source.uri}: {error}")
