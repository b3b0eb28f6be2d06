"""The ledger protocol: which objects are done, and how far an unfinished one got."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Resume:
    """Where an unfinished object stopped: records before ``next_index`` are all accounted
    for, with these figures (a summary Tally as JSON)."""

    next_index: int
    figures: dict[str, Any]


IN_PROGRESS, DONE, FAILED = "in_progress", "done", "failed"


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a ledger's objects were delivered: the Amplitude host (``scheme://host[:port]``
    of the upload URL) and a fingerprint of the API key (``ledger.destination``), never the
    key. Two destinations are the same when host and fingerprint are; when and from what it
    was bound are only shown."""

    host: str
    key_fingerprint: str
    bound_at: float | None = field(default=None, compare=False)
    previous: str | None = field(default=None, compare=False)  # what a rebind replaced
    # The ledger recorded progress while bound (an object done, a checkpoint with events
    # delivered: ``records_delivery``). Until then the binding is only its run's: when that
    # run ends without recording any (a wrong key, a host that does not answer), closing its
    # ledger releases the binding.
    recorded: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        return f"{self.host} (API key fingerprint {self.key_fingerprint})"

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "key_fingerprint": self.key_fingerprint,
                "bound_at": self.bound_at, "previous": self.previous,
                "recorded": self.recorded}


@dataclass(frozen=True, slots=True)
class ObjectState:
    """One object as the ledger knows it."""

    object_id: str
    status: str  # "in_progress" | "done" | "failed"
    permanent: bool  # failed, and retrying cannot help
    error: str | None
    location: str | None  # path/URI it was last processed from
    attempts: int
    next_index: int
    started_at: float | None
    updated_at: float
    finished_at: float | None  # when it was marked done (or failed)

    @property
    def done(self) -> bool:
        return self.status == DONE


def records_delivery(figures: dict[str, Any]) -> bool:
    """Whether a checkpoint with these figures records events delivered (one that only
    skipped records says nothing of where events went)."""
    delivered = figures.get("delivered")
    return isinstance(delivered, int) and delivered > 0


class Ledger(Protocol):
    """Durable record of objects processed, keyed by what an object is (its identity).

    Invariant: progress is saved only for records accounted for, after the dead letter is
    flushed; an object is done only once all its records are. ``begin`` claims a lease
    (``AlreadyDone`` unless restarted, ``LeaseHeld`` while another owner's is live),
    ``save_progress`` renews it, and every write is fenced on the owner (``LeaseLost``).
    ``legacy_id``: the old path or URI key, whose row stands in when ``object_id`` has none
    (``begin`` moves its unfinished progress over).
    """

    def state(self, object_id: str, *, legacy_id: str | None = None) -> ObjectState | None:
        """The row for ``object_id``; if none, the row under ``legacy_id``; else None."""
        ...

    def is_done(self, object_id: str, *, legacy_id: str | None = None) -> bool: ...

    def begin(
        self,
        object_id: str,
        *,
        location: str | None = None,
        legacy_id: str | None = None,
        restart: bool = False,
    ) -> Resume | None:
        """Mark in progress (from ``location``); return where a previous attempt stopped
        (None: from the start). Clears a previous failure, permanent or not."""
        ...

    def save_progress(self, object_id: str, next_index: int, figures: dict[str, Any]) -> None:
        ...

    def complete(self, object_id: str, figures: dict[str, Any]) -> None: ...

    def fail(self, object_id: str, error: str, *, permanent: bool = False) -> None:
        """Mark failed; ``permanent``: retrying cannot help (later runs skip it)."""
        ...

    def reading(self, object_id: str, index: int | None) -> None:
        """Mark that the object is being decoded from record ``index`` (None: it no longer
        is: its reading ended, however). A claim that finds the mark of an owner that ended
        with no checkpoint past ``index`` counts a death; at ``MAX_READ_DEATHS`` the claim
        fails the object permanently and raises ``DiedReading``."""
        ...

    def release(self, object_id: str, owner: str) -> bool:
        """Free the lease ``owner`` (known to be dead: a worker process that died) holds on
        the object, so another owner claims it at once; True when it held it."""
        ...

    def objects(self) -> Iterator[ObjectState]:
        """Every object in the ledger (objects moved to a new id are listed once)."""
        ...

    def destination(self) -> Destination | None:
        """The destination the ledger is bound to; None: not bound yet (a new ledger, or one
        from before destinations were recorded)."""
        ...

    def bind_destination(
        self, destination: Destination, *, replacing: Destination | None
    ) -> Destination | None:
        """Bind the ledger to ``destination`` if it is bound to ``replacing`` (None: to
        nothing), in one atomic step; return the binding in force afterwards (another
        run's, when it bound the ledger first)."""
        ...

    def close(self) -> None: ...


MAX_READ_DEATHS = 3  # deaths while decoding an object, without progress, before it fails


def read_deaths(marked_from: int, deaths: int, next_index: int) -> int:
    """The deaths counted once a claim finds the mark ``marked_from`` (-1: none) left by an
    owner that ended: one more when no checkpoint went past it, none when one did."""
    if marked_from < 0:
        return deaths
    return deaths + 1 if next_index <= marked_from else 0


def died_reading(object_id: str, deaths: int, index: int) -> str:
    return (f"{object_id}: the process ended {deaths} times while decoding it, never past "
            f"record {index} (it may crash the decoder); failed permanently: see "
            "`currents-export status`, `--retry-failed` tries it again")
