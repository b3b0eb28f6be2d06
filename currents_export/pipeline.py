"""Run objects through the steps: records → events → requests → outcomes → ledger.

The reader thread decodes and maps records and hands events to the upload lanes; lanes
resolve them concurrently. Progress inside an object is checkpointed only for the prefix
of records already accounted for, after the dead letter is flushed, and an object is
marked done only when every record is accounted for: a checkpoint is never ahead of
delivered data, so a run killed at any instant resumes without losing anything.
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
from currents_export.amplitude.client import AmplitudeClient, ConfigurationError, DeliveryFailed
from currents_export.amplitude.lanes import Lanes
from currents_export.amplitude.validation import INVALID_ID, id_problem
from currents_export.config import (
    DEFAULT_LANES,
    DEFAULT_MIN_ID_LENGTH,
    REQUEST_LIMITS,
    RequestLimits,
)
from currents_export.currents.reader import UnreadableObject, open_records
from currents_export.deadletter import DeadLetter
from currents_export.ledger import Ledger
from currents_export.ledger.base import AlreadyDone, LeaseError
from currents_export.mapping import Mapped, MappingOptions, Rejected, mapper_for
from currents_export.progress import (
    DEAD_LETTERED,
    DUPLICATE,
    SKIPPED,
    Checkpoint,
    ObjectProgress,
)
from currents_export.sources import SourceObject
from currents_export.summary import ObjectReport, RunSummary, Tally

log = logging.getLogger(__name__)

DRY_RUN = "dry_run"
EVENT_TOO_LARGE = "event_too_large"
_STOP_CHECK_EVERY = 256  # records between checks of ``should_stop``
_VALID_IDS_REMEMBERED = 100_000


class Interrupted(Exception):
    """The run was asked to stop (a Lambda deadline): the object stays pending, resumable."""


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
    should_stop: Callable[[], bool] | None = None  # e.g. "the Lambda deadline is near"
    on_object: Callable[[ObjectReport], None] | None = None  # progress display, logs
    seen_ids: set[str] = field(default_factory=set)
    _seen_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _lanes: Lanes[EventRef] | None = field(default=None, init=False)
    _valid_ids: set[str] = field(default_factory=lambda: {""}, init=False)

    @property
    def dry_run(self) -> bool:
        return self.client is None

    def run(self, objects: Iterable[SourceObject]) -> RunSummary:
        """Process every object; one failing object never stops the others.

        ConfigurationError (Amplitude refused the set-up) stops the run at once.
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
                should_stop=self.should_stop,
            )
        try:
            for source in objects:
                report = self.process(source)
                summary.add(report)
                if self.on_object is not None:
                    self.on_object(report)
        finally:
            if self._lanes is not None:
                self._lanes.close()
                self._lanes = None
            summary.elapsed_s = time.monotonic() - started
            self.dead_letter.flush()
            summary.dead_letter_file = self.dead_letter.location
        return summary

    def process(self, source: SourceObject) -> ObjectReport:
        report = ObjectReport(object=source.uri, event_type=source.key_event_type)
        if self.ledger is not None and not self.force and self.ledger.is_done(source.uri):
            report.status = "already_done"
            return report
        resume = None
        if self.ledger is not None and not self.dry_run:
            try:
                resume = self.ledger.begin(source.uri, restart=self.force)
            except AlreadyDone:  # finished by another worker since is_done() was asked
                report.status = "already_done"
                return report
            except LeaseError as exc:  # another worker has it now; try again later
                report.status, report.error = "failed", str(exc)
                log.warning("%s: %s", source.uri, exc)
                return report
        progress = ObjectProgress(
            source.uri,
            Checkpoint(resume.next_index, Tally.from_json(resume.figures)) if resume else None,
        )
        report.resumed = progress.resumed_from
        try:
            try:
                self._read(source, report, progress)
            finally:
                if self._lanes is not None:
                    self._lanes.drain()
            self.dead_letter.flush()
        except ConfigurationError as exc:
            self._finish(source, report, progress, error=str(exc))
            raise
        except (UnreadableObject, DeliveryFailed, Interrupted, LeaseError, OSError) as exc:
            report.retryable = not (
                isinstance(exc, UnreadableObject) or getattr(exc, "permanent", False)
            )
            self._finish(source, report, progress, error=str(exc))
            return report
        self._finish(source, report, progress)
        return report

    def _finish(
        self,
        source: SourceObject,
        report: ObjectReport,
        progress: ObjectProgress,
        error: str | None = None,
    ) -> None:
        tally, report.pending = progress.totals()
        report.add_tally(tally)
        report.newest_event_ms = progress.newest_event_ms
        if self._lanes is not None:
            report.requests, report.retries = self._lanes.take_stats()
        if error is None:
            if self.ledger is not None and not self.dry_run:
                self.ledger.complete(source.uri, report.figures())
            return
        report.status = "failed"
        report.error = error
        log.error("%s: %s", source.uri, error)
        if self.ledger is not None and not self.dry_run:
            try:
                self._checkpoint(progress)
                self.ledger.fail(source.uri, error)
            except LeaseError as exc:  # another worker owns the object now: leave it be
                log.warning("%s: %s", source.uri, exc)

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
        with source.open() as fileobj:
            stream = open_records(fileobj, source.uri, source.key_event_type)
            report.event_type = stream.event_type
            mapper = mapper_for(stream.event_type, self.options, stream.float_fields)
            for index, record in enumerate(stream.records):
                if index < progress.resumed_from:
                    self._repeated(record.get("id"))  # accounted for by an earlier attempt
                    continue
                progress.read()
                if self.should_stop is not None and index % _STOP_CHECK_EVERY == 0 and (
                    self.should_stop()
                ):
                    raise Interrupted(
                        "stopped before the deadline; progress is saved and the object "
                        "resumes on its next delivery"
                    )
                if self._repeated(record.get("id")):
                    self._resolve(progress, index, DUPLICATE)
                    continue
                result = mapper.map(record)
                if isinstance(result, Mapped):
                    self._route(progress, source.uri, stream.event_type, index, record, result)
                elif isinstance(result, Rejected):
                    self._dead_letter(progress, source.uri, stream.event_type, index, record,
                                      None, result.reason, result.detail)
                else:
                    self._resolve(progress, index, SKIPPED, result.reason)

    def _repeated(self, event_id: object) -> bool:
        """True when this Braze event id was already seen in this run (at-least-once copies)."""
        if not isinstance(event_id, str) or not event_id:
            return False
        with self._seen_lock:
            if event_id in self.seen_ids:
                return True
            self.seen_ids.add(event_id)
        return False

    def _route(
        self,
        progress: ObjectProgress,
        object_name: str,
        event_type: str,
        index: int,
        record: dict[str, Any],
        mapped: Mapped,
    ) -> None:
        """Validate, write to --output, and hand the event to the lanes (or count a dry run)."""
        event = mapped.event
        problem = self._id_problem(event)
        if problem:
            self._dead_letter(progress, object_name, event_type, index, record, event,
                              INVALID_ID, problem, mapped.warnings)
            return
        payload = orjson.dumps(event)
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
        progress = refs[0].progress
        if any(ref.progress is not progress for ref in refs):
            for ref in refs:
                self._delivered([ref])
            return
        progress.resolve_delivered([(ref.index, ref.warnings) for ref in refs])
        if progress.checkpoint_due(self.checkpoint_every):
            self._checkpoint(progress)

    def _rejected(self, ref: EventRef, reason: str, detail: str) -> None:
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
