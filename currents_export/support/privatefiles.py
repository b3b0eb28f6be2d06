"""Local files that hold user data or run state, readable by their owner only.

Whatever the umask: what we create is chmod-ed right after creation (directories 0700,
files 0600). Folders and files that already existed keep their modes, except files we
truncate and rewrite (``open_private_for_writing``): their old content is gone, and what
replaces it is ours.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import IO

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def make_private_dirs(directory: str | Path) -> None:
    """Create ``directory`` and its missing parents, each 0700 (existing ones untouched)."""
    path = Path(directory)
    missing: list[Path] = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:  # another process made it first: its mode is its own
            continue
        os.chmod(folder, DIRECTORY_MODE)


def create_private_file(path: str | Path) -> bool:
    """Create ``path`` empty and 0600 when it does not exist; True when it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def tighten(path: str | Path) -> bool:
    """Make an existing file of ours (same owner) 0600 if group or others could read it,
    e.g. a ledger written by an earlier version; True when its mode was changed."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return False
    if info.st_uid != os.getuid() or not info.st_mode & 0o077 or not stat.S_ISREG(info.st_mode):
        return False
    os.chmod(path, FILE_MODE)
    return True


def open_private_for_writing(path: str | Path) -> IO[bytes]:
    """Open ``path`` for writing from scratch (created or truncated), 0600 when it is a
    regular file (``/dev/stdout``, a pipe or a terminal keeps its mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


def make_private(path: str | Path) -> None:
    """chmod 0600 a file we created (no error when it has gone)."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, FILE_MODE)
