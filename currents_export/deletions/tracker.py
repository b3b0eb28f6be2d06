"""What runs do per record for deletions: learn which user ids each Braze id has had,
record delete requests, and skip the events of users already deleted (tombstones).

A :class:`DeletionTracker` lives as long as its store (a CLI process, a Lambda container):
its window of pairs already written spans runs, and each run refreshes its tombstones
with the deletions recorded since. :class:`NoDeletions` is the same interface doing
nothing: deletions off (nothing is stored then), or a dry run (nothing is written).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from currents_export.deletions.store import DeletionStore, braze_key

DELETE_REQUEST_TYPE = "users.UserDeleteRequest"
DELETION_REQUEST = "deletion_request"  # skip reason of the delete request records themselves
DELETED_USER = "deleted_user"  # skip reason of the events of a deleted user
PAIRS_WINDOW = 100_000  # pairs remembered in memory, as 64-bit hashes (twice this at most)
KEYS_REMEMBERED = 10_000  # Braze id → key, so that a recurring user is hashed once
FLUSH_EVERY = 500  # new pairs written together
_REFRESH_OVERLAP_S = 600.0  # clocks of other writers may lag: refresh a little further back


@dataclass
class DeletionCounts:
    """One run's figures (the summary's ``deletions``)."""

    requested: int = 0  # delete requests recorded by this run
    repeated: int = 0  # delete requests for a Braze id already recorded
    skipped_deleted_user: int = 0

    def to_json(self) -> dict[str, int]:
        return {"requested": self.requested, "repeated": self.repeated,
                "skipped_deleted_user": self.skipped_deleted_user}


class NoDeletions:
    """Deletions off (or a dry run): nothing is learned, recorded or skipped."""

    active = False

    def refresh(self) -> None:
        """No tombstones."""

    def key(self, braze_id: str) -> str:
        return braze_id

    def is_deleted(self, key: str) -> bool:
        return False

    def observe(self, key: str, user_id: str) -> None:
        """Nothing to learn."""

    def request(self, key: str, requested_at: float) -> bool:
        return False

    def flush(self) -> None:
        """Nothing to write."""


class DeletionTracker:
    """Deletions on: the identity map grows, requests are recorded, tombstones hold.

    ``observe`` and ``request`` run on the reader thread; ``flush`` may run on any (the
    object owner calls it before each checkpoint, so a checkpoint is never ahead of the
    pairs learned from the records it covers). Memory: the pairs window, and one key per
    deletion ever recorded (the tombstones).
    """

    active = True

    def __init__(self, store: DeletionStore, *, window: int = PAIRS_WINDOW,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.window = window
        self._clock = clock
        self._deleted: set[str] = set()
        self._refreshed_at: float | None = None
        # (key, user id) pairs written, by their hash: a pair is wrongly taken for written
        # only if its 64-bit hash equals another's in the window (about 1 in 10^13)
        self._known: set[int] = set()
        self._older: set[int] = set()
        self._new: list[tuple[str, str]] = []
        self._keys: dict[str, str] = {}  # Braze id → key, at most KEYS_REMEMBERED
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DeletionTracker({self.store!r})"

    def refresh(self) -> None:
        """Add the deletions recorded since the last refresh (all of them the first time)."""
        now = self._clock()
        since = 0.0 if self._refreshed_at is None else self._refreshed_at - _REFRESH_OVERLAP_S
        self._deleted |= self.store.deleted_keys(since)
        self._refreshed_at = now

    def key(self, braze_id: str) -> str:
        """``braze_key``, remembered: users recur, and this runs for every record."""
        key = self._keys.get(braze_id)
        if key is None:
            if len(self._keys) >= KEYS_REMEMBERED:
                self._keys.clear()
            key = self._keys[braze_id] = braze_key(braze_id)
        return key

    def is_deleted(self, key: str) -> bool:
        return key in self._deleted

    @property
    def remembered(self) -> int:
        """Pairs held in memory (at most twice ``window``)."""
        return len(self._known) + len(self._older)

    def observe(self, key: str, user_id: str) -> None:
        """``key`` was seen with ``user_id`` as sent ("" for none): written once."""
        pair = (key, user_id)
        digest = hash(pair)
        if digest in self._known or digest in self._older:
            return
        if len(self._known) >= self.window:  # two generations: memory stays bounded
            self._older, self._known = self._known, set()
        self._known.add(digest)
        with self._lock:
            self._new.append(pair)
            full = len(self._new) >= FLUSH_EVERY
        if full:
            self.flush()

    def request(self, key: str, requested_at: float) -> bool:
        """A delete request: recorded at once (idempotent; False when it was already), and
        a tombstone from now on."""
        self.flush()  # the pairs learned so far are stored before the request
        self._deleted.add(key)
        return self.store.request(key, requested_at)

    def flush(self) -> None:
        """Write the new pairs; a deleted user's pairs reopen their deletion (``submit``
        sends only ids not sent before)."""
        with self._lock:
            pairs, self._new = self._new, []
            if not pairs:
                return
            try:
                self.store.remember(pairs)
                again = {key for key, user_id in pairs if user_id and key in self._deleted}
                if again:
                    self.store.reopen(sorted(again))
            except BaseException:
                self._new[:0] = pairs  # kept for the next flush: a checkpoint waits for them
                raise
