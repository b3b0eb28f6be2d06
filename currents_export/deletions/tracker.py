"""What a run does per record for deletions: learn which user ids each Braze id has had,
record delete requests, and skip the events of users already deleted (tombstones).

:class:`NoDeletions` is the same interface doing nothing: deletions off (nothing is stored
then), or a dry run (nothing is written).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from currents_export.deletions.store import DeletionStore, braze_key

DELETE_REQUEST_TYPE = "users.UserDeleteRequest"
DELETION_REQUEST = "deletion_request"  # skip reason of the delete request records themselves
DELETED_USER = "deleted_user"  # skip reason of the events of a deleted user
PAIRS_WINDOW = 100_000  # pairs remembered in memory per run (twice this at most)
FLUSH_EVERY = 500  # new pairs written together


@dataclass
class DeletionCounts:
    requested: int = 0  # delete requests recorded by this run
    repeated: int = 0  # delete requests for a Braze id already recorded
    skipped_deleted_user: int = 0
    pairs_written: int = 0

    def to_json(self) -> dict[str, int]:
        return {"requested": self.requested, "repeated": self.repeated,
                "skipped_deleted_user": self.skipped_deleted_user}


class NoDeletions:
    """Deletions off (or a dry run): nothing is learned, recorded or skipped."""

    active = False
    counts: DeletionCounts | None = None

    def key(self, braze_id: str) -> str:
        return braze_id

    def is_deleted(self, key: str) -> bool:
        return False

    def observe(self, key: str, user_id: str) -> None:
        """Nothing to learn."""

    def skipped(self, key: str) -> None:
        """Nothing is skipped."""

    def request(self, key: str, requested_at: float) -> None:
        """Nothing to record."""

    def flush(self) -> None:
        """Nothing to write."""


@dataclass
class DeletionTracker:
    """Deletions on: the identity map grows, requests are recorded, tombstones hold.

    ``observe`` and ``request`` run on the reader thread; ``flush`` may run on any (the
    bookkeeper calls it before each checkpoint, so a checkpoint is never ahead of the
    pairs learned from the records it covers).
    """

    store: DeletionStore
    counts: DeletionCounts = field(default_factory=DeletionCounts)
    window: int = PAIRS_WINDOW
    active = True
    _deleted: set[str] = field(default_factory=set, init=False)
    _known: set[tuple[str, str]] = field(default_factory=set, init=False)
    _older: set[tuple[str, str]] = field(default_factory=set, init=False)
    _new: list[tuple[str, str]] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._deleted = {deletion.key for deletion in self.store.deletions()}

    def key(self, braze_id: str) -> str:
        return braze_key(braze_id)

    def is_deleted(self, key: str) -> bool:
        return key in self._deleted

    def observe(self, key: str, user_id: str) -> None:
        """``key`` was seen with ``user_id`` as sent ("" for none): stored once."""
        pair = (key, user_id)
        if pair in self._known or pair in self._older:
            return
        if len(self._known) >= self.window:  # two generations: memory stays bounded
            self._older, self._known = self._known, set()
        self._known.add(pair)
        with self._lock:
            self._new.append(pair)
            full = len(self._new) >= FLUSH_EVERY
        if full:
            self.flush()

    def skipped(self, key: str) -> None:
        """One event of a deleted user was skipped."""
        self.counts.skipped_deleted_user += 1

    def request(self, key: str, requested_at: float) -> None:
        """A delete request: recorded at once (idempotent), and a tombstone from now on."""
        self.flush()  # the pairs learned so far are stored before the request
        if self.store.request(key, requested_at):
            self.counts.requested += 1
        else:
            self.counts.repeated += 1
        self._deleted.add(key)

    def flush(self) -> None:
        with self._lock:
            pairs, self._new = self._new, []
            if not pairs:
                return
            try:
                self.store.remember(pairs)
            except BaseException:
                self._new[:0] = pairs  # kept for the next flush: a checkpoint waits for them
                raise
            self.counts.pairs_written += len(pairs)

    @property
    def remembered(self) -> int:
        """Pairs held in memory (at most twice ``window``)."""
        return len(self._known) + len(self._older)
