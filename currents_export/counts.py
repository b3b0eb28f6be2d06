"""Per-object reports and the run summary (JSON contract and the human table)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from currents_export.support.redact import printable, scrub, shown

# skipped_failed: the ledger says the object failed permanently before (--retry-failed).
ObjectStatus = Literal["done", "already_done", "skipped_failed", "failed"]

DRY_RUN = "dry_run"  # the skipped reason of the events a dry run did not send


@dataclass(slots=True)
class Tally:
    """Where records ended: each record accounted for is in exactly one bucket.

    ``repeats_dropped`` is not a bucket: of the ``delivered`` events, how many Amplitude
    acknowledged without ingesting (its ``events_ingested`` below the events sent), taken
    for ``insert_id`` repeats it already had. Amplitude has them, so they stay delivered and
    the invariant is unchanged. Amplitude says how many per request, not which events: an
    object's figure is its share of its requests' (see ``core.owner``); a run's is the sum
    over its requests.
    """

    records: int = 0
    delivered: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    warnings: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    retries: int = 0
    repeats_dropped: int = 0

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def dead_lettered_total(self) -> int:
        return sum(self.dead_lettered.values())

    @property
    def balanced(self) -> bool:
        """The invariant ``records == delivered + Σskipped + Σdead_lettered + duplicates``."""
        return self.records == (
            self.delivered + self.skipped_total + self.dead_lettered_total + self.duplicates)

    def add_tally(self, other: Tally) -> None:
        self.records += other.records
        self.delivered += other.delivered
        self.skipped.update(other.skipped)
        self.dead_lettered.update(other.dead_lettered)
        self.duplicates += other.duplicates
        self.warnings.update(other.warnings)
        self.requests += other.requests
        self.retries += other.retries
        self.repeats_dropped += other.repeats_dropped

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tally:
        return cls(
            records=int(data.get("records", 0)),
            delivered=int(data.get("delivered", 0)),
            skipped=Counter(data.get("skipped", {})),
            dead_lettered=Counter(data.get("dead_lettered", {})),
            duplicates=int(data.get("duplicates", 0)),
            warnings=Counter(data.get("warnings", {})),
            requests=int(data.get("requests", 0)),
            retries=int(data.get("retries", 0)),
            repeats_dropped=int(data.get("repeats_dropped", 0)),
        )

    def tally_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "delivered": self.delivered,
            "skipped": dict(sorted(self.skipped.items())),
            "dead_lettered": dict(sorted(self.dead_lettered.items())),
            "duplicates": self.duplicates,
            "warnings": dict(sorted(self.warnings.items())),
            "requests": self.requests,
            "retries": self.retries,
            "repeats_dropped": self.repeats_dropped,
        }

    def totals_json(self) -> dict[str, int]:
        """The buckets as one number each (the summary's ``by_event_type``)."""
        return {
            "records": self.records,
            "delivered": self.delivered,
            "skipped": self.skipped_total,
            "dead_lettered": self.dead_lettered_total,
            "duplicates": self.duplicates,
        }


@dataclass(slots=True)
class ObjectReport(Tally):
    """What happened to the records of one object.

    ``records`` counts records accounted for; ``pending`` counts records read from a failed
    object that ended in no bucket (they are processed again on the next run), so the
    invariant holds for failed objects too.
    """

    object: str = ""
    event_type: str | None = None
    status: ObjectStatus = "done"
    pending: int = 0
    resumed: int = 0  # records accounted for by an earlier, interrupted attempt
    newest_event_ms: int | None = None  # the latest event time sent (for the delivery lag)
    error: str | None = None
    retryable: bool = True  # False when trying again cannot help (not Avro, no such key)
    not_started: bool = False  # failed without being read: the run stopped before it
    # Failed because the run ended (a stop, an outage, the configuration), not on its own:
    # "not finished" in the summary, its cause said once there (``ends_run``).
    unfinished: bool = False
    identity: str = ""  # how the ledger knows it (see SourceObject.identity)

    def figures(self) -> dict[str, Any]:
        return {"event_type": self.event_type, **self.tally_json()}


@dataclass(frozen=True, slots=True)
class SendingReport:
    """What the run's sending met: its budget, the rate found, refusals and waits."""

    events_per_second: float | None  # the budget set
    requests_per_second: float | None
    found_events_per_second: float | None  # the rate settled on after refusals (None: none)
    refused: int  # 429s without indexes
    throttled: int  # 429s naming users or devices
    waited_on_budget_s: float
    waited_on_amplitude_s: float

    def to_json(self, delivered: int, elapsed_s: float) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        return {
            "events_per_second": round(delivered / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            "budget_events_per_second": rounded(self.events_per_second),
            "budget_requests_per_second": rounded(self.requests_per_second),
            "found_events_per_second": rounded(self.found_events_per_second),
            "requests_refused_429": self.refused,
            "requests_throttled_429": self.throttled,
            "waited_on_budget_s": round(self.waited_on_budget_s, 1),
            "waited_on_amplitude_s": round(self.waited_on_amplitude_s, 1),
        }

    @property
    def budget_in_force(self) -> float | None:
        """Events/s the run was held to at the end: the budget, or the rate found if lower."""
        rates = [r for r in (self.events_per_second, self.found_events_per_second) if r]
        return min(rates) if rates else None

    def describe(self) -> str:
        """The budget, refusals and waits in words (the display, the summary)."""
        budget = [f"{rate:,.0f} {unit}/s" for rate, unit in (
            (self.events_per_second, "events"), (self.requests_per_second, "requests"))
            if rate is not None]
        parts = [f"budget {', '.join(budget)}"] if budget else []
        if self.found_events_per_second is not None:
            parts.append(f"found {self.found_events_per_second:,.0f} events/s")
        parts.append(f"429s: {self.refused:,} project, {self.throttled:,} users/devices")
        parts.append(f"waited: Amplitude {self.waited_on_amplitude_s:,.0f} s, "
                     f"budget {self.waited_on_budget_s:,.0f} s")
        return ", ".join(parts)



@dataclass(slots=True)
class RunSummary(Tally):
    dry_run: bool = False
    objects_done: int = 0
    objects_already_done: int = 0
    objects_failed: int = 0  # failed on their own (not because the run ended)
    objects_failed_permanently: int = 0  # of objects_failed: recorded, skipped by later runs
    # Left unfinished because something ended the run (``stopped_by``): pending, resumed by
    # the next run from their checkpoints; of them, objects_not_started were never read.
    objects_unfinished: int = 0
    objects_not_started: int = 0
    stopped_by: str | None = None  # what ended the run early (said once, not per object)
    objects_skipped_failed: int = 0  # failed permanently in an earlier run: not tried again
    pending_records: int = 0
    resumed_records: int = 0
    elapsed_s: float = 0.0
    by_event_type: dict[str, Tally] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    dead_letter_files: list[str] = field(default_factory=list)  # written by this run
    configuration_error: str | None = None  # what stopped the run (exit 2)
    interrupted: bool = False  # a signal stopped the run
    worker_restarts: int = 0  # worker processes that died and were replaced (--workers)
    deletions: dict[str, int] | None = None  # [deletions] on: this run's delete requests
    sending: SendingReport | None = None  # what sending met (set at the end; None: nothing sent)

    def add(self, report: ObjectReport) -> None:
        if report.status == "already_done":
            self.objects_already_done += 1
            return
        if report.status == "skipped_failed":
            self.objects_skipped_failed += 1
            return
        if report.status == "failed" and (report.unfinished or report.not_started):
            self.objects_unfinished += 1
            if self.stopped_by is None and report.error:
                self.stopped_by = report.error.removeprefix("not started: ")
            if report.not_started:
                self.objects_not_started += 1
                return
        elif report.status == "failed":
            self.objects_failed += 1
            if not report.retryable:
                self.objects_failed_permanently += 1
            self.failures.append({"object": report.object, "error": report.error or "",
                                  "retryable": report.retryable})
        else:
            self.objects_done += 1
        self.add_tally(report)
        self.pending_records += report.pending
        self.resumed_records += report.resumed
        self.by_event_type.setdefault(report.event_type or "(unknown)", Tally()).add_tally(report)

    def merge(self, other: RunSummary) -> None:
        """Add another summary of the same run (parallel workers)."""
        self.add_tally(other)
        self.objects_done += other.objects_done
        self.objects_already_done += other.objects_already_done
        self.objects_failed += other.objects_failed
        self.objects_failed_permanently += other.objects_failed_permanently
        self.objects_unfinished += other.objects_unfinished
        self.objects_not_started += other.objects_not_started
        self.stopped_by = self.stopped_by or other.stopped_by
        self.objects_skipped_failed += other.objects_skipped_failed
        self.configuration_error = self.configuration_error or other.configuration_error
        self.interrupted = self.interrupted or other.interrupted
        self.worker_restarts += other.worker_restarts
        if other.deletions is not None:
            counts = self.deletions = self.deletions or {}
            for name, count in other.deletions.items():
                counts[name] = counts.get(name, 0) + count
        self.pending_records += other.pending_records
        self.resumed_records += other.resumed_records
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)
        self.failures.extend(other.failures)
        self.dead_letter_files += [name for name in other.dead_letter_files
                                   if name not in self.dead_letter_files]
        for name, theirs in other.by_event_type.items():
            self.by_event_type.setdefault(name, Tally()).add_tally(theirs)

    def to_json(self) -> dict[str, Any]:
        # A dry run marks nothing done and delivers nothing: what it would do is named so
        # (null in a real run: one set of keys for both).
        dry = self.dry_run
        return {
            "dry_run": dry,
            "objects_would_be_done": self.objects_done if dry else None,
            "would_deliver": self.skipped.get(DRY_RUN, 0) if dry else None,
            "objects_done": 0 if self.dry_run else self.objects_done,
            "objects_already_done": self.objects_already_done,
            "objects_failed": self.objects_failed,
            "objects_failed_permanently": self.objects_failed_permanently,
            "objects_unfinished": self.objects_unfinished,
            "objects_not_started": self.objects_not_started,
            "stopped_by": scrub(self.stopped_by) if self.stopped_by else None,
            "objects_skipped_failed": self.objects_skipped_failed,
            **self.tally_json(),
            "pending_records": self.pending_records,
            "resumed_records": self.resumed_records,
            "elapsed_s": round(self.elapsed_s, 3),
            "balanced": self.balanced,
            "by_event_type": {
                name: totals.totals_json()
                for name, totals in sorted(self.by_event_type.items())
            },
            "failures": [{**failure, "error": scrub(failure["error"])}
                         for failure in self.failures],
            "dead_letter_files": list(self.dead_letter_files),
            "configuration_error": (scrub(self.configuration_error)
                                    if self.configuration_error else None),
            "interrupted": self.interrupted,
            "worker_restarts": self.worker_restarts,
            **({"deletions": self.deletions} if self.deletions is not None else {}),
            "sending": (self.sending.to_json(self.delivered, self.elapsed_s)
                        if self.sending is not None else None),
        }

    def _sending_line(self, sending: SendingReport) -> str:
        rate = self.delivered / self.elapsed_s if self.elapsed_s > 0 else 0.0
        line = f"sending: {rate:,.0f} events/s, {sending.describe()}"
        found = sending.found_events_per_second
        if found is not None and sending.events_per_second is None:
            line += (f"; Amplitude limited the project: --max-events-per-second "
                     f"{round(found)} keeps the next run under it without a 60 s pause")
        return line

    def render(self) -> str:
        """The end-of-run table, one row per event type, then the totals."""
        header = ("event type", "records", "delivered", "skipped", "dead-lettered", "duplicates")
        rows = [
            (name, t.records, t.delivered, t.skipped_total, t.dead_lettered_total, t.duplicates)
            for name, t in sorted(self.by_event_type.items())
        ]
        total = ("TOTAL", self.records, self.delivered, self.skipped_total,
                 self.dead_lettered_total, self.duplicates)
        width = max([len(header[0]), *(len(r[0]) for r in rows), 5])
        line = f"{{:<{width}}}  {{:>9}}  {{:>9}}  {{:>9}}  {{:>13}}  {{:>10}}"
        out = [line.format(*header), "-" * (width + 62)]
        out += [line.format(*row) for row in rows]
        out += ["-" * (width + 62), line.format(*total), ""]
        if self.dry_run:  # nothing sent, nothing recorded: say what a real run would do
            out.append(
                f"dry run: would deliver {self.skipped.get(DRY_RUN, 0)} events (counted as "
                f"skipped: {DRY_RUN}) · objects: {self.objects_done} read, "
                f"{self.objects_failed} failed · {self.elapsed_s:.1f} s"
            )
        else:
            unfinished = (f", {self.objects_unfinished} not finished"
                          if self.objects_unfinished else "")
            out.append(
                f"objects: {self.objects_done} done, {self.objects_already_done} already "
                f"done, {self.objects_failed} failed{unfinished} · requests {self.requests} · "
                f"retries {self.retries} · {self.elapsed_s:.1f} s"
            )
        for label, counter in (
            ("skipped", self.skipped),
            ("dead-lettered", self.dead_lettered),
            ("warnings", self.warnings),
        ):
            if counter:
                details = ", ".join(f"{k}={v}" for k, v in sorted(counter.items()))
                out.append(f"{label}: {details}")
        if self.repeats_dropped:
            out.append(f"repeats Amplitude dropped: {self.repeats_dropped} (acknowledged "
                       "but not ingested: insert_ids it already had, from a retry after a "
                       "lost answer or a copy sent twice; counted as delivered)")
        if self.sending is not None:
            out.append(self._sending_line(self.sending))
        files = self.dead_letter_files
        if files:
            shown_files = ", ".join(printable(name) for name in files[:3])
            more = f" and {len(files) - 3} more (--summary-json lists them)" if files[3:] else ""
            out.append(f"dead letter: {len(files)} file{'s' if len(files) > 1 else ''}: "
                       f"{shown_files}{more}")
        if self.deletions:
            counts = self.deletions
            out.append(f"deletions: {counts.get('requested', 0)} delete requests recorded "
                       f"({counts.get('repeated', 0)} repeated), "
                       f"{counts.get('skipped_deleted_user', 0)} events of deleted users "
                       "skipped; `currents-export deletions submit` sends them to Amplitude")
        if self.pending_records:
            out.append(f"pending (read, not finished; retried next run): {self.pending_records}")
        for failure in self.failures:
            kind = "FAILED" if failure.get("retryable", True) else "FAILED (permanent)"
            error, name = failure["error"], failure["object"]
            out.append(f"{kind} {shown(error)}" if error.startswith(name)
                       else f"{kind} {printable(name)}: {shown(error)}")
        if self.objects_failed_permanently:
            out.append(f"{self.objects_failed_permanently} objects failed permanently: later "
                       "runs skip them (see `currents-export status`; --retry-failed tries "
                       "them again)")
        if self.objects_unfinished:
            unread = (f", {self.objects_not_started} of them not started"
                      if self.objects_not_started else "")
            cause = shown(self.stopped_by or "the run ended")
            out.append(f"not finished: {self.objects_unfinished} objects{unread}, because "
                       f"{cause}; they are pending (progress saved): the next run resumes "
                       "them")
        if self.objects_skipped_failed:
            out.append(f"skipped: {self.objects_skipped_failed} objects that failed "
                       "permanently before (see `currents-export status`; --retry-failed)")
        if self.worker_restarts:
            out.append(f"worker processes restarted: {self.worker_restarts} (a worker died; "
                       "its objects were handed to another, from their checkpoints)")
        if self.interrupted:
            out.append("interrupted: progress is saved; run the same command again to resume")
        if self.configuration_error and self.configuration_error != self.stopped_by:
            out.append(f"stopped: {shown(self.configuration_error)}")
        if self.dry_run:
            out.append("dry run: nothing was sent; the ledger was neither read nor written "
                       "(objects already done were read again)")
        return "\n".join(out)


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """Where a run (or one worker of it) stands; every field is cumulative.

    Record counts include the objects still in flight (their records resolved so far) and
    the records that earlier, interrupted runs accounted for in the objects this run
    resumed (``resumed`` of ``records``), as the run summary counts them.
    """

    objects_done: int = 0
    objects_already_done: int = 0
    objects_failed: int = 0
    objects_unfinished: int = 0  # left by what ended the run (a stop, an outage, the setup)
    objects_skipped: int = 0  # failed permanently in an earlier run: not tried again
    objects_in_flight: int = 0
    records: int = 0  # accounted for: delivered + skipped + dead_lettered + duplicates
    resumed: int = 0  # of records: accounted for by earlier runs
    delivered: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    in_flight_records: int = 0  # of records: in objects still in flight
    bytes_finished: int = 0  # size of the finished objects (those whose size is known)
    bytes_processed: int = 0  # of bytes_finished: objects that were read (not skipped)
    records_processed: int = 0  # records of the objects of bytes_processed

    @property
    def objects_finished(self) -> int:
        return (self.objects_done + self.objects_already_done + self.objects_failed
                + self.objects_unfinished + self.objects_skipped)

    @property
    def records_this_run(self) -> int:
        return self.records - self.resumed

    @classmethod
    def of_finished(cls, report: ObjectReport, size: int | None, *, read: bool
                    ) -> ProgressSnapshot:
        """What one finished object adds (``read``: it was read rather than skipped; its
        bytes then count towards the records per byte of ``estimate_eta``)."""
        read = read and size is not None
        unfinished = report.status == "failed" and (report.unfinished or report.not_started)
        return cls(
            objects_done=int(report.status == "done"),
            objects_already_done=int(report.status == "already_done"),
            objects_failed=int(report.status == "failed" and not unfinished),
            objects_unfinished=int(unfinished),
            objects_skipped=int(report.status == "skipped_failed"),
            records=report.records,
            resumed=report.resumed,
            delivered=report.delivered,
            skipped=report.skipped_total,
            dead_lettered=report.dead_lettered_total,
            duplicates=report.duplicates,
            bytes_finished=size or 0,
            bytes_processed=(size or 0) if read else 0,
            records_processed=report.records if read else 0,
        )

    def __add__(self, other: ProgressSnapshot) -> ProgressSnapshot:
        return ProgressSnapshot(*(getattr(self, f.name) + getattr(other, f.name)
                                  for f in dataclasses.fields(self)))
