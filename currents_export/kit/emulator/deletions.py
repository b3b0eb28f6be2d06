"""Amplitude's User Privacy API v1 (``/api/2/deletions/users``): auth, request parsing, days,
and the deletion jobs.

Pure functions (``check_basic_auth``, ``parse_deletion_request``, ``parse_day_range``,
``parse_job_path``) turn request parts into values or a ``Reply`` (rejected);
``DeletionJobs`` keeps the jobs and is not thread-safe (``EmulatorState`` calls it under its
lock).

What the emulator does, following Amplitude's public docs
(https://amplitude.com/docs/apis/analytics/user-privacy):

* POST ``/api/2/deletions/users`` — HTTP Basic (API key : secret key); JSON body with
  ``user_ids`` (strings), ``amplitude_ids`` (integers), ``requester`` (string),
  ``ignore_invalid_id`` (or ``ignore_invalid_ids``: a boolean or ``"true"``/``"True"``/
  ``"false"``/``"False"``), ``delete_from_org`` and ``include_mapped_user_ids`` (booleans).
  1..100 ids in all. Unknown keys are a 400 (a misspelt option would otherwise be silently
  false). An id is known when the project (API key) has stored events for it. Without
  ``ignore_invalid_id`` one unknown id is a 400 and nothing is scheduled; with it (and always
  with ``delete_from_org``) the known ids are scheduled and the others listed in
  ``invalid_ids``. Ids join the project's job of the day ``today + DELETION_DELAY_DAYS``
  (UTC, emulator clock); an id already in that job is not added again.
* GET ``/api/2/deletions/users?start_day=&end_day=`` — the project's jobs with
  ``start_day <= day <= end_day``; both required, at most six calendar months apart.
* DELETE ``/api/2/deletions/users/{AMPLITUDE_ID}/{JOB_DAY}`` — removes the id from a staging
  job: 200 with the removed entry, 404 when the job or the id is not there, 400 when the job
  is no longer staging.

A job's status follows the clock: ``staging`` until ``SUBMIT_DAYS_BEFORE`` days before its
day, then ``submitted``; on its day the scrub is done (``active_scrub_done_date`` = the day,
null before) and ``done`` ``DONE_DAYS_AFTER`` days later. Nothing is actually erased from
the stored events. ``delete_from_org`` is accepted but the scope stays the project;
``include_mapped_user_ids`` changes nothing (every entry carries its ``user_id``, null for a
device-only user).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import datetime as dt
import hmac
import re
from dataclasses import dataclass, field

import orjson

from .config import EmulatorConfig, JSONDict
from .validation import ERR_INVALID_JSON, Reply, error_reply

DELETIONS_PATH = "/api/2/deletions/users"
MAX_DELETION_IDS = 100
DELETION_DELAY_DAYS = 10  # a job's day = the day of its requests + this
SUBMIT_DAYS_BEFORE = 3  # a job is "submitted" (frozen) from this many days before its day
DONE_DAYS_AFTER = 5  # … and "done" this many days after it (backups cleared)
MAX_RANGE_MONTHS = 6

ERR_UNAUTHORIZED = "Invalid API key or secret key"
ERR_TOO_MANY_IDS = f"At most {MAX_DELETION_IDS} ids per request"
ERR_NO_IDS = "Request needs user_ids or amplitude_ids"
ERR_INVALID_IDS = "Invalid ids (no data for them in this project)"
ERR_RATE = "Too many requests"
ERR_IN_FLIGHT = "Too many concurrent requests"
ERR_DAY_RANGE = (
    f"start_day and end_day (YYYY-MM-DD, start_day <= end_day, at most {MAX_RANGE_MONTHS} "
    "months apart) are required"
)
ERR_JOB_PATH = "Expected /api/2/deletions/users/{AMPLITUDE_ID}/{YYYY-MM-DD}"
ERR_NOT_IN_JOB = "No such amplitude_id in a job of that day"
ERR_NOT_STAGING = "The job is no longer staging"

_BODY_KEYS = frozenset({
    "user_ids", "amplitude_ids", "requester", "ignore_invalid_id", "ignore_invalid_ids",
    "delete_from_org", "include_mapped_user_ids",
})  # fmt: skip
_TRUTHS = {True: True, False: False, "true": True, "True": True, "false": False, "False": False}
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_JOB_PATH = re.compile(re.escape(DELETIONS_PATH) + r"/(-?\d+)/([^/]+)")


# -- auth ---------------------------------------------------------------------------------


def check_basic_auth(header: str | None, config: EmulatorConfig) -> str | Reply:
    """The project's API key from an ``Authorization: Basic`` header, or a 401.

    The secret is compared in constant time and never leaves this function.
    """
    unauthorized = error_reply(401, ERR_UNAUTHORIZED)
    scheme, _, encoded = (header or "").strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return unauthorized
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return unauthorized
    api_key, colon, secret = decoded.partition(":")
    if not colon or not api_key or not secret:
        return unauthorized
    if config.valid_api_keys is not None and api_key not in config.valid_api_keys:
        return unauthorized
    if config.secret_keys is not None:
        expected = config.secret_keys.get(api_key)
        if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
            return unauthorized
    return api_key


# -- requests -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeletionRequest:
    """A well-formed POST body (ids as sent, duplicates included)."""

    user_ids: tuple[str, ...]
    amplitude_ids: tuple[int, ...]
    requester: str | None
    ignore_invalid_id: bool

    @property
    def id_count(self) -> int:
        return len(self.user_ids) + len(self.amplitude_ids)


def parse_deletion_request(body: bytes) -> DeletionRequest | Reply:
    """The POST body as a ``DeletionRequest``, or a 400 naming the problem."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return error_reply(400, ERR_INVALID_JSON)
    if not isinstance(data, dict):
        return error_reply(400, "Request body must be a JSON object")
    unknown = sorted(set(data) - _BODY_KEYS)
    if unknown:
        return error_reply(400, f"Unknown field: {unknown[0]}")
    user_ids = data.get("user_ids", [])
    if not isinstance(user_ids, list) or not all(isinstance(u, str) and u for u in user_ids):
        return error_reply(400, "user_ids must be a list of non-empty strings")
    amplitude_ids = data.get("amplitude_ids", [])
    if not isinstance(amplitude_ids, list) or not all(
        type(a) is int and a > 0 for a in amplitude_ids
    ):
        return error_reply(400, "amplitude_ids must be a list of positive integers")
    requester = data.get("requester")
    if requester is not None and not isinstance(requester, str):
        return error_reply(400, "requester must be a string")
    flags: dict[str, bool] = {}
    for name in ("ignore_invalid_id", "ignore_invalid_ids", "delete_from_org",
                 "include_mapped_user_ids"):
        if name in data:
            value = data[name]
            flag = _TRUTHS.get(value) if isinstance(value, bool | str) else None
            if flag is None:
                return error_reply(400, f"{name} must be a boolean")
            flags[name] = flag
    spellings = {flags[n] for n in ("ignore_invalid_id", "ignore_invalid_ids") if n in flags}
    if len(spellings) > 1:
        return error_reply(400, "ignore_invalid_id and ignore_invalid_ids disagree")
    count = len(user_ids) + len(amplitude_ids)
    if count == 0:
        return error_reply(400, ERR_NO_IDS)
    if count > MAX_DELETION_IDS:
        return error_reply(400, ERR_TOO_MANY_IDS)
    ignore = any(spellings) or flags.get("delete_from_org", False)
    return DeletionRequest(tuple(user_ids), tuple(amplitude_ids), requester, ignore)


# -- days ---------------------------------------------------------------------------------


def day_of(now: float) -> dt.date:
    """The UTC day of a clock reading (seconds since the epoch)."""
    return dt.datetime.fromtimestamp(now, dt.UTC).date()


def parse_day(text: str | None) -> dt.date | None:
    if text is None or not _DAY.fullmatch(text):
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus calendar months, the day of month clamped to the month's last day."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def parse_day_range(params: dict[str, str]) -> tuple[dt.date, dt.date] | Reply:
    """``start_day``/``end_day`` as dates, or a 400."""
    start, end = parse_day(params.get("start_day")), parse_day(params.get("end_day"))
    if start is None or end is None or end < start or end > add_months(start, MAX_RANGE_MONTHS):
        return error_reply(400, ERR_DAY_RANGE)
    return start, end


def parse_job_path(path: str) -> tuple[int, dt.date] | None:
    """``(amplitude_id, job_day)`` of ``/api/2/deletions/users/{ID}/{DAY}``, or None."""
    match = _JOB_PATH.fullmatch(path)
    if match is None:
        return None
    day = parse_day(match.group(2))
    return None if day is None else (int(match.group(1)), day)


# -- jobs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduledId:
    """One id in a job, as the API shows it."""

    amplitude_id: int
    user_id: str | None
    requester: str | None
    requested_on_day: dt.date

    def to_dict(self) -> JSONDict:
        return {
            "amplitude_id": self.amplitude_id,
            "requester": self.requester,
            "requested_on_day": self.requested_on_day.isoformat(),
            "user_id": self.user_id,
        }


@dataclass(slots=True)
class DeletionJob:
    """A project's batch of ids to delete on ``day``."""

    api_key: str
    day: dt.date
    entries: dict[int, ScheduledId] = field(default_factory=dict)  # by amplitude_id

    def status(self, today: dt.date) -> str:
        if today < self.day - dt.timedelta(days=SUBMIT_DAYS_BEFORE):
            return "staging"
        if today < self.day + dt.timedelta(days=DONE_DAYS_AFTER):
            return "submitted"
        return "done"

    def to_dict(self, today: dt.date) -> JSONDict:
        return {
            "day": self.day.isoformat(),
            "status": self.status(today),
            "amplitude_ids": [entry.to_dict() for entry in self.entries.values()],
            "active_scrub_done_date": self.day.isoformat() if today >= self.day else None,
        }


class DeletionJobs:
    """The deletion jobs of every project, keyed by ``(api_key, day)``; not thread-safe."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, dt.date], DeletionJob] = {}

    def schedule(self, api_key: str, today: dt.date, ids: list[ScheduledId]) -> DeletionJob:
        """Add ``ids`` to the project's job of ``today + DELETION_DELAY_DAYS`` (created when
        there are ids to add); an id already in it keeps its first entry. → the job (with
        every entry, not only these)."""
        day = today + dt.timedelta(days=DELETION_DELAY_DAYS)
        job = self._jobs.get((api_key, day))
        if job is None:
            job = DeletionJob(api_key, day)
            if ids:
                self._jobs[api_key, day] = job
        for entry in ids:
            job.entries.setdefault(entry.amplitude_id, entry)
        return job

    def in_range(self, api_key: str, start: dt.date, end: dt.date) -> list[DeletionJob]:
        jobs = self._jobs.values()
        chosen = [job for job in jobs if job.api_key == api_key and start <= job.day <= end]
        return sorted(chosen, key=lambda job: job.day)

    def remove(
        self, api_key: str, amplitude_id: int, day: dt.date, today: dt.date
    ) -> ScheduledId | Reply:
        """Take an id out of a staging job: the removed entry, or a 404/400."""
        job = self._jobs.get((api_key, day))
        if job is None or amplitude_id not in job.entries:
            return error_reply(404, ERR_NOT_IN_JOB)
        if job.status(today) != "staging":
            return error_reply(400, ERR_NOT_STAGING)
        return job.entries.pop(amplitude_id)

    def all(self) -> list[DeletionJob]:
        return sorted(self._jobs.values(), key=lambda job: (job.day, job.api_key))
