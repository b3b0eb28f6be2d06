"""Local files that hold user data or run state, readable by their owner only.

Whatever the umask: what we create is chmod-ed right after creation (directories 0700,
files 0600). Folders and files that already existed keep their modes, except files we
truncate and rewrite (``open_private_for_writing``): their old content is gone, and what
replaces it is ours.

A folder that holds user data is checked before anything is written into it
(:func:`folder_check`): another user's folder, or one that users other than its owner can
write (group or others, without the sticky bit), is refused, since whoever can write it can
plant a link where a file is about to be written or swap a file being read. A folder only
its group can write is refused too, unless that group is the user's own primary group (a
``umask 002`` system with a private group per user, where ``mkdir`` gives 0775): then it is
a warning. Only the folder itself is checked, not its parents.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from currents_export.support.redact import printable

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


@dataclass(frozen=True, slots=True)
class FolderCheck:
    """What :func:`folder_check` found: why nothing may be written into the folder
    (``refused``), or what the user should know about it (``warning``); both None when it
    is the user's own and only the user can write it."""

    refused: str | None = None
    warning: str | None = None


def folder_check(directory: str | Path, what: str = "folder") -> FolderCheck:
    """Whether ``directory`` (it must exist; a link to a folder is checked at its target)
    is fit to receive files of user data: owned by the current user, and writable by no
    one else (group or others) unless the sticky bit is set. ``what`` names it in the
    reason (e.g. ``dead-letter folder``)."""
    info = os.stat(directory)
    shown = printable(str(directory))
    if info.st_uid != os.getuid():
        return FolderCheck(refused=(
            f"{what} {shown} belongs to another user (uid {info.st_uid}): its owner could "
            "plant links where files of personal data are written; use a folder of your own"))
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_ISVTX or not mode & 0o022:
        return FolderCheck()
    reason = (f"{what} {shown} can be written by other users (mode {mode:04o}): they could "
              "plant links where files of personal data are written, or swap the files read; "
              f"make it yours alone (chmod 700 {shown})")
    if not mode & 0o002 and info.st_gid == os.getgid():
        return FolderCheck(warning=reason.replace(
            "other users", "the members of your primary group", 1))
    return FolderCheck(refused=reason)
