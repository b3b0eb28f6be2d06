"""``currents-export status``: what the ledger knows, counted and listed.

Reading is separate from rendering: :func:`read_ledger` opens a ledger (SQLite path or
``dynamodb://TABLE``) and lists its objects and the destination it is bound to;
:func:`render_text` and :func:`render_json` are pure functions of those and the current
time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from currents_export.errors import LedgerConfigError, StatusError
from currents_export.ledger import ObjectState, open_ledger
from currents_export.ledger.base import Destination
from currents_export.support.redact import printable, shown

MAX_REASON_CHARS = 160  # in the table; JSON has the whole error

_ORDER = {"failed": 0, "in_progress": 1, "done": 2}
_STATUS_LABEL = {"done": "done", "in_progress": "in progress", "failed": "failed"}


def read_states(uri: str) -> list[ObjectState]:
    """Every object in the ledger named by ``uri`` (as ``--state`` takes it)."""
    return read_ledger(uri)[0]


def read_ledger(uri: str) -> tuple[list[ObjectState], Destination | None]:
    """Every object in the ledger named by ``uri`` (as ``--state`` takes it), and the
    destination it is bound to (None: not yet).

    Raises StatusError when there is no ledger: a SQLite file that does not exist is not
    created.
    """
    is_sqlite = "://" not in uri
    if is_sqlite and not Path(uri).is_file():
        raise StatusError(f"there is no ledger at {uri} (no such file); pass --state PATH or "
                          "--state dynamodb://TABLE, or set CURRENTS_EXPORT_STATE")
    try:
        ledger = open_ledger(uri)
        try:
            return list(ledger.objects()), ledger.destination()
        finally:
            ledger.close()
    except LedgerConfigError as exc:
        raise StatusError(str(exc)) from None
    except sqlite3.DatabaseError as exc:
        raise StatusError(f"{uri}: not a readable ledger ({exc})") from None
    except (BotoCoreError, ClientError) as exc:
        raise StatusError(f"{uri}: cannot read the ledger ({exc})") from None


def age_text(seconds: float) -> str:
    """``"42 s ago"``, ``"5 min ago"``, ``"3 h ago"``, ``"2 d ago"`` (whole units, floored)."""
    if seconds < 1:
        return "just now"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def counts(states: Iterable[ObjectState]) -> dict[str, int]:
    """How many objects are done, in progress (or pending), failed (permanent, retryable)."""
    found = {"objects": 0, "done": 0, "in_progress": 0, "failed": 0, "permanent": 0,
             "retryable": 0}
    for state in states:
        found["objects"] += 1
        found[state.status] = found.get(state.status, 0) + 1
        if state.status == "failed":
            found["permanent" if state.permanent else "retryable"] += 1
    return found


def selected(states: Iterable[ObjectState], *, show_all: bool = False) -> list[ObjectState]:
    """The objects to list, failed first (permanent first), then in progress, then done;
    the most recently changed first within each."""
    chosen = [state for state in states if show_all or state.status != "done"]
    return sorted(chosen, key=lambda s: (_ORDER.get(s.status, 3), not s.permanent,
                                         -s.updated_at, s.object_id))


def retry_label(state: ObjectState) -> str:
    if state.status == "done":
        return "-"
    return "permanent" if state.permanent else "retryable"


def destination_text(destination: Destination | None) -> list[str]:
    """Where the ledger's objects were delivered, as the lines ``render_text`` shows."""
    if destination is None:
        return ["  destination             none recorded yet (the next run that sends binds "
                "the ledger to its Amplitude host and API key)"]
    lines = [f"  destination             {destination}" + (
        f", since {_utc(destination.bound_at)}" if destination.bound_at else "")]
    if destination.previous:
        lines.append(f"  rebound from            {destination.previous}")
    return lines


def render_text(
    states: list[ObjectState], *, source: str, now: float | None = None, show_all: bool = False,
    destination: Destination | None = None,
) -> str:
    """The destination and the counts, then a table of the objects not done (all with
    ``show_all``)."""
    now = time.time() if now is None else now
    figures = counts(states)
    lines = [
        f"Ledger {printable(source)}: {figures['objects']} objects",
        *destination_text(destination),
        f"  done                    {figures['done']:>8}",
        f"  in progress or pending  {figures['in_progress']:>8}",
        f"  failed                  {figures['failed']:>8}  "
        f"({figures['permanent']} permanent, {figures['retryable']} retryable)",
    ]
    listed = selected(states, show_all=show_all)
    if not listed:
        lines += ["", "Every object is done." if states else "The ledger is empty."]
        return "\n".join(lines)
    header = ("OBJECT", "STATUS", "RETRY", "ATTEMPTS", "CHANGED", "LAST READ FROM", "REASON")
    rows = [header] + [
        (printable(state.object_id), _STATUS_LABEL.get(state.status, state.status),
         retry_label(state), str(state.attempts), age_text(now - state.updated_at),
         printable(state.location or "-"), shown(_one_line(state.error) or "-"))
        for state in listed
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines.append("")
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def render_json(
    states: list[ObjectState], *, source: str, now: float | None = None, show_all: bool = False,
    destination: Destination | None = None,
) -> dict[str, Any]:
    """The same as :func:`render_text`, as JSON-ready data (times in epoch seconds;
    ``destination`` null when none is recorded yet)."""
    now = time.time() if now is None else now
    return {
        "ledger": source,
        "destination": None if destination is None else destination.to_json(),
        "counts": counts(states),
        "objects": [
            {
                "object_id": state.object_id,
                "status": state.status,
                "permanent": state.permanent,
                "retryable": state.status != "done" and not state.permanent,
                "attempts": state.attempts,
                "next_index": state.next_index,
                "error": state.error,
                "location": state.location,
                "started_at": state.started_at,
                "updated_at": state.updated_at,
                "finished_at": state.finished_at,
                "age_s": round(now - state.updated_at, 3),
                "age": age_text(now - state.updated_at),
            }
            for state in selected(states, show_all=show_all)
        ],
    }


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def _one_line(text: str | None) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_REASON_CHARS else flat[: MAX_REASON_CHARS - 1] + "…"
