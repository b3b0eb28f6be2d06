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

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from currents_export.deletions.privacy_api import MAX_IDS_PER_REQUEST, DeletionJob
from currents_export.deletions.store import (
    DEVICE_ONLY,
    FAILED,
    NEVER_SEEN,
    PENDING,
    SUBMITTED,
    SUBMITTING,
    UNRESOLVED,
    Deletion,
    DeletionStore,
    id_digest,
)
from currents_export.errors import ConfigurationError, PrivacyApiError


class Deleter(Protocol):
    def delete(self, user_ids: list[str]) -> DeletionJob: ...

    def scheduled(self, start_day: str, end_day: str) -> set[str]: ...


@dataclass
class SubmitReport:
    dry_run: bool = False
    due: int = 0  # deletions past their grace period with user ids not yet sent
    waiting: int = 0  # still within their grace period
    submitted: int = 0  # deletions submitted now (would be, in a dry run)
    user_ids: int = 0  # user ids in them
    not_in_amplitude: int = 0  # of those, unknown to Amplitude
    requests: int = 0
    job_days: set[str] = field(default_factory=set)
    unresolved: Counter[str] = field(default_factory=Counter)
    failed: int = 0  # deletions Amplitude refused (see `deletions status`)
    would_delete: list[dict[str, Any]] = field(default_factory=list)  # a dry run's list
    error: str | None = None  # what stopped the submission (the rest stays pending)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "dry_run": self.dry_run, "due": self.due, "waiting": self.waiting,
            "submitted": self.submitted, "user_ids": self.user_ids,
            "not_in_amplitude": self.not_in_amplitude, "requests": self.requests,
            "job_days": sorted(self.job_days), "unresolved": dict(sorted(self.unresolved.items())),
            "failed": self.failed, "error": self.error}
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
        if self.failed:
            lines.append(f"  failed: {self.failed} deletions Amplitude refused (see "
                         "`currents-export deletions status`)")
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
_LOOK_BACK_DAYS, _LOOK_AHEAD_DAYS = 2, 60  # where a lost answer's job may be


@dataclass
class _Due:
    deletion: Deletion
    ids: list[str]  # user ids to send (none of them sent before)


def submit_deletions(
    store: DeletionStore,
    deleter: Deleter | None,
    *,
    grace_s: float,
    now: float,
    stopped: Callable[[], bool] = lambda: False,
) -> SubmitReport:
    """Submit the due deletions (``deleter=None``: a dry run, which only lists them);
    ``stopped`` (a deadline, a signal) is asked before each request.

    Each request's deletions are saved as *submitting* (with the ids sent) before it goes
    out; one found so on the next submit (its answer was lost: a crash, a timeout) is
    looked up in Amplitude's job list before anything is sent again.
    """
    report = SubmitReport(dry_run=deleter is None)
    due: list[_Due] = []
    try:
        for deletion in store.deletions():
            if deletion.status == SUBMITTING and deleter is not None:
                deletion = _settle_lost_answer(store, deleter, deletion, now)
            if deletion.status in (SUBMITTED, FAILED):
                continue
            if now - deletion.recorded_at < grace_s:
                report.waiting += 1
                continue
            item = _resolve(store, deletion, report, write=deleter is not None, now=now)
            if item is not None:
                due.append(item)
        report.due = len(due) + sum(report.unresolved.values())
        if deleter is None:
            report.submitted = len(due)
            report.user_ids = sum(len(item.ids) for item in due)
            report.requests = sum(1 for _ in _requests(due))
            report.would_delete = [{"key": item.deletion.key, "user_ids": item.ids}
                                   for item in due]
            return report
        for batch in _requests(due):
            if stopped():
                raise PrivacyApiError("stopped before the deadline")
            _send(store, deleter, batch, report, now)
    except PrivacyApiError as exc:
        report.error = str(exc)
    return report


def _resolve(store: DeletionStore, deletion: Deletion, report: SubmitReport, *, write: bool,
             now: float) -> _Due | None:
    """The user ids to send for ``deletion`` (those not sent before), or None: unresolved,
    or nothing new since it was submitted."""
    identity = store.identity(deletion.key)
    sent = set(deletion.sent)
    ids = sorted(i for i in identity.user_ids if id_digest(i) not in sent)
    if ids:
        return _Due(deletion, ids)
    if deletion.sent:  # reopened, but every id seen again was sent already
        if write:
            store.save(replace(deletion, status=SUBMITTED))
            store.forget(deletion.key)
        return None
    reason = DEVICE_ONLY if identity.seen_without_user_id else NEVER_SEEN
    report.unresolved[reason] += 1
    if write and (deletion.status, deletion.reason) != (UNRESOLVED, reason):
        store.save(replace(deletion, status=UNRESOLVED, reason=reason))
    return None


def _settle_lost_answer(store: DeletionStore, deleter: Deleter, deletion: Deletion,
                        now: float) -> Deletion:
    """A deletion left *submitting*: the ids Amplitude's jobs hold count as sent."""
    day = datetime.fromtimestamp(deletion.submitted_at or now, UTC).date()
    scheduled = deleter.scheduled((day - timedelta(days=_LOOK_BACK_DAYS)).isoformat(),
                                  (day + timedelta(days=_LOOK_AHEAD_DAYS)).isoformat())
    taken = [i for i in deletion.sending if i in scheduled]
    settled = replace(deletion, status=PENDING, sending=(),
                      sent=(*deletion.sent, *map(id_digest, taken)),
                      user_ids=deletion.user_ids + len(taken))
    store.save(settled)
    return settled


def _send(store: DeletionStore, deleter: Deleter, batch: list[tuple[_Due, list[str]]],
          report: SubmitReport, now: float) -> None:
    """One request; a refused one is tried a deletion at a time, so that one bad deletion
    is marked failed and the others go on."""
    for item, part in batch:
        store.save(replace(item.deletion, status=SUBMITTING, sending=tuple(part),
                           submitted_at=now))
    try:
        job = deleter.delete([user_id for _, part in batch for user_id in part])
    except PrivacyApiError as exc:
        for item, _ in batch:  # the request was not taken (or may not have been: lost)
            if exc.refused:
                store.save(replace(item.deletion, status=PENDING, sending=()))
        if not exc.refused:
            raise
        if len(batch) > 1:
            for single in batch:
                _send(store, deleter, [single], report, now)
            return
        [(item, _)] = batch
        store.save(replace(item.deletion, status=FAILED, sending=(), reason=str(exc)))
        report.failed += 1
        return
    except ConfigurationError:
        for item, _ in batch:  # refused credentials: nothing was scheduled
            store.save(replace(item.deletion, status=PENDING, sending=()))
        raise
    report.requests += 1
    report.job_days.add(job.day)
    for item, part in batch:
        deletion = item.deletion
        invalid = sum(1 for i in part if i in job.invalid_ids)
        deletion = item.deletion = replace(
            deletion, sending=(), sent=(*deletion.sent, *map(id_digest, part)),
            user_ids=deletion.user_ids + len(part),
            not_in_amplitude=deletion.not_in_amplitude + invalid,
            job_day=job.day, job_status=job.status, submitted_at=now, reason=None)
        report.user_ids += len(part)
        report.not_in_amplitude += invalid
        if part[-1] != item.ids[-1]:  # the rest of its ids go in the next request
            store.save(replace(deletion, status=PENDING))
            continue
        store.save(replace(deletion, status=SUBMITTED))
        store.forget(deletion.key)  # the map keeps nothing of a deleted user
        report.submitted += 1


def _requests(due: list[_Due]) -> Iterator[list[tuple[_Due, list[str]]]]:
    """Requests of at most 100 ids; a deletion with more spans several."""
    batch: list[tuple[_Due, list[str]]] = []
    room = MAX_IDS_PER_REQUEST
    for item in due:
        rest = item.ids
        while rest:
            part, rest = rest[:room], rest[room:]
            batch.append((item, part))
            room -= len(part)
            if room == 0:
                yield batch
                batch, room = [], MAX_IDS_PER_REQUEST
    if batch:
        yield batch


def deletion_status(
    deletions: list[Deletion], *, grace_s: float, now: float, show_all: bool = False
) -> dict[str, Any]:
    """What the store knows of deletions: counts by status and reason, since when the
    oldest pending one waits (``pending_since``: when a run recorded it, epoch seconds;
    null when none is pending), and each one not submitted (all of them with
    ``show_all``), a pending one with its ``pending_since`` too."""
    counts = Counter(d.status for d in deletions)
    unresolved = Counter(d.reason for d in deletions if d.status == UNRESOLVED and d.reason)
    listed = [d for d in deletions if show_all or d.status != SUBMITTED]
    oldest = min((d.recorded_at for d in deletions if d.status == PENDING), default=None)
    return {
        "deletions": len(deletions),
        "pending": counts.get(PENDING, 0),
        "pending_since": oldest,
        "pending_for_s": None if oldest is None else round(now - oldest, 3),
        "within_grace_period": sum(1 for d in deletions if d.status != SUBMITTED
                                   and now - d.recorded_at < grace_s),
        "submitted": counts.get(SUBMITTED, 0),
        "submitting": counts.get(SUBMITTING, 0),  # answer lost: checked on the next submit
        "failed": counts.get(FAILED, 0),
        "unresolved": dict(sorted(unresolved.items())),
        "job_days": sorted({d.job_day for d in deletions if d.job_day}),
        "items": [_item(d, grace_s=grace_s, now=now) for d in listed],
    }


def _item(deletion: Deletion, *, grace_s: float, now: float) -> dict[str, Any]:
    pending = deletion.status == PENDING
    return {**deletion.to_json(),
            "pending_since": deletion.recorded_at if pending else None,
            "pending_for_s": round(now - deletion.recorded_at, 3) if pending else None,
            "within_grace_period": (deletion.status != SUBMITTED
                                    and now - deletion.recorded_at < grace_s)}


def render_status(status: dict[str, Any]) -> str:
    lines = [f"deletions: {status['deletions']} recorded; {status['submitted']} submitted, "
             f"{status['pending']} pending ({status['within_grace_period']} within the grace "
             f"period), {sum(status['unresolved'].values())} unresolved, "
             f"{status['failed']} failed"]
    if status["pending_since"] is not None:
        lines.append(f"  pending since {_since(status['pending_since'], status['pending_for_s'])}"
                     ": the oldest deletion not submitted yet was recorded then")
    for reason, count in status["unresolved"].items():
        lines.append(f"  unresolved {reason}: {count} ({_EXPLAIN.get(reason, reason)})")
    if status["job_days"]:
        lines.append(f"  Amplitude job days: {', '.join(status['job_days'])}")
    for item in status["items"]:
        if item["status"] == SUBMITTED:
            detail = f"job {item['job_day']} ({item['job_status']}), {item['user_ids']} user ids"
        elif item["pending_since"] is not None:
            detail = (f"since {_since(item['pending_since'], item['pending_for_s'])}, "
                      + ("within the grace period" if item["within_grace_period"]
                         else item["reason"] or "waiting to be sent"))
        else:
            detail = item["reason"] or "waiting to be sent"
        lines.append(f"  {item['key']}  {item['status']:<10}  {detail}")
    return "\n".join(lines)


def _since(when: float, age_s: float) -> str:
    """``2026-01-15 10:00 UTC (3 h ago)``: whole units, floored, as ``status`` says ages
    (this adapter may not import the ledger's)."""
    ago = "just now" if age_s < 60 else next(
        f"{int(age_s // size)} {unit} ago"
        for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)) if age_s >= size)
    return f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(when))} ({ago})"
