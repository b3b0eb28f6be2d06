"""``currents-export status``: what the ledger knows, counted and listed.

Reading is separate from rendering: :func:`read_ledger` opens a ledger (SQLite path or
``dynamodb://TABLE``) and lists its objects and the destination it is bound to;
:func:`render_text` and :func:`render_json` are pure functions of those and the current
time. The text fits a terminal (one line per object, keys shortened: :func:`short_name`);
``wide=True`` gives whole keys, where each object was last read from and longer reasons.
"""

from __future__ import annotations

import sqlite3
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from currents_export.currents.keys import parse_key
from currents_export.errors import LedgerConfigError, NotACurrentsKey, StatusError
from currents_export.ledger import ObjectState, open_ledger
from currents_export.ledger.base import Destination
from currents_export.support.redact import printable, shown

MAX_REASON_CHARS = 160  # in the wide table; JSON has the whole error
DEFAULT_WIDTH = 100  # columns of the text when the width is not known (not a terminal)
_MIN_NAME = 24  # what the narrow table keeps of a name, however narrow
_ELLIPSIS = "…"
_WIDE_HINT = ("--wide: whole keys, where each object was last read from, longer reasons; "
              "--json: everything.")

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
    destination: Destination | None = None, wide: bool = False, width: int = DEFAULT_WIDTH,
) -> str:
    """The destination and the counts, then a table of the objects not done (all with
    ``show_all``): one line each, fitting ``width`` columns (shortened keys and reasons),
    or with ``wide`` whole keys, where each was last read from and reasons up to 160
    characters. The lines above the table are whole (the ledger's path, the host)."""
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
    lines.append("")
    lines += (_wide_table(listed, now) if wide else _narrow_table(listed, now, width))
    return "\n".join(lines)


def _wide_table(listed: list[ObjectState], now: float) -> list[str]:
    header = ("OBJECT", "STATUS", "RETRY", "ATTEMPTS", "CHANGED", "LAST READ FROM", "REASON")
    rows = [header] + [
        (printable(state.object_id), _STATUS_LABEL.get(state.status, state.status),
         retry_label(state), str(state.attempts), age_text(now - state.updated_at),
         printable(state.location or "-"), shown(_one_line(state.error) or "-"))
        for state in listed
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)),
                       row[-1]]).rstrip() for row in rows]


def _narrow_table(listed: list[ObjectState], now: float, width: int) -> list[str]:
    """One line per object within ``width``: short name, status (a failure says whether it
    is permanent or retryable), attempts, age, the reason; what is cut shows "…"."""
    names = [short_name(state.object_id) for state in listed]
    reasons = [shown(_one_line(state.error, limit=None) or "-") for state in listed]
    middle = [(_narrow_status(state), str(state.attempts), age_text(now - state.updated_at))
              for state in listed]
    header = ("STATUS", "TRIES", "CHANGED")
    widths = [max(len(row[column]) for row in [header, *middle]) for column in range(3)]
    room = width - sum(widths) - 2 * len(widths) - 2  # two spaces between columns
    longest_name = max(len("OBJECT"), *map(len, names))
    longest_reason = max(len("REASON"), *map(len, reasons))
    name_width = longest_name
    if longest_name + longest_reason > room:  # the reason gets 2/5 at least, if it needs it
        name_width = min(longest_name, max(_MIN_NAME, room - min(longest_reason,
                                                                 room * 2 // 5)))
    reason_width = max(room - name_width, len("REASON"))
    lines = []
    for name, figures, reason in [("OBJECT", header, "REASON"), *zip(names, middle, reasons,
                                                                     strict=True)]:
        cells = [_fit(name, name_width).ljust(name_width), figures[0].ljust(widths[0]),
                 figures[1].rjust(widths[1]), figures[2].ljust(widths[2]),
                 _cut_end(reason, reason_width)]
        lines.append("  ".join(cells).rstrip())
    return [*lines, "", *textwrap.wrap(_WIDE_HINT, max(width, 40))]


def _narrow_status(state: ObjectState) -> str:
    if state.status == "failed":
        return "permanent" if state.permanent else "retryable"
    return _STATUS_LABEL.get(state.status, state.status)


def short_name(object_id: str) -> str:
    """A ledger key as the narrow table shows it: a Currents file as its event type and
    file name (``users.behaviors.CustomEvent/…/FILE.avro``; Braze's long integration stem
    of the file name elided too: ``…+PARTITION+OFFSET.avro``); any other key as it is."""
    key = object_id.removeprefix("currents:")
    try:
        parsed = parse_key(key)
    except NotACurrentsKey:
        return printable(object_id)
    file_name = key.rsplit("/", 1)[-1]
    if parsed.integration_id and parsed.offset is not None and file_name.startswith(
            "dataexport."):
        tail = _ELLIPSIS + file_name[file_name.rindex("+", 0, file_name.rindex("+")):]
    else:
        tail = f"{_ELLIPSIS}/{file_name}"
    return printable(f"{parsed.event_type}/{tail}")


def _fit(name: str, width: int) -> str:
    """``name`` within ``width``: its middle elided (the end, the file name, kept whole when
    it fits, the start of the event type before it)."""
    if len(name) <= width:
        return name
    cut = name.find("/" + _ELLIPSIS)
    if cut > 0:  # a short name: shorten the event type, keep the file name
        tail = name[cut:]
        if width - len(tail) >= 8:
            return _middle(name[:cut], width - len(tail)) + tail
    return _middle(name, width)


def _middle(text: str, width: int) -> str:
    """``text`` within ``width``, a third of it from the start and the rest from the end."""
    if len(text) <= width:
        return text
    if width <= 1:
        return _ELLIPSIS[:width]
    head = (width - 1) // 3
    return text[:head] + _ELLIPSIS + text[len(text) - (width - 1 - head):]


def _cut_end(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + _ELLIPSIS


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


def _one_line(text: str | None, limit: int | None = MAX_REASON_CHARS) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1] + _ELLIPSIS
