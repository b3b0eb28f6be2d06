"""Per-object reports and the run summary (JSON contract and the human table)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

ObjectStatus = Literal["done", "already_done", "failed"]


@dataclass(slots=True)
class ObjectReport:
    """What happened to the records of one object.

    ``records`` counts records accounted for; ``pending`` counts records read from a failed
    object that ended in no bucket (they are processed again on the next run). So
    ``records == delivered + Σskipped + Σdead_lettered + duplicates`` always holds.
    """

    object: str
    event_type: str | None = None
    status: ObjectStatus = "done"
    records: int = 0
    delivered: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    warnings: Counter[str] = field(default_factory=Counter)
    pending: int = 0
    requests: int = 0
    retries: int = 0
    error: str | None = None

    def figures(self) -> dict[str, Any]:
        return {
            "event_type": self.event_type,
            "records": self.records,
            "delivered": self.delivered,
            "skipped": dict(self.skipped),
            "dead_lettered": dict(self.dead_lettered),
            "duplicates": self.duplicates,
            "warnings": dict(self.warnings),
            "requests": self.requests,
            "retries": self.retries,
        }

    @property
    def accounted(self) -> int:
        return (
            self.delivered
            + sum(self.skipped.values())
            + sum(self.dead_lettered.values())
            + self.duplicates
        )


@dataclass(slots=True)
class TypeTotals:
    records: int = 0
    delivered: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    duplicates: int = 0


@dataclass(slots=True)
class RunSummary:
    dry_run: bool = False
    objects_done: int = 0
    objects_already_done: int = 0
    objects_failed: int = 0
    records: int = 0
    delivered: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    warnings: Counter[str] = field(default_factory=Counter)
    pending_records: int = 0
    requests: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    by_event_type: dict[str, TypeTotals] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    dead_letter_file: str | None = None

    def add(self, report: ObjectReport) -> None:
        if report.status == "already_done":
            self.objects_already_done += 1
            return
        if report.status == "failed":
            self.objects_failed += 1
            self.failures.append({"object": report.object, "error": report.error or ""})
        else:
            self.objects_done += 1
        self.records += report.records
        self.delivered += report.delivered
        self.skipped.update(report.skipped)
        self.dead_lettered.update(report.dead_lettered)
        self.duplicates += report.duplicates
        self.warnings.update(report.warnings)
        self.pending_records += report.pending
        self.requests += report.requests
        self.retries += report.retries
        totals = self.by_event_type.setdefault(report.event_type or "(unknown)", TypeTotals())
        totals.records += report.records
        totals.delivered += report.delivered
        totals.skipped += sum(report.skipped.values())
        totals.dead_lettered += sum(report.dead_lettered.values())
        totals.duplicates += report.duplicates

    @property
    def balanced(self) -> bool:
        """The invariant: every record accounted for is in exactly one bucket."""
        return self.records == (
            self.delivered
            + sum(self.skipped.values())
            + sum(self.dead_lettered.values())
            + self.duplicates
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "objects_done": self.objects_done,
            "objects_already_done": self.objects_already_done,
            "objects_failed": self.objects_failed,
            "records": self.records,
            "delivered": self.delivered,
            "skipped": dict(sorted(self.skipped.items())),
            "dead_lettered": dict(sorted(self.dead_lettered.items())),
            "duplicates": self.duplicates,
            "warnings": dict(sorted(self.warnings.items())),
            "pending_records": self.pending_records,
            "requests": self.requests,
            "retries": self.retries,
            "elapsed_s": round(self.elapsed_s, 3),
            "balanced": self.balanced,
            "by_event_type": {
                name: {
                    "records": t.records,
                    "delivered": t.delivered,
                    "skipped": t.skipped,
                    "dead_lettered": t.dead_lettered,
                    "duplicates": t.duplicates,
                }
                for name, t in sorted(self.by_event_type.items())
            },
            "failures": self.failures,
            "dead_letter_file": self.dead_letter_file,
        }

    def render(self) -> str:
        """The end-of-run table, one row per event type, then the totals."""
        header = ("event type", "records", "delivered", "skipped", "dead-lettered", "duplicates")
        rows = [
            (name, t.records, t.delivered, t.skipped, t.dead_lettered, t.duplicates)
            for name, t in sorted(self.by_event_type.items())
        ]
        total = (
            "TOTAL",
            self.records,
            self.delivered,
            sum(self.skipped.values()),
            sum(self.dead_lettered.values()),
            self.duplicates,
        )
        width = max([len(header[0]), *(len(r[0]) for r in rows), 5])
        line = f"{{:<{width}}}  {{:>9}}  {{:>9}}  {{:>9}}  {{:>13}}  {{:>10}}"
        out = [line.format(*header), "-" * (width + 62)]
        out += [line.format(*row) for row in rows]
        out += ["-" * (width + 62), line.format(*total), ""]
        out.append(
            f"objects: {self.objects_done} done, {self.objects_already_done} already done, "
            f"{self.objects_failed} failed · requests {self.requests} · retries {self.retries}"
            f" · {self.elapsed_s:.1f} s"
        )
        for label, counter in (
            ("skipped", self.skipped),
            ("dead-lettered", self.dead_lettered),
            ("warnings", self.warnings),
        ):
            if counter:
                details = ", ".join(f"{k}={v}" for k, v in sorted(counter.items()))
                out.append(f"{label}: {details}")
        if self.dead_letter_file:
            out.append(f"dead letter: {self.dead_letter_file}")
        if self.pending_records:
            out.append(f"pending (read, not finished; retried next run): {self.pending_records}")
        for failure in self.failures:
            out.append(f"FAILED {failure['object']}: {failure['error']}")
        if self.dry_run:
            out.append("dry run: nothing was sent and nothing was marked done")
        return "\n".join(out)
