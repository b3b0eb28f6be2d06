"""What the pipeline needs to know about an object, whatever its origin."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO

from currents_export.currents.keys import NotACurrentsKey, parse_key


class SourceError(ValueError):
    """A path or URI given by the user cannot be read as a source of objects."""


@dataclass(frozen=True, slots=True)
class SourceObject:
    """One Avro file to process.

    ``uri`` identifies the object in the ledger, logs and dead letter; ``key`` is the part
    that carries Braze's layout (``…/event_type=…/date=…/…avro``).
    """

    uri: str
    key: str
    size: int | None
    opener: Callable[[], AbstractContextManager[IO[bytes]]]

    def open(self) -> AbstractContextManager[IO[bytes]]:
        return self.opener()

    @property
    def key_event_type(self) -> str | None:
        try:
            return parse_key(self.key).event_type
        except NotACurrentsKey:
            return None
