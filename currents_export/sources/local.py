"""Avro files on disk: explicit files, or directories searched recursively for ``.avro``."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import IO

from currents_export.errors import SourceError
from currents_export.sources.base import SourceObject


def _open_binary(path: Path) -> IO[bytes]:
    return path.open("rb")


def _local_object(path: Path) -> SourceObject:
    resolved = path.resolve()
    return local_object(resolved, resolved.stat().st_size)


def local_object(resolved: Path, size: int | None) -> SourceObject:
    """The object of a file whose path is resolved already and whose size is known (e.g.
    from another process's ``origin``)."""
    return SourceObject(
        uri=str(resolved),
        key=resolved.as_posix(),
        size=size,
        opener=partial(_open_binary, resolved),
        origin=("file", str(resolved)),
    )


def find_local_objects(paths: Iterable[str | Path]) -> list[SourceObject]:
    """Every file named, plus every ``*.avro`` below every directory named, sorted, once each.

    Raises SourceError for a path that does not exist.
    """
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for avro in sorted(path.rglob("*.avro")):
                if avro.is_file():
                    found[avro.resolve()] = None
        elif path.is_file():
            found[path.resolve()] = None
        else:
            raise SourceError(f"{raw}: no such file or directory")
    return [_local_object(path) for path in found]
