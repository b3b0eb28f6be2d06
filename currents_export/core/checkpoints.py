"""Which records of one object are resolved, and the checkpoint that is safe to save.

Records are read in order but resolved out of order (uploads run in lanes). The
checkpoint is the first record index not yet resolved: every record before it is in a
bucket (delivered, skipped, dead-lettered or duplicate). A run that resumes from it skips
those records and re-sends the others; Amplitude drops repeats by ``insert_id``.
"""

from __future__ import annotations

from dataclasses import dataclass

from currents_export.counts import Tally

DELIVERED, SKIPPED, DEAD_LETTERED, DUPLICATE = "delivered", "skipped", "dead_lettered", "dup"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    next_index: int
    tally: Tally


def count(
    tally: Tally, bucket: str, reason: str | None = None, warnings: tuple[str, ...] = ()
) -> None:
    """Add one record to ``bucket`` of ``tally`` (and its warnings, if any)."""
    tally.records += 1
    if warnings:
        tally.warnings.update(warnings)
    if bucket == DELIVERED:
        tally.delivered += 1
    elif bucket == SKIPPED:
        tally.skipped[reason or "unknown"] += 1
    elif bucket == DEAD_LETTERED:
        tally.dead_lettered[reason or "unknown"] += 1
    elif bucket == DUPLICATE:
        tally.duplicates += 1
    else:
        raise ValueError(f"unknown bucket {bucket!r}")


class ObjectProgress:
    """Accounting of one object's records; owned by the object owner's thread (no lock)."""

    def __init__(self, object_id: str = "", resume: Checkpoint | None = None) -> None:
        self.object_id = object_id
        self.resumed_from = resume.next_index if resume else 0
        self.saved_index = self.resumed_from
        self.newest_event_ms: int | None = None
        self._prefix = _copy(resume.tally) if resume else Tally()
        self._next = self.resumed_from
        self._above: dict[int, tuple[str, str | None, tuple[str, ...]]] = {}
        self._read = self.resumed_from

    def read_up_to(self, count: int) -> None:
        """The reader has read ``count`` records of the object (resumed ones included)."""
        self._read = max(self._read, count)

    def resolve(
        self, index: int, bucket: str, reason: str | None = None, warnings: tuple[str, ...] = ()
    ) -> None:
        if index != self._next:
            self._above[index] = (bucket, reason, warnings)
            return
        count(self._prefix, bucket, reason, warnings)
        self._next += 1
        self._advance()

    def resolve_delivered(self, resolved: list[tuple[int, tuple[str, ...]]]) -> None:
        """Account for the delivered events of one request: (record index, warnings) each."""
        above = self._above
        for index, warnings in resolved:
            above[index] = (DELIVERED, None, warnings)
        self._advance()

    def _advance(self) -> None:
        """Move the resolved prefix forward over indexes resolved out of order."""
        above, prefix, position = self._above, self._prefix, self._next
        delivered = 0
        while position in above:
            bucket, reason, warnings = above.pop(position)
            if bucket == DELIVERED and not warnings:
                delivered += 1  # the common case, counted in one go
            else:
                count(prefix, bucket, reason, warnings)
            position += 1
        prefix.records += delivered
        prefix.delivered += delivered
        self._next = position

    def checkpoint_due(self, every: int) -> bool:
        """True when the resolved prefix grew by ``every`` records since the last save."""
        return self._next - self.saved_index >= every

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self._next, _copy(self._prefix))

    def unresolved(self) -> int:
        """How many records read are not resolved yet."""
        return self._read - self._next - len(self._above)

    def totals(self) -> tuple[Tally, int]:
        """Everything resolved so far (prefix and beyond) and how many read are unresolved."""
        tally = _copy(self._prefix)
        for bucket, reason, warnings in self._above.values():
            count(tally, bucket, reason, warnings)
        return tally, self._read - tally.records


def _copy(tally: Tally) -> Tally:
    copy = Tally()
    copy.add_tally(tally)
    return copy
