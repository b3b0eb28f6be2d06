"""The run's sending schedule under Amplitude's project limits: a budget set, or found.

Every request of a run (every lane, and with ``--workers`` every process: they share one
:class:`PaceState`) waits here for its turn. With a budget (events/s, requests/s) requests
leave evenly spaced (a generic cell rate algorithm without burst allowance), sized to a
twentieth of a second's budget and paced one request under it, so that no one-second
window holds more than the budget (within the few milliseconds ``LATE_S`` forgives).

Without one, the rate is found: a 429 without indexes (the project's limit) pauses every
sender for Amplitude's pause, then sending resumes at three quarters of the rate accepted
before the refusal, one request after another (a request waiting with more events than
that rate allows is sent again in pieces), and probes upward by 1 % of the first rate found
per second of sending while it is what holds sending back, twenty times slower past 95 %
of the rate last accepted before a refusal (additive increase, multiplicative decrease).
The refusals of requests already in flight when the run reacted change nothing more.
Waiting here for the budget is pacing, not failure: it never counts toward the retry
horizon; Amplitude's pauses do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass
from pathlib import Path

from currents_export.counts import SendingReport
from currents_export.stopping import Stop
from currents_export.support.sharedcells import Cells

SLOTS_PER_SECOND = 20  # a request holds at most 1/20 of a second's events budget
DECREASE = 0.75  # after a refusal: this share of the rate accepted before it
INCREASE = 0.01  # per second of sending at the found rate: +1 % of the first rate found
# The smallest plan's project limit (Starter: 1,000 events/s) sets the scale: the rate
# found never goes below a tenth of it, and climbs back by at least 1 % of it per second
# (both divided among the runs that share a budget).
MIN_FOUND_RATE = 100.0
MIN_STEP = 10.0
NEAR_CEILING = 0.95  # past this share of the rate accepted before the last refusal ...
SLOW_PROBE = 20  # ... the rate climbs this many times slower
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
_CEILING = 15  # the rate accepted before the last refusal (0: none yet)
_ACCEPTED = 16  # ACCEPTED_WINDOW_S + 1 pairs (second, events acknowledged in it)
CELLS = _ACCEPTED + 2 * (ACCEPTED_WINDOW_S + 1)
_NONE = -1.0  # a time not set (clocks start at 0 or later)


def _fresh(cells: Cells) -> Cells:
    cells.values[_SENDING_SINCE] = cells.values[_REFUSED_SENT] = _NONE
    return cells


@dataclass(frozen=True, slots=True)
class RateBudget:
    """What one run may send per second (None: no limit of that kind); ``shares``: how
    many runs split the budget they were given (this is one's part)."""

    events_per_second: float | None = None
    requests_per_second: float | None = None
    shares: int = 1

    @classmethod
    def share(cls, events: int | None, requests: int | None, shares: int = 1) -> RateBudget:
        """One of ``shares`` runs' part of a budget for all of them."""
        return cls(None if events is None else events / shares,
                   None if requests is None else requests / shares, shares)


@dataclass(frozen=True, slots=True)
class PaceState:
    """The schedule's cells: one run's threads' (``local``), or shared by a run's worker
    processes (``shared``: created by the parent, pickled to each worker)."""

    cells: Cells

    @classmethod
    def local(cls, found_rate: float | None = None) -> PaceState:
        """State for one process; ``found_rate``: what an earlier run found (a warm
        Lambda's), to start from instead of finding it again."""
        state = cls(_fresh(Cells.local(CELLS)))
        if found_rate:
            values = state.cells.values
            values[_FOUND_RATE] = found_rate
            values[_STEP] = INCREASE * found_rate
        return state

    @classmethod
    def shared(cls, folder: Path) -> PaceState:
        """State in a file under ``folder`` (the caller's, private) for several processes."""
        return cls(_fresh(Cells.shared(CELLS, folder)))


@dataclass(frozen=True, slots=True)
class Turn:
    """A request's turn: when it left, and how long it waited for the budget (pacing, not
    failure: not counted toward the retry horizon)."""

    departed: float
    paced_s: float = 0.0

    @property
    def held(self) -> bool:
        """It waited for the budget (the rate was what held it back)."""
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
        self._cells = (state or PaceState.local()).cells
        self._stop = stop or Stop(clock=clock)
        self._clock = clock
        self._injected_sleep = sleep  # tests: a virtual clock
        self._floor = MIN_FOUND_RATE / budget.shares
        self._min_step = MIN_STEP / budget.shares

    def __repr__(self) -> str:
        return f"Pacer({self.budget!r})"

    def bind(self, stop: Stop) -> None:
        """Wait no longer than ``stop`` allows (the run's, set when its client is built)."""
        self._stop = stop

    # -- the schedule ---------------------------------------------------------------------------

    def _events_rate(self, values: MutableSequence[float]) -> float | None:
        found = values[_FOUND_RATE] or None
        limit = self.budget.events_per_second
        if found is None or limit is None:
            return found if limit is None else limit
        return min(found, limit)

    def request_size(self) -> int | None:
        """Most events a request may hold to leave evenly (None: no limit)."""
        with self._cells.lock:
            rate = self._events_rate(self._cells.values)
        return None if rate is None else self._size(rate)

    def _size(self, rate: float) -> int:
        size = rate / SLOTS_PER_SECOND
        if self.budget.requests_per_second:  # fewer, fuller requests when those are scarce
            size = max(size, rate / self.budget.requests_per_second)
        return max(1, int(size))

    def turn(self, events: int) -> Turn | None:
        """Wait until a request of ``events`` may leave. None: sending paused meanwhile and
        resumed at a rate this request no longer fits (send it again in pieces of
        ``request_size``). Raises ``SendInterrupted`` when the run stops meanwhile."""
        cells, clock = self._cells, self._clock
        paced = 0.0
        waited_out_pause = False
        while True:  # a wait never gets shorter, but a refusal meanwhile makes it longer
            with cells.lock:
                values = cells.values
                now = clock()
                paused = values[_PAUSED_UNTIL] > now
                due = max(values[_PAUSED_UNTIL], values[_NEXT_EVENTS], values[_NEXT_REQUEST])
                if due <= now:
                    self._resume(values, now)
                    rate = self._events_rate(values)
                    if waited_out_pause and rate is not None and events > self._size(rate):
                        return None
                    self._depart(values, now, events)
                    return Turn(now, paced)
            if self._stop.stopped:
                raise self._stop.interrupted()
            self._sleep(due - now)
            woke = clock()
            if paused:
                waited_out_pause = True
                self._count_wait(_AMPLITUDE_WAIT, _AMPLITUDE_UNTIL, now, woke)
            else:
                paced += woke - now
                self._count_wait(_BUDGET_WAIT, _BUDGET_UNTIL, now, woke)

    def pause_left(self) -> float:
        """Seconds before every sender may send again (0: not paused)."""
        with self._cells.lock:
            return max(0.0, self._cells.values[_PAUSED_UNTIL] - self._clock())

    def _resume(self, values: MutableSequence[float], now: float) -> None:
        """The pause is over (the lock held): lower the rate once, if a refusal asked."""
        if values[_REFUSED_SENT] != _NONE:
            self._lower_rate(values)
            values[_SENDING_SINCE] = now

    def _depart(self, values: MutableSequence[float], now: float, events: int) -> None:
        """Take the turn at ``now`` (the lock held): the next one is due one interval on.
        Paced one request under the budget: a one-second window, which may hold one
        request more than the pace, then holds no more than the budget."""
        rate = self._events_rate(values)
        if rate is not None:
            pace = max(rate - self._size(rate), rate / 2)
            values[_NEXT_EVENTS] = max(values[_NEXT_EVENTS], now - LATE_S) + events / pace
        requests = self.budget.requests_per_second
        if requests is not None:
            pace = max(requests - 1, requests / 2)
            values[_NEXT_REQUEST] = max(values[_NEXT_REQUEST], now - LATE_S) + 1 / pace
        if values[_SENDING_SINCE] == _NONE:
            values[_SENDING_SINCE] = now

    def _count_wait(self, total: int, until: int, started: float, ended: float) -> None:
        """Add to the cell ``total`` the wall-clock time of a wait not counted yet (waits of
        several requests overlap: the time is counted once; ``until``: counted up to)."""
        with self._cells.lock:
            values = self._cells.values
            if ended > values[until]:
                values[total] += ended - max(started, values[until])
                values[until] = ended

    def waited_on_amplitude(self, started: float, ended: float) -> None:
        """A request waited for Amplitude elsewhere (backoff after a failure)."""
        if ended > started:
            self._count_wait(_AMPLITUDE_WAIT, _AMPLITUDE_UNTIL, started, ended)

    # -- what Amplitude answered ----------------------------------------------------------------

    def accepted(self, turn: Turn, events: int) -> None:
        """Amplitude acknowledged ``events`` sent on ``turn``: count them (by when they
        left) for the accepted rate, and probe upward when the rate found held the request
        back."""
        if not events:
            return
        with self._cells.lock:
            values = self._cells.values
            second = math.floor(turn.departed)
            slot = _ACCEPTED + 2 * (second % (ACCEPTED_WINDOW_S + 1))
            if values[slot] < second:  # a newer second takes the slot over
                values[slot], values[slot + 1] = second, 0.0
            if values[slot] == second:  # (an answer older than the window is not counted)
                values[slot + 1] += events
            found, limit = values[_FOUND_RATE], self.budget.events_per_second
            if found and turn.held and (limit is None or found < limit):
                step = max(values[_STEP], self._min_step)
                if values[_CEILING] and found >= NEAR_CEILING * values[_CEILING]:
                    step /= SLOW_PROBE  # near where Amplitude refused: probe slowly
                grown = found + step * events / found
                values[_FOUND_RATE] = grown if limit is None else min(grown, limit)

    def throttled(self) -> None:
        """A 429 named users or devices (their events wait; the lanes hold them)."""
        with self._cells.lock:
            self._cells.values[_THROTTLED] += 1

    def refused(self, turn: Turn, events: int) -> None:
        """A 429 without indexes: the project's limit. Pause every sender; the rate is
        lowered when the pause ends, once the answers of the requests then in flight are in.
        The refusals of requests sent before the last reaction change nothing more."""
        with self._cells.lock:
            values = self._cells.values
            now = self._clock()
            values[_REFUSED] += 1
            if turn.departed < values[_DECREASED_AT]:
                return
            values[_DECREASED_AT] = now
            if turn.departed > values[_REFUSED_SENT]:
                values[_REFUSED_SENT], values[_REFUSED_EVENTS] = turn.departed, events
            values[_PAUSED_UNTIL] = max(values[_PAUSED_UNTIL], now + self.pause_s)
            # After the pause the first request goes at once, the others one by one.
            values[_NEXT_EVENTS] = values[_NEXT_REQUEST] = 0.0

    def _lower_rate(self, values: MutableSequence[float]) -> None:
        """After a refusal's pause (the lock held): the new rate, a share of the rate
        accepted over the ``ACCEPTED_WINDOW_S`` before the refused request left (since
        sending started or last resumed, when that is later; per second at least). With
        nothing accepted, a share of the rate in force, or of the refused request's events
        in one second."""
        refused_at = values[_REFUSED_SENT]
        values[_REFUSED_SENT] = _NONE
        second = math.floor(refused_at)
        start = max(second - ACCEPTED_WINDOW_S + 1, values[_SENDING_SINCE])
        total = 0.0
        for slot in range(_ACCEPTED, CELLS, 2):
            if math.floor(start) <= values[slot] <= second:
                total += values[slot + 1]
        found = values[_FOUND_RATE] or math.inf
        if total:
            measured = total / max(refused_at - start, 1.0)
            values[_CEILING] = measured
        else:
            measured = found if found < math.inf else values[_REFUSED_EVENTS]
        rate = max(self._floor, DECREASE * min(found, measured))
        values[_FOUND_RATE] = rate
        if not values[_STEP]:  # the step follows the first rate found: a run slowed down
            values[_STEP] = max(INCREASE * rate, self._min_step)  # far climbs back as fast

    # -- reporting ------------------------------------------------------------------------------

    def report(self) -> SendingReport:
        with self._cells.lock:
            values = list(self._cells.values)
        return SendingReport(
            events_per_second=self.budget.events_per_second,
            requests_per_second=self.budget.requests_per_second,
            found_events_per_second=values[_FOUND_RATE] or None,
            refused=int(values[_REFUSED]),
            throttled=int(values[_THROTTLED]),
            waited_on_budget_s=values[_BUDGET_WAIT],
            waited_on_amplitude_s=values[_AMPLITUDE_WAIT],
        )

    def _sleep(self, seconds: float) -> None:
        if self._injected_sleep is not None:
            self._injected_sleep(seconds)
        else:
            self._stop.sleep(seconds)
