"""Events that could not be delivered, with the reason, as JSON lines: on disk or in S3.

A line holds ``reason``, ``detail``, ``object``, ``record_index``, ``event_type``, the Braze
``record`` and the Amplitude ``event`` (when there was one). File names are unique per run.
``flush`` makes every line durable; the object owner (``core.owner``) flushes before each
checkpoint and before an object is done.

A file is only ever seen complete: lines go into an owner-only ``….jsonl.part`` that a
flush fsyncs and renames to ``….jsonl`` (a killed writer's ``.part`` holds lines written
again on resume); in S3 a flush puts one whole object. At rest: folders 0700, files 0600
whatever the umask; S3 objects SSE-S3, or SSE-KMS under ``kms_key`` (a redrive without it
keeps the object's key). :class:`DeadLetterStore` is the read side, for redrive, with its
log in ``redrive-log/`` (never listed as dead letter).

Local folders only their owner can touch: a dead-letter folder (and its ``redrive-log/``)
that belongs to another user, or that others can write (group or others, without the sticky
bit), is refused with the reason before anything is written into it or read from it
(``support.privatefiles.folder_check``: one only the user's own primary group can write is
a warning). Files are created with ``O_EXCL|O_NOFOLLOW`` (a redrive's rewrite goes through a
``mkstemp`` file of a random name, renamed over the old one), never through a link; a
dead-letter file that is a symbolic link is neither read, rewritten nor deleted: redrive
reports it failed, with the reason.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Protocol, TypedDict, Unpack

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from currents_export.errors import AwsSetupError, DeadLetterConfigError, DeadLetterStoreError
from currents_export.support.jsonbytes import json_safe, kept
from currents_export.support.privatefiles import folder_check, make_private_dirs
from currents_export.support.redact import printable, shown

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CLOSED_SUFFIX = ".jsonl"  # a complete dead-letter file: the only kind redrive reads
PART_SUFFIX = ".part"  # appended to CLOSED_SUFFIX while a writer still holds the file
FILE_MODE = 0o600  # dead letters hold user data: owner only
DIRECTORY_MODE = 0o700
CONTENT_TYPE = "application/x-ndjson"
SERVER_SIDE_ENCRYPTION: Final = "AES256"  # SSE-S3, unless a KMS key is given
KMS_ENCRYPTION: Final = "aws:kms"
REDRIVE_LOG_FOLDER = "redrive-log"
FOLDER = "dead-letter folder"  # how messages name a local dead letter

log = logging.getLogger(__name__)


class DeadLetterFields(TypedDict):
    """What one dead-letter line says (the keyword arguments of ``DeadLetter.write``)."""

    reason: str
    detail: str
    object_name: str
    record_index: int
    event_type: str
    record: dict[str, Any] | orjson.Fragment | None
    event: dict[str, Any] | orjson.Fragment | None


class DeadLetter(Protocol):
    """Where refused records go. One thread writes and flushes it: the run's object owner
    (``core.owner``), so it needs no lock."""

    written: int
    files: list[str]  # the closed files (or objects) written so far, in order

    def write(self, **fields: Unpack[DeadLetterFields]) -> None: ...

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
    line = {
        "reason": reason,
        "detail": detail,
        "object": object_name,
        "record_index": record_index,
        "event_type": event_type,
        "record": record,
        "event": event,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    options = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
    try:  # a drifted schema may put bytes or decimals in the record: json_safe converts them
        return orjson.dumps(line, default=json_safe, option=options)
    except orjson.JSONEncodeError as exc:  # e.g. nested deeper than JSON encoders allow
        line["record"] = {"unserialisable": f"{type(exc).__name__}: {exc}",
                          "text": str(record)[:_MAX_TEXT_RECORD]}
        return orjson.dumps(line, default=json_safe, option=options)


_MAX_TEXT_RECORD = 100_000  # characters of a record kept as text when it cannot be JSON


def _run_name() -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"dead-letter-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class DeadLetterDirectory:
    """Writes ``<dir>/dead-letter-<UTC time>-<pid>-<id>-<n>.jsonl`` files, created on first use.

    Lines go into ``<name>.jsonl.part``; ``flush`` fsyncs it and renames it to
    ``<name>.jsonl``, and the next line opens part ``n + 1``. A flush without new lines
    creates nothing.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._name = _run_name()
        self._file: IO[bytes] | None = None
        self._part: Path | None = None
        self._parts = 0
        self.files: list[str] = []
        self.written = 0
        self._warned = False  # about a folder the user's group can write: once

    def check_folder(self) -> None:
        """Refuse the folder when others can write it or another user owns it (it must
        exist); warn once when the user's primary group can write it."""
        warning = refuse_shared_folder(self.directory)
        if warning and not self._warned:
            log.warning("%s", warning)
            self._warned = True

    def __repr__(self) -> str:
        return f"DeadLetterDirectory({str(self.directory)!r})"

    def write(self, **fields: Unpack[DeadLetterFields]) -> None:
        line = dead_letter_line(**fields)
        if self._file is None:
            self._file = self._open_part()
        self._file.write(line)
        self.written += 1

    def _open_part(self) -> IO[bytes]:
        make_private_dirs(self.directory)
        # Again at each part: the folder may have been made by someone else since the run
        # was set up (it did not exist then), or had its mode changed.
        self.check_folder()
        self._parts += 1
        name = f"{self._name}-{self._parts:06d}{CLOSED_SUFFIX}{PART_SUFFIX}"
        self._part = self.directory / name
        fd = os.open(self._part, _CREATE_NEW, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # whatever the umask
        return os.fdopen(fd, "wb")

    def flush(self) -> None:
        """Make every line written so far durable, in a closed ``.jsonl`` file."""
        file, part = self._file, self._part
        if file is None or part is None:
            return
        self._file = self._part = None  # even when closing fails: never append to it again
        try:
            file.flush()
            os.fsync(file.fileno())
        finally:
            file.close()
        closed = part.with_name(part.name.removesuffix(PART_SUFFIX))
        os.rename(part, closed)
        _fsync_directory(self.directory)
        self.files.append(str(closed))

    def close(self) -> None:
        self.flush()


class S3DeadLetter:
    """Buffers lines and writes them as ``<prefix>/dead-letter-…-<n>.jsonl`` objects on flush.

    Each flush that has new lines writes one new object (S3 has no append; a put is atomic,
    so an object is never seen half-written), so what a checkpoint relies on is durable once
    ``flush`` returns. Objects are encrypted at rest: SSE-S3, or SSE-KMS under ``kms_key``.
    """

    def __init__(self, client: S3Client, bucket: str, prefix: str,
                 kms_key: str | None = None) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.kms_key = kms_key
        self._name = _run_name()
        self._buffer: list[bytes] = []
        self._parts = 0
        self.files: list[str] = []
        self.written = 0

    def __repr__(self) -> str:
        return f"S3DeadLetter('s3://{self.bucket}/{self.prefix}')"

    def write(self, **fields: Unpack[DeadLetterFields]) -> None:
        line = kept(dead_letter_line(**fields))  # held until the next flush
        self._buffer.append(line)
        self.written += 1

    def flush(self) -> None:
        if not self._buffer:
            return
        self._parts += 1
        folder = f"{self.prefix}/" if self.prefix else ""
        key = f"{folder}{self._name}-{self._parts:06d}{CLOSED_SUFFIX}"
        _put(self._client, self.bucket, key, b"".join(self._buffer), self.kms_key)
        self._buffer.clear()
        self.files.append(f"s3://{self.bucket}/{key}")

    def close(self) -> None:
        self.flush()


def open_dead_letter(uri: str, *, s3_client: S3Client | None = None,
                     kms_key: str | None = None) -> DeadLetter:
    """A directory path, or ``s3://BUCKET/PREFIX`` (``s3_client`` required then; objects
    encrypted under ``kms_key`` when given)."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise DeadLetterConfigError(f"--dead-letter {uri}: expected s3://BUCKET/PREFIX")
        if s3_client is None:
            raise DeadLetterConfigError(f"--dead-letter {uri}: no S3 client configured")
        return S3DeadLetter(s3_client, bucket, prefix, kms_key or None)
    _no_kms_key_for_a_directory(uri, kms_key)
    if "://" in uri:
        raise DeadLetterConfigError(
            f"--dead-letter {uri}: use a directory path or s3://BUCKET/PREFIX"
        )
    if Path(uri).exists() and not Path(uri).is_dir():
        raise DeadLetterConfigError(f"--dead-letter {printable(uri)}: exists and is not a "
                                    "directory")
    writer = DeadLetterDirectory(uri)
    if writer.directory.is_dir():  # else it is made 0700 on the first line, and checked then
        writer.check_folder()
    return writer


def is_closed(name: str) -> bool:
    """A complete dead-letter file (or object) name: the only kind redrive reads."""
    return name.endswith(CLOSED_SUFFIX)


def is_part(name: str) -> bool:
    """A dead-letter file a writer still holds, or one a killed writer left: never read."""
    return name.endswith(CLOSED_SUFFIX + PART_SUFFIX)


# A file we create: never an existing one, never through a link (O_EXCL alone already
# refuses a link at the name; O_NOFOLLOW says so, and refuses one at an existing name).
_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def refuse_shared_folder(directory: Path) -> str | None:
    """Refuse a local dead-letter folder others can write or another user owns
    (``DeadLetterConfigError``, with the reason and the fix); the warning to log about one
    only the user's primary group can write, else None."""
    found = folder_check(directory, FOLDER)
    if found.refused:
        raise DeadLetterConfigError(f"{found.refused}; nothing was written into it")
    return found.warning


def _fsync_directory(directory: Path) -> None:
    """Make a rename, creation or removal in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _put(client: S3Client, bucket: str, key: str, body: bytes, kms_key: str | None) -> None:
    if kms_key:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=CONTENT_TYPE,
                          ServerSideEncryption=KMS_ENCRYPTION, SSEKMSKeyId=kms_key)
    else:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=CONTENT_TYPE,
                          ServerSideEncryption=SERVER_SIDE_ENCRYPTION)


def _no_kms_key_for_a_directory(uri: str, kms_key: str | None) -> None:
    if kms_key:
        raise DeadLetterConfigError(
            f"--dead-letter-kms-key applies to an s3:// dead letter, not to {uri}: local "
            "files are protected by their modes (0600); unset it or use s3://BUCKET/PREFIX"
        )


# ---- the read side, for redrive --------------------------------------------------------------

class DeadLetterStore(Protocol):
    """Where redrive finds dead letters: the entries directly in a directory or S3 prefix."""

    @property
    def location(self) -> str: ...

    def names(self) -> list[str]:
        """Names of the entries directly in the location (sub-folders excluded), sorted."""
        ...

    def describe(self, name: str) -> str:
        """The full path or ``s3://`` URI of an entry."""
        ...

    def read(self, name: str) -> bytes:
        """The entry's bytes; ``FileNotFoundError`` when it is gone."""
        ...

    def replace(self, name: str, data: bytes) -> None:
        """Replace the entry's content at once: a reader sees the old bytes or the new."""
        ...

    def delete(self, name: str) -> None: ...

    def append_log(self, name: str, data: bytes) -> None:
        """Add lines to the redrive log ``name`` (durable on return)."""
        ...

    def log_location(self, name: str) -> str: ...


class DirectoryStore:
    """Dead-letter files in one directory; rewrites go through a fsynced temporary file.

    The folder (and its ``redrive-log/``, when there is one) is checked when the store is
    made (:func:`refuse_shared_folder`): one others can write, or another user's, is refused. A
    symbolic link among the files is listed (so that redrive reports it) but never read,
    rewritten or deleted: ``read`` raises :class:`DeadLetterStoreError` with the reason, as
    it does for a file of another user (one planted in a folder with the sticky bit).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        for folder in (self.directory, self.directory / REDRIVE_LOG_FOLDER):
            if folder.is_dir():
                warning = refuse_shared_folder(folder)
                if warning:
                    log.warning("%s", warning)

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.directory)!r})"

    @property
    def location(self) -> str:
        return str(self.directory)

    def names(self) -> list[str]:
        """Regular files and symbolic links (whatever they point to; ``read`` refuses them)."""
        with os.scandir(self.directory) as entries:
            return sorted(entry.name for entry in entries
                          if entry.is_symlink() or entry.is_file(follow_symlinks=False))

    def describe(self, name: str) -> str:
        return str(self.directory / name)

    def read(self, name: str) -> bytes:
        """The file's bytes, read without following a link (``O_NOFOLLOW``): a symbolic link
        or anything but a regular file raises :class:`DeadLetterStoreError`, untouched."""
        path = self.directory / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ELOOP or path.is_symlink():
                raise self._link_refused(name) from None
            raise
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise DeadLetterStoreError(f"{printable(str(path))}: not a regular file; "
                                           "left as it is")
            if info.st_uid != os.getuid():  # e.g. planted in a folder with the sticky bit
                raise DeadLetterStoreError(
                    f"{printable(str(path))}: belongs to another user (uid {info.st_uid}), "
                    "not read: its lines would be sent as yours; left as it is")
            return file.read()

    def _link_refused(self, name: str) -> DeadLetterStoreError:
        path = self.directory / name
        try:
            target = f" to {printable(os.readlink(path))}"
        except OSError:
            target = ""
        return DeadLetterStoreError(
            f"{printable(str(path))}: a symbolic link{target}, not read: dead-letter files "
            "are never followed through a link (it could make redrive read, rewrite or "
            "delete a file elsewhere), and the link is left as it is; move the file itself "
            "into the folder, or remove the link")

    def replace(self, name: str, data: bytes) -> None:
        """Write ``data`` into a new temporary file (a random name, ``O_EXCL``, 0600: what
        ``mkstemp`` makes; never a ``*.jsonl`` name), fsync it, rename it over ``name``."""
        path = self.directory / name
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp",
                                         dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), FILE_MODE)  # mkstemp's mode already; said here too
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)  # a link at ``path`` is replaced, never followed
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_directory(self.directory)

    def delete(self, name: str) -> None:
        path = self.directory / name
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):  # swapped in since it was read
                raise self._link_refused(name)
        except FileNotFoundError:
            return
        path.unlink(missing_ok=True)
        _fsync_directory(self.directory)

    def append_log(self, name: str, data: bytes) -> None:
        folder = self.directory / REDRIVE_LOG_FOLDER
        make_private_dirs(folder)
        refuse_shared_folder(folder)  # (any warning was logged when the store was made)
        path = folder / f"{name}{CLOSED_SUFFIX}"
        try:
            fd = os.open(path, _CREATE_NEW | os.O_APPEND, FILE_MODE)
            created = True
        except FileExistsError:  # this run's log, from an earlier file: never a link
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
            created = False
        if created:
            os.fchmod(fd, FILE_MODE)  # whatever the umask
        with os.fdopen(fd, "ab") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if created:
            _fsync_directory(folder)

    def log_location(self, name: str) -> str:
        return str(self.directory / REDRIVE_LOG_FOLDER / f"{name}{CLOSED_SUFFIX}")


class S3Store:
    """Dead-letter objects directly under ``s3://BUCKET/PREFIX/`` (listed page by page).

    A rewrite is a put of the whole new body (atomic in S3); the redrive log is written as
    one object per append, since S3 has no append. Puts use ``kms_key`` when given; else a
    rewrite keeps the KMS key the object was read with (and the log the latest such key),
    and SSE-S3 otherwise.
    """

    def __init__(self, client: S3Client, bucket: str, prefix: str, *, page_size: int = 1000,
                 kms_key: str | None = None) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.page_size = page_size
        self.kms_key = kms_key
        self._folder = f"{self.prefix}/" if self.prefix else ""
        self._log_parts: Counter[str] = Counter()
        self._read_keys: dict[str, str] = {}  # name → the KMS key it was encrypted with
        self._last_read_key: str | None = None

    def __repr__(self) -> str:
        return f"S3Store({self.location!r})"

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def names(self) -> list[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self._folder, Delimiter="/",
                                   PaginationConfig={"PageSize": self.page_size})
        try:
            keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise AwsSetupError(f"{printable(self.location)}: cannot list the dead letter: "
                                f"{shown(str(exc))}") from exc
        return sorted(key[len(self._folder):] for key in keys if key != self._folder)

    def describe(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._folder}{name}"

    def read(self, name: str) -> bytes:
        with self._errors(name):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=self._folder + name)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise FileNotFoundError(self.describe(name)) from exc
                raise
            kms_key = response.get("SSEKMSKeyId")
            if response.get("ServerSideEncryption") == KMS_ENCRYPTION and kms_key:
                self._read_keys[name] = self._last_read_key = kms_key
            return bytes(response["Body"].read())

    def replace(self, name: str, data: bytes) -> None:
        with self._errors(name):
            _put(self._client, self.bucket, self._folder + name, data,
                 self.kms_key or self._read_keys.get(name))

    def delete(self, name: str) -> None:
        with self._errors(name):
            self._client.delete_object(Bucket=self.bucket, Key=self._folder + name)

    def append_log(self, name: str, data: bytes) -> None:
        self._log_parts[name] += 1
        key = f"{self._folder}{REDRIVE_LOG_FOLDER}/{name}-{self._log_parts[name]:06d}"
        with self._errors(name):
            _put(self._client, self.bucket, key + CLOSED_SUFFIX, data,
                 self.kms_key or self._last_read_key)

    def log_location(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._folder}{REDRIVE_LOG_FOLDER}/{name}-*{CLOSED_SUFFIX}"

    @contextmanager
    def _errors(self, name: str) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            # botocore's text may name the endpoint URL, user:password@ included
            raise DeadLetterStoreError(f"{printable(self.describe(name))}: {shown(str(exc))}"
                                       ) from exc


def open_dead_letter_store(uri: str, *, s3_client: S3Client | None = None,
                           kms_key: str | None = None) -> DeadLetterStore:
    """The dead letter redrive reads: a directory that exists, or ``s3://BUCKET/PREFIX``
    (rewritten under ``kms_key`` when given)."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise DeadLetterConfigError(f"{uri}: expected s3://BUCKET/PREFIX")
        if s3_client is None:
            raise DeadLetterConfigError(f"{uri}: no S3 client configured")
        return S3Store(s3_client, bucket, prefix, kms_key=kms_key or None)
    _no_kms_key_for_a_directory(uri, kms_key)
    if "://" in uri:
        raise DeadLetterConfigError(f"{uri}: use a directory path or s3://BUCKET/PREFIX")
    path = Path(uri)
    if not path.exists():
        raise DeadLetterConfigError(f"{printable(uri)}: no such directory")
    if not path.is_dir():
        raise DeadLetterConfigError(f"{printable(uri)}: not a directory")
    return DirectoryStore(path)  # checks the folder: refused when others can write it


if TYPE_CHECKING:  # mypy checks that each class implements its protocol
    def _implements(directory: DeadLetterDirectory, s3: S3DeadLetter, directory_store:
                    DirectoryStore, s3_store: S3Store) -> tuple[DeadLetter, DeadLetter,
                                                                DeadLetterStore, DeadLetterStore]:
        return directory, s3, directory_store, s3_store
