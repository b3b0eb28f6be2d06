"""The run's sending schedule under Amplitude's project limits: a budget set, or found.

Every request of a run (every lane, and with ``--workers`` every process: they share one
:class:`PaceState`) waits here for its turn. With a budget (events/s, requests/s) requests
leave evenly spaced (a generic cell rate algorithm without burst allowance), sized to a
twentieth of a second's budget and paced one request under it, so that no one-second
window holds more than the budget.

Without one, the rate is found: a 429 without indexes (the project's limit) pauses every
sender for Amplitude's pause, then sending resumes at three quarters of the rate accepted
before the refusal, one request after another, and probes upward by 1 % of the first rate
found per second of sending (additive increase, multiplicative decrease), never below
100 events/s (a tenth of the smallest plan's limit). The refusals of requests
already in flight when the run reacted change nothing more. Waiting here is pacing, not
failure: it never counts toward the retry horizon.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, MutableSequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from currents_export.counts import SendingReport
from currents_export.stopping import Stop

SLOTS_PER_SECOND = 20  # a request holds at most 1/20 of a second's events budget
DECREASE = 0.75  # after a refusal: this share of the rate accepted before it
INCREASE = 0.01  # per second of sending at the found rate: +1 % of the first rate found
# The smallest plan's project limit (Starter: 1,000 events/s) sets the scale: the rate
# found never goes below a tenth of it, and climbs back by at least 1 % of it per second.
MIN_FOUND_RATE = 100.0
MIN_STEP = 10.0
ACCEPTED_WINDOW_S = 5  # the rate accepted before a refusal: of the requests sent this long before
LATE_S = 0.005  # a request this late keeps the schedule (a thread wakes a little late)

# The state's cells (floats).
_NEXT_EVENTS = 0  # when the events budget lets the next request go (monotonic s)
_NEXT_REQUEST = 1  # when the requests budget does
_PAUSED_UNTIL = 2  # nobody sends before this (Amplitude's pause after a refusal)
_FOUND_RATE = 3  # events/s found (0: none yet)
_STEP = 4  # events/s added per second of sending at the found rate
_DECREASED_AT = 5  # when the run last reacted to a refusal
_SENDING_SINCE = 6  # when sending started, or resumed after a pause (_NONE: not yet)
_REFUSED = 7  # 429s without indexes (the project's limit)
_THROTTLED = 8  # 429s naming users or devices
_BUDGET_WAIT = 9  # seconds (wall clock) some request waited for the budget
_BUDGET_UNTIL = 10  # ... counted up to here
_AMPLITUDE_WAIT = 11  # seconds (wall clock) some request waited for Amplitude
_AMPLITUDE_UNTIL = 12  # ... counted up to here
_REFUSED_SENT = 13  # when the refused request left (_NONE: no decrease pending)
_REFUSED_EVENTS = 14  # ... and its events
_ACCEPTED = 15  # ACCEPTED_WINDOW_S + 1 pairs (second, events acknowledged in it)
CELLS = _ACCEPTED + 2 * (ACCEPTED_WINDOW_S + 1)
_NONE = -1.0  # a time not set (clocks start at 0 or later)


def _fresh(cells: MutableSequence[float]) -> MutableSequence[float]:
    cells[_SENDING_SINCE] = cells[_REFUSED_SENT] = _NONE
    return cells


@dataclass(frozen=True, slots=True)
class RateBudget:
    """What one run may send per second (None: no limit of that kind)."""

    events_per_second: float | None = None
    requests_per_second: float | None = None

    @classmethod
    def share(cls, events: int | None, requests: int | None, shares: int = 1) -> RateBudget:
        """One of ``shares`` runs' part of a budget for all of them."""
        return cls(None if events is None else events / shares,
                   None if requests is None else requests / shares)


class PaceState:
    """The schedule's cells and their lock: one run's threads' (``local``), or shared by a
    run's worker processes (``shared``, created in the parent and handed to each worker)."""

    def __init__(self, cells: MutableSequence[float], lock: AbstractContextManager[Any],
                 shared: Any = None) -> None:
        self.cells = cells
        self.lock = lock
        self._shared = shared  # the multiprocessing array, when the state is shared

    @classmethod
    def local(cls, found_rate: float | None = None) -> PaceState:
        """State for one process; ``found_rate``: what an earlier run found (a warm
        Lambda's), to start from instead of finding it again."""
        cells = _fresh([0.0] * CELLS)
        if found_rate:
            cells[_FOUND_RATE], cells[_STEP] = found_rate, max(INCREASE * found_rate, MIN_STEP)
        return cls(cells, threading.Lock())

    @classmethod
    def shared(cls, context: Any) -> PaceState:
        """State for processes of ``context`` (a multiprocessing context); pass it to them
        when they start (as their arguments)."""
        array = context.Array("d", CELLS, lock=True)
        _fresh(array)
        return cls(array, array.get_lock(), array)

    def __reduce__(self) -> tuple[Any, ...]:
        if self._shared is None:
            raise TypeError("a local PaceState stays in its process; use PaceState.shared")
        return (_shared_state, (self._shared,))


def _shared_state(array: Any) -> PaceState:
    return PaceState(array, array.get_lock(), array)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A request's turn: when it left, and how long it waited for the budget (pacing, not
    failure: not counted toward the retry horizon)."""

    departed: float
    paced_s: float = 0.0

    @property
    def held(self) -> bool:
        return self.paced_s > 0


class Pacer:
    """Hands out turns to send under ``budget``; finds a rate when refused without one."""

    def __init__(
        self,
        budget: RateBudget = RateBudget(),
        state: PaceState | None = None,
        *,
        pause_s: float = 60.0,
        stop: Stop | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.budget = budget
        self.pause_s = pause_s
        self._state = state or PaceState.local()
        self._stop = stop or Stop(clock=clock)
        self._clock = clock
        self._injected_sleep = sleep  # tests: a virtual clock

    def __repr__(self) -> str:
        return f"Pacer({self.budget!r})"

    def bind(self, stop: Stop) -> None:
        """Wait no longer than ``stop`` allows (the run's, set when its client is built)."""
        self._stop = stop

    # -- the schedule ---------------------------------------------------------------------------

    def _events_rate(self, cells: MutableSequence[float]) -> float | None:
        found = cells[_FOUND_RATE] or None
        limit = self.budget.events_per_second
        if found is None or limit is None:
            return found if limit is None else limit
        return min(found, limit)

    def request_size(self) -> int | None:
        """Most events a request may hold to leave evenly (None: no limit)."""
        with self._state.lock:
            rate = self._events_rate(self._state.cells)
        return None if rate is None else self._size(rate)

    def _size(self, rate: float) -> int:
        size = rate / SLOTS_PER_SECOND
        if self.budget.requests_per_second:  # fewer, fuller requests when those are scarce
            size = max(size, rate / self.budget.requests_per_second)
        return max(1, int(size))

    def turn(self, events: int) -> Ticket:
        """Wait until a request of ``events`` may leave; raises ``SendInterrupted`` when the
        run stops meanwhile."""
        state, cells, clock = self._state, self._state.cells, self._clock
        paced = 0.0
        while True:  # a wait never gets shorter, but a refusal meanwhile makes it longer
            with state.lock:
                now = clock()
                paused = cells[_PAUSED_UNTIL] > now
                due = max(cells[_PAUSED_UNTIL], cells[_NEXT_EVENTS], cells[_NEXT_REQUEST])
                if due <= now:
                    self._resume(cells, now)
                    self._depart(cells, now, events)
                    return Ticket(now, paced)
            if self._stop.stopped:
                raise self._stop.interrupted()
            self._sleep(due - now)
            woke = clock()
            if not paused:
                paced += woke - now
            self._count_wait(_AMPLITUDE_WAIT if paused else _BUDGET_WAIT, now, woke)

    def wait_out_pause(self) -> None:
        """Wait while every sender pauses after a refusal; then ``request_size`` says what
        the rate found allows (a refused request is re-sent in pieces of that size)."""
        state, cells, clock = self._state, self._state.cells, self._clock
        while True:
            with state.lock:
                now = clock()
                until = cells[_PAUSED_UNTIL]
                if until <= now:
                    self._resume(cells, now)
                    return
            if self._stop.stopped:
                raise self._stop.interrupted()
            self._sleep(until - now)
            self._count_wait(_AMPLITUDE_WAIT, now, clock())

    def _resume(self, cells: MutableSequence[float], now: float) -> None:
        """The pause is over (the lock held): lower the rate once, if a refusal asked."""
        if cells[_REFUSED_SENT] != _NONE:
            self._lower_rate(cells)
            cells[_SENDING_SINCE] = now

    def _depart(self, cells: MutableSequence[float], now: float, events: int) -> None:
        """Take the turn at ``now`` (the lock held): the next one is due one interval on."""
        # Paced one request under the budget: a one-second window, which may hold one
        # request more than the pace, then holds no more than the budget.
        rate = self._events_rate(cells)
        if rate is not None:
            pace = max(rate - self._size(rate), rate / 2)
            cells[_NEXT_EVENTS] = max(cells[_NEXT_EVENTS], now - LATE_S) + events / pace
        requests = self.budget.requests_per_second
        if requests is not None:
            pace = max(requests - 1, requests / 2)
            cells[_NEXT_REQUEST] = max(cells[_NEXT_REQUEST], now - LATE_S) + 1 / pace
        if cells[_SENDING_SINCE] == _NONE:
            cells[_SENDING_SINCE] = now

    def _count_wait(self, kind: int, started: float, ended: float) -> None:
        """Add the wall-clock time of a wait not yet counted (waits of several requests
        overlap: the time is counted once)."""
        with self._state.lock:
            cells = self._state.cells
            counted_until = cells[kind + 1]
            if ended > counted_until:
                cells[kind] += ended - max(started, counted_until)
                cells[kind + 1] = ended

    def waited_on_amplitude(self, started: float, ended: float) -> None:
        """A request waited for Amplitude elsewhere (backoff after a failure)."""
        if ended > started:
            self._count_wait(_AMPLITUDE_WAIT, started, ended)

    # -- what Amplitude answered ----------------------------------------------------------------

    def accepted(self, ticket: Ticket, events: int) -> None:
        """Amplitude acknowledged ``events`` sent on ``ticket``: count them (by when they
        left) for the accepted rate, and probe upward when the request had waited for a
        found rate."""
        if not events:
            return
        with self._state.lock:
            cells = self._state.cells
            second = math.floor(ticket.departed)
            slot = _ACCEPTED + 2 * (second % (ACCEPTED_WINDOW_S + 1))
            if cells[slot] < second:  # a newer second takes the slot over
                cells[slot], cells[slot + 1] = second, 0.0
            if cells[slot] == second:  # (an answer older than the window is not counted)
                cells[slot + 1] += events
            found = cells[_FOUND_RATE]
            if found and ticket.held:
                cells[_FOUND_RATE] = found + cells[_STEP] * events / found

    def throttled(self) -> None:
        """A 429 named users or devices (their events wait; the lanes hold them)."""
        with self._state.lock:
            self._state.cells[_THROTTLED] += 1

    def refused(self, ticket: Ticket, events: int) -> None:
        """A 429 without indexes: the project's limit. Pause every sender; the rate is
        lowered when the pause ends, once the answers of the requests then in flight are in.
        The refusals of requests sent before the last reaction change nothing more."""
        with self._state.lock:
            cells = self._state.cells
            now = self._clock()
            cells[_REFUSED] += 1
            if ticket.departed < cells[_DECREASED_AT]:
                return
            cells[_DECREASED_AT] = now
            if ticket.departed > cells[_REFUSED_SENT]:
                cells[_REFUSED_SENT], cells[_REFUSED_EVENTS] = ticket.departed, events
            cells[_PAUSED_UNTIL] = max(cells[_PAUSED_UNTIL], now + self.pause_s)
            # After the pause the first request goes at once, the others one by one.
            cells[_NEXT_EVENTS] = cells[_NEXT_REQUEST] = 0.0

    def _lower_rate(self, cells: MutableSequence[float]) -> None:
        """After a refusal's pause (the lock held): the new rate, a share of the rate
        accepted over the ``ACCEPTED_WINDOW_S`` before the refused request left (since
        sending started or last resumed, when that is later; per second at least). With
        nothing accepted, a share of the rate in force, or of the refused request's events
        in one second."""
        refused_at = cells[_REFUSED_SENT]
        cells[_REFUSED_SENT] = _NONE
        second = math.floor(refused_at)
        start = max(second - ACCEPTED_WINDOW_S + 1, cells[_SENDING_SINCE])
        total = 0.0
        for slot in range(_ACCEPTED, CELLS, 2):
            if math.floor(start) <= cells[slot] <= second:
                total += cells[slot + 1]
        found = cells[_FOUND_RATE] or math.inf
        if total:
            measured = total / max(refused_at - start, 1.0)
        else:
            measured = found if found < math.inf else cells[_REFUSED_EVENTS]
        rate = max(MIN_FOUND_RATE, DECREASE * min(found, measured))
        cells[_FOUND_RATE] = rate
        if not cells[_STEP]:  # the step follows the first rate found: a run slowed down
            cells[_STEP] = max(INCREASE * rate, MIN_STEP)  # far later climbs back as fast

    # -- reporting ------------------------------------------------------------------------------

    def report(self) -> SendingReport:
        with self._state.lock:
            cells = list(self._state.cells)
        return SendingReport(
            events_per_second=self.budget.events_per_second,
            requests_per_second=self.budget.requests_per_second,
            found_events_per_second=cells[_FOUND_RATE] or None,
            refused=int(cells[_REFUSED]),
            throttled=int(cells[_THROTTLED]),
            waited_on_budget_s=cells[_BUDGET_WAIT],
            waited_on_amplitude_s=cells[_AMPLITUDE_WAIT],
        )

    def _sleep(self, seconds: float) -> None:
        if self._injected_sleep is not None:
            self._injected_sleep(seconds)
        else:
            self._stop.sleep(seconds)
