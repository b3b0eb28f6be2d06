"""Re-send dead-lettered events, and remove from the dead letter what got delivered.

Each dead-letter file is rewritten atomically (temporary file, fsync, rename) after its
events were sent: a redrive killed half way only re-sends events Amplitude then drops by
``insert_id``. Lines without an Amplitude event (records the mapping could not turn into
one) and lines that are not JSON stay where they are and are counted.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from currents_export.amplitude.batching import EventTooLarge, PendingEvent
from currents_export.amplitude.client import AmplitudeClient, DeliveryFailed
from currents_export.amplitude.lanes import Lanes
from currents_export.amplitude.validation import INVALID_ID, id_problem
from currents_export.config import DEFAULT_LANES, RequestLimits
from currents_export.summary import RunSummary

log = logging.getLogger(__name__)

NOT_JSON = "dead_letter_line_not_json"
NO_EVENT = "no_event_to_resend"


@dataclass
class _Line:
    """One dead-letter line and what became of it in this redrive."""

    raw: bytes
    data: dict[str, Any] | None
    delivered: bool = False
    reason: str | None = None  # the reason it stays, when it stays
    detail: str | None = None


@dataclass
class Redrive:
    client: AmplitudeClient
    limits: RequestLimits
    min_id_length: int
    lanes: int = DEFAULT_LANES
    reasons: frozenset[str] = frozenset()  # empty: every reason
    _by_insert_id: dict[str, _Line] = field(default_factory=dict)

    def run(self, directory: Path) -> RunSummary:
        summary = RunSummary()
        started = time.monotonic()
        lanes: Lanes[_Line] = Lanes(
            self.client, self.limits, lanes=self.lanes, on_delivered=self._delivered,
            on_rejected=self._rejected, horizon_s=self.client.retry.horizon_s,
        )
        try:
            for path in sorted(directory.glob("*.jsonl")):
                try:
                    self._redrive_file(path, lanes, summary)
                    summary.objects_done += 1
                except DeliveryFailed as exc:
                    summary.objects_failed += 1
                    summary.failures.append({"object": str(path), "error": str(exc)})
        finally:
            lanes.close()
            summary.elapsed_s = time.monotonic() - started
        return summary

    def _redrive_file(self, path: Path, lanes: Lanes[_Line], summary: RunSummary) -> None:
        lines = [_parse(raw) for raw in path.read_bytes().splitlines() if raw.strip()]
        by_insert_id = self._by_insert_id
        duplicates: list[_Line] = []
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
                lanes.submit(PendingEvent(orjson.dumps(event), line, ids))
            except EventTooLarge as exc:
                line.reason, line.detail = "event_too_large", str(exc)
        try:
            lanes.drain()
        finally:
            for line in duplicates:
                original = by_insert_id[line.data["event"]["insert_id"]]  # type: ignore[index]
                line.delivered = original.delivered
            self._rewrite(path, lines)
            requests, retries = lanes.take_stats()
            summary.requests += requests
            summary.retries += retries
            self._count(lines, duplicates, summary)

    def _selected(self, data: dict[str, Any]) -> bool:
        return not self.reasons or data.get("reason") in self.reasons

    def _delivered(self, lines: list[_Line]) -> None:
        for line in lines:
            line.delivered = True

    def _rejected(self, line: _Line, reason: str, detail: str) -> None:
        line.reason, line.detail = reason, detail

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

    def _rewrite(self, path: Path, lines: list[_Line]) -> None:
        kept = [_updated(line) for line in lines if not line.delivered]
        if not kept:
            path.unlink()
            return
        temporary = path.with_suffix(".jsonl.tmp")
        with temporary.open("wb") as out:
            out.writelines(kept)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)


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
    return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)
