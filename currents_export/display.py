"""The live progress display of ``replay`` and ``backfill``, on stderr.

One thread polls the snapshot providers (one per pipeline, or a ``ReportedSnapshot`` fed by
a worker process) once a second and adds them up. Snapshots hold cumulative counts, never
deltas, so a late or lost one costs freshness, never correctness. On a terminal one line is
rewritten at every poll; elsewhere a timestamped line every ``LOG_EVERY_S`` s. Lines go to
the stream (never stdout, which carries the summary), not to a logger: ``--progress``
alone decides whether they appear (logged at INFO, the default level would hide them from
``--progress 2>run.log``), and no logger's configuration is touched.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Protocol, TypeVar

import orjson

from currents_export.counts import ProgressSnapshot, SendingReport

log = logging.getLogger(__name__)

REFRESH_S = 1.0  # how often providers are polled (and a terminal line rewritten)
LOG_EVERY_S = 30.0  # how often a line is written when the stream is not a terminal
RATE_WINDOW_S = 10.0  # events/s is measured over this recent window

_T = TypeVar("_T")


class SnapshotProvider(Protocol):
    def snapshot(self) -> ProgressSnapshot: ...


class ReportedSnapshot:
    """A provider fed from elsewhere (e.g. a worker process's periodic messages): it
    answers the latest snapshot it was given."""

    def __init__(self) -> None:
        self._latest = ProgressSnapshot()

    def update(self, snapshot: ProgressSnapshot) -> None:
        self._latest = snapshot  # one reference swap: atomic

    def snapshot(self) -> ProgressSnapshot:
        return self._latest


@dataclass(frozen=True, slots=True)
class Totals:
    """How many objects the run has to go through, and their bytes when all are known."""

    objects: int
    bytes: int | None = None


def format_duration(seconds: float) -> str:
    seconds = max(int(seconds + 0.5), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def estimate_eta(
    snap: ProgressSnapshot, *, rate: float | None, elapsed_s: float, totals: Totals | None
) -> float | None:
    """Seconds left, or None when it cannot be told (no total, nothing measured yet).

    With the bytes known: the records still to come are estimated from the records per
    byte of the objects read so far (the remaining bytes include the objects in flight,
    less what of them is already accounted for), at the recent event rate. Otherwise:
    the objects left at the run's average pace per object.
    """
    if totals is None:
        return None
    left = totals.objects - snap.objects_finished
    if left <= 0:
        return 0.0
    if totals.bytes is not None and snap.bytes_processed > 0 and snap.records_processed > 0:
        if not rate:
            return None
        per_byte = snap.records_processed / snap.bytes_processed
        to_come = (totals.bytes - snap.bytes_finished) * per_byte - snap.in_flight_records
        return max(to_come, 0.0) / rate
    if snap.objects_finished > 0 and elapsed_s > 0:
        return left * elapsed_s / snap.objects_finished
    return None


def format_status(
    label: str,
    snap: ProgressSnapshot,
    *,
    elapsed_s: float,
    rate: float | None,
    totals: Totals | None = None,
    sending: SendingReport | None = None,
) -> str:
    """The status line: elapsed and ETA, events/s, objects, where the records went, then
    what sending meets (the budget, 429s, waits); the most useful first: a terminal
    narrower than the line cuts its end."""
    objects = f"{snap.objects_finished:,}"
    if totals is not None:
        objects += f"/{totals.objects:,}"
    notes = [f"{snap.objects_in_flight:,} in flight"]
    if snap.objects_failed:
        notes.append(f"{snap.objects_failed:,} failed")
    if snap.objects_unfinished:
        notes.append(f"{snap.objects_unfinished:,} not finished")
    if snap.objects_already_done:
        notes.append(f"{snap.objects_already_done:,} already done")
    if snap.objects_skipped:
        notes.append(f"{snap.objects_skipped:,} skipped")
    head = f"{label} {format_duration(elapsed_s)}"
    eta = estimate_eta(snap, rate=rate, elapsed_s=elapsed_s, totals=totals)
    if eta is not None and totals is not None and snap.objects_finished < totals.objects:
        head += f", ETA {format_duration(eta)}"
    parts = [
        head,
        f"{rate:,.0f} events/s" if rate is not None else "- events/s",
        f"objects {objects} ({', '.join(notes)})",
        f"delivered {snap.delivered:,}",
        f"skipped {snap.skipped:,}",
        f"dead-lettered {snap.dead_lettered:,}",
    ]
    if snap.duplicates:
        parts.append(f"duplicates {snap.duplicates:,}")
    if sending is not None:
        parts.append(sending.describe())
    return " | ".join(parts)


def status_json(
    label: str,
    snap: ProgressSnapshot,
    *,
    elapsed_s: float,
    rate: float | None,
    totals: Totals | None = None,
    sending: SendingReport | None = None,
    final: bool = False,
) -> dict[str, object]:
    """The status line's facts for programs (``--progress json``): one object per line."""
    eta = estimate_eta(snap, rate=rate, elapsed_s=elapsed_s, totals=totals)
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": label,
        "final": final,
        "elapsed_s": round(elapsed_s, 1),
        "eta_s": None if eta is None else round(eta, 1),
        "events_per_second": None if rate is None else round(rate, 1),
        "objects_total": None if totals is None else totals.objects,
        "objects_finished": snap.objects_finished,
        "objects_in_flight": snap.objects_in_flight,
        "objects_done": snap.objects_done,
        "objects_already_done": snap.objects_already_done,
        "objects_failed": snap.objects_failed,
        "objects_unfinished": snap.objects_unfinished,
        "objects_skipped_failed": snap.objects_skipped,
        "records": snap.records,
        "delivered": snap.delivered,
        "skipped": snap.skipped,
        "dead_lettered": snap.dead_lettered,
        "duplicates": snap.duplicates,
        "sending": (sending.to_json(snap.delivered, elapsed_s)
                    if sending is not None else None),
    }


class LiveProgress:
    """Poll the providers every ``refresh_s`` on a thread of its own and show the sum.

    Use as a context manager (or ``start``/``close``): closing writes the final line (and
    on a terminal ends it with a newline). Providers may be added while it runs.
    """

    def __init__(
        self,
        label: str,
        stream: IO[str],
        *,
        refresh_s: float | None = None,
        log_every_s: float | None = None,
        window_s: float = RATE_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        as_json: bool = False,
    ) -> None:
        self.label = label
        self._as_json = as_json  # a JSON object per line (``status_json``), never rewritten
        self._stream = stream
        try:
            self._tty = bool(stream.isatty())
        except (AttributeError, ValueError, OSError):
            self._tty = False
        self._refresh_s = REFRESH_S if refresh_s is None else refresh_s
        self._log_every_s = LOG_EVERY_S if log_every_s is None else log_every_s
        self._window_s = window_s
        self._clock = clock
        self._providers: list[SnapshotProvider] = []
        self._sending: Callable[[], SendingReport] | None = None
        self._totals: Totals | None = None
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, int]] = deque()
        self._started = clock()
        self._last_line_at: float | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._broken = False  # the stream failed: stop writing, never stop the run
        self.updates = 0  # lines written so far

    # -- what the run tells it --------------------------------------------------------------

    def add(self, provider: SnapshotProvider) -> None:
        with self._lock:
            self._providers.append(provider)

    def watch_sending(self, report: Callable[[], SendingReport]) -> None:
        """Show what the run's sending meets (its budget, 429s, waits) too."""
        self._sending = report

    def set_totals(self, objects: int, sizes: Iterable[int | None] = ()) -> None:
        """The number of objects of the run, and their sizes (bytes known only if all are)."""
        sizes = list(sizes)
        known = bool(sizes) and all(size is not None for size in sizes)
        total_bytes = sum(size for size in sizes if size is not None) if known else None
        with self._lock:
            self._totals = Totals(objects, total_bytes)

    def counting(self, objects: Iterable[_T]) -> Iterator[_T]:
        """Pass a lazy listing through; the totals are set once it is exhausted."""
        count, total_bytes, known = 0, 0, True
        for item in objects:
            count += 1
            size = getattr(item, "size", None)
            if size is None:
                known = False
            else:
                total_bytes += size
            yield item
        with self._lock:
            self._totals = Totals(count, total_bytes if known and count else None)

    # -- the thread ---------------------------------------------------------------------------

    def start(self) -> LiveProgress:
        self._started = self._clock()
        self._samples.append((self._started, 0))  # the rate from the first tick on
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._tick(final=True)

    def __enter__(self) -> LiveProgress:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _loop(self) -> None:
        while not self._stopping.wait(self._refresh_s):
            self._tick()

    def snapshot(self) -> ProgressSnapshot:
        """The sum of every provider's snapshot."""
        with self._lock:
            providers = list(self._providers)
        total = ProgressSnapshot()
        for provider in providers:
            total = total + provider.snapshot()
        return total

    def _rate(self, now: float, records: int) -> float | None:
        """Events/s over the recent window (the run's average until a window exists)."""
        samples = self._samples
        samples.append((now, records))
        while len(samples) > 2 and now - samples[1][0] >= self._window_s:
            samples.popleft()
        first_at, first = samples[0]
        if now - first_at > 0 and len(samples) > 1:
            return (records - first) / (now - first_at)
        return None

    def _tick(self, *, final: bool = False) -> None:
        try:
            snap = self.snapshot()
            sending = self._sending() if self._sending is not None else None
        except Exception:  # a display never stops a run
            log.debug("progress snapshot failed", exc_info=True)
            return
        now = self._clock()
        elapsed = now - self._started
        if final:
            rate = snap.records_this_run / elapsed if elapsed > 0 else None
        else:
            rate = self._rate(now, snap.records_this_run)
        with self._lock:
            totals = self._totals
        if self._as_json:
            if final or now - (self._last_line_at or self._started) >= self._log_every_s:
                self._last_line_at = now
                self._write(orjson.dumps(status_json(
                    self.label, snap, elapsed_s=elapsed, rate=rate, totals=totals,
                    sending=sending, final=final)).decode() + "\n")
            return
        line = format_status(self.label, snap, elapsed_s=elapsed, rate=rate, totals=totals,
                             sending=sending)
        if self._tty:
            width = shutil.get_terminal_size((120, 24)).columns
            self._write(f"\r{line[:max(width - 1, 20)]}\x1b[K" + ("\n" if final else ""))
        elif final or now - (self._last_line_at or self._started) >= self._log_every_s:
            self._last_line_at = now
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self._write(f"{stamp} {line}{' (final)' if final else ''}\n")

    def _write(self, text: str) -> None:
        if self._broken:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
            self.updates += 1
        except (OSError, ValueError):  # a closed or broken stream: keep running, quietly
            self._broken = True
