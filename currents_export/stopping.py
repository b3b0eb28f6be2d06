"""When a run must stop: a deadline (the Lambda's) or a request (SIGINT/SIGTERM).

One ``Stop`` is shared by everything that waits: the reader checks it between records, the
client bounds its request timeouts and backoff sleeps by it and wakes from them at once
when a stop is requested, so no wait outlives the deadline or a Ctrl-C.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from currents_export.errors import SendInterrupted


class Stop:
    """A deadline (monotonic seconds, or None) and a stop that can be requested any time."""

    def __init__(
        self, deadline: float | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.deadline = deadline
        self._clock = clock
        self._requested = threading.Event()
        self.reason: str | None = None

    def __repr__(self) -> str:
        return f"Stop(deadline={self.deadline!r}, requested={self._requested.is_set()})"

    @classmethod
    def after(cls, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> Stop:
        return cls(clock() + seconds, clock=clock)

    def request(self, reason: str) -> None:
        """Ask everything to stop (safe from a signal handler)."""
        if self.reason is None:
            self.reason = reason
        self._requested.set()

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    @property
    def stopped(self) -> bool:
        """True once a stop was requested or the deadline has passed."""
        if self._requested.is_set():
            return True
        return self.deadline is not None and self._clock() >= self.deadline

    def why(self) -> str:
        if self.reason is not None:
            return self.reason
        return "the deadline is reached"

    def interrupted(self) -> SendInterrupted:
        """The error a wait or a send raises when it meets this stop."""
        return SendInterrupted(
            f"{self.why()}: progress is saved and the object resumes on its next run")

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline; 0 once stopped)."""
        if self._requested.is_set():
            return 0.0
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self._clock())

    def bound(self, seconds: float) -> float:
        """``seconds``, cut to what is left before the deadline."""
        left = self.remaining()
        return seconds if left is None else min(seconds, left)

    def sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds`` (never past the deadline); False if stopped meanwhile."""
        wait = self.bound(seconds)
        if wait > 0:
            self._requested.wait(wait)
        return not self.stopped
