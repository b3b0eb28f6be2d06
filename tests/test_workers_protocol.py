"""The ``--workers`` protocol without worker processes.

The parent's side is driven message by message through in-memory pipes (``PipeRun``: the
test plays the workers); the worker's side runs ``_Worker`` in a thread against a fake
pipeline (the test plays the parent); ``ThreadRun`` joins both sides. What real processes
add (spawn, signals, SIGKILL, the ledger's leases) is in tests/e2e/test_workers.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from currents_export import workers
from currents_export.counts import ObjectReport, ProgressSnapshot, RunSummary, Tally
from currents_export.errors import ConfigurationError, CurrentsExportError
from currents_export.sources import SourceObject
from currents_export.sources.local import local_object
from currents_export.stopping import Stop
from currents_export.workers import (
    MAX_DEATHS,
    Fatal,
    Finished,
    HandOut,
    Hello,
    NoMore,
    Progress,
    StopWork,
    Summary,
    Ticket,
    Want,
    WorkerPool,
    WorkerSpec,
)

TYPE = "users.behaviors.CustomEvent"
GUARD_S = 30.0  # the longest wait for a message or a thread: a guard against a hang


def source(n: int, size: int | None = 100) -> SourceObject:
    """An object in the Currents layout (its identity is known without reading it)."""
    return local_object(Path(f"/bucket/event_type={TYPE}/date=2024-05-01-10/1/z/"
                             f"f+0+{n:010d}.avro"), size)


def done(obj: SourceObject, records: int = 10) -> ObjectReport:
    return ObjectReport(object=obj.uri, event_type=TYPE, records=records, delivered=records,
                        identity=obj.identity)


# ---- the parent, driven message by message ------------------------------------------------

class FakeProcess:
    """What the parent uses of a worker process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exitcode: int | None = None
        self.killed = False

    def join(self, timeout: float | None = None) -> None:
        pass

    def kill(self) -> None:
        self.killed = True
        if self.exitcode is None:
            self.exitcode = -signal.SIGKILL


class FakeLedger:
    def __init__(self) -> None:
        self.released: list[tuple[str, str]] = []

    def release(self, object_id: str, owner: str) -> bool:
        self.released.append((object_id, owner))
        return True


class PipeRun(WorkerPool):
    """A ``WorkerPool`` whose workers are played by the test: worker ``n`` (from 1) is
    ``ends[n - 1]``, the other end of its pipe; no process is started."""

    def __init__(self, workers: int = 1, *, stop: Stop | None = None,
                 ledger: FakeLedger | None = None) -> None:
        super().__init__(WorkerSpec(_unused_build, ()), workers=workers, stop=stop or Stop(),
                         ledger=ledger)  # type: ignore[arg-type]
        self.ends: list[Connection] = []
        self.processes: list[FakeProcess] = []

    def _launch(self, number: int) -> tuple[FakeProcess, Connection]:
        parent_end, worker_end = Pipe(duplex=True)
        self.ends.append(worker_end)
        self.processes.append(FakeProcess(1000 + number))
        return self.processes[-1], parent_end

    def say(self, number: int, *messages: object) -> None:
        """Worker ``number`` sends ``messages``; the parent handles them."""
        for message in messages:
            self.ends[number - 1].send(message)
        self._step()

    def heard(self, number: int) -> list[object]:
        """What the parent sent worker ``number`` since the last time."""
        end, out = self.ends[number - 1], []
        while end.poll():
            out.append(end.recv())
        return out

    def dies(self, number: int, exitcode: int = -signal.SIGKILL) -> None:
        self.processes[number - 1].exitcode = exitcode
        self.ends[number - 1].close()
        self._step()

    def ends_with(self, number: int, summary: RunSummary) -> None:
        self.ends[number - 1].send(Summary(summary))
        self.dies(number, exitcode=0)


def _unused_build(*_args: Any) -> Any:
    raise AssertionError("PipeRun starts no worker")


def started(objects: Iterable[SourceObject], workers: int = 1, **kwargs: Any) -> PipeRun:
    run = PipeRun(workers, **kwargs)
    run._start(objects)
    return run


def test_requests_wait_for_every_worker_then_objects_go_out_in_listing_order() -> None:
    objects = [source(1), source(2), source(3)]
    run = started(objects, workers=2)
    run.say(1, Hello("owner-1"), Want())
    assert run.heard(1) == []  # worker 2 is not up: the first one up does not take all
    run.say(2, Hello("owner-2"))
    assert run.heard(1) == [HandOut(Ticket.of(1, objects[0]))]
    run.say(2, Want())
    assert run.heard(2) == [HandOut(Ticket.of(2, objects[1]))]
    run.say(1, Want())
    assert run.heard(1) == [HandOut(Ticket.of(3, objects[2]))]
    run.say(2, Want())
    assert run.heard(2) == [NoMore()]
    assert [slot.owner for slot in run._slots] == ["owner-1", "owner-2"]


def test_reports_of_a_worker_that_dies_count_and_a_clean_end_counts_its_summary() -> None:
    first, second = source(1, size=300), source(2, size=500)
    run = started([first, second])
    run.say(1, Hello("owner-1"), Want())
    assert run.heard(1) == [HandOut(Ticket.of(1, first))]
    report = done(first, records=30)
    report.delivered, report.duplicates = 28, 2
    run.say(1, Finished(1, report, ("dl/w1-1.jsonl",)))
    run.dies(1)
    # What it reported counts; the display keeps its finished object.
    assert run._slots[0].view.snapshot() == ProgressSnapshot(
        objects_done=1, records=30, delivered=28, duplicates=2, bytes_finished=300,
        bytes_processed=300, records_processed=30)
    # A replacement takes the next object: the reported one is not handed out again.
    run.say(2, Hello("owner-2"), Want())
    assert run.heard(2) == [HandOut(Ticket.of(2, second))]
    later = done(second, records=50)
    run.say(2, Finished(2, later, ("dl/w2-1.jsonl",)), Want())
    assert run.heard(2) == [NoMore()]
    theirs = RunSummary()
    theirs.add(later)  # its summary, not its reports, counts once it ends cleanly
    theirs.dead_letter_files = ["dl/w2-1.jsonl", "dl/w2-2.jsonl"]
    run.ends_with(2, theirs)
    assert not run._live and len(run._slots) == 2

    summary = run._result(1.0)
    assert (summary.objects_done, summary.records, summary.delivered, summary.duplicates) == (
        2, 80, 78, 2)
    assert summary.by_event_type[TYPE].records == 80 and summary.balanced
    assert summary.worker_restarts == 1 and not summary.failures
    # Every file each worker closed, once: the dead one's as it told them, the other's
    # from its summary too.
    assert summary.dead_letter_files == ["dl/w1-1.jsonl", "dl/w2-1.jsonl", "dl/w2-2.jsonl"]


def test_a_dead_worker_s_objects_go_out_again_first_with_their_leases_freed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    objects = [source(n) for n in range(1, 5)]
    ledger = FakeLedger()
    run = started(objects, workers=2, ledger=ledger)
    run.say(1, Hello("owner-1"))
    run.say(2, Hello("owner-2"))
    run.say(1, Want())
    run.say(2, Want())
    assert run.heard(1) == [HandOut(Ticket.of(1, objects[0]))]
    assert run.heard(2) == [HandOut(Ticket.of(2, objects[1]))]

    with caplog.at_level(logging.WARNING, logger="currents_export.workers"):
        run.dies(1)
    assert "died (killed by SIGKILL) holding 1 objects" in caplog.text
    assert ledger.released == [(objects[0].identity, "owner-1")]  # its owner is dead
    assert len(run._slots) == 3 and run._total.worker_restarts == 1
    # The suspect goes only to a worker holding nothing: worker 2 holds one, so it gets
    # the listing's next; the replacement gets the suspect, under its own seq.
    run.say(2, Want())
    assert run.heard(2) == [HandOut(Ticket.of(3, objects[2]))]
    run.say(3, Hello("owner-3"), Want())
    assert run.heard(3) == [HandOut(Ticket.of(1, objects[0]))]
    # Holding a suspect, it gets nothing more until the suspect is finished.
    run.say(3, Want())
    assert run.heard(3) == []
    run.say(3, Finished(1, done(objects[0])))
    assert run.heard(3) == [HandOut(Ticket.of(4, objects[3]))]


def test_an_object_whose_worker_dies_more_than_max_deaths_times_is_reported_failed() -> None:
    poison = source(1, size=64)
    run = started([poison])
    handed = 0
    for number in range(1, MAX_DEATHS + 2):
        run.say(number, Hello(f"owner-{number}"), Want())
        assert run.heard(number) == [HandOut(Ticket.of(1, poison))]
        handed += 1
        run.dies(number)
    assert handed == MAX_DEATHS + 1
    assert not run._again  # not handed out again
    # The run goes on with the listing's rest (nothing here).
    run.say(MAX_DEATHS + 2, Hello("owner-last"), Want())
    assert run.heard(MAX_DEATHS + 2) == [NoMore()]
    run.ends_with(MAX_DEATHS + 2, RunSummary())

    summary = run._result(1.0)
    assert summary.worker_restarts == MAX_DEATHS + 1
    assert summary.objects_failed == 1 and summary.objects_not_started == 0
    [failure] = summary.failures
    assert failure["object"] == poison.uri and failure["retryable"] is True
    assert f"died {MAX_DEATHS + 1} times (last: killed by SIGKILL)" in failure["error"]
    assert run._own_view.snapshot() == ProgressSnapshot(objects_failed=1, bytes_finished=64)


def test_a_stop_goes_to_every_worker_once_and_nothing_more_is_handed_out() -> None:
    objects = [source(1), source(2), source(3)]
    stop = Stop()
    run = started(objects, workers=2, stop=stop)
    run.say(1, Hello("owner-1"), Want())  # waits: worker 2 is not up
    stop.request("interrupted by SIGINT")
    run._step()
    why = StopWork("interrupted by SIGINT")
    assert run.heard(1) == [why, NoMore()]  # the waiting request ends too
    assert run.heard(2) == [why]
    run._step()
    assert run.heard(1) == run.heard(2) == []  # once
    run.say(2, Hello("owner-2"), Want())
    assert run.heard(2) == [NoMore()]
    run._start_worker()  # a worker started after the stop is told at once
    assert run.heard(3) == [why]

    for number in (1, 2, 3):
        run.ends_with(number, RunSummary(interrupted=True))
    summary = run._result(1.0)
    assert summary.interrupted and summary.worker_restarts == 0
    # None was started: not finished (the stop's doing), not failed.
    assert summary.objects_unfinished == summary.objects_not_started == 3
    assert summary.objects_failed == 0 and summary.stopped_by == "interrupted by SIGINT"
    assert run._own_view.snapshot().objects_unfinished == 3


def test_a_worker_dying_during_a_stop_is_not_replaced_and_its_object_is_reported() -> None:
    objects = [source(1), source(2)]
    stop = Stop()
    run = started(objects, stop=stop)
    run.say(1, Hello("owner-1"), Want())
    assert run.heard(1) == [HandOut(Ticket.of(1, objects[0]))]
    stop.request("interrupted by SIGTERM")
    run.dies(1)
    assert not run._live and len(run._slots) == 1  # not replaced
    summary = run._result(1.0)
    assert summary.objects_failed == 1  # its worker died with it: a failure of its own
    assert summary.objects_unfinished == summary.objects_not_started == 1
    [failure] = summary.failures
    assert failure["object"] == objects[0].uri and "as the run was ending" in failure["error"]


@pytest.mark.parametrize(("kind", "error"), [("config", ConfigurationError),
                                              ("error", CurrentsExportError)])
def test_a_fatal_worker_stops_the_others_and_the_run_raises_its_error(
    kind: str, error: type[Exception],
) -> None:
    objects = [source(1), source(2)]
    run = started(objects, workers=2)
    run.say(1, Hello("owner-1"))
    run.say(2, Hello("owner-2"))
    run.say(1, Want())
    assert run.heard(1) == [HandOut(Ticket.of(1, objects[0]))]
    run.say(2, Fatal(kind, "the API key is refused"))  # type: ignore[arg-type]
    why = StopWork("a worker process failed: the API key is refused")
    assert run.heard(1) == [why] and run.heard(2) == [why]
    run.dies(2, exitcode=1)
    assert len(run._slots) == 2  # not replaced
    run.say(1, Want())
    assert run.heard(1) == [NoMore()]
    run.ends_with(1, RunSummary())
    with pytest.raises(error, match="the API key is refused") as raised:
        run._result(1.0)
    assert type(raised.value) is error


def test_unknown_and_garbled_messages_are_logged_and_ignored_by_the_parent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    objects = [source(1)]
    run = started(objects)
    with caplog.at_level(logging.WARNING, logger="currents_export.workers"):
        run.say(1, Hello("owner-1"), ("want",), "want", None)  # not messages: no request
        assert run.heard(1) == []
        run.ends[0].send_bytes(b"not a pickle")
        run._step()
        assert run.heard(1) == [] and run._live  # the worker and the run go on
        run.say(1, Want())
    assert run.heard(1) == [HandOut(Ticket.of(1, objects[0]))]
    unknown = [r.getMessage() for r in caplog.records if "unknown message" in r.getMessage()]
    assert len(unknown) == 4
    assert "(tuple)" in unknown[0] and "(UnpicklingError)" in unknown[3]


def test_progress_messages_feed_the_worker_s_display() -> None:
    run = started([source(1)])
    snapshot = ProgressSnapshot(objects_in_flight=1, records=7, delivered=7)
    run.say(1, Hello("owner-1"), Progress(snapshot))
    assert run._slots[0].view.snapshot() == snapshot


def test_the_second_signal_kills_the_workers_still_running() -> None:
    run = started([], workers=2)
    run.processes[0].exitcode = 0  # already ended
    run.kill()
    assert [p.killed for p in run.processes] == [False, True]


# ---- the worker, in a thread, with the test as its parent ----------------------------------

class FakePipeline:
    """What a worker builds: each object handed over is done, one record per byte; the
    listing ends at a stop, as a real pipeline's does."""

    def __init__(self, owner: str | None, stop: Stop,
                 on_object: Callable[[ObjectReport], None]) -> None:
        self.stop = stop
        self.on_object = on_object
        self.ledger = SimpleNamespace(owner=owner)
        self.dead_letter = SimpleNamespace(files=["dl/worker-1.jsonl"])
        self.read: list[SourceObject] = []

    def run(self, objects: Iterable[SourceObject]) -> RunSummary:
        summary = RunSummary()
        for obj in objects:
            self.read.append(obj)
            report = done(obj, records=obj.size or 0)
            summary.add(report)
            self.on_object(report)
        summary.interrupted = self.stop.requested
        return summary

    def snapshot(self) -> ProgressSnapshot:
        return ProgressSnapshot(objects_done=len(self.read))


def build_fake(owner: str | None, _stack: ExitStack, stop: Stop,
               on_object: Callable[[ObjectReport], None]) -> FakePipeline:
    return FakePipeline(owner, stop, on_object)


def build_refused(error: Exception, *_args: Any) -> FakePipeline:
    raise error


class ThreadEnd(Connection):
    """A worker's end of its pipe that, closed, ends the pipe as a process's exit does: a
    thread of the worker still reading it (``_listen``) would otherwise keep it open."""

    def close(self) -> None:
        if not self.closed:
            with socket.socket(fileno=os.dup(self.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        super().close()


def thread_pipe() -> tuple[Connection, ThreadEnd]:
    """``multiprocessing.Pipe(duplex=True)``, with a ``ThreadEnd`` for the worker."""
    parent_end, worker_end = socket.socketpair()
    return Connection(parent_end.detach()), ThreadEnd(worker_end.detach())


class WorkerThread:
    """``_Worker.run`` on a thread; ``parent``: the parent's end of its pipe."""

    def __init__(self, spec: WorkerSpec, name: str = "worker") -> None:
        self.parent, worker_end = thread_pipe()
        self.worker = workers._Worker(spec, worker_end)
        self.exit: int | str | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except SystemExit as exc:
            self.exit = exc.code

    @property
    def pipeline(self) -> FakePipeline:
        assert isinstance(self.worker._pipeline, FakePipeline)
        return self.worker._pipeline

    def receive(self) -> object:
        """The next message other than a periodic ``Progress``."""
        deadline = time.monotonic() + GUARD_S
        while self.parent.poll(max(0.0, deadline - time.monotonic())):
            message = self.parent.recv()
            if not isinstance(message, Progress):
                return message
        raise AssertionError("the worker sent nothing but its progress")

    def rest(self) -> list[object]:
        """Every message up to the worker's end (its pipe closed)."""
        out: list[object] = []
        deadline = time.monotonic() + GUARD_S
        while self.parent.poll(max(0.0, deadline - time.monotonic())):
            try:
                out.append(self.parent.recv())
            except EOFError:
                return out
        sent = [type(message).__name__ for message in out]
        raise AssertionError(f"the worker did not end; it sent {len(sent)} messages: "
                             f"{sorted(set(sent))}")

    def join(self) -> None:
        self.thread.join(GUARD_S)
        assert not self.thread.is_alive()


@contextlib.contextmanager
def worker_thread(spec: WorkerSpec) -> Iterator[WorkerThread]:
    worker = WorkerThread(spec)
    try:
        yield worker
    finally:
        worker.parent.close()
        worker.join()


def test_a_worker_greets_asks_reports_each_object_and_ends_with_its_summary() -> None:
    obj = source(1, size=30)
    with worker_thread(WorkerSpec(build_fake, ("owner-7",))) as worker:
        assert worker.receive() == Hello("owner-7")
        assert worker.receive() == Want()
        worker.parent.send(HandOut(Ticket.of(5, obj)))
        finished = worker.receive()
        assert isinstance(finished, Finished)
        assert (finished.seq, finished.dead_letter_files) == (5, ("dl/worker-1.jsonl",))
        assert finished.report == done(obj, records=30)
        assert worker.receive() == Want()
        worker.parent.send(NoMore())
        *_, last_progress, summary = worker.rest()
        worker.join()
    assert last_progress == Progress(ProgressSnapshot(objects_done=1))  # after the pipeline
    assert isinstance(summary, Summary)
    assert summary.summary.objects_done == 1 and summary.summary.records == 30
    assert summary.summary.by_event_type == {TYPE: Tally(records=30, delivered=30)}
    [read] = worker.pipeline.read  # the ticket opened as the same object
    assert (read.uri, read.size, read.origin, read.identity) == (
        obj.uri, obj.size, obj.origin, obj.identity)
    assert worker.exit is None


def test_a_stop_from_the_parent_ends_a_waiting_request_and_the_worker_saves_and_ends() -> None:
    with worker_thread(WorkerSpec(build_fake, ("owner-7",))) as worker:
        assert worker.receive() == Hello("owner-7")
        assert worker.receive() == Want()
        worker.parent.send(StopWork("interrupted by SIGINT"))
        *_, summary = worker.rest()
        worker.join()
    assert worker.worker.stop.why() == "interrupted by SIGINT"
    assert isinstance(summary, Summary) and summary.summary.interrupted
    assert worker.pipeline.read == []


def test_a_worker_whose_parent_is_gone_stops() -> None:
    with worker_thread(WorkerSpec(build_fake, ("owner-7",))) as worker:
        assert worker.receive() == Hello("owner-7")
        assert worker.receive() == Want()
        worker.parent.close()
        worker.join()
    assert worker.worker.stop.why() == "the parent process ended"
    assert worker.pipeline.read == [] and worker.exit is None


@pytest.mark.parametrize(("error", "kind", "text"), [
    (ConfigurationError("the API key is refused"), "config", "the API key is refused"),
    (RuntimeError(), "error", "RuntimeError"),
])
def test_a_worker_that_cannot_build_its_pipeline_sends_fatal_and_exits_1(
    error: Exception, kind: str, text: str,
) -> None:
    with worker_thread(WorkerSpec(build_refused, (error,))) as worker:
        assert worker.rest() == [Fatal(kind, text)]  # type: ignore[arg-type]
        worker.join()
    assert worker.exit == 1


@pytest.mark.parametrize("send", [
    pytest.param(lambda conn, ticket: conn.send(("object", ticket)), id="old-tuple"),
    pytest.param(lambda conn, ticket: conn.send_bytes(b"not a pickle"), id="garbled"),
])
def test_a_worker_takes_an_unknown_or_garbled_message_as_the_end(
    send: Callable[[Connection, Ticket], None], caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="currents_export.workers"), \
            worker_thread(WorkerSpec(build_fake, ("owner-7",))) as worker:
        assert worker.receive() == Hello("owner-7")
        assert worker.receive() == Want()
        send(worker.parent, Ticket.of(1, source(1)))
        *_, summary = worker.rest()  # it ends rather than waiting for ever
        worker.join()
    assert isinstance(summary, Summary) and summary.summary.objects_done == 0
    assert worker.pipeline.read == []
    assert "an unknown message from the parent" in caplog.text


# ---- both sides ----------------------------------------------------------------------------

class ThreadProcess:
    """A worker ``_Worker`` running on a thread, as a process to the parent."""

    def __init__(self, thread: WorkerThread) -> None:
        self._worker = thread
        self.pid = thread.thread.ident

    @property
    def exitcode(self) -> int | None:
        if self._worker.thread.is_alive():
            return None
        return int(self._worker.exit or 0)

    def join(self, timeout: float | None = None) -> None:
        self._worker.thread.join(timeout)

    def kill(self) -> None:
        raise AssertionError("a clean run kills no worker")


class ThreadRun(WorkerPool):
    def __init__(self, spec: WorkerSpec, workers: int) -> None:
        super().__init__(spec, workers=workers, stop=Stop())
        self.threads: list[WorkerThread] = []

    def _launch(self, number: int) -> tuple[ThreadProcess, Connection]:
        thread = WorkerThread(self.spec, name=f"worker-{number}")
        self.threads.append(thread)
        return ThreadProcess(thread), thread.parent


def test_parent_and_workers_agree_each_object_is_read_once_and_the_figures_add_up() -> None:
    objects = [source(n, size=10 * n) for n in range(1, 11)]
    run = ThreadRun(WorkerSpec(build_fake, ("owner",)), workers=3)
    summary = run.run(objects)
    read = sorted(obj.uri for thread in run.threads for obj in thread.pipeline.read)
    assert read == sorted(obj.uri for obj in objects)
    assert summary.objects_done == 10 and summary.records == sum(10 * n for n in range(1, 11))
    assert summary.by_event_type[TYPE].records == summary.records and summary.balanced
    assert summary.worker_restarts == 0 and not summary.failures
    assert sum(slot.view.snapshot().objects_done for slot in run._slots) == 10


def test_the_worker_spec_keeps_its_arguments_out_of_its_repr() -> None:
    key = "test-key-0123456789"  # the arguments hold the API key
    assert key not in repr(WorkerSpec(build_fake, (key,)))


def test_messages_survive_pickling() -> None:
    report = done(source(1), records=4)
    report.skipped["no_identity"] = 1
    summary = RunSummary()
    summary.add(report)
    for message in (HandOut(Ticket.of(1, source(1))), NoMore(), StopWork("why"),
                    Hello(None), Want(), Progress(ProgressSnapshot(records=3)),
                    Finished(1, report, ("dl/a.jsonl",)), Summary(summary), Fatal("error", "boom")):
        assert pickle.loads(pickle.dumps(message)) == message
