"""Pack serialised events into upload requests under Amplitude's count and byte limits.

Pure logic. Each event is serialised once (orjson) and its byte length is known; a request
body is the envelope plus the events joined by commas, so its size is computed by addition,
never by serialising again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson

from currents_export.amplitude.api import RequestLimits
from currents_export.errors import EventTooLarge

Ref = TypeVar("Ref")


@dataclass(slots=True, eq=False)
class PendingEvent(Generic[Ref]):
    """One serialised event, its user/device ids, and what the caller needs to account for it.

    ``position``: its place among the events handed to its lane (set by the lanes, which
    free an id once every event of the lane up to its latest one is answered for).
    ``held_since`` is set while the event waits out a 429 for one of its ids.
    """

    payload: bytes
    ref: Ref
    ids: tuple[str, ...] = ()
    held_since: float | None = None
    position: int = 0


@dataclass(frozen=True, slots=True, repr=False)
class Envelope:
    """The JSON around the events: ``{"api_key":…,"events":[`` … ``],"options":{…}}``.

    ``head`` holds the API key: the repr shows neither it nor the head.
    """

    head: bytes
    tail: bytes

    def __repr__(self) -> str:
        return f"Envelope(api_key=<hidden>, overhead={self.overhead}, tail={self.tail!r})"

    @classmethod
    def build(cls, api_key: str, options: dict[str, Any] | None = None) -> Envelope:
        head = b'{"api_key":' + orjson.dumps(api_key) + b',"events":['
        tail = b"]"
        if options:
            tail += b',"options":' + orjson.dumps(options)
        return cls(head, tail + b"}")

    @property
    def overhead(self) -> int:
        return len(self.head) + len(self.tail)

    def body(self, events: list[PendingEvent[Any]]) -> bytes:
        return self.head + b",".join(event.payload for event in events) + self.tail

    def body_size(self, events: list[PendingEvent[Any]]) -> int:
        return self.overhead + sum(len(e.payload) for e in events) + max(len(events) - 1, 0)


@dataclass(slots=True)
class RequestPacker(Generic[Ref]):
    """Accumulates events and hands out full requests.

    ``add`` returns the request that had to be closed to make room (or None); ``flush``
    returns what is left. No request ever exceeds ``limits``. ``opened_at`` is the clock
    time of the first event of the open request (for a linger), 0.0 when it is empty.
    """

    limits: RequestLimits
    envelope_overhead: int
    clock: Callable[[], float] = time.monotonic
    _events: list[PendingEvent[Ref]] = field(default_factory=list)
    _size: int = 0
    opened_at: float = 0.0

    def __post_init__(self) -> None:
        self._size = self.envelope_overhead

    def add(self, event: PendingEvent[Ref]) -> list[PendingEvent[Ref]] | None:
        too_large = self.too_large(event)
        if too_large is not None:
            raise too_large
        closed = None
        separator = 1 if self._events else 0
        if self._events and (
            len(self._events) >= self.limits.max_events
            or self._size + separator + len(event.payload) > self.limits.max_body_bytes
        ):
            closed = self.flush()
            separator = 0
        if not self._events:
            self.opened_at = self.clock()
        self._events.append(event)
        self._size += separator + len(event.payload)
        return closed

    def extend(self, events: list[PendingEvent[Ref]]) -> list[list[PendingEvent[Ref]]]:
        """``add`` each of ``events`` (none may be over the limit: see ``too_large``);
        the requests that had to be closed to make room, in order."""
        closed: list[list[PendingEvent[Ref]]] = []
        held = self._events
        size = self._size
        max_events, max_bytes = self.limits.max_events, self.limits.max_body_bytes
        if not held and events:
            self.opened_at = self.clock()
        for event in events:
            length = len(event.payload)
            if held and (len(held) >= max_events or size + 1 + length > max_bytes):
                closed.append(held)
                held = []
                size = self.envelope_overhead
                self.opened_at = self.clock()
            elif held:
                size += 1  # the comma
            held.append(event)
            size += length
        self._events, self._size = held, size
        return closed

    def too_large(self, event: PendingEvent[Ref]) -> EventTooLarge | None:
        """Why ``event`` cannot go in any request, if it cannot."""
        if self.envelope_overhead + len(event.payload) > self.limits.max_body_bytes:
            return EventTooLarge(
                f"event of {len(event.payload)} bytes exceeds the request limit of "
                f"{self.limits.max_body_bytes} bytes"
            )
        return None

    def flush(self) -> list[PendingEvent[Ref]] | None:
        if not self._events:
            return None
        events, self._events = self._events, []
        self._size = self.envelope_overhead
        self.opened_at = 0.0
        return events

    def __len__(self) -> int:
        return len(self._events)


def pack_all(
    events: list[PendingEvent[Ref]], limits: RequestLimits, envelope_overhead: int
) -> Iterator[list[PendingEvent[Ref]]]:
    """Pack a finite list of events into requests (for tests and re-sends)."""
    packer: RequestPacker[Ref] = RequestPacker(limits, envelope_overhead)
    for event in events:
        closed = packer.add(event)
        if closed:
            yield closed
    rest = packer.flush()
    if rest:
        yield rest
