"""Re-send dead-lettered events, and remove from the dead letter what got delivered.

Only closed files (``*.jsonl``) directly in the :class:`DeadLetterStore` are read, never a
``.part`` (counted). After its events are sent a file is rewritten atomically, or deleted
when nothing stays, so a redrive killed half way only re-sends what Amplitude drops by
``insert_id``. Lines without an Amplitude event and lines not JSON stay, counted.

Nor is a symbolic link read: the store refuses it, and the link (left as it is, its target
untouched) is reported as a failed file, with the reason. A local folder others can write
is refused before anything is read or sent (``deadletter.DirectoryStore``), and a rewrite
goes through a new owner-only temporary file (``O_EXCL``, a random name).

Each line re-sent gets a line in the run's redrive log (``redrive-log/redrive-….jsonl``),
written durably before its file is rewritten: ``insert_id``, ``source``, ``reason`` and
``outcome`` (``delivered``; ``refused`` with ``new_reason``; ``unsettled``: it stays).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from currents_export.amplitude.batching import PendingEvent
from currents_export.amplitude.validation import INVALID_ID, id_problem
from currents_export.core.lanes import Outbox, Sink
from currents_export.counts import RunSummary
from currents_export.deadletter import DeadLetterStore, is_closed, is_part
from currents_export.errors import DeliveryFailed, EventTooLarge
from currents_export.support.jsonbytes import kept_json
from currents_export.support.redact import scrub

log = logging.getLogger(__name__)

NOT_JSON = "dead_letter_line_not_json"

# What ends one file's redrive (it is reported failed) and goes on with the next.
_FILE_FAILURES = (DeliveryFailed, OSError)

Outcome = Literal["delivered", "refused", "unsettled"]


@dataclass(slots=True)
class RedriveSummary(RunSummary):
    """The run summary, plus where the redrive log is and the ``.part`` files left unread."""

    redrive_log: str | None = None  # None when nothing was re-sent
    resent: int = 0  # lines sent to Amplitude again (one redrive-log line each)
    unclosed_part_files: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            **RunSummary.to_json(self),
            "redrive_log": self.redrive_log,
            "resent": self.resent,
            "unclosed_part_files": self.unclosed_part_files,
        }

    def render(self) -> str:
        out = [RunSummary.render(self), f"re-sent: {self.resent}"]
        if self.redrive_log:
            out.append(f"redrive log: {self.redrive_log}")
        if self.unclosed_part_files:
            out.append(f"not read: {self.unclosed_part_files} .part file(s) still being "
                       "written, or left by a killed writer (its resumed run writes them again)")
        return "\n".join(out)


@dataclass
class _Line:
    """One dead-letter line and what became of it in this redrive."""

    raw: bytes
    data: dict[str, Any] | None
    sent: bool = False  # submitted to Amplitude in this redrive
    delivered: bool = False
    reason: str | None = None  # the reason it stays, when it stays
    detail: str | None = None


# How a redrive opens its lanes, reporting to it (``compose.lanes_over``, failing a file as
# a whole: ``stop_on_failure``).
OpenLanes = Callable[[Sink[Any]], Outbox[Any]]


@dataclass
class Redrive:
    open_lanes: OpenLanes
    min_id_length: int
    reasons: frozenset[str] = frozenset()  # empty: every reason
    _by_insert_id: dict[str, _Line] = field(default_factory=dict)

    def run(self, store: DeadLetterStore) -> RedriveSummary:
        summary = RedriveSummary()
        started = time.monotonic()
        self._by_insert_id.clear()  # duplicates are looked for within one run
        log_name = _log_name()
        names = store.names()
        parts = [name for name in names if is_part(name)]
        if parts:
            summary.unclosed_part_files = len(parts)
            shown = ", ".join(parts[:5]) + (", …" if len(parts) > 5 else "")
            log.warning(
                "%d dead-letter .part file(s) in %s not read: still being written, or left by "
                "a killed writer (whose resumed run writes those lines again): %s",
                len(parts), store.location, shown,
            )
        lanes: Outbox[_Line] = self.open_lanes(self)
        try:
            for name in filter(is_closed, names):
                try:
                    if self._redrive_file(store, name, lanes, summary, log_name):
                        summary.objects_done += 1
                except _FILE_FAILURES as exc:
                    summary.objects_failed += 1
                    summary.failures.append({"object": store.describe(name),
                                             "error": scrub(str(exc))})  # no URL password
        finally:
            lanes.close()
            summary.elapsed_s = time.monotonic() - started
            if summary.resent:
                summary.redrive_log = store.log_location(log_name)
        return summary

    def _redrive_file(self, store: DeadLetterStore, name: str, lanes: Outbox[_Line],
                      summary: RedriveSummary, log_name: str) -> bool:
        """Re-send one closed file's events, then rewrite it; False when it was gone."""
        try:
            original = store.read(name)
        except FileNotFoundError:
            log.info("%s is gone (another redrive?); skipped", store.describe(name))
            return False
        lines = [_parse(raw) for raw in original.splitlines() if raw.strip()]
        duplicates: list[_Line] = []
        try:
            submitted = False
            try:  # a lane's failure can surface in submit as well as in drain
                self._submit(lines, duplicates, lanes)
                submitted = True
            finally:
                # Always, even when submit raised: the lanes send (after a failure: abandon,
                # unsettled) what this file packed and forget the failure, so that neither
                # its events nor its error reach the next file.
                try:
                    lanes.drain()
                except Exception:
                    if submitted:
                        raise  # this file's failure, met while draining
                    # else submit raised this file's failure already: that one is reported
                    log.debug("drained %s after its failure", store.describe(name),
                              exc_info=True)
        finally:
            for line in duplicates:
                first = self._by_insert_id[line.data["event"]["insert_id"]]  # type: ignore[index]
                line.delivered = first.delivered
            stats = lanes.take_stats()
            summary.requests += stats.requests
            summary.retries += stats.retries
            summary.repeats_dropped += stats.repeats_dropped
            self._count(lines, duplicates, summary)
            resent = self._log_lines(store.describe(name), lines)
            if resent:
                store.append_log(log_name, b"".join(resent))  # durable before the rewrite
                summary.resent += len(resent)
            self._rewrite(store, name, original, lines)
        return True

    def _submit(self, lines: list[_Line], duplicates: list[_Line], lanes: Outbox[_Line]) -> None:
        """Hand the file's selected events to the lanes; note why the others stay."""
        by_insert_id = self._by_insert_id
        for line in lines:
            if line.data is None or not self._selected(line.data):
                continue
            event = line.data.get("event")
            if not isinstance(event, dict):
                line.reason, line.detail = line.data.get("reason"), line.data.get("detail")
                continue
            insert_id = event.get("insert_id")
            if isinstance(insert_id, str) and insert_id in by_insert_id:
                duplicates.append(line)  # written twice (e.g. by a resumed run)
                continue
            if isinstance(insert_id, str):
                by_insert_id[insert_id] = line
            problem = id_problem(event, self.min_id_length)
            if problem:
                line.reason, line.detail = INVALID_ID, problem
                continue
            ids = tuple(i for i in (event.get("user_id"), event.get("device_id")) if i)
            try:
                lanes.submit(PendingEvent(kept_json(event), line, ids))
                line.sent = True
            except EventTooLarge as exc:
                line.reason, line.detail = "event_too_large", str(exc)

    def _selected(self, data: dict[str, Any]) -> bool:
        return not self.reasons or data.get("reason") in self.reasons

    # ---- the lanes' sink (lane threads; ``drain`` orders them before the file's rewrite) --

    def delivered(self, lines: list[_Line], repeats_dropped: int = 0) -> None:
        # (the repeats Amplitude dropped are counted from the lanes' stats, per file)
        for line in lines:
            line.delivered = True

    def rejected(self, refused: list[tuple[_Line, str, str]]) -> None:
        for line, reason, detail in refused:
            line.reason, line.detail = reason, detail

    def abandoned(self, lines: list[_Line], error: BaseException) -> None:
        """Unsettled: the lines stay as they are (the lanes stop, and the file fails)."""

    def skipped(self, lines: list[_Line], reason: str) -> None:
        raise AssertionError("lanes never skip an event")

    def _count(self, lines: list[_Line], duplicates: list[_Line], summary: RunSummary) -> None:
        duplicate_ids = {id(line) for line in duplicates}
        for line in lines:
            if line.data is None:
                summary.records += 1
                summary.dead_lettered[NOT_JSON] += 1
            elif not self._selected(line.data):
                continue
            elif id(line) in duplicate_ids:
                summary.records += 1
                summary.duplicates += 1
            elif line.delivered:
                summary.records += 1
                summary.delivered += 1
            else:
                summary.records += 1
                summary.dead_lettered[line.reason or str(line.data.get("reason"))] += 1

    def _log_lines(self, source: str, lines: list[_Line]) -> list[bytes]:
        """One redrive-log line per line sent to Amplitude again, with its outcome."""
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        out = []
        for line in lines:
            if not line.sent or line.data is None:
                continue
            outcome: Outcome = ("delivered" if line.delivered
                                else "refused" if line.reason is not None else "unsettled")
            out.append(kept_json({
                "at": at,
                "insert_id": line.data["event"].get("insert_id"),
                "source": source,
                "object": line.data.get("object"),
                "record_index": line.data.get("record_index"),
                "reason": line.data.get("reason"),
                "outcome": outcome,
                "new_reason": line.reason if outcome == "refused" else None,
                "new_detail": line.detail if outcome == "refused" else None,
            }, option=orjson.OPT_APPEND_NEWLINE))
        return out

    def _rewrite(self, store: DeadLetterStore, name: str, original: bytes,
                 lines: list[_Line]) -> None:
        kept = b"".join(_updated(line) for line in lines if not line.delivered)
        if not kept:
            store.delete(name)
        elif kept != original:
            store.replace(name, kept)


def _log_name() -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"redrive-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _parse(raw: bytes) -> _Line:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("a dead-letter line is not JSON (torn write?); it is kept as it is")
        return _Line(raw, None)
    return _Line(raw, data if isinstance(data, dict) else None)


def _updated(line: _Line) -> bytes:
    """The line to keep: with the latest reason when this redrive was refused again."""
    if line.data is None or line.reason is None or line.reason == line.data.get("reason"):
        return line.raw.rstrip(b"\n") + b"\n"
    data = {**line.data, "reason": line.reason, "detail": line.detail,
            "previous_reason": line.data.get("reason")}
    return kept_json(data, option=orjson.OPT_APPEND_NEWLINE)
