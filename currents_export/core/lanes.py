"""Concurrent delivery in lanes: several requests in flight, per-id order kept.

While a lane holds unresolved events of a user or device id, later events of that id join
the same lane, and a lane sends one request at a time: each id's events reach Amplitude in
record order, retries included. Throttled ids (429) are held for the pause Amplitude asks
while the others flow. A request closes when full, or after ``linger_s`` with nothing else
to send. Every event submitted is reported to the :class:`Sink` exactly once; only an error
that ends the run (``errors.ends_run``) stops the lanes.

The reader hands events over in batches (``submit_many``): one lock and one queue hand-off
per lane and batch, not per event. An id's lane is remembered as the place of its latest
event in that lane; each lane publishes how far its events are all answered for, so an id
is free again without any message per event.

    lanes = Lanes(client, REQUEST_LIMITS["http"], lanes=4, sink=sink, horizon_s=900)
    lanes.submit_many([PendingEvent(payload, ref, ids=("user-1",))])
    lanes.drain(); lanes.close()
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, Protocol, TypeVar

from currents_export.amplitude.api import RequestLimits
from currents_export.amplitude.batching import PendingEvent, RequestPacker, pack_all
from currents_export.amplitude.client import AmplitudeClient, SendOutcome
from currents_export.errors import DeliveryFailed, SendError, SendInterrupted, ends_run
from currents_export.stopping import Stop

log = logging.getLogger(__name__)

Ref = TypeVar("Ref")


class Sink(Protocol[Ref]):
    """Where an outbox reports what became of each event (called from lane threads)."""

    def delivered(self, refs: list[Ref], repeats_dropped: int = 0) -> None:
        """Amplitude acknowledged these events (one send's). ``repeats_dropped``: how many
        of them Amplitude said it did not ingest, taken for ``insert_id`` repeats it already
        had (delivered all the same; it says how many, not which). The lanes pass it only
        when it is not 0."""

    def rejected(self, refused: list[tuple[Ref, str, str]]) -> None:
        """Amplitude refused these events for good: (ref, reason, detail) each."""

    def abandoned(self, refs: list[Ref], error: BaseException) -> None:
        """A failure left these events unanswered: they stay pending."""

    def skipped(self, refs: list[Ref], reason: str) -> None:
        """Not sent on purpose (a dry run)."""


class Outbox(Protocol[Ref]):
    """Where the reader hands events: :class:`Lanes` (sent to Amplitude) or a dry run's
    (``core.dryrun``: nothing sent). Each submitted event is reported once to the outbox's
    sink; ``submit`` is called from one thread."""

    def submit_many(self, events: list[PendingEvent[Ref]]) -> list[PendingEvent[Ref]]:
        """Take ``events`` in order; returns those too large for any request (not taken:
        the caller answers for them). Every other event is reported to the sink once, also
        when this raises (a stop, the lanes failed): those it could not queue as
        abandoned."""

    def submit(self, event: PendingEvent[Ref]) -> None:
        """``submit_many`` of one event; raises ``EventTooLarge`` for one too large."""

    @property
    def failed(self) -> BaseException | None: ...

    def drain(self) -> None: ...

    def flush(self) -> None:
        """Hand over what is held back (the reader is about to wait)."""

    def close(self) -> None: ...

    def take_stats(self) -> SendStats: ...


class SendStats(NamedTuple):
    """What sending did since the last ``take_stats``: requests made, retries among them,
    and the events Amplitude acknowledged without ingesting (repeats it dropped, delivered
    all the same; see ``SendOutcome.repeats_dropped``)."""

    requests: int = 0
    retries: int = 0
    repeats_dropped: int = 0


@dataclass
class _Drain:
    done: threading.Event = field(default_factory=threading.Event)


_STOP = object()
_STOP_GRACE_S = 3.0  # after a stop, how long drain/close wait for a request in flight
# A lane holding this many throttled events takes no new work until some are sent: the
# reader waits (back-pressure) instead of memory growing with a throttled user's events.
MAX_HELD_EVENTS = 20_000
DEFAULT_LANES = 8  # requests in flight at once
# Events per request (Amplitude allows 2,000): peak memory follows the events in flight,
# lanes x (sent + queued + filling) x this; README, Performance, says what 2,000 costs.
EVENTS_PER_REQUEST = 500
DEFAULT_LINGER_S = 0.05  # how long an idle lane waits for its open request to fill
_PRUNE_AT_LEAST = 65_536  # ids remembered before the reader forgets those freed


class _Shared(Generic[Ref]):
    """What the reader's side (:class:`Lanes`) and every lane thread share: the client, the
    sink, the first error that stopped the lanes, how far each lane has answered for its
    events, and the counts."""

    def __init__(self, client: AmplitudeClient, limits: RequestLimits, sink: Sink[Ref],
                 horizon_s: float, clock: Callable[[], float], stop_on_failure: bool,
                 lanes: int) -> None:
        self.client = client
        self.stop_on_failure = stop_on_failure
        self.limits = limits
        self.sink = sink
        self.horizon_s = horizon_s
        self.clock = clock
        self.stop: Stop = client.stop  # a deadline or a signal: checked before every request
        self.overhead = client.envelope.overhead
        self.error: BaseException | None = None
        self.closed = threading.Event()
        # Per lane, the position up to which every event handed to it is answered for
        # (delivered, rejected or abandoned): written by that lane's thread alone, read by
        # the reader to know which ids are free. ``progressed`` wakes a reader waiting.
        self.answered_through = [0] * lanes
        self.progressed = threading.Event()
        self._stats_lock = threading.Lock()
        self.repeats_dropped = 0

    def count(self, repeats_dropped: int) -> None:
        if repeats_dropped:
            with self._stats_lock:
                self.repeats_dropped += repeats_dropped

    def take_stats(self) -> SendStats:
        """Requests and retries as the client counts them, each when it is sent: a send
        that fails, or that a stop leaves behind in flight, counts every attempt it made."""
        requests, retries = self.client.take_attempts()
        with self._stats_lock:
            repeats, self.repeats_dropped = self.repeats_dropped, 0
        return SendStats(requests, retries, repeats)

    def answered(self, lane: int, through: int) -> None:
        """Lane ``lane`` has answered for each of its events up to position ``through``."""
        if self.answered_through[lane] != through:
            self.answered_through[lane] = through
            self.progressed.set()

    def fail(self, error: BaseException) -> None:
        """Stop the lanes: ``drain`` raises ``error``; later events are abandoned."""
        if self.error is None:
            self.error = error
        self.progressed.set()  # wake a reader waiting for an id's lane

    def report(self, delivered: list[PendingEvent[Ref]],
               rejected: list[tuple[PendingEvent[Ref], str, str]],
               repeats_dropped: int = 0) -> None:
        """Tell the sink (the lane frees their ids once the step ends, even when it fails:
        else a later event sharing them would wait for their lane forever)."""
        try:
            if delivered:
                refs = [event.ref for event in delivered]
                if repeats_dropped:
                    self.sink.delivered(refs, repeats_dropped=repeats_dropped)
                else:  # the usual case: sinks that never meet a shortfall need not know it
                    self.sink.delivered(refs)
        finally:
            if rejected:
                self.sink.rejected([(event.ref, reason, detail)
                                    for event, reason, detail in rejected])

    def abandon(self, events: list[PendingEvent[Ref]], error: BaseException) -> None:
        """Leave events unresolved (pending) and hand them back to the sink."""
        if events:
            self.sink.abandoned([event.ref for event in events], error)

    def give_up(self, events: list[PendingEvent[Ref]], error: BaseException) -> None:
        """``events`` failed with ``error``; the lanes stop when it ends the run (or on any
        failure, with ``stop_on_failure``)."""
        self.abandon(events, error)
        if self.stop_on_failure or ends_run(error):
            self.fail(error)


class Lanes(Generic[Ref]):
    """Routes events to lanes; each is reported to ``sink`` as delivered, rejected or
    abandoned.

    ``submit_many`` is called from one thread (the reader). ``drain`` returns when every
    submitted event is reported, or raises the error that stopped the lanes (its events
    stay pending) and forgets it. ``stop_on_failure``: any failure stops the lanes, not
    only one that ends the run (a redrive fails a dead-letter file as a whole).
    """

    def __init__(
        self,
        client: AmplitudeClient,
        limits: RequestLimits,
        *,
        lanes: int,
        sink: Sink[Ref],
        horizon_s: float,
        queue_depth: int = 1,
        linger_s: float = DEFAULT_LINGER_S,
        clock: Callable[[], float] = time.monotonic,
        stop_on_failure: bool = False,
    ) -> None:
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        self._shared = shared = _Shared(client, limits, sink, horizon_s, clock,
                                        stop_on_failure, lanes)
        self._stop = shared.stop
        self._linger_s = linger_s
        # The reader's alone (no lock): each id's latest event as ``position << bits |
        # lane``. The id belongs to that lane while the lane has not answered for that
        # position (``shared.answered_through``); stale entries are pruned in bulk.
        self._owners: dict[str, int] = {}
        self._lane_bits = max(1, (lanes - 1).bit_length())
        self._lane_mask = (1 << self._lane_bits) - 1
        self._positions = [0] * lanes  # events handed to each lane so far
        self._prune_at = _PRUNE_AT_LEAST
        self._stop_waiting_after: float | None = None  # set once a stop is requested
        self._next_anonymous = 0
        self._packers = [RequestPacker[Ref](limits, shared.overhead, clock)
                         for _ in range(lanes)]
        self._max_event_bytes = limits.max_body_bytes - shared.overhead
        # Held while a lane's packer is filled or emptied into its queue: keeps the order of
        # requests when the linger thread closes one while the reader adds to it.
        self._packing = [threading.Lock() for _ in range(lanes)]
        self._lanes = [_Lane(shared, index, queue_depth) for index in range(lanes)]
        for lane in self._lanes:
            lane.start()
        self._linger = threading.Thread(target=self._linger_loop, name="amplitude-linger",
                                        daemon=True)
        self._linger.start()

    # ---- reader side ----------------------------------------------------------------------

    def submit(self, event: PendingEvent[Ref]) -> None:
        """``submit_many`` of one event; raises ``EventTooLarge`` (not taken) for one too
        large for any request."""
        for too_large in self.submit_many([event]):
            error = self._packers[0].too_large(too_large)
            assert error is not None
            raise error

    def submit_many(self, events: list[PendingEvent[Ref]]) -> list[PendingEvent[Ref]]:
        """Take ``events`` in order (blocks while a lane is busy: memory stays bounded).

        Returns the events too large for any request: not taken, the caller answers for
        them. Every other event is reported to the sink exactly once, also when this raises
        (a stop, or the lanes failed): those not queued by then are reported abandoned.
        """
        limit = self._max_event_bytes
        too_large = [event for event in events if len(event.payload) > limit]
        if too_large:
            events = [event for event in events if len(event.payload) <= limit]
        batches: list[list[PendingEvent[Ref]]] = [[] for _ in self._lanes]
        owners, answered = self._owners, self._shared.answered_through
        bits, mask = self._lane_bits, self._lane_mask
        positions, lane_count = self._positions, len(self._lanes)
        taken = 0
        try:
            self._raise_if_failed()
            for event in events:
                ids = event.ids
                lane = -1
                for identifier in ids:
                    entry = owners.get(identifier)
                    if entry is not None and entry >> bits > answered[entry & mask]:
                        if lane < 0:
                            lane = entry & mask
                        elif lane != entry & mask:  # its user and device in two lanes
                            self._queue(batches)
                            lane = self._wait_for_one_lane(ids)
                            break
                if lane < 0:
                    if ids:
                        lane = zlib.crc32(ids[0].encode()) % lane_count
                    else:
                        lane = self._next_anonymous % lane_count
                        self._next_anonymous += 1
                position = positions[lane] = positions[lane] + 1
                event.position = position
                entry = position << bits | lane
                for identifier in ids:
                    owners[identifier] = entry
                batches[lane].append(event)
                taken += 1
            self._queue(batches)
        except BaseException as exc:
            unqueued = [event for batch in batches for event in batch] + events[taken:]
            self._shared.abandon(unqueued, exc)
            raise
        if len(owners) >= self._prune_at:
            self._prune()
        return too_large

    def _queue(self, batches: list[list[PendingEvent[Ref]]]) -> None:
        """Add each lane's batch to its open request and queue the requests that fill;
        empties ``batches``. After a stop, what could not be queued is abandoned."""
        for lane, batch in enumerate(batches):
            if not batch:
                continue
            batches[lane] = []
            with self._packing[lane]:
                packer = self._packers[lane]
                closed = packer.extend(batch)
                for n, request in enumerate(closed):
                    try:
                        self._put(lane, request)
                    except BaseException as exc:  # a stop: _put abandoned this request
                        rest = [e for later in closed[n + 1:] for e in later]
                        self._shared.abandon(rest + (packer.flush() or []), exc)
                        raise  # the other lanes' batches: abandoned by the caller

    def _wait_for_one_lane(self, ids: tuple[str, ...]) -> int:
        """The user's and the device's events sit in two lanes: send what those lanes
        have packed and wait until one of them lets go; the lane the event joins (-1: any)."""
        progressed = self._shared.progressed
        while True:
            live = self._lanes_holding(ids)
            if len(live) < 2:
                return live.pop() if live else -1
            for lane in sorted(live):
                self._send_open(lane)
            progressed.clear()
            if len(self._lanes_holding(ids)) == 2:  # else one let go meanwhile
                progressed.wait(0.5)
            self._raise_if_failed()
            if self._stop.requested:
                raise self._stop.interrupted()

    def _lanes_holding(self, ids: tuple[str, ...]) -> set[int]:
        """The lanes that have not answered yet for the latest event of any of ``ids``."""
        answered = self._shared.answered_through
        bits, mask = self._lane_bits, self._lane_mask
        entries = (self._owners.get(identifier) for identifier in ids)
        return {entry & mask for entry in entries
                if entry is not None and entry >> bits > answered[entry & mask]}

    def _prune(self) -> None:
        """Forget the ids whose lanes have answered for their latest event."""
        answered = self._shared.answered_through
        bits, mask = self._lane_bits, self._lane_mask
        self._owners = {identifier: entry for identifier, entry in self._owners.items()
                        if entry >> bits > answered[entry & mask]}
        self._prune_at = max(_PRUNE_AT_LEAST, 2 * len(self._owners))

    def _send_open(self, lane: int) -> None:
        """Close the lane's open request and queue it."""
        with self._packing[lane]:
            rest = self._packers[lane].flush()
            if rest:
                self._put(lane, rest)

    def flush(self) -> None:
        """Queue every lane's open request now (the linger would, a moment later). After a
        stop, what cannot be queued is abandoned (pending), never raised."""
        for lane in self._lanes:
            try:
                self._send_open(lane.index)
            except SendInterrupted:
                return

    def _linger_loop(self) -> None:
        """Close open requests of idle lanes once they have waited ``linger_s``."""
        tick = max(self._linger_s / 2, 0.005)
        clock = self._shared.clock
        while not self._shared.closed.wait(tick):
            now = clock()
            for lane, packer in zip(self._lanes, self._packers, strict=True):
                if (not packer.opened_at or now - packer.opened_at < self._linger_s
                        or lane.busy or not lane.queue.empty()):
                    continue
                packing = self._packing[lane.index]
                if not packing.acquire(blocking=False):  # the reader is adding: next tick
                    continue
                try:
                    rest = packer.flush()
                    if rest:
                        self._put(lane.index, rest)
                except Exception:  # a stop: what was open is abandoned by _put
                    pass
                finally:
                    packing.release()

    def drain(self) -> None:
        for lane in self._lanes:
            self._send_open(lane.index)
        markers = [_Drain() for _ in self._lanes]
        for lane, marker in zip(self._lanes, markers, strict=True):
            self._put(lane.index, marker)
        for marker in markers:
            self._wait(marker.done)
        error, self._shared.error = self._shared.error, None
        if error is not None:
            raise error

    def _put(self, lane: int, item: object) -> None:
        """Queue work for a lane, waiting while it is busy — but not past a stop (a lane
        stuck in a request must not hold the reader: its events stay pending)."""
        target = self._lanes[lane].queue
        while True:
            try:
                target.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._stop.requested:
                    error = self._stop.interrupted()
                    if isinstance(item, list):
                        self._shared.abandon(item, error)
                    raise error from None

    def _wait(self, done: threading.Event) -> None:
        """Wait for a lane; once the run is stopping, only a short grace for a request in
        flight (its events stay unresolved, so pending: nothing is lost)."""
        while not done.wait(0.2):
            if not self._stop.requested:
                continue
            if self._stop_waiting_after is None:
                self._stop_waiting_after = time.monotonic() + _STOP_GRACE_S
            if time.monotonic() >= self._stop_waiting_after:
                self._shared.fail(self._stop.interrupted())
                return

    @property
    def failed(self) -> BaseException | None:
        """The error that stopped the lanes, if one did."""
        return self._shared.error

    def take_stats(self) -> SendStats:
        """Requests, retries and repeats Amplitude dropped, since the last call."""
        return self._shared.take_stats()

    def close(self) -> None:
        self._shared.closed.set()
        self._linger.join(timeout=1.0)
        for lane in self._lanes:
            # A lane stuck in a request while stopping is left behind (a daemon thread).
            with contextlib.suppress(queue.Full):
                lane.queue.put(_STOP, timeout=None if not self._stop.requested else 0.1)
        for lane in self._lanes:
            lane.join(timeout=None if not self._stop.requested else _STOP_GRACE_S)

    def _raise_if_failed(self) -> None:
        if self._shared.error is not None:
            raise self._shared.error


class _Lane(threading.Thread, Generic[Ref]):
    """Sends one lane's requests one at a time and holds throttled ids' events."""

    def __init__(self, shared: _Shared[Ref], index: int, depth: int) -> None:
        super().__init__(name=f"amplitude-lane-{index}", daemon=True)
        self.index = index
        self.shared = shared
        self.queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.held: list[PendingEvent[Ref]] = []
        self.paused: dict[str, float] = {}  # id → clock time when it may be sent again
        # A throttled id is re-sent a few events at a time, one batch per pause: ``budget``
        # halves when Amplitude throttles the id again and doubles when a batch gets through.
        self.budget: dict[str, int] = {}
        self.pace: dict[str, float] = {}  # id → the pause Amplitude asked for
        self.progressed_at = 0.0  # when a held event last got through
        self.busy = False  # sending: a hint for the linger thread (a stale read only delays)
        self.taken_through = 0  # the position of the last event taken from the queue

    def run(self) -> None:
        while True:
            try:
                if not self._step():
                    return
            except Exception as exc:  # a bug or a failing sink: never leave drain()
                log.exception("lane %s failed", self.name)  # or the reader waiting
                self.shared.fail(exc)  # the run ends (Lanes.failed); what is unanswered
                self.held = []  # stays pending
            finally:
                self.busy = False
                self._publish_answered()

    def _publish_answered(self) -> None:
        """Tell the reader how far this lane's events are all answered for: up to the
        earliest held one, else up to the last taken (sent ones are answered once their
        step ends). Their ids are then free to go to any lane."""
        held = self.held
        through = min(event.position for event in held) - 1 if held else self.taken_through
        self.shared.answered(self.index, through)

    def _step(self) -> bool:
        """Handle what is due and one queued item; False once the lane is to stop."""
        self._release_ready()
        self._publish_answered()
        if len(self.held) >= MAX_HELD_EVENTS:
            self.shared.stop.sleep(self._next_wake() or 0.01)
            return True
        try:
            item = self.queue.get(timeout=self._next_wake() or 0.5)
        except queue.Empty:
            return not self.shared.closed.is_set()  # closed while the queue was full
        if item is _STOP:
            return False
        if isinstance(item, _Drain):
            try:
                self._wait_out_held()
            finally:
                item.done.set()
            return True
        assert isinstance(item, list)
        self.busy = True
        self.taken_through = item[-1].position
        self._send_or_hold(item)
        return True

    def _next_wake(self) -> float | None:
        if not self.held:
            return None
        now = self.shared.clock()
        wake = min(self.paused.values(), default=now)
        return max(0.01, min(wake - now, 1.0))

    def _wait_out_held(self) -> None:
        stop = self.shared.stop
        while self.held:
            if stop.stopped:
                self._give_up([], stop.interrupted())
                return
            self._release_ready()
            self._publish_answered()
            if self.held:
                stop.sleep(self._next_wake() or 0.01)

    def _blocked(self, event: PendingEvent[Ref], now: float, held_ids: set[str]) -> bool:
        return any(
            self.paused.get(identifier, 0.0) > now or identifier in held_ids
            for identifier in event.ids
        )

    def _send_or_hold(self, request: list[PendingEvent[Ref]]) -> None:
        if self.shared.error is not None:
            self.shared.abandon(request, self.shared.error)
            return
        if not self.held and not self.paused:  # nothing throttled: the usual case
            self._send(request)
            return
        now = self.shared.clock()
        held_ids = {i for event in self.held for i in event.ids}
        ready = []
        for event in request:
            if self._blocked(event, now, held_ids):
                self.held.append(event)
                held_ids.update(event.ids)
            else:
                ready.append(event)
        if ready:
            self._send(ready)

    def _release_ready(self) -> None:
        """Send held events whose ids are no longer paused, keeping per-id order."""
        if not self.held:
            return
        shared = self.shared
        if shared.error is not None:
            held, self.held = self.held, []
            shared.abandon(held, shared.error)
            return
        now = shared.clock()
        horizon = shared.horizon_s
        oldest = min((e.held_since for e in self.held if e.held_since is not None),
                     default=now)
        if now - max(oldest, self.progressed_at) > horizon:
            self._give_up([], DeliveryFailed(
                f"Amplitude throttled some users/devices for over {horizon:.0f}s without "
                "letting any of their events through; the objects stay pending for the "
                "next run"
            ))
            return
        still: list[PendingEvent[Ref]] = []
        still_ids: set[str] = set()
        ready: list[PendingEvent[Ref]] = []
        budget = self.budget
        released: dict[str, int] = {}
        for event in self.held:
            if self._blocked(event, now, still_ids) or any(
                    released.get(i, 0) >= budget.get(i, MAX_HELD_EVENTS) for i in event.ids):
                still.append(event)
                still_ids.update(event.ids)
            else:
                ready.append(event)
                for identifier in event.ids:
                    released[identifier] = released.get(identifier, 0) + 1
        self.held = still
        self.paused = {i: t for i, t in self.paused.items() if t > now}
        for identifier in released:  # the next batch of a throttled id waits one pause
            if identifier in budget:
                self.paused[identifier] = now + self.pace.get(identifier, 0.0)
        if not self.held:
            self.budget, self.pace = {}, {}
        requests = list(pack_all(ready, shared.limits, shared.overhead))
        for n, request in enumerate(requests):
            # While a request is out, what follows it counts as held: if the request is
            # throttled again (or fails), the rest waits behind it (or fails with it), so no
            # event overtakes an earlier one of the same id.
            self.held = [e for later in requests[n + 1:] for e in later] + still
            if not self._send(request):
                return

    def _send(self, events: list[PendingEvent[Ref]]) -> bool:
        """Send one request; its throttled events are held. True when every event was
        answered for, False when some were throttled or failed."""
        shared = self.shared
        if shared.error is not None:
            shared.abandon(events, shared.error)
            return False
        if shared.stop.stopped:
            self._give_up(events, shared.stop.interrupted())
            return False
        try:
            outcome = shared.client.send(events)
        except SendError as exc:
            partial = exc.partial  # what Amplitude answered before the failure still counts
            delivered = list(partial.delivered) if partial is not None else []
            rejected = list(partial.rejected) if partial is not None else []
            repeats = 0
            if isinstance(partial, SendOutcome):  # repeats acknowledged before it failed
                repeats = partial.repeats_dropped
                shared.count(repeats)
            resolved = {id(e) for e in delivered} | {id(e) for e, _, _ in rejected}
            try:
                if delivered or rejected:
                    shared.report(delivered, rejected, repeats)
            finally:
                self._give_up([e for e in events if id(e) not in resolved], exc)
            return False
        # A bug (BaseException) fails the lanes (run()): the events stay pending, and their
        # ids are free once the step ends, as are the throttled ones' when the sink fails.
        shared.count(outcome.repeats_dropped)
        shared.report(outcome.delivered, outcome.rejected, outcome.repeats_dropped)
        if self.budget:
            self._got_through(outcome.delivered)
        if outcome.throttled:
            self._hold_throttled(outcome.throttled)
            return False
        return True

    def _got_through(self, delivered: list[PendingEvent[Ref]]) -> None:
        """Held events were delivered: their ids may send more per batch."""
        budget = self.budget
        for event in delivered:
            if event.held_since is not None:
                self.progressed_at = self.shared.clock()
            for identifier in event.ids:
                if identifier in budget:
                    budget[identifier] = min(budget[identifier] * 2, MAX_HELD_EVENTS)

    def _hold_throttled(self, throttled: list[tuple[PendingEvent[Ref], float]]) -> None:
        now = self.shared.clock()
        per_id: dict[str, int] = {}
        for event, _ in throttled:
            for identifier in event.ids:
                per_id[identifier] = per_id.get(identifier, 0) + 1
        for identifier, sent in per_id.items():  # half as many next time
            self.budget[identifier] = max(1, min(self.budget.get(identifier, sent), sent) // 2)
        for event, pause in throttled:
            if pause > self.shared.horizon_s:
                self._give_up([event for event, _ in throttled], DeliveryFailed(
                    "Amplitude's daily quota is exhausted for some users/devices; "
                    "the object stays pending: run again later"
                ))
                return
            until = now + pause
            for identifier in event.ids:
                self.paused[identifier] = max(self.paused.get(identifier, 0.0), until)
                self.pace[identifier] = max(self.pace.get(identifier, 0.0), pause)
            if event.held_since is None:
                event.held_since = now
        # Throttled events go before anything later of the same ids (held keeps order).
        self.held = [event for event, _ in throttled] + self.held
        log.info("holding %d throttled events", len(throttled))

    def _give_up(self, events: list[PendingEvent[Ref]], error: BaseException) -> None:
        """``events`` and every held event failed with ``error``."""
        held, self.held = self.held, []
        self.shared.give_up(events + held, error)
