"""The ledger of a run that keeps none: a dry run (which must not record anything), a test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from currents_export.ledger.base import Destination, ObjectState, Resume

__all__ = ["NoLedger"]


class NoLedger:
    """A ``Ledger`` that knows no object and records nothing: no object is ever done or
    failed, every object starts from its first record, and no lease is held."""

    def __repr__(self) -> str:
        return "NoLedger()"

    def state(self, object_id: str, *, legacy_id: str | None = None) -> ObjectState | None:
        return None

    def is_done(self, object_id: str, *, legacy_id: str | None = None) -> bool:
        return False

    def begin(
        self,
        object_id: str,
        *,
        location: str | None = None,
        legacy_id: str | None = None,
        restart: bool = False,
    ) -> Resume | None:
        return None

    def save_progress(self, object_id: str, next_index: int, figures: dict[str, Any]) -> None:
        pass

    def complete(self, object_id: str, figures: dict[str, Any]) -> None:
        pass

    def fail(self, object_id: str, error: str, *, permanent: bool = False) -> None:
        pass

    def reading(self, object_id: str, index: int | None) -> None:
        return None

    def release(self, object_id: str, owner: str) -> bool:
        return False

    def objects(self) -> Iterator[ObjectState]:
        return iter(())

    def destination(self) -> Destination | None:
        return None

    def bind_destination(
        self, destination: Destination, *, replacing: Destination | None
    ) -> Destination | None:
        return destination  # nothing is recorded, so nothing can have gone elsewhere

    def close(self) -> None:
        pass
