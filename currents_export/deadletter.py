"""Events that could not be delivered, with the reason, as JSON lines in a directory.

Each line holds: ``reason``, ``detail``, ``object`` (its key or path), ``record_index``,
``event_type`` (Currents), ``record`` (the Braze record) and ``event`` (the Amplitude event,
when there was one). Files are named per run so concurrent runs never share one.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import IO, Any

import orjson


class DeadLetterConfigError(ValueError):
    """The --dead-letter URI cannot be used."""


class DeadLetterDirectory:
    """Appends to ``<dir>/dead-letter-<UTC time>-<pid>.jsonl``, created on first use."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._file: IO[bytes] | None = None
        self.path: Path | None = None
        self.written = 0
        self._lock = threading.Lock()  # lanes write from several threads

    def __repr__(self) -> str:
        return f"DeadLetterDirectory({str(self.directory)!r})"

    def write(
        self,
        *,
        reason: str,
        detail: str,
        object_name: str,
        record_index: int,
        event_type: str,
        record: dict[str, Any] | None,
        event: dict[str, Any] | None,
    ) -> None:
        line = orjson.dumps(
            {
                "reason": reason,
                "detail": detail,
                "object": object_name,
                "record_index": record_index,
                "event_type": event_type,
                "record": record,
                "event": event,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        with self._lock:
            self._append(line)

    def _append(self, line: bytes) -> None:
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            self.path = self.directory / f"dead-letter-{stamp}-{os.getpid()}.jsonl"
            self._file = self.path.open("ab")
        self._file.write(line)
        self.written += 1

    def flush(self) -> None:
        """Make what was written durable (called before an object is marked done)."""
        with self._lock:
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def open_dead_letter(uri: str) -> DeadLetterDirectory:
    if uri.startswith("s3://"):
        raise DeadLetterConfigError(
            f"--dead-letter {uri}: S3 dead letters are not available yet; use a directory"
        )
    if "://" in uri:
        raise DeadLetterConfigError(f"--dead-letter {uri}: use a directory path")
    if Path(uri).exists() and not Path(uri).is_dir():
        raise DeadLetterConfigError(f"--dead-letter {uri}: exists and is not a directory")
    return DeadLetterDirectory(uri)
