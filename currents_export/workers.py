"""``--workers N``: one replay or backfill run over N worker processes.

The parent hands objects out in listing order, one at a time, to the worker that asks, so
the listing is read only as fast as the workers take it and the parent knows who holds
what. Each worker has its own pipe (a worker killed holding a shared queue's lock would
stall the others), is started with "spawn" (never a fork of a threaded process) and builds
its own pipeline from picklable settings; the API key travels in the start-up pipe, never
on a command line or in the environment.

    parent → worker   HandOut(ticket) · NoMore() · StopWork(reason)
    worker → parent   Hello(ledger owner) · Want() · Progress(snapshot)
                      Finished(seq, report, new dead-letter files) · Summary(summary)
                      Fatal(kind, message)

Anything else received is ignored by the parent (logged) and taken as ``NoMore`` by a worker
(it never hangs). Workers ignore SIGINT/SIGTERM: the parent's first signal (or its death)
makes each save progress, report and exit; a second kills them. A worker that dies without
a summary is replaced: the parent frees its leases and hands its unfinished objects out
again first; one whose worker died more than ``MAX_DEATHS`` times is reported failed
(retryable). One display (a ``ReportedSnapshot`` per worker) and one merged summary.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from currents_export.counts import ObjectReport, ProgressSnapshot, RunSummary
from currents_export.display import LiveProgress, ReportedSnapshot
from currents_export.errors import ConfigurationError, CurrentsExportError
from currents_export.sources import SourceObject
from currents_export.sources.local import local_object
from currents_export.sources.s3 import s3_client, s3_object
from currents_export.stopping import Stop

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from currents_export.ledger import Ledger

log = logging.getLogger(__name__)

CONTEXT = multiprocessing.get_context("spawn")
SNAPSHOT_EVERY_S = 0.5  # how often a worker sends its snapshot
POLL_S = 0.2  # the parent's longest wait before it looks at a stop request
MAX_DEATHS = 3  # an object whose worker died more often than this is reported failed
STOP_GRACE_S = 60.0  # after an error in the parent: how long stopping workers may take
EXIT_GRACE_S = 10.0  # how long a worker whose pipe closed may take to exit
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


# ---- what crosses the process boundary ----------------------------------------------------

@dataclass(frozen=True, slots=True)
class Ticket:
    """A source object as plain values (its ``opener`` may hold a client: it stays)."""

    seq: int  # the order in the listing (1, 2, ...); a re-hand-out keeps it
    uri: str
    key: str
    size: int | None
    fingerprint: str | None
    origin: tuple[str, ...]

    @classmethod
    def of(cls, seq: int, source: SourceObject) -> Ticket:
        if source.origin is None:
            raise ValueError(f"{source.uri}: cannot be handed to a worker process")
        return cls(seq, source.uri, source.key, source.size, source.fingerprint, source.origin)

    def open(self, s3: Callable[[], S3Client]) -> SourceObject:
        """The source object again, in the worker (``s3``: the worker's S3 client)."""
        kind = self.origin[0]
        if kind == "file":
            return local_object(Path(self.origin[1]), self.size)
        if kind == "s3":
            _, bucket, key, version_id = self.origin
            etag = (self.fingerprint.removeprefix("s3etag:")
                    if self.fingerprint and self.fingerprint.startswith("s3etag:") else None)
            return s3_object(s3(), bucket, key, size=self.size, etag=etag,
                             version_id=version_id or None)
        raise ValueError(f"{self.uri}: unknown origin {kind!r}")


# parent → worker

@dataclass(frozen=True, slots=True)
class HandOut:
    """The answer to ``Want``: the next object to process."""

    ticket: Ticket


@dataclass(frozen=True, slots=True)
class NoMore:
    """The answer to ``Want`` when no object is left for this worker: its run ends."""


@dataclass(frozen=True, slots=True)
class StopWork:
    """Stop: save progress, report every object, send the summary."""

    reason: str


ToWorker: TypeAlias = HandOut | NoMore | StopWork


# worker → parent

@dataclass(frozen=True, slots=True)
class Hello:
    """The worker's pipeline is built; ``owner``: its ledger's lease owner."""

    owner: str | None


@dataclass(frozen=True, slots=True)
class Want:
    """The pipeline wants its next object (answered by ``HandOut`` or ``NoMore``)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """The worker's display snapshot (every ``SNAPSHOT_EVERY_S``, and once at its end)."""

    snapshot: ProgressSnapshot


@dataclass(frozen=True, slots=True)
class Finished:
    """An object's report; ``seq``: its ticket's (0 if unknown); ``dead_letter_files``:
    the dead-letter files the worker closed since its last report."""

    seq: int
    report: ObjectReport
    dead_letter_files: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Summary:
    """The worker's run ended cleanly: its summary (its last message)."""

    summary: RunSummary


@dataclass(frozen=True, slots=True)
class Fatal:
    """The worker failed (``config``: the configuration must be fixed): the run stops."""

    kind: Literal["config", "error"]
    message: str


ToParent: TypeAlias = Hello | Want | Progress | Finished | Summary | Fatal


class WorkerPipeline(Protocol):
    """What a worker uses of its pipeline (a ``Pipeline``; its ``ledger`` may name an
    ``owner``, its ``dead_letter`` its ``files``)."""

    @property
    def ledger(self) -> object: ...

    def run(self, objects: Iterable[SourceObject]) -> RunSummary: ...

    def snapshot(self) -> ProgressSnapshot: ...


@dataclass(frozen=True)
class WorkerSpec:
    """How a worker builds its pipeline: ``build(*args, stack, stop, on_object)``, a
    module-level function (pickled by name) and picklable arguments (hidden from repr:
    they hold the API key)."""

    build: Callable[..., WorkerPipeline]
    args: tuple[Any, ...] = field(repr=False)
    s3_endpoint_url: str | None = None


# ---- the worker process --------------------------------------------------------------------

def _worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """A worker process's entry point (signals arrive blocked: see ``_signals_blocked``)."""
    for signum in _SIGNALS:  # the parent decides when to stop
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    _Worker(spec, conn).run()


class _Worker:
    def __init__(self, spec: WorkerSpec, conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        self.stop = Stop()
        self._send_lock = threading.Lock()
        self._inbox: queue.SimpleQueue[ToWorker] = queue.SimpleQueue()
        self._handed: dict[str, deque[int]] = {}  # uri → seqs handed over, not finished
        self._handed_lock = threading.Lock()
        self._files_told = 0  # dead-letter files already named to the parent
        self._ended = threading.Event()  # the pipeline ended the run: ask for no more
        self._pipeline: WorkerPipeline | None = None
        self._s3: S3Client | None = None

    def run(self) -> None:
        threading.Thread(target=self._listen, name="parent", daemon=True).start()
        try:
            with ExitStack() as stack:
                pipeline = self._pipeline = self.spec.build(
                    *self.spec.args, stack, self.stop, self._finished)
                self._send(Hello(getattr(pipeline.ledger, "owner", None)))
                done = threading.Event()
                reporter = threading.Thread(target=self._report_progress, args=(done,),
                                            name="snapshots", daemon=True)
                reporter.start()
                try:
                    summary = pipeline.run(self._objects())
                finally:
                    done.set()
                    reporter.join()
            # Closed: the dead letter is flushed, the ledger and the client are closed.
            self._send(Progress(self._snapshot()))
            self._send(Summary(summary))
        except BaseException as exc:
            log.debug("the worker failed", exc_info=True)
            kind: Literal["config", "error"] = (
                "config" if isinstance(exc, ConfigurationError) else "error")
            self._send(Fatal(kind, str(exc) or type(exc).__name__))
            raise SystemExit(1) from None
        finally:
            self.conn.close()

    def _objects(self) -> Iterator[SourceObject]:
        """What the pipeline reads: an object from the parent each time it asks for one."""
        while not self.stop.stopped and not self._ended.is_set():
            if not self._send(Want()):
                return
            match self._inbox.get():
                case HandOut(ticket):
                    with self._handed_lock:
                        self._handed.setdefault(ticket.uri, deque()).append(ticket.seq)
                    yield ticket.open(self._s3_client)
                case _:  # NoMore: the run ends here
                    return

    def _finished(self, report: ObjectReport) -> None:
        """``on_object``: tell the parent (from whichever thread the pipeline reports)."""
        with self._handed_lock:
            seqs = self._handed.get(report.object)
            seq = seqs.popleft() if seqs else 0
            if seqs is not None and not seqs:
                del self._handed[report.object]
        if report.not_started:  # the run ended here (a stop, an outage, the configuration)
            self._ended.set()
        dead_letter = getattr(self._pipeline, "dead_letter", None)
        with self._handed_lock:
            files: list[str] = getattr(dead_letter, "files", [])
            new, self._files_told = tuple(files[self._files_told:]), len(files)
        self._send(Finished(seq, report, new))

    def _s3_client(self) -> S3Client:
        if self._s3 is None:
            self._s3 = s3_client(self.spec.s3_endpoint_url)
        return self._s3

    def _snapshot(self) -> ProgressSnapshot:
        assert self._pipeline is not None
        return self._pipeline.snapshot()

    def _report_progress(self, done: threading.Event) -> None:
        while not done.wait(SNAPSHOT_EVERY_S):
            try:
                snapshot = self._snapshot()
            except Exception:  # the display must never stop the work
                log.debug("snapshot failed", exc_info=True)
                continue
            self._send(Progress(snapshot))

    def _listen(self) -> None:
        """Read the parent's messages; the parent gone means: stop."""
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self.stop.request("the parent process ended")
                self._inbox.put(NoMore())
                return
            except Exception as exc:  # not a message (it cannot be unpickled)
                message = exc
            match message:
                case StopWork(reason):
                    self.stop.request(reason)
                    self._inbox.put(NoMore())  # a request waiting for an answer ends
                case HandOut() | NoMore():
                    self._inbox.put(message)
                case _:
                    log.warning("an unknown message from the parent (%s): taken as the end",
                                type(message).__name__)
                    self._inbox.put(NoMore())

    def _send(self, message: ToParent) -> bool:
        try:
            with self._send_lock:
                self.conn.send(message)
            return True
        except (OSError, ValueError):  # the parent is gone
            self.stop.request("the parent process ended")
            return False


# ---- the parent ----------------------------------------------------------------------------

def _finished_share(report: ObjectReport, size: int | None) -> ProgressSnapshot:
    """What a finished object adds to the display: it was read if it is done, or failed
    after some of its records were."""
    read = report.status == "done" or (
        report.status == "failed" and not report.not_started
        and report.records + report.pending > 0)
    return ProgressSnapshot.of_finished(report, size, read=read)


class _Process(Protocol):
    """What the parent uses of a worker process (a ``multiprocessing`` process)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exitcode(self) -> int | None: ...

    def join(self, timeout: float | None = None) -> None: ...

    def kill(self) -> None: ...


@dataclass(eq=False)
class _Slot:
    """One worker process, as the parent sees it."""

    number: int
    process: _Process
    conn: Connection
    view: ReportedSnapshot = field(default_factory=ReportedSnapshot)
    owner: str | None = None  # its ledger's lease owner
    greeted: bool = False  # it said hello: its pipeline is built
    taken: dict[int, tuple[Ticket, SourceObject]] = field(default_factory=dict)
    reported: RunSummary = field(default_factory=RunSummary)  # its reports so far
    finished: ProgressSnapshot = field(default_factory=ProgressSnapshot)  # as displayed
    summary: RunSummary | None = None
    fatal: Fatal | None = None
    wants: bool = False  # it asked for an object and has no answer yet

    def send(self, message: ToWorker) -> None:
        with contextlib.suppress(OSError, ValueError):  # it died: its end is seen soon
            self.conn.send(message)


class WorkerPool:
    """Run the objects over ``workers`` processes; ``run`` returns the merged summary.

    ``ledger``: the parent's own connection, used only to free the leases of a worker
    that died. ``kill``: SIGKILL every worker (the second Ctrl-C).
    """

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        workers: int,
        stop: Stop,
        dry_run: bool = False,
        progress: LiveProgress | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("at least one worker")
        self.spec = spec
        self.workers = workers
        self.stop = stop
        self.progress = progress
        self.ledger = ledger
        self._total = RunSummary(dry_run=dry_run)
        self._own_view = ReportedSnapshot()  # objects the parent reports itself
        self._slots: list[_Slot] = []  # every worker started
        self._live: list[_Slot] = []
        self._listing: Iterator[SourceObject] = iter(())
        self._exhausted = False
        self._seq = 0
        self._again: deque[tuple[Ticket, SourceObject]] = deque()  # a dead worker's objects
        self._deaths: dict[int, int] = {}  # seq → deaths of workers holding it
        self._ended: str | None = None  # why no further object starts (not a stop)
        self._fatal: Fatal | None = None
        self._stop_sent = False
        self._startup_deaths = 0
        self._dead_letters: dict[str, None] = {}
        # Until every worker of the first batch is up, their requests wait: the first one
        # up would otherwise take the first objects as fast as it can read them.
        self._serving = False

    def summary_so_far(self) -> RunSummary:
        """What the workers reported so far, the objects they hold counted not finished (a
        second Ctrl-C's summary, written after ``kill``)."""
        summary = RunSummary(dry_run=self._total.dry_run)
        summary.merge(self._total)
        for slot in list(self._live):  # not merged into the total yet
            summary.merge(slot.reported)
            summary.objects_unfinished += len(slot.taken)
        return summary

    def kill(self) -> None:
        """SIGKILL every worker still running (safe from a signal handler)."""
        for slot in self._slots:
            with contextlib.suppress(Exception):
                if slot.process.exitcode is None:
                    slot.process.kill()

    def run(self, objects: Iterable[SourceObject]) -> RunSummary:
        started = time.monotonic()
        try:
            self._start(objects)
            while self._live:
                self._step()
        finally:
            self._shut_down()
        return self._result(time.monotonic() - started)

    # -- the loop -------------------------------------------------------------------------------

    def _start(self, objects: Iterable[SourceObject]) -> None:
        self._listing = iter(objects)
        if self.progress is not None:
            self.progress.add(self._own_view)
        for _ in range(self.workers):
            self._start_worker()

    def _step(self) -> None:
        """Pass a stop on, wait for messages (or a worker's end) and handle them."""
        if self.stop.requested and not self._stop_sent:
            self._send_stop(self.stop.why())
        ready = wait([slot.conn for slot in self._live], timeout=POLL_S)
        for slot in list(self._live):
            if slot.conn not in ready:
                continue
            while True:
                try:
                    if not slot.conn.poll():
                        break
                    message = slot.conn.recv()
                except (EOFError, OSError):  # it exited (or died)
                    self._worker_ended(slot)
                    break
                except Exception as exc:  # not a message (it cannot be unpickled)
                    message = exc
                self._handle(slot, message)

    def _handle(self, slot: _Slot, message: object) -> None:
        match message:
            case Want():
                slot.wants = True
                self._answer(slot)
            case Progress(snapshot):
                slot.view.update(snapshot)
            case Finished(seq, report, dead_letter_files):
                self._finished(slot, seq, report, dead_letter_files)
            case Hello(owner):
                slot.owner, slot.greeted = owner, True
                self._startup_deaths = 0
                self._answer_all()
            case Summary(summary):
                slot.summary = summary
            case Fatal(_, text):
                slot.fatal = self._fatal = message
                self._send_stop(f"a worker process failed: {text}")
            case _:  # a bug, never data: the worker's objects are still accounted for
                log.warning("worker process %d sent an unknown message (%s): ignored",
                            slot.number, type(message).__name__)

    def _answer(self, slot: _Slot) -> None:
        """Answer the worker's request for an object now, or leave it waiting.

        An object whose worker died (a suspect: it may be what kills them) goes only to a
        worker that holds nothing else, and that worker gets nothing more until it is
        finished; so a death blames the right object. Before every worker of the first
        batch is up, requests wait: the first one up would take the first objects as fast
        as it can read them.
        """
        if not slot.wants:
            return
        if self.stop.requested or self._ended is not None or self._fatal is not None:
            self._reply(slot, None)
        elif not self._serving:
            return
        elif any(seq in self._deaths for seq in slot.taken):
            return  # it holds a suspect
        elif self._again and not slot.taken:
            self._reply(slot, self._again.popleft())
        elif (item := self._from_listing()) is not None:
            self._reply(slot, item)
        elif not self._again:
            self._reply(slot, None)
        # else: suspects are left, for when this worker holds nothing

    def _answer_all(self) -> None:
        if not self._serving and all(slot.greeted for slot in self._live):
            self._serving = True
        for slot in list(self._live):
            self._answer(slot)

    def _reply(self, slot: _Slot, item: tuple[Ticket, SourceObject] | None) -> None:
        slot.wants = False
        if item is None:
            slot.send(NoMore())
            return
        ticket, source = item
        slot.taken[ticket.seq] = (ticket, source)
        slot.send(HandOut(ticket))

    def _from_listing(self) -> tuple[Ticket, SourceObject] | None:
        if self._exhausted:
            return None
        try:
            source = next(self._listing)
        except StopIteration:
            self._exhausted = True
            return None
        self._seq += 1
        return Ticket.of(self._seq, source), source

    def _finished(
        self, slot: _Slot, seq: int, report: ObjectReport, dead_letter_files: tuple[str, ...]
    ) -> None:
        taken = slot.taken.pop(seq, None)
        slot.reported.add(report)
        slot.finished += _finished_share(report, taken[0].size if taken else None)
        self._note_dead_letters(dead_letter_files)
        if report.not_started and not self.stop.requested and self._ended is None:
            self._ended = report.error or "not started: the run ended"
        self._answer_all()

    def _send_stop(self, reason: str) -> None:
        self._stop_sent = True
        for slot in self._live:
            slot.send(StopWork(reason))
        self._answer_all()  # waiting requests: no more objects

    # -- starting and ending workers ------------------------------------------------------------

    def _start_worker(self) -> None:
        number = len(self._slots) + 1
        process, conn = self._launch(number)
        slot = _Slot(number, process, conn)
        self._slots.append(slot)
        self._live.append(slot)
        if self.progress is not None:
            self.progress.add(slot.view)
        if self._stop_sent:
            slot.send(StopWork(self.stop.why()))
        log.debug("started worker %d (pid %s)", number, process.pid)

    def _launch(self, number: int) -> tuple[_Process, Connection]:
        """Start worker process ``number``: the process, and the parent's end of its pipe."""
        parent_end, child_end = CONTEXT.Pipe(duplex=True)
        process = CONTEXT.Process(target=_worker_main, args=(self.spec, child_end),
                                  name=f"currents-export-worker-{number}")
        # the child starts with signals blocked, then ignores them
        with _signals_blocked(), _main_script_left_out():
            process.start()
        child_end.close()  # so that its death closes the pipe
        return process, parent_end

    def _worker_ended(self, slot: _Slot) -> None:
        self._live.remove(slot)
        try:
            self._end_of(slot)
        finally:
            self._answer_all()

    def _end_of(self, slot: _Slot) -> None:
        slot.process.join(EXIT_GRACE_S)
        if slot.process.exitcode is None:
            slot.process.kill()
            slot.process.join()
        slot.conn.close()
        how = _how_it_ended(slot.process.exitcode)
        if slot.summary is not None:  # a clean end: its summary says it all
            self._total.merge(slot.summary)
            self._note_dead_letters(slot.summary.dead_letter_files)
            for ticket, source in slot.taken.values():  # never expected: not reported
                self._report(source, ticket, f"{ticket.uri}: the worker ended without "
                                             "reporting it; the next run resumes it")
            return
        # It died: what it reported counts; what it held goes to another worker.
        self._total.merge(slot.reported)
        slot.view.update(slot.finished)  # the display keeps its finished objects
        if slot.fatal is not None:
            for ticket, source in slot.taken.values():
                self._report(source, ticket, f"{ticket.uri}: not finished: a worker process "
                                             f"failed ({slot.fatal.message})")
            return
        self._total.worker_restarts += 1
        log.warning("worker process %d (pid %s) died (%s) holding %d objects; they are handed "
                    "to another worker", slot.number, slot.process.pid, how, len(slot.taken))
        if not slot.greeted:
            self._startup_deaths += 1
            if self._startup_deaths > MAX_DEATHS and self._ended is None:
                self._ended = (f"not started: worker processes die as they start ({how}); "
                               "run with --workers 1 to see why")
        for ticket, source in sorted(slot.taken.values(), key=lambda item: item[0].seq):
            self._hand_again(slot, ticket, source, how)
        if self._work_left():
            self._start_worker()

    def _hand_again(self, slot: _Slot, ticket: Ticket, source: SourceObject, how: str) -> None:
        deaths = self._deaths[ticket.seq] = self._deaths.get(ticket.seq, 0) + 1
        if deaths > MAX_DEATHS:
            self._report(source, ticket, f"{ticket.uri}: the worker process reading it died "
                                         f"{deaths} times (last: {how}); it is left pending and "
                                         "resumes from its checkpoint on the next run")
            return
        if self.stop.requested or self._ended is not None:
            self._report(source, ticket, f"{ticket.uri}: the worker process reading it died "
                                         f"({how}) as the run was ending; it resumes from its "
                                         "checkpoint on the next run")
            return
        if slot.owner is not None and self.ledger is not None:
            try:  # its owner is dead: the next worker may claim it at once
                self.ledger.release(source.identity, slot.owner)
            except Exception as exc:  # then its lease must expire first
                log.warning("%s: could not free the lease of the dead worker (%s)",
                            ticket.uri, exc)
        self._again.append((ticket, source))

    def _work_left(self) -> bool:
        if self.stop.requested or self._ended is not None or self._fatal is not None:
            return False
        return bool(self._again) or not self._exhausted

    def _shut_down(self) -> None:
        """After an error in the parent: workers stop (saving progress), or are killed."""
        if not self._live:
            return
        self._send_stop("the run ended with an error")
        deadline = time.monotonic() + STOP_GRACE_S
        for slot in self._live:
            slot.process.join(max(0.0, deadline - time.monotonic()))
        self.kill()
        for slot in self._live:
            slot.process.join()
            slot.conn.close()
        self._live.clear()

    # -- what the parent reports itself ---------------------------------------------------------

    def _result(self, elapsed_s: float) -> RunSummary:
        """The run's summary, once every worker has ended."""
        if self._fatal is not None:
            if self._fatal.kind == "config":
                raise ConfigurationError(self._fatal.message)
            raise CurrentsExportError(f"a worker process failed: {self._fatal.message}")
        self._report_the_rest()
        total = self._total
        total.elapsed_s = elapsed_s
        total.interrupted = total.interrupted or self.stop.requested
        total.dead_letter_files = list(self._dead_letters)
        return total

    def _report_the_rest(self) -> None:
        """Objects never finished by a worker: handed out again, then the listing's rest
        (read to its end, as a single pipeline reads it), each reported not started."""
        if self.stop.requested:
            reason = f"not started: {self.stop.why()}"
        else:
            reason = self._ended or "not started: no worker process was left to take it"
        while self._again:
            ticket, source = self._again.popleft()
            self._report(source, ticket, reason, not_started=True)
        if not self._exhausted:
            for source in self._listing:
                self._report(source, None, reason, not_started=True)
            self._exhausted = True

    def _report(
        self, source: SourceObject, ticket: Ticket | None, error: str, *,
        not_started: bool = False,
    ) -> None:
        report = ObjectReport(object=source.uri, event_type=source.key_event_type,
                              status="failed", error=error, not_started=not_started)
        if not not_started:
            log.error("%s", error)
        self._total.add(report)
        self._own_view.update(self._own_view.snapshot() + _finished_share(report, source.size))

    def _note_dead_letters(self, files: Iterable[str]) -> None:
        for name in files:
            self._dead_letters[name] = None


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Block SIGINT/SIGTERM in this thread while a worker is started: the child inherits
    the mask, so it cannot be interrupted before it ignores them; signals that arrive
    meanwhile are delivered to the parent afterwards, not lost."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _main_script_left_out() -> Iterator[None]:
    """Start a child without running the command's script again in it.

    ``spawn`` re-runs the parent's ``__main__`` script in each child (as ``__mp_main__``),
    and the ``currents-export`` script imports the whole command line. Nothing a worker is
    given is defined there, so the script's path is hidden while the child starts
    (``python -m`` needs nothing: spawn skips a ``__main__`` module by itself).
    """
    main = sys.modules["__main__"]
    path = None
    if getattr(main, "__spec__", None) is None:
        path = main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        if path is not None:
            main.__file__ = path


def default_workers() -> int:
    """The CPUs this process may run on (at most 64)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return max(1, min(count, 64))
