"""The ledger protocol: which objects are done, and how far an unfinished one got."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Resume:
    """Where an unfinished object stopped: records before ``next_index`` are all accounted
    for, with these figures (a summary Tally as JSON)."""

    next_index: int
    figures: dict[str, Any]


class Ledger(Protocol):
    """Durable record of objects processed.

    Progress inside an object is saved only for records already accounted for, after the
    dead letter is flushed; an object is marked done only after all its records are.
    """

    def is_done(self, object_id: str) -> bool: ...

    def begin(self, object_id: str, *, restart: bool = False) -> Resume | None:
        """Mark in progress; return where a previous attempt stopped (None: from the start)."""
        ...

    def save_progress(self, object_id: str, next_index: int, figures: dict[str, Any]) -> None:
        ...

    def complete(self, object_id: str, figures: dict[str, Any]) -> None: ...

    def fail(self, object_id: str, error: str) -> None: ...

    def close(self) -> None: ...


class LeaseError(Exception):
    """The ledger says another worker owns the object (or took it over): leave it alone."""


class LeaseHeld(LeaseError):
    """Another worker holds a live lease on the object; it will be retried later."""

    def __init__(self, object_id: str, owner: str, until: float) -> None:
        self.object_id, self.owner, self.until = object_id, owner, until
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(until))
        super().__init__(
            f"{object_id} is being processed elsewhere (by {owner}, lease until {when} UTC); "
            "it will be retried"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.object_id, self.owner, self.until)


class LeaseLost(LeaseError):
    """Another worker took the object over; this worker must stop writing to it."""

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        super().__init__(
            f"{object_id}: another worker took this object over; this attempt stops writing"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.object_id,)


class AlreadyDone(LeaseError):
    """A claim found the object done (another worker finished it in the meantime)."""

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        super().__init__(f"{object_id} was already completed by another worker; nothing to do")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.object_id,)


class LedgerConfigError(ValueError):
    """The --state URI (or the ledger it names) cannot be used."""
