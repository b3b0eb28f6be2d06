"""Amplitude's availability as the whole run sees it: one circuit shared by every lane.

While requests succeed the circuit is closed and each request goes as it comes; a request
that fails retries on its own backoff. After ``threshold`` failures in a row (5xx, timeouts,
resets, unverified 200s, project-wide 429s — from any lane, with no success in between)
the circuit opens: one request at a time probes at the backoff while the others wait, and
the first answer closes it again. The retry horizon counts from the first failure after
the last success, for the run as a whole: an outage costs the run one horizon, not one per
object. A backoff that would pass the horizon is cut to what is left, so the last probe goes
at the horizon; when it fails too, the run gives up: every request then raises
``AmplitudeUnavailable`` at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from currents_export.amplitude.api import RetryPolicy
from currents_export.errors import AmplitudeUnavailable
from currents_export.stopping import Stop

_POLL_S = 0.2  # how often a waiting request looks again (a probe of another lane)
_GIVE_UP_CHECK_S = 1.0  # how soon a long wait notices that another lane gave up
REACHED_S = 0.001  # this close to the horizon, it is reached (no wait of rounding errors)


class Circuit:
    def __init__(
        self,
        policy: RetryPolicy,
        *,
        stop: Stop,
        host: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        jitter: Callable[[], float],
        threshold: int = 3,
    ) -> None:
        self.policy = policy
        self.stop = stop
        self.host = host
        self.threshold = threshold
        self._clock = clock
        self._injected_sleep = sleep  # tests: a virtual clock; else the stop's own wait
        self._jitter = jitter
        self._lock = threading.Lock()
        self._failures = 0  # in a row, across lanes
        self._failing_since: float | None = None
        self._failing_since_wall: float | None = None
        self._last_problem = ""
        self._paused_until = 0.0  # nobody sends before this (the circuit is open)
        self._probing = False
        self._gave_up: str | None = None  # past the horizon (why): the run sends no more

    def reset(self) -> None:
        """Forget past failures (a new run on a long-lived client, e.g. a warm Lambda)."""
        with self._lock:
            self._failures = 0
            self._failing_since = self._failing_since_wall = None
            self._paused_until = 0.0
            self._probing = False
            self._gave_up = None

    @property
    def open(self) -> bool:
        return self._failures >= self.threshold

    def admit(self) -> bool:
        """Wait until a request may go; True when it goes as the circuit's probe.

        Raises ``SendInterrupted`` when the run is stopping and ``AmplitudeUnavailable`` once
        the run gave up on Amplitude (a failure at or past the horizon).
        """
        while True:
            with self._lock:
                self._raise_if_ended()
                wait = self._paused_until - self._clock()
                if wait <= 0:
                    if self._failures < self.threshold:
                        return False
                    if not self._probing:
                        self._probing = True
                        return True
                    wait = _POLL_S
            self._sleep(min(wait, _POLL_S) if self._probing else wait)

    def abandon(self) -> None:
        """A request ended without an answer to count (it raised): let another probe go."""
        with self._lock:
            self._probing = False

    def _unavailable(self, spent: float) -> AmplitudeUnavailable:  # with the lock held
        """The error that says Amplitude has failed for ``spent`` s, since when and with what."""
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC",
                              time.gmtime(self._failing_since_wall or time.time()))
        return AmplitudeUnavailable(
            f"Amplitude ({self.host}) is unavailable since {since}: every request failed for "
            f"{spent:.0f} s (last: {self._last_problem}); the objects stay pending for the "
            "next run"
        )

    def succeeded(self) -> None:
        """Amplitude answered (any final answer: 200, 400, 413, an indexed 429)."""
        with self._lock:
            self._failures = 0
            self._failing_since = self._failing_since_wall = None
            self._probing = False

    def failed(self, problem: str, attempt: int) -> float:
        """Count a failure; return how long this request waits before trying again.

        Open, the run's horizon decides: a failure once Amplitude has failed for the whole
        horizon gives up for the run (``AmplitudeUnavailable``), and a backoff is cut to
        what is left of it. Closed (a lone failure), the request's own horizon decides.
        """
        with self._lock:
            now = self._clock()
            self._probing = False
            self._failures += 1
            self._last_problem = problem
            if self._failing_since is None:
                self._failing_since = now
                self._failing_since_wall = time.time()
            delay = self.policy.delay(max(attempt, self._failures - self.threshold + 1),
                                      self._jitter())
            if self._failures < self.threshold:
                if self.stop.stopped:
                    raise self.stop.interrupted()
                return delay
            self._raise_if_ended()
            spent = now - self._failing_since
            left = self.policy.horizon_s - spent
            if left < REACHED_S:
                error = self._unavailable(spent)
                self._gave_up = str(error)
                raise error
            delay = min(delay, left)  # the last probe goes at the horizon
            self._paused_until = max(self._paused_until, now + delay)
            return delay

    def wait_before_retry(self, delay: float) -> None:
        """Back off before retrying, unless the circuit (open) already makes everyone wait
        (the pause after a project-wide 429 is the pacer's, ``amplitude.pacing``)."""
        with self._lock:
            if self._paused_until > self._clock():
                return  # ``admit`` does the waiting
        self._sleep(delay)

    def _sleep(self, seconds: float) -> None:
        """Wait, waking early for a stop or when another lane gave up on Amplitude."""
        if self._injected_sleep is not None:  # a virtual clock (tests)
            self._injected_sleep(seconds)
            return
        end = time.monotonic() + seconds
        while self._gave_up is None and (left := end - time.monotonic()) > 0:
            if not self.stop.sleep(min(left, _GIVE_UP_CHECK_S)):
                return

    def _raise_if_ended(self) -> None:
        """Raise when stopping, or once the run gave up on Amplitude (the lock held)."""
        if self.stop.stopped:
            raise self.stop.interrupted()
        if self._gave_up is not None:
            raise AmplitudeUnavailable(self._gave_up)
