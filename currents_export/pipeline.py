"""Run objects through the steps: records → events → requests → outcomes → ledger.

The reader thread decodes and maps records and hands events to the upload lanes; lanes
resolve them concurrently. Progress inside an object is checkpointed only for the prefix
of records already accounted for, after the dead letter is flushed, and an object is
marked done only when every record is accounted for: a checkpoint is never ahead of
delivered data, so a run killed at any instant resumes without losing anything.

Faults are contained at the level ``currents_export.errors`` draws: a record that cannot
be mapped is dead-lettered (``mapping_error``) and its object goes on; an object that fails
for any reason is reported (retryable: pending; permanent: recorded and skipped later) and
the run goes on; a configuration error, a stop (deadline, signal) or an Amplitude outage
ends the run, with every object it did not reach reported as not started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from currents_export.amplitude.batching import EventTooLarge, PendingEvent
from currents_export.amplitude.client import AmplitudeClient
from currents_export.amplitude.lanes import Lanes
from currents_export.amplitude.validation import INVALID_ID, id_problem
from currents_export.config import (
    DEFAULT_LANES,
    DEFAULT_MIN_ID_LENGTH,
    REQUEST_LIMITS,
    RequestLimits,
)
from currents_export.currents.reader import open_records
from currents_export.deadletter import DeadLetter
from currents_export.display import ProgressSnapshot
from currents_export.errors import (
    MAPPING_ERROR,
    AmplitudeUnavailable,
    ConfigurationError,
    CurrentsExportError,
    Interrupted,
    UnreadableObject,
    is_retryable,
)
from currents_export.ledger import Ledger
from currents_export.ledger.base import AlreadyDone, LeaseError, ObjectState, Resume
from currents_export.mapping import Mapped, MappingOptions, Rejected, mapper_for
from currents_export.mapping.mapper import redacted_record
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

DRY_RUN = "dry_run"
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


DEDUP_WINDOW = 200_000  # event ids remembered for in-run duplicate detection


class SeenIds:
    """The Braze event ids seen recently in this run, shared by every worker of the run.

    A bounded window, so memory never grows with the run: the last ``window`` ids at least,
    and at most twice as many (two generations of sets; the older one is dropped when the
    newer fills). Braze's at-least-once copies arrive close together; a repeat further
    apart is still sent, and Amplitude drops it by ``insert_id`` (within 7 days).
    """

    def __init__(self, window: int = DEDUP_WINDOW) -> None:
        if window < 1:
            raise ValueError("the duplicate window must hold at least one id")
        self.window = window
        self._current: set[str] = set()
        self._previous: set[str] = set()
        self._lock = threading.Lock()

    def first_time(self, event_id: str) -> bool:
        """Record ``event_id``; True unless it was seen within the window."""
        with self._lock:
            if event_id in self._current or event_id in self._previous:
                return False
            if len(self._current) >= self.window:
                self._previous, self._current = self._current, set()
            self._current.add(event_id)
            return True


@dataclass(slots=True)
class EventRef:
    """What travels with an event until Amplitude answers for it.

    The Braze record is kept as decoded (no copy) and the event as the bytes sent: they are
    only needed again if the event ends in the dead letter.
    """

    progress: ObjectProgress
    object_name: str
    event_type: str
    index: int
    record: dict[str, Any]
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
    """Everything a run shares; ``client=None`` means a dry run (nothing is sent)."""

    client: AmplitudeClient | None
    ledger: Ledger | None
    dead_letter: DeadLetter
    options: MappingOptions = field(default_factory=MappingOptions)
    limits: RequestLimits = REQUEST_LIMITS["batch"]
    min_id_length: int = DEFAULT_MIN_ID_LENGTH
    output: IO[bytes] | None = None
    force: bool = False
    lanes: int = DEFAULT_LANES
    checkpoint_every: int = 10_000  # records accounted for between progress checkpoints
    retry_failed: bool = False  # try objects the ledger says failed permanently again
    stop: Stop | None = None  # a deadline or a signal; the client's when there is a client
    on_object: Callable[[ObjectReport], None] | None = None  # progress display, logs
    seen_ids: SeenIds = field(default_factory=lambda: SeenIds())  # shared by the workers
    _lanes: Lanes[EventRef] | None = field(default=None, init=False)
    _valid_ids: set[str] = field(default_factory=lambda: {""}, init=False)
    _last_report: ObjectReport = field(default_factory=ObjectReport, init=False)
    # For snapshot(): the objects being read now (by id of their report) and the finished.
    _live_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _in_flight: dict[int, ObjectProgress] = field(default_factory=dict, init=False, repr=False)
    _finished: _Finished = field(default_factory=_Finished, init=False, repr=False)

    @property
    def dry_run(self) -> bool:
        return self.client is None

    def __post_init__(self) -> None:
        if self.stop is None:
            self.stop = self.client.stop if self.client is not None else Stop()

    @property
    def _stop(self) -> Stop:
        assert self.stop is not None  # set by __post_init__
        return self.stop

    def run(self, objects: Iterable[SourceObject]) -> RunSummary:
        """Process every object; one failing object never stops the others.

        A configuration error, a stop or an Amplitude outage ends the run: the objects not
        reached are reported as not started (pending), and the summary says why.
        """
        summary = RunSummary(dry_run=self.dry_run)
        started = time.monotonic()
        if self.client is not None:
            self._lanes = Lanes(
                self.client,
                self.limits,
                lanes=self.lanes,
                on_delivered=self._delivered,
                on_rejected=self._rejected,
                horizon_s=self.client.retry.horizon_s,
            )
        ended: str | None = None  # why the run stopped early
        try:
            for source in objects:
                if ended is None and self._stop.stopped:
                    ended = f"not started: {self._stop.why()}"
                if ended is not None:
                    report = ObjectReport(
                        object=source.uri, event_type=source.key_event_type, status="failed",
                        error=ended, not_started=True)
                    self._settle(source, report)
                    self._report(summary, report)
                    continue
                try:
                    report = self.process(source)
                except ConfigurationError as exc:
                    summary.configuration_error = str(exc)
                    ended = "not started: the configuration must be fixed first"
                    report = self._last_report
                except AmplitudeUnavailable as exc:
                    ended = f"not started: {exc}"
                    report = self._last_report
                self._report(summary, report)
        finally:
            if self._lanes is not None:
                self._lanes.close()
                self._lanes = None
            summary.elapsed_s = time.monotonic() - started
            summary.interrupted = self._stop.requested
            self.dead_letter.flush()
            summary.dead_letter_file = self.dead_letter.location
        return summary

    def _report(self, summary: RunSummary, report: ObjectReport) -> None:
        summary.add(report)
        if self.on_object is not None:
            self.on_object(report)

    def snapshot(self) -> ProgressSnapshot:
        """Where this pipeline stands: the objects finished, and the records resolved so far
        including those of the objects in flight. Thread-safe; costs one ``totals()`` per
        object in flight, so it is for a display polling about once a second."""
        with self._live_lock:
            done = self._finished
            records, delivered, duplicates = (done.tally.records, done.tally.delivered,
                                              done.tally.duplicates)
            skipped = sum(done.tally.skipped.values())
            dead_lettered = sum(done.tally.dead_lettered.values())
            resumed = done.resumed
            in_flight_records = 0
            for progress in self._in_flight.values():
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
                objects_in_flight=len(self._in_flight),
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

    def _settle(self, source: SourceObject, report: ObjectReport) -> None:
        """Move a finished object from in flight to finished (for ``snapshot``)."""
        with self._live_lock:
            processed = self._in_flight.pop(id(report), None) is not None
            self._finished.add(report, source.size, processed)

    def process(self, source: SourceObject) -> ObjectReport:
        """Run one object; any failure becomes its report. Raises only ConfigurationError
        and AmplitudeUnavailable (after reporting the object in ``_last_report``): those
        end the run."""
        before = self._last_report
        try:
            return self._process(source)
        finally:
            if self._last_report is not before:  # the report of this object
                self._settle(source, self._last_report)

    def _process(self, source: SourceObject) -> ObjectReport:
        report = self._last_report = ObjectReport(
            object=source.uri, event_type=source.key_event_type)
        try:
            resume = self._begin(source, report)
        except ConfigurationError as exc:
            report.status, report.error = "failed", str(exc)
            raise
        except Exception as exc:  # e.g. an object outside the layout that cannot be read
            report.status, report.error = "failed", str(exc) or type(exc).__name__
            report.retryable = is_retryable(exc)
            _log_failure(source, report)
            if not report.retryable:
                self._dead_letter_object(source, report)
            return report
        if report.status != "done":  # already done, skipped, or another worker has it
            return report
        identity = report.identity
        progress = ObjectProgress(
            identity,
            Checkpoint(resume.next_index, Tally.from_json(resume.figures)) if resume else None,
        )
        report.resumed = progress.resumed_from
        with self._live_lock:
            self._in_flight[id(report)] = progress
        try:
            try:
                self._read(source, report, progress)
            finally:
                if self._lanes is not None:
                    self._lanes.drain()
            self.dead_letter.flush()
        except (ConfigurationError, AmplitudeUnavailable) as exc:
            self._finish(source, report, progress, error=exc)
            raise
        except Exception as exc:  # contain every fault at the object
            if not isinstance(exc, (OSError, CurrentsExportError)):
                log.debug("%s failed unexpectedly", source.uri, exc_info=True)
            self._finish(source, report, progress, error=exc)
            return report
        self._finish(source, report, progress)
        return report

    def _begin(self, source: SourceObject, report: ObjectReport) -> Resume | None:
        """Look the object up in the ledger and claim it; returns where to resume.

        Leaves ``report.status`` "done" when the object is to be processed now.
        """
        report.identity = identity = source.uri if self.ledger is None else source.identity
        if self.ledger is None:
            return None
        state = self.ledger.state(identity, legacy_id=source.uri)
        if state is not None and state.status == "done":
            if not self.force:
                report.status = "already_done"
                return None
            self._warn_redo(source, state)
        failed_for_good = state is not None and state.status == "failed" and state.permanent
        if failed_for_good and not (self.retry_failed or self.force):
            report.status, report.error = "skipped_failed", state.error if state else None
            return None
        if self.dry_run:
            return None
        try:
            # A permanent failure tried again starts over: its checkpoint may sit past
            # records it could not use then.
            return self.ledger.begin(identity, location=source.uri, legacy_id=source.uri,
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

    def _finish(
        self,
        source: SourceObject,
        report: ObjectReport,
        progress: ObjectProgress,
        error: BaseException | None = None,
    ) -> None:
        tally, report.pending = progress.totals()
        report.add_tally(tally)
        report.newest_event_ms = progress.newest_event_ms
        if self._lanes is not None:
            report.requests, report.retries = self._lanes.take_stats()
        if error is None:
            if self.ledger is None or self.dry_run:
                return
            try:
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
        if self.ledger is not None and not self.dry_run:
            try:
                self._checkpoint(progress)
                self.ledger.fail(progress.object_id, report.error,
                                 permanent=not report.retryable)
            except LeaseError as exc:  # another worker owns the object now: leave it be
                log.warning("%s: %s", source.uri, exc)
            except Exception as exc:  # the report says it failed anyway
                log.error("%s: could not record the failure in the ledger (%s)",
                          source.uri, exc)

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
        progress: ObjectProgress,
        index: int,
        bucket: str,
        reason: str | None = None,
        warnings: tuple[str, ...] = (),
    ) -> None:
        """Account for one record, and checkpoint when the resolved prefix grew enough."""
        progress.resolve(index, bucket, reason, warnings)
        if progress.checkpoint_due(self.checkpoint_every):
            self._checkpoint(progress)

    def _checkpoint(self, progress: ObjectProgress) -> None:
        """Save how far the object got (called from the reader and from lane threads)."""
        if self.ledger is None or self.dry_run:
            return
        with progress.save_lock:
            checkpoint = progress.checkpoint()
            if checkpoint.next_index <= progress.saved_index:
                return
            self.dead_letter.flush()  # the dead-lettered records before it must be durable
            self.ledger.save_progress(
                progress.object_id, checkpoint.next_index, checkpoint.tally.tally_json()
            )
            progress.saved_index = checkpoint.next_index

    def _read(self, source: SourceObject, report: ObjectReport, progress: ObjectProgress) -> None:
        stop = self._stop
        with source.open() as fileobj:
            stream = open_records(fileobj, source.uri, source.key_event_type)
            report.event_type = stream.event_type
            mapper = mapper_for(stream.event_type, self.options, stream.float_fields)
            read = unusable = 0
            for index, record in enumerate(stream.records):
                if index < progress.resumed_from:
                    self._repeated(record.get("id"))  # accounted for by an earlier attempt
                    continue
                progress.read()
                read += 1
                if index % _STOP_CHECK_EVERY == 0 and stop.stopped:
                    raise Interrupted(
                        f"{stop.why()}: progress is saved and the object resumes on its "
                        "next run"
                    )
                if self._repeated(record.get("id")):
                    self._resolve(progress, index, DUPLICATE)
                    continue
                try:
                    result = mapper.map(record)
                    if isinstance(result, Mapped):
                        payload = self._checked_payload(result.event)
                except Exception as exc:  # one bad record never stops its object
                    result = Rejected(MAPPING_ERROR, f"{type(exc).__name__}: {exc}")
                if isinstance(result, Mapped):
                    self._route(progress, source.uri, stream.event_type, index, record,
                                result, payload)
                elif isinstance(result, Rejected):
                    self._dead_letter(progress, source.uri, stream.event_type, index, record,
                                      None, result.reason, result.detail)
                    if result.reason == MAPPING_ERROR:
                        unusable += 1
                        if read >= UNUSABLE_AFTER_RECORDS and unusable > UNUSABLE_SHARE * read:
                            raise UnreadableObject(
                                f"{source.uri}: {unusable} of the first {read} records could "
                                f"not be mapped (last: {result.detail}); the object looks "
                                "corrupt and is not read further")
                else:
                    self._resolve(progress, index, SKIPPED, result.reason)

    def _checked_payload(self, event: dict[str, Any]) -> bytes | str:
        """The event as sent, or the reason its ids are refused (a str)."""
        problem = self._id_problem(event)
        if problem:
            return problem
        return orjson.dumps(event)

    def _repeated(self, event_id: object) -> bool:
        """True when this Braze event id was already seen in this run (at-least-once copies)."""
        if event_id.__class__ is int:  # a drifted schema: the mapper sends it as text
            event_id = str(event_id)
        if not isinstance(event_id, str) or not event_id:
            return False
        return not self.seen_ids.first_time(event_id)

    def _route(
        self,
        progress: ObjectProgress,
        object_name: str,
        event_type: str,
        index: int,
        record: dict[str, Any],
        mapped: Mapped,
        payload: bytes | str,
    ) -> None:
        """Write to --output and hand the event to the lanes (or count a dry run)."""
        event = mapped.event
        if isinstance(payload, str):  # ids Amplitude would refuse
            self._dead_letter(progress, object_name, event_type, index, record, event,
                              INVALID_ID, payload, mapped.warnings)
            return
        if progress.newest_event_ms is None or event["time"] > progress.newest_event_ms:
            progress.newest_event_ms = event["time"]
        if self.output is not None:
            self.output.write(payload + b"\n")
        if self._lanes is None:
            self._resolve(progress, index, SKIPPED, DRY_RUN, mapped.warnings)
            return
        user_id, device_id = event.get("user_id"), event.get("device_id")
        ids = tuple(i for i in (user_id, device_id) if i)
        ref = EventRef(progress, object_name, event_type, index, record, payload,
                       mapped.warnings)
        try:
            self._lanes.submit(PendingEvent(payload, ref, ids))
        except EventTooLarge as exc:
            self._rejected(ref, EVENT_TOO_LARGE, str(exc))

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

    def _delivered(self, refs: list[EventRef]) -> None:
        """One request's delivered events (nearly always of one object): resolve them at once."""
        if self._lanes is None:  # a lane left behind by a stop answers after the run ended:
            return               # its events stay pending (re-sent, deduplicated by insert_id)
        progress = refs[0].progress
        if any(ref.progress is not progress for ref in refs):
            for ref in refs:
                self._delivered([ref])
            return
        progress.resolve_delivered([(ref.index, ref.warnings) for ref in refs])
        if progress.checkpoint_due(self.checkpoint_every):
            self._checkpoint(progress)

    def _rejected(self, ref: EventRef, reason: str, detail: str) -> None:
        if self._lanes is None:  # after the run ended (see _delivered)
            return
        self._dead_letter(ref.progress, ref.object_name, ref.event_type, ref.index,
                          ref.record, orjson.Fragment(ref.payload),
                          reason, detail, ref.warnings)

    def _dead_letter(
        self,
        progress: ObjectProgress,
        object_name: str,
        event_type: str,
        index: int,
        record: dict[str, Any] | orjson.Fragment,
        event: dict[str, Any] | orjson.Fragment | None,
        reason: str,
        detail: str,
        warnings: tuple[str, ...] = (),
    ) -> None:
        if isinstance(record, dict) and not self.options.dead_letter_raw_record:
            record = redacted_record(event_type, self.options, record)  # the privacy policy
        self.dead_letter.write(
            reason=reason,
            detail=detail,
            object_name=object_name,
            record_index=index,
            event_type=event_type,
            record=record,
            event=event,
        )
        self._resolve(progress, index, DEAD_LETTERED, reason, warnings)


def _log_failure(source: SourceObject, report: ObjectReport) -> None:
    error = report.error or ""
    log.error("%s", error if source.uri in error else f"{source.uri}: {error}")
