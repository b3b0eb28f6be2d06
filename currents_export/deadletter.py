"""Events that could not be delivered, with the reason, as JSON lines: on disk or in S3.

Each line holds: ``reason``, ``detail``, ``object`` (its key or path), ``record_index``,
``event_type`` (Currents), ``record`` (the Braze record) and ``event`` (the Amplitude event,
when there was one). Names are unique per run so concurrent runs never share a file.
``flush`` makes everything written so far durable; the pipeline calls it before it saves a
checkpoint or marks an object done.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any, Protocol

import orjson


class DeadLetterConfigError(ValueError):
    """The --dead-letter URI cannot be used."""


class DeadLetter(Protocol):
    written: int

    @property
    def location(self) -> str | None:
        """Where lines went (None while nothing was written)."""
        ...

    def write(self, *, reason: str, detail: str, object_name: str, record_index: int,
              event_type: str, record: dict[str, Any] | None,
              event: dict[str, Any] | None) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def dead_letter_line(
    *,
    reason: str,
    detail: str,
    object_name: str,
    record_index: int,
    event_type: str,
    record: dict[str, Any] | orjson.Fragment | None,
    event: dict[str, Any] | orjson.Fragment | None,
) -> bytes:
    return orjson.dumps(
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


def _run_name() -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"dead-letter-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class DeadLetterDirectory:
    """Appends to ``<dir>/dead-letter-<UTC time>-<pid>-<id>.jsonl``, created on first use."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._file: IO[bytes] | None = None
        self.path: Path | None = None
        self.written = 0
        self._lock = threading.Lock()  # lanes write from several threads

    def __repr__(self) -> str:
        return f"DeadLetterDirectory({str(self.directory)!r})"

    @property
    def location(self) -> str | None:
        return str(self.path) if self.path else None

    def write(self, **fields: Any) -> None:
        line = dead_letter_line(**fields)
        with self._lock:
            if self._file is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self.path = self.directory / f"{_run_name()}.jsonl"
                self._file = self.path.open("ab")
            self._file.write(line)
            self.written += 1

    def flush(self) -> None:
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


class S3DeadLetter:
    """Buffers lines and writes them as ``<prefix>/dead-letter-…-<n>.jsonl`` objects on flush.

    Each flush that has new lines writes one new object (S3 has no append), so what a
    checkpoint relies on is durable once ``flush`` returns.
    """

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._name = _run_name()
        self._buffer: list[bytes] = []
        self._parts = 0
        self._lock = threading.Lock()
        self.written = 0

    def __repr__(self) -> str:
        return f"S3DeadLetter('s3://{self.bucket}/{self.prefix}')"

    @property
    def location(self) -> str | None:
        if not self._parts:
            return None
        folder = f"{self.prefix}/" if self.prefix else ""
        return f"s3://{self.bucket}/{folder}{self._name}-*.jsonl"

    def write(self, **fields: Any) -> None:
        line = dead_letter_line(**fields)
        with self._lock:
            self._buffer.append(line)
            self.written += 1

    def flush(self) -> None:
        with self._lock:
            if not self._buffer:
                return
            self._parts += 1
            folder = f"{self.prefix}/" if self.prefix else ""
            key = f"{folder}{self._name}-{self._parts:05d}.jsonl"
            self._client.put_object(Bucket=self.bucket, Key=key, Body=b"".join(self._buffer),
                                    ContentType="application/x-ndjson")
            self._buffer.clear()

    def close(self) -> None:
        self.flush()


def open_dead_letter(uri: str, *, s3_client: Any = None) -> DeadLetter:
    """A directory path, or ``s3://BUCKET/PREFIX`` (``s3_client`` required then)."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise DeadLetterConfigError(f"--dead-letter {uri}: expected s3://BUCKET/PREFIX")
        if s3_client is None:
            raise DeadLetterConfigError(f"--dead-letter {uri}: no S3 client configured")
        return S3DeadLetter(s3_client, bucket, prefix)
    if "://" in uri:
        raise DeadLetterConfigError(
            f"--dead-letter {uri}: use a directory path or s3://BUCKET/PREFIX"
        )
    if Path(uri).exists() and not Path(uri).is_dir():
        raise DeadLetterConfigError(f"--dead-letter {uri}: exists and is not a directory")
    return DeadLetterDirectory(uri)
