"""A few floats and a lock over them, for one process's threads or for several processes.

``Cells.local(n)``: a list and a thread lock. ``Cells.shared(n, folder)``: a file of ``n``
doubles mapped into memory by each process that opens it, locked with ``flock``. The
kernel drops a process's ``flock`` when it dies, so a worker killed while holding the lock
never stalls the others (a POSIX semaphore would stay taken); and it needs no ``/dev/shm``.
The file is the owner's only (0600, in a folder of the caller's).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
from collections.abc import MutableSequence
from pathlib import Path
from types import TracebackType
from typing import Any, cast

_DOUBLE = struct.calcsize("d")


class _FileLock:
    """Threads of this process take turns on a thread lock; processes on ``flock``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._threads = threading.Lock()

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()


class Cells:
    """``values`` (floats, read and written only while holding ``lock``) and ``lock``."""

    def __init__(self, values: MutableSequence[float], lock: Any,
                 path: Path | None = None) -> None:
        self.values = values
        self.lock = lock
        self.path = path  # the shared file, when the cells are shared

    @classmethod
    def local(cls, count: int) -> Cells:
        return cls([0.0] * count, threading.Lock())

    @classmethod
    def shared(cls, count: int, folder: Path) -> Cells:
        """New cells (all 0.0) in a file under ``folder``; hand them to other processes by
        pickling (each opens the file again)."""
        path = folder / "cells"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, count * _DOUBLE)
        finally:
            os.close(fd)
        return cls.open(path)

    @classmethod
    def open(cls, path: Path) -> Cells:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        mapped = mmap.mmap(fd, os.fstat(fd).st_size)
        values = cast("MutableSequence[float]", memoryview(mapped).cast("d"))
        return cls(values, _FileLock(fd), path)

    def __reduce__(self) -> tuple[Any, ...]:
        if self.path is None:
            raise TypeError("local cells stay in their process; use Cells.shared")
        return (Cells.open, (self.path,))
