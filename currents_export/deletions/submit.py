"""Resolve the pending deletions against the identity map and submit them; report status.

A deletion is due once its grace period has passed (counted from when a run recorded it,
so that the events queued in the same hour are seen first). It resolves to the Amplitude
user ids its Braze id was sent with; one seen only without a user id (a device-only or
anonymous user) or never seen is *unresolved*, with that reason, and is looked at again
by every later submit (the map may still learn it). Device-only users are never deleted:
the User Privacy API takes user ids or Amplitude ids, and a device id may by now belong
to an identified user Amplitude merged it into.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from currents_export.deletions.privacy import MAX_IDS_PER_REQUEST, DeletionJob, PrivacyApiError
from currents_export.deletions.store import (
    DEVICE_ONLY,
    NEVER_SEEN,
    PENDING,
    SUBMITTED,
    UNRESOLVED,
    Deletion,
    DeletionStore,
)


class Deleter(Protocol):
    def delete(self, user_ids: list[str]) -> DeletionJob: ...


@dataclass
class SubmitReport:
    dry_run: bool = False
    due: int = 0  # deletions past their grace period and not submitted
    waiting: int = 0  # still within their grace period
    submitted: int = 0  # deletions submitted now (would be, in a dry run)
    user_ids: int = 0  # user ids in them
    not_in_amplitude: int = 0  # of those, unknown to Amplitude
    requests: int = 0
    job_days: set[str] = field(default_factory=set)
    unresolved: Counter[str] = field(default_factory=Counter)
    would_delete: list[dict[str, Any]] = field(default_factory=list)  # a dry run's list
    error: str | None = None  # what stopped the submission (the rest stays pending)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "dry_run": self.dry_run, "due": self.due, "waiting": self.waiting,
            "submitted": self.submitted, "user_ids": self.user_ids,
            "not_in_amplitude": self.not_in_amplitude, "requests": self.requests,
            "job_days": sorted(self.job_days), "unresolved": dict(sorted(self.unresolved.items())),
            "error": self.error}
        if self.dry_run:
            data["would_delete"] = self.would_delete
        return data

    def render(self) -> str:
        verb = "would submit" if self.dry_run else "submitted"
        lines = [f"deletions: {self.due} due, {self.waiting} within the grace period",
                 f"  {verb} {self.submitted} deletions ({self.user_ids} Amplitude user ids) in "
                 f"{self.requests} requests"]
        if self.job_days:
            lines.append(f"  Amplitude job days: {', '.join(sorted(self.job_days))}")
        if self.not_in_amplitude:
            lines.append(f"  {self.not_in_amplitude} user ids were unknown to Amplitude "
                         "(nothing of theirs to delete)")
        for reason, count in sorted(self.unresolved.items()):
            lines.append(f"  unresolved: {count} {reason} ({_EXPLAIN[reason]})")
        for item in self.would_delete:
            lines.append(f"  would delete {item['key']}: {', '.join(item['user_ids'])}")
        if self.error:
            lines.append(f"  stopped: {self.error}; the rest stays pending for the next submit")
        return "\n".join(lines)


_EXPLAIN = {
    NEVER_SEEN: "their Braze id was never seen with a user id: no event of theirs passed "
                "through this tool since the identity map was turned on",
    DEVICE_ONLY: "device-only or anonymous users: seen only without a user id, which the "
                 "User Privacy API needs; not deleted (see the README)",
}


def submit_deletions(
    store: DeletionStore,
    deleter: Deleter | None,
    *,
    grace_s: float,
    now: float,
    on_submitted: Callable[[Deletion], None] | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> SubmitReport:
    """Submit the due deletions (``deleter=None``: a dry run, which only lists them);
    ``stopped`` (a deadline, a signal) is asked before each request."""
    report = SubmitReport(dry_run=deleter is None)
    due: list[tuple[Deletion, list[str]]] = []
    for deletion in store.deletions():
        if deletion.status == SUBMITTED:
            continue
        if now - deletion.recorded_at < grace_s:
            report.waiting += 1
            continue
        report.due += 1
        identity = store.identity(deletion.key)
        if not identity.user_ids:
            reason = DEVICE_ONLY if identity.seen_without_user_id else NEVER_SEEN
            report.unresolved[reason] += 1
            if deleter is not None and (deletion.status, deletion.reason) != (UNRESOLVED,
                                                                              reason):
                store.save(replace(deletion, status=UNRESOLVED, reason=reason))
            continue
        due.append((deletion, sorted(identity.user_ids)))
    if deleter is None:
        report.submitted = len(due)
        report.user_ids = sum(len(ids) for _, ids in due)
        report.requests = sum(1 for _ in _requests(due))
        report.would_delete = [{"key": d.key, "user_ids": ids} for d, ids in due]
        return report
    every_id = {deletion.key: ids for deletion, ids in due}
    jobs: dict[str, list[DeletionJob]] = {}
    try:
        for batch in _requests(due):
            if stopped():
                raise PrivacyApiError("stopped before the deadline")
            job = deleter.delete([user_id for _, ids in batch for user_id in ids])
            report.requests += 1
            report.job_days.add(job.day)
            for deletion, ids in batch:
                jobs.setdefault(deletion.key, []).append(job)
                all_ids = every_id[deletion.key]
                if ids[-1] != all_ids[-1]:
                    continue  # the rest of its ids go in the next request
                invalid = tuple(i for i in all_ids
                                if any(i in j.invalid_ids for j in jobs[deletion.key]))
                done = replace(deletion, status=SUBMITTED, reason=None,
                               user_ids=tuple(all_ids), invalid_ids=invalid,
                               job_day=job.day, job_status=job.status, submitted_at=now)
                store.save(done)
                report.submitted += 1
                report.user_ids += len(all_ids)
                report.not_in_amplitude += len(invalid)
                if on_submitted is not None:
                    on_submitted(done)
    except PrivacyApiError as exc:
        report.error = str(exc)
    return report


def _requests(
    due: list[tuple[Deletion, list[str]]]
) -> Iterator[list[tuple[Deletion, list[str]]]]:
    """Requests of at most 100 ids; a deletion with more spans several."""
    batch: list[tuple[Deletion, list[str]]] = []
    room = MAX_IDS_PER_REQUEST
    for deletion, ids in due:
        rest = ids
        while rest:
            part, rest = rest[:room], rest[room:]
            batch.append((deletion, part))
            room -= len(part)
            if room == 0:
                yield batch
                batch, room = [], MAX_IDS_PER_REQUEST
    if batch:
        yield batch


def deletion_status(
    deletions: list[Deletion], *, grace_s: float, now: float, show_all: bool = False
) -> dict[str, Any]:
    """What the store knows of deletions: counts by status and reason, and each one not
    submitted (all of them with ``show_all``)."""
    counts = Counter(d.status for d in deletions)
    unresolved = Counter(d.reason for d in deletions if d.status == UNRESOLVED and d.reason)
    listed = [d for d in deletions if show_all or d.status != SUBMITTED]
    return {
        "deletions": len(deletions),
        "pending": counts.get(PENDING, 0),
        "within_grace_period": sum(1 for d in deletions if d.status != SUBMITTED
                                   and now - d.recorded_at < grace_s),
        "submitted": counts.get(SUBMITTED, 0),
        "unresolved": dict(sorted(unresolved.items())),
        "job_days": sorted({d.job_day for d in deletions if d.job_day}),
        "items": [d.to_json() for d in listed],
    }


def render_status(status: dict[str, Any]) -> str:
    lines = [f"deletions: {status['deletions']} recorded; {status['submitted']} submitted, "
             f"{status['pending']} pending ({status['within_grace_period']} within the grace "
             f"period), {sum(status['unresolved'].values())} unresolved"]
    for reason, count in status["unresolved"].items():
        lines.append(f"  unresolved {reason}: {count} ({_EXPLAIN.get(reason, reason)})")
    if status["job_days"]:
        lines.append(f"  Amplitude job days: {', '.join(status['job_days'])}")
    for item in status["items"]:
        detail = (f"job {item['job_day']} ({item['job_status']}), {item['user_ids']} user ids"
                  if item["status"] == SUBMITTED else item["reason"] or "waiting")
        lines.append(f"  {item['key']}  {item['status']:<10}  {detail}")
    return "\n".join(lines)
