"""Concurrent delivery in lanes: several requests in flight, per-id order kept.

Every event carries its user and device ids. While a lane holds unresolved events of an id,
that id is owned by the lane, so later events of the same user or device join the same
lane. A lane sends one request at a time, in order, so there are never two requests in
flight for one id and each id's events reach Amplitude in record order, retries included.
When Amplitude throttles some ids (429), the lane holds their events, and every later
event of those ids, for the pause Amplitude asks for, while the other ids keep flowing.
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
from typing import Generic, TypeVar

from currents_export.amplitude.batching import PendingEvent, RequestPacker, pack_all
from currents_export.amplitude.client import AmplitudeClient
from currents_export.config import RequestLimits
from currents_export.errors import DeliveryFailed, SendError

log = logging.getLogger(__name__)

Ref = TypeVar("Ref")

OnDelivered = Callable[[list[Ref]], None]  # one call per request
OnRejected = Callable[[Ref, str, str], None]


@dataclass
class _Drain:
    done: threading.Event = field(default_factory=threading.Event)


_STOP = object()
_STOP_GRACE_S = 3.0  # after a stop, how long drain/close wait for a request in flight


class Lanes(Generic[Ref]):
    """Routes events to lanes and reports each one as delivered or rejected.

    ``submit`` is called from one thread (the reader); callbacks run on lane threads,
    ``on_delivered`` once per request with the refs it delivered.
    ``drain`` returns when every submitted event is resolved, or raises the first
    DeliveryFailed / ConfigurationError a lane met (its unresolved events stay pending).
    """

    def __init__(
        self,
        client: AmplitudeClient,
        limits: RequestLimits,
        *,
        lanes: int,
        on_delivered: OnDelivered[Ref],
        on_rejected: OnRejected[Ref],
        horizon_s: float,
        queue_depth: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lanes < 1:
            raise ValueError("lanes must be at least 1")
        self._client = client
        self._on_delivered = on_delivered
        self._on_rejected = on_rejected
        self._horizon_s = horizon_s
        self._clock = clock
        self._stop = client.stop  # a deadline or a signal: checked before every request
        self._owners: dict[str, int] = {}
        self._holds: dict[str, int] = {}  # id → unresolved events of it
        # One plain lock guards _owners/_holds (taken once per event: it must be cheap); the
        # condition on it wakes a reader waiting for two lanes to give up a user/device.
        self._ownership_lock = threading.Lock()
        self._ownership = threading.Condition(self._ownership_lock)
        self._error: BaseException | None = None
        self._stop_waiting_after: float | None = None  # set once a stop is requested
        self._stats_lock = threading.Lock()
        self._requests = 0
        self._retries = 0
        self._next_anonymous = 0
        self._packers = [RequestPacker[Ref](limits, client.envelope.overhead) for _ in range(lanes)]
        self._limits = limits
        self._lanes = [_Lane(self, index, queue_depth) for index in range(lanes)]
        for lane in self._lanes:
            lane.start()

    # ---- reader side ----------------------------------------------------------------------

    def submit(self, event: PendingEvent[Ref]) -> None:
        """Queue one event (blocks while its lane is busy: memory stays bounded)."""
        self._raise_if_failed()
        lane = self._claim(event)
        try:
            closed = self._packers[lane].add(event)
        except Exception:
            self._release([event])
            raise
        if closed:
            self._put(lane, closed)

    def drain(self) -> None:
        for lane, packer in zip(self._lanes, self._packers, strict=True):
            rest = packer.flush()
            if rest:
                self._put(lane.index, rest)
        markers = [_Drain() for _ in self._lanes]
        for lane, marker in zip(self._lanes, markers, strict=True):
            self._put(lane.index, marker)
        for marker in markers:
            self._wait(marker.done)
        error, self._error = self._error, None
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
                    raise self._stop.interrupted() from None

    def _wait(self, done: threading.Event) -> None:
        """Wait for a lane; once the run is stopping, only a short grace for a request in
        flight (its events stay unresolved, so pending: nothing is lost)."""
        while not done.wait(0.2):
            if not self._stop.requested:
                continue
            if self._stop_waiting_after is None:
                self._stop_waiting_after = time.monotonic() + _STOP_GRACE_S
            if time.monotonic() >= self._stop_waiting_after:
                self._fail(self._stop.interrupted())
                return

    def take_stats(self) -> tuple[int, int]:
        """Requests and retries since the last call."""
        with self._stats_lock:
            stats = (self._requests, self._retries)
            self._requests = self._retries = 0
        return stats

    def close(self) -> None:
        for lane in self._lanes:
            # A lane stuck in a request while stopping is left behind (a daemon thread).
            with contextlib.suppress(queue.Full):
                lane.queue.put(_STOP, timeout=None if not self._stop.requested else 0.1)
        for lane in self._lanes:
            lane.join(timeout=None if not self._stop.requested else _STOP_GRACE_S)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _claim(self, event: PendingEvent[Ref]) -> int:
        """Pick the lane that owns the event's ids (or hash one) and take the ids."""
        all_owners = self._owners
        while True:
            with self._ownership_lock:
                owner: int | None = None
                owners: tuple[int, ...] = ()
                for identifier in event.ids:
                    current = all_owners.get(identifier)
                    if current is None or current == owner:
                        continue
                    if owner is None:
                        owner = current
                    else:
                        owners = (owner, current)
                        break
                if not owners:
                    return self._take(event, owner)
            # The user's and the device's events sit in two lanes: send what those lanes
            # have packed (outside the lock: a full queue blocks) and wait for one to finish.
            for lane in owners:
                rest = self._packers[lane].flush()
                if rest:
                    self._put(lane, rest)
            with self._ownership:
                self._ownership.wait(timeout=0.5)
            self._raise_if_failed()
            if self._stop.requested:
                raise self._stop.interrupted()

    def _take(self, event: PendingEvent[Ref], lane: int | None) -> int:
        if lane is None:
            if event.ids:
                lane = zlib.crc32(event.ids[0].encode()) % len(self._lanes)
            else:
                lane = self._next_anonymous % len(self._lanes)
                self._next_anonymous += 1
        owners, holds = self._owners, self._holds
        for identifier in event.ids:
            owners[identifier] = lane
            holds[identifier] = holds.get(identifier, 0) + 1
        return lane

    # ---- lane side ------------------------------------------------------------------------

    def _release(self, events: list[PendingEvent[Ref]]) -> None:
        """The events are resolved (or abandoned): their ids no longer need their lane."""
        with self._ownership:
            owners, holds = self._owners, self._holds
            for event in events:
                for identifier in event.ids:
                    left = holds.get(identifier, 0) - 1
                    if left <= 0:
                        holds.pop(identifier, None)
                        owners.pop(identifier, None)
                    else:
                        holds[identifier] = left
            self._ownership.notify_all()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        with self._ownership:
            self._ownership.notify_all()


class _Lane(threading.Thread, Generic[Ref]):
    """Sends one lane's requests one at a time and holds throttled ids' events."""

    def __init__(self, parent: Lanes[Ref], index: int, depth: int) -> None:
        super().__init__(name=f"amplitude-lane-{index}", daemon=True)
        self.index = index
        self.parent = parent
        self.queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.held: list[PendingEvent[Ref]] = []
        self.paused: dict[str, float] = {}  # id → clock time when it may be sent again

    def run(self) -> None:
        while True:
            self._release_ready()
            try:
                item = self.queue.get(timeout=self._next_wake())
            except queue.Empty:
                continue
            if item is _STOP:
                return
            if isinstance(item, _Drain):
                self._wait_out_held()
                item.done.set()
                continue
            assert isinstance(item, list)
            try:
                self._send_or_hold(item)
            except Exception as exc:  # a failing callback must not leave drain() hanging
                log.exception("lane %s failed", self.name)
                self.parent._fail(exc)

    def _next_wake(self) -> float | None:
        if not self.held:
            return None
        now = self.parent._clock()
        wake = min(self.paused.values(), default=now)
        return max(0.01, min(wake - now, 1.0))

    def _wait_out_held(self) -> None:
        while self.held:
            if self.parent._stop.stopped:
                self._give_up(self.parent._stop.interrupted())
                return
            self._release_ready()
            if self.held:
                self.parent._stop.sleep(self._next_wake() or 0.01)

    def _blocked(self, event: PendingEvent[Ref], now: float, held_ids: set[str]) -> bool:
        return any(
            self.paused.get(identifier, 0.0) > now or identifier in held_ids
            for identifier in event.ids
        )

    def _send_or_hold(self, request: list[PendingEvent[Ref]]) -> None:
        if self.parent._error is not None:
            self._abandon(request)
            return
        if not self.held and not self.paused:  # nothing throttled: the usual case
            self._send(request)
            return
        now = self.parent._clock()
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
        if self.parent._error is not None:
            self._abandon(self.held)
            self.held = []
            return
        now = self.parent._clock()
        horizon = self.parent._horizon_s
        if any(e.held_since is not None and now - e.held_since > horizon for e in self.held):
            self._give_up(DeliveryFailed(
                f"Amplitude kept throttling some users/devices for over {horizon:.0f}s; "
                "the object stays pending for the next run"
            ))
            return
        still: list[PendingEvent[Ref]] = []
        still_ids: set[str] = set()
        ready: list[PendingEvent[Ref]] = []
        for event in self.held:
            if self._blocked(event, now, still_ids):
                still.append(event)
                still_ids.update(event.ids)
            else:
                ready.append(event)
        self.held = still
        self.paused = {i: t for i, t in self.paused.items() if t > now}
        for request in pack_all(ready, self.parent._limits, self.parent._client.envelope.overhead):
            self._send(request)

    def _send(self, events: list[PendingEvent[Ref]]) -> None:
        if self.parent._error is not None:
            self._abandon(events)
            return
        if self.parent._stop.stopped:
            self._abandon(events)
            self._give_up(self.parent._stop.interrupted())
            return
        try:
            outcome = self.parent._client.send(events)
        except SendError as exc:
            partial = exc.partial
            resolved: set[int] = set()
            if partial is not None:  # what Amplitude answered before the failure still counts
                self._report(partial.delivered, [(e, r, d) for e, r, d in partial.rejected])
                resolved = {id(e) for e in partial.delivered}
                resolved |= {id(e) for e, _, _ in partial.rejected}
            self._abandon([e for e in events if id(e) not in resolved])
            self._give_up(exc)
            return
        self._report(outcome.delivered, outcome.rejected)
        with self.parent._stats_lock:
            self.parent._requests += outcome.requests
            self.parent._retries += outcome.retries
        if outcome.throttled:
            self._hold_throttled(outcome.throttled)

    def _report(
        self,
        delivered: list[PendingEvent[Ref]],
        rejected: list[tuple[PendingEvent[Ref], str, str]],
    ) -> None:
        # Ids are released even when a callback fails (a checkpoint that cannot be saved):
        # else a later event sharing them would wait for their lane forever.
        try:
            if delivered:
                self.parent._on_delivered([event.ref for event in delivered])
        finally:
            try:
                for event, reason, detail in rejected:
                    self.parent._on_rejected(event.ref, reason, detail)
            finally:
                self.parent._release(delivered + [event for event, _, _ in rejected])

    def _hold_throttled(self, throttled: list[tuple[PendingEvent[Ref], float]]) -> None:
        now = self.parent._clock()
        for event, pause in throttled:
            if pause > self.parent._horizon_s:
                self._abandon([event for event, _ in throttled])
                self._give_up(DeliveryFailed(
                    "Amplitude's daily quota is exhausted for some users/devices; "
                    "the object stays pending: run again later"
                ))
                return
            until = now + pause
            for identifier in event.ids:
                self.paused[identifier] = max(self.paused.get(identifier, 0.0), until)
            if event.held_since is None:
                event.held_since = now
        # Throttled events go before anything later of the same ids (held keeps order).
        self.held = [event for event, _ in throttled] + self.held
        log.info("holding %d throttled events", len(throttled))

    def _abandon(self, events: list[PendingEvent[Ref]]) -> None:
        """After a failure: leave events unresolved (pending) but free their ids."""
        self.parent._release(events)

    def _give_up(self, error: BaseException) -> None:
        self._abandon(self.held)
        self.held = []
        self.parent._fail(error)
