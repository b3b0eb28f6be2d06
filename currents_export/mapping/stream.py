"""One object's records, decoded and mapped: the loop every reader of Currents files shares.

``mapped_records`` opens an Avro object (``currents.reader.open_records``), builds the
mapper for its event type and yields each record with what the mapping made of it. The
pipeline, ``inspect`` and the benchmark all read through it, so they map alike. It is the
hot path: one generator step and one tuple per record on top of fastavro and the mapper.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from currents_export.currents.reader import MAX_BLOCK_BYTES, RecordStream, open_records
from currents_export.errors import MAPPING_ERROR
from currents_export.mapping.mapper import (
    EventMapper,
    Mapped,
    MappingOptions,
    Rejected,
    Skipped,
    mapper_for,
)

__all__ = ["DUPLICATE", "Duplicate", "MappedRecords", "Outcome", "mapped_records"]


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A record the caller's ``repeated`` recognised (an at-least-once copy): not mapped."""

    reason: str = "duplicate"


DUPLICATE = Duplicate()

# What became of one record: an event, left out on purpose, refused (dead letter), a copy.
Outcome = Mapped | Skipped | Rejected | Duplicate


class MappedRecords:
    """The records of one object with their outcomes, and what its header says.

    Iterate once: ``(index, record, outcome)`` per record, ``index`` counting from the
    object's first record (records before ``start`` are read but not yielded). A record the
    mapper raises for is ``Rejected(MAPPING_ERROR, …)``: one bad record never ends the
    stream. What the reader raises (``IncompleteObject``, ``UnreadableObject``, I/O errors)
    ends it.
    """

    __slots__ = ("mapper", "repeated", "start", "stream")

    def __init__(
        self,
        stream: RecordStream,
        mapper: EventMapper,
        start: int = 0,
        repeated: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self.stream = stream
        self.mapper = mapper
        self.start = start
        self.repeated = repeated

    @property
    def event_type(self) -> str:
        """The Braze event type (from the schema; the key's when the schema has none)."""
        return self.stream.event_type

    @property
    def key_event_type(self) -> str | None:
        return self.stream.key_event_type

    @property
    def schema_event_type(self) -> str | None:
        return self.stream.schema_event_type

    @property
    def writer_schema(self) -> dict[str, Any]:
        return self.stream.writer_schema

    @property
    def codec(self) -> str:
        return self.stream.codec

    @property
    def float_fields(self) -> frozenset[str]:
        return self.stream.float_fields

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any], Outcome]]:
        start, repeated, map_record = self.start, self.repeated, self.mapper.map
        for index, record in enumerate(self.stream.records):
            if index < start:  # accounted for by an earlier attempt
                if repeated is not None:
                    repeated(record)  # its id still counts as seen
                continue
            if repeated is not None and repeated(record):
                yield index, record, DUPLICATE
                continue
            try:
                outcome: Outcome = map_record(record)
            except Exception as exc:  # a mapping bug or a drift it does not handle
                outcome = Rejected(MAPPING_ERROR, f"{type(exc).__name__}: {exc}",
                                   type(exc).__name__)
            yield index, record, outcome


def mapped_records(
    fileobj: IO[bytes],
    name: str,
    options: MappingOptions,
    key_event_type: str | None = None,
    *,
    start: int = 0,
    repeated: Callable[[dict[str, Any]], bool] | None = None,
    max_block_bytes: int = MAX_BLOCK_BYTES,
) -> MappedRecords:
    """Read the header of ``fileobj`` and return its records, mapped lazily under ``options``.

    ``name`` and ``key_event_type``: as for ``open_records``, whose errors it raises.
    ``start``: the first record to yield (a resumed object). ``repeated(record)`` sees every
    record in order, those before ``start`` too; one it answers True for is yielded as
    ``DUPLICATE``, unmapped.
    """
    stream = open_records(fileobj, name, key_event_type, max_block_bytes)
    mapper = mapper_for(stream.event_type, options, stream.float_fields, stream.writer_schema)
    return MappedRecords(stream, mapper, start, repeated)
