"""Run objects through the steps: records → events → requests → outcomes → ledger.

The ledger is written only after every record of an object is accounted for and the dead
letter has been flushed, so a checkpoint is never ahead of delivered data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from currents_export.amplitude.batching import EventTooLarge, PendingEvent, RequestPacker
from currents_export.amplitude.client import (
    AmplitudeClient,
    ConfigurationError,
    DeliveryFailed,
)
from currents_export.amplitude.validation import INVALID_ID, id_problem
from currents_export.config import DEFAULT_MIN_ID_LENGTH, REQUEST_LIMITS, RequestLimits
from currents_export.currents.reader import UnreadableObject, open_records
from currents_export.deadletter import DeadLetterDirectory
from currents_export.ledger import Ledger
from currents_export.mapping import Mapped, MappingOptions, Rejected, mapper_for
from currents_export.sources import SourceObject
from currents_export.summary import ObjectReport, RunSummary

log = logging.getLogger(__name__)

DRY_RUN = "dry_run"
EVENT_TOO_LARGE = "event_too_large"

# What travels with an event until Amplitude answers: (record index, Braze record, event).
EventRef = tuple[int, dict[str, Any], dict[str, Any]]


@dataclass
class Pipeline:
    """Everything a run shares; ``client=None`` means a dry run (nothing is sent)."""

    client: AmplitudeClient | None
    ledger: Ledger | None
    dead_letter: DeadLetterDirectory
    options: MappingOptions = field(default_factory=MappingOptions)
    limits: RequestLimits = REQUEST_LIMITS["batch"]
    min_id_length: int = DEFAULT_MIN_ID_LENGTH
    output: IO[bytes] | None = None
    force: bool = False
    seen_ids: set[str] = field(default_factory=set)

    @property
    def dry_run(self) -> bool:
        return self.client is None

    def run(self, objects: Iterable[SourceObject]) -> RunSummary:
        """Process every object; one failing object never stops the others.

        ConfigurationError (Amplitude refused the set-up) stops the run at once.
        """
        summary = RunSummary(dry_run=self.dry_run)
        started = time.monotonic()
        try:
            for source in objects:
                summary.add(self.process(source))
        finally:
            summary.elapsed_s = time.monotonic() - started
            self.dead_letter.flush()
            summary.dead_letter_file = str(self.dead_letter.path) if self.dead_letter.path else None
        return summary

    def process(self, source: SourceObject) -> ObjectReport:
        report = ObjectReport(object=source.uri, event_type=source.key_event_type)
        if self.ledger is not None and not self.force and self.ledger.is_done(source.uri):
            report.status = "already_done"
            return report
        if self.ledger is not None and not self.dry_run:
            self.ledger.begin(source.uri)
        try:
            self._process_records(source, report)
            self.dead_letter.flush()
        except ConfigurationError as exc:
            self._fail(source, report, str(exc))
            raise
        except (UnreadableObject, DeliveryFailed, OSError) as exc:
            self._fail(source, report, str(exc))
            return report
        if self.ledger is not None and not self.dry_run:
            self.ledger.complete(source.uri, report.figures())
        return report

    def _fail(self, source: SourceObject, report: ObjectReport, error: str) -> None:
        report.status = "failed"
        report.error = error
        log.error("%s: %s", source.uri, error)
        if self.ledger is not None and not self.dry_run:
            self.ledger.fail(source.uri, error)

    def _process_records(self, source: SourceObject, report: ObjectReport) -> None:
        packer: RequestPacker[EventRef] | None = None
        if self.client is not None:
            packer = RequestPacker(self.limits, self.client.envelope.overhead)
        with source.open() as fileobj:
            stream = open_records(fileobj, source.uri, source.key_event_type)
            report.event_type = stream.event_type
            mapper = mapper_for(stream.event_type, self.options, stream.float_fields)
            try:
                for index, record in enumerate(stream.records):
                    report.pending += 1
                    if self._repeated(record.get("id")):
                        self._account(report, duplicate=True)
                        continue
                    result = mapper.map(record)
                    if isinstance(result, Mapped):
                        self._take(result, index, record, source, report, packer)
                    elif isinstance(result, Rejected):
                        self._dead_letter(
                            report, source, index, record, None, result.reason, result.detail
                        )
                    else:
                        self._account(report, skipped=result.reason)
            except UnreadableObject:
                # Deliver what was read before the file broke; the object still fails.
                if packer is not None:
                    self._deliver(packer.flush(), source, report)
                raise
            if packer is not None:
                self._deliver(packer.flush(), source, report)

    def _repeated(self, event_id: object) -> bool:
        """True when this Braze event id was already seen in this run (at-least-once copies)."""
        if not isinstance(event_id, str) or not event_id:
            return False
        if event_id in self.seen_ids:
            return True
        self.seen_ids.add(event_id)
        return False

    def _take(
        self,
        result: Mapped,
        index: int,
        record: dict[str, Any],
        source: SourceObject,
        report: ObjectReport,
        packer: RequestPacker[EventRef] | None,
    ) -> None:
        event = result.event
        report.warnings.update(result.warnings)
        problem = id_problem(event, self.min_id_length)
        if problem:
            self._dead_letter(report, source, index, record, event, INVALID_ID, problem)
            return
        payload = orjson.dumps(event)
        if self.output is not None:
            self.output.write(payload + b"\n")
        if packer is None:
            self._account(report, skipped=DRY_RUN)
            return
        try:
            closed = packer.add(PendingEvent(payload, (index, record, event)))
        except EventTooLarge as exc:
            self._dead_letter(report, source, index, record, event, EVENT_TOO_LARGE, str(exc))
            return
        self._deliver(closed, source, report)

    def _deliver(
        self,
        events: list[PendingEvent[EventRef]] | None,
        source: SourceObject,
        report: ObjectReport,
    ) -> None:
        if not events or self.client is None:
            return
        outcome = self.client.send(events)
        report.requests += outcome.requests
        report.retries += outcome.retries
        for _ in outcome.delivered:
            self._account(report, delivered=True)
        for pending, reason, detail in outcome.rejected:
            index, record, event = pending.ref
            self._dead_letter(report, source, index, record, event, reason, detail)

    def _dead_letter(
        self,
        report: ObjectReport,
        source: SourceObject,
        index: int,
        record: dict[str, Any],
        event: dict[str, Any] | None,
        reason: str,
        detail: str,
    ) -> None:
        self.dead_letter.write(
            reason=reason,
            detail=detail,
            object_name=source.uri,
            record_index=index,
            event_type=report.event_type or "",
            record=record,
            event=event,
        )
        self._account(report, dead_lettered=reason)

    @staticmethod
    def _account(
        report: ObjectReport,
        *,
        delivered: bool = False,
        skipped: str | None = None,
        dead_lettered: str | None = None,
        duplicate: bool = False,
    ) -> None:
        """Move one record from pending into exactly one bucket."""
        report.pending -= 1
        report.records += 1
        if delivered:
            report.delivered += 1
        elif skipped:
            report.skipped[skipped] += 1
        elif dead_lettered:
            report.dead_lettered[dead_lettered] += 1
        elif duplicate:
            report.duplicates += 1
