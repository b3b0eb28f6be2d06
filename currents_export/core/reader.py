"""The reader: one object's records decoded, mapped, checked and handed on.

Runs on the thread that calls ``Pipeline.run``. Each event goes to the outbox (the lanes,
or a dry run's); every other record is settled here (skipped, duplicate, refused) and
posted to the object owner in batches, with how far reading got. The reader writes only
``--output``; the ledger and the dead letter are the owner's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from currents_export.amplitude.batching import PendingEvent
from currents_export.amplitude.validation import DEFAULT_MIN_ID_LENGTH, INVALID_ID, id_problem
from currents_export.core.checkpoints import DUPLICATE, SKIPPED
from currents_export.core.lanes import Outbox
from currents_export.core.owner import (
    EventRef,
    ObjectHandle,
    ObjectOwner,
    ReadEnded,
    Refusal,
    Resolution,
)
from currents_export.core.seen import SeenIds
from currents_export.deletions.tracker import (
    DELETE_REQUEST_TYPE,
    DELETED_USER,
    DELETION_REQUEST,
    DeletionCounts,
    DeletionTracker,
    NoDeletions,
)
from currents_export.errors import MAPPING_ERROR, Interrupted, UnreadableObject
from currents_export.mapping import (
    Duplicate,
    Mapped,
    MappingOptions,
    Rejected,
    Skipped,
    mapped_records,
)
from currents_export.mapping.stream import Outcome
from currents_export.stopping import Stop
from currents_export.support.jsonbytes import kept_json

EVENT_TOO_LARGE = "event_too_large"
# Braze drops events over 900 KB: one over this is hostile. Its record and event are not
# kept in the dead letter (one 60 MiB string made a 121 MB line), only where it is.
MAX_EVENT_BYTES = 2**20
# Records between hand-overs to the outbox and posts to the owner (and checks of the stop).
_POST_EVERY = 256
READER_BATCH = _POST_EVERY  # at most this many events handed to the outbox at once
_REFUSALS_PER_POST = 16  # refused records hold their record and event: posted sooner
_VALID_IDS_REMEMBERED = 100_000
# An object whose records are overwhelmingly unusable is corrupt, not drifted: after this
# many records, if more than this share could not be mapped, it stops as permanently failed
# instead of flooding the dead letter.
UNUSABLE_AFTER_RECORDS = 1_000
UNUSABLE_SHARE = 0.9


@dataclass
class ObjectReader:
    """Reads objects into ``outbox``; tells ``owner`` what it settled."""

    outbox: Outbox[EventRef]
    owner: ObjectOwner
    stop: Stop
    options: MappingOptions = field(default_factory=MappingOptions)
    min_id_length: int = DEFAULT_MIN_ID_LENGTH
    output: IO[bytes] | None = None
    seen_ids: SeenIds = field(default_factory=SeenIds)
    deletions: DeletionTracker | NoDeletions = field(default_factory=NoDeletions)
    deletion_counts: DeletionCounts = field(default_factory=DeletionCounts)
    _valid_ids: set[str] = field(default_factory=lambda: {""}, init=False)

    def read(self, handle: ObjectHandle) -> None:
        """Read the object to its end (or to its failure, which is posted and raised)."""
        state = _Reading(handle)
        try:
            self._read(state)
        except BaseException as exc:
            # The record in hand when it failed, and the events not yet handed over, are
            # neither settled nor with the outbox: they stay pending, and must not keep the
            # object open.
            state.in_hand += len(state.batch)
            state.batch = []
            self.owner.read_ended(state.ended(exc))
            raise
        self.owner.read_ended(state.ended(None))

    def _read(self, state: _Reading) -> None:
        handle = state.handle
        source = handle.source
        stop, deletions, owner = self.stop, self.deletions, self.owner
        with source.open() as fileobj:
            records = mapped_records(fileobj, source.uri, self.options, source.key_event_type,
                                     start=handle.resumed_from, repeated=self._repeated)
            owner.opened(handle, records.event_type)
            delete_requests = records.event_type == DELETE_REQUEST_TYPE
            read = unusable = 0
            for index, record, result in records:
                state.read = index + 1
                state.in_hand = 1  # until it is settled or handed to the outbox
                read += 1
                if index % _POST_EVERY == 0:
                    if stop.stopped:
                        raise _interrupted(stop)
                    failure = handle.failure  # some of its events failed: read no further,
                    if failure is not None:   # its later events would overtake them
                        raise failure
                    if state.batch:
                        self._hand_over(state)
                    if state.entries:
                        state.post(owner, state.read - 1)
                if deletions.active and not isinstance(result, Duplicate):
                    result = self._deletion_outcome(delete_requests, record, result)
                if isinstance(result, Mapped):
                    try:
                        payload = self._checked_payload(result.event)
                    except Exception as exc:  # one bad record never stops its object
                        result = Rejected(MAPPING_ERROR, f"{type(exc).__name__}: {exc}",
                                          type(exc).__name__)
                    else:
                        self._route(state, index, record, result, payload)
                        state.in_hand = 0
                        continue
                if isinstance(result, Rejected):
                    state.refuse(owner, Refusal(index, record, None, result.reason,
                                                result.detail))
                    state.in_hand = 0
                    if result.reason == MAPPING_ERROR:
                        unusable += 1
                        if read >= UNUSABLE_AFTER_RECORDS and unusable > UNUSABLE_SHARE * read:
                            # No record value: this message reaches logs, the ledger
                            # and the summary.
                            raise UnreadableObject(
                                f"{source.uri}: {unusable} of the first {read} records could "
                                f"not be mapped (last: {result.without_value or result.reason}"
                                "; each record's reason is in the "
                                "dead letter); the object looks corrupt and is not read "
                                "further")
                elif isinstance(result, Duplicate):
                    state.entries.append((index, DUPLICATE, None))
                    state.in_hand = 0
                else:
                    state.entries.append((index, SKIPPED, result.reason))
                    state.in_hand = 0
            if state.batch:
                self._hand_over(state)

    def _hand_over(self, state: _Reading) -> None:
        """Give the outbox the events read since the last time, in one batch (the outbox
        answers for each from then on, even when it raises)."""
        batch, state.batch = state.batch, []
        for event in self.outbox.submit_many(batch):
            ref = event.ref  # over the request limit: the event is kept, not the record
            detail = (f"event of {len(event.payload):,} bytes once mapped, over the request "
                      "limit")
            state.refuse(self.owner, Refusal(ref.index, None, orjson.Fragment(event.payload),
                                             EVENT_TOO_LARGE, detail, ref.warnings))
    def _deletion_outcome(self, delete_request: bool, record: dict[str, Any],
                          result: Outcome) -> Outcome:
        """[deletions]: a delete request is recorded (and skipped: it is not an event); a
        mapped event teaches the identity map its user id; a deleted user's record is then
        skipped whatever its outcome (nothing of theirs is sent or dead-lettered again)."""
        braze_id = record.get("user_id")
        if not isinstance(braze_id, str) or not braze_id:
            return result
        deletions = self.deletions
        key = deletions.key(braze_id)
        counts = self.deletion_counts
        if delete_request:
            time_s = record.get("time")
            when = float(time_s) if isinstance(time_s, int | float) else 0.0
            if deletions.request(key, when if math.isfinite(when) else 0.0):
                counts.requested += 1
            else:
                counts.repeated += 1
            return Skipped(DELETION_REQUEST)
        if isinstance(result, Mapped):  # learned even when not sent: an earlier run may
            deletions.observe(key, result.event.get("user_id") or "")  # have sent it
        if deletions.is_deleted(key):
            counts.skipped_deleted_user += 1
            return Skipped(DELETED_USER)
        return result

    def _checked_payload(self, event: dict[str, Any]) -> bytes | str:
        """The event as sent, or the reason its ids are refused (a str)."""
        problem = self._id_problem(event)
        if problem:
            return problem
        return kept_json(event)

    def _repeated(self, record: dict[str, Any]) -> bool:
        """True when this record's Braze event id was already seen in this run (Braze's
        at-least-once copies)."""
        return not self.seen_ids.first_time_of(record.get("id"))

    def _route(self, state: _Reading, index: int, record: dict[str, Any], mapped: Mapped,
               payload: bytes | str) -> None:
        """Write to --output and hand the event to the outbox."""
        event = mapped.event
        if isinstance(payload, str):  # ids Amplitude would refuse
            state.refuse(self.owner, Refusal(index, record, event, INVALID_ID, payload,
                                             mapped.warnings))
            return
        if len(payload) > MAX_EVENT_BYTES:
            state.refuse(self.owner, Refusal(
                index, None, None, EVENT_TOO_LARGE,
                f"{len(payload):,} bytes once mapped, over {MAX_EVENT_BYTES:,} (Braze drops "
                "events over 900 KB); neither the record nor the event is kept here: "
                "`inspect` the object at this record_index to see it", mapped.warnings))
            return
        newest = state.newest_event_ms
        if newest is None or event["time"] > newest:
            state.newest_event_ms = event["time"]
        if self.output is not None:
            self.output.write(payload + b"\n")
        user_id, device_id = event.get("user_id"), event.get("device_id")
        if user_id and device_id:
            ids: tuple[str, ...] = (user_id, device_id)
        else:
            ids = (user_id,) if user_id else (device_id,) if device_id else ()
        state.batch.append(PendingEvent(
            payload, EventRef(state.handle, index, payload, mapped.warnings), ids))

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


@dataclass(slots=True)
class _Reading:
    """The reader's own state for the object it reads."""

    handle: ObjectHandle
    entries: list[Resolution | Refusal] = field(default_factory=list)
    batch: list[PendingEvent[EventRef]] = field(default_factory=list)  # for the outbox
    read: int = 0
    in_hand: int = 0
    newest_event_ms: int | None = None
    refusals: int = 0  # in ``entries``

    def __post_init__(self) -> None:
        self.read = self.handle.resumed_from

    def refuse(self, owner: ObjectOwner, refusal: Refusal) -> None:
        """Settle a refused record; the batch goes to the owner sooner when it holds
        several (each keeps its record and event)."""
        self.entries.append(refusal)
        self.refusals += 1
        if self.refusals >= _REFUSALS_PER_POST:
            self.post(owner, self.read)

    def post(self, owner: ObjectOwner, read: int) -> None:
        """Hand the settled records to the owner, with how far reading got."""
        owner.settled(self.handle, self.entries, read)
        self.entries, self.refusals = [], 0

    def ended(self, error: BaseException | None) -> ReadEnded:
        return ReadEnded(self.handle, self.entries, self.read, self.newest_event_ms, error,
                         self.in_hand if error is not None else 0)


def _interrupted(stop: Stop) -> Interrupted:
    return Interrupted(f"{stop.why()}: progress is saved and the object resumes on its "
                       "next run")

