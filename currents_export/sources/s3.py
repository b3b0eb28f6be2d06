"""Currents objects in S3: recursive, paginated listing with filters, and streaming reads.

Keys from ListObjectsV2 are raw (never URL-decoded). Reads go through a forward-only,
buffered stream over GetObject's body, so memory holds one buffer, never the object.
Messages show keys with their control characters escaped and botocore's text without URL
credentials (``support.redact``); an object's ``uri`` stays the raw key (its identity).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from currents_export.currents.keys import parse_key
from currents_export.errors import NotACurrentsKey, S3ReadError, SourceError
from currents_export.sources.base import SourceObject
from currents_export.support.redact import printable, shown

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import GetObjectRequestTypeDef

log = logging.getLogger(__name__)

READ_BUFFER_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if not uri.startswith("s3://"):
            raise SourceError(f"{shown(uri)}: expected s3://BUCKET/PREFIX")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise SourceError(f"{printable(uri)}: no bucket name; expected s3://BUCKET/PREFIX")
        return cls(bucket, prefix)


def s3_client(
    endpoint_url: str | None = None,
    region: str | None = None,
    *,
    connect_timeout: float = 10,
    read_timeout: float = 120,
    max_attempts: int | None = None,
) -> S3Client:
    """A boto3 S3 client with botocore's standard retries and sane timeouts.

    The defaults suit the CLI; the Lambda passes tighter ones, derived from its deadline
    margin (see ``aws_lambda``). ``read_timeout`` bounds each wait for bytes (a stalled
    GetObject stream), not a whole transfer. ``max_attempts``: attempts in all, the first
    included; None: the CLI's ``AWS_MAX_ATTEMPTS``, else 10 (botocore's ``max_attempts``,
    which counts retries).
    """
    import boto3  # here: slow to import (README, Performance), and a local replay needs none
    from botocore.config import Config

    config = Config(
        retries=(
            # botocore's standard retries; AWS_MAX_ATTEMPTS lowers them (an unreachable
            # endpoint is retried with backoff: README, Performance, says for how long).
            {"mode": "standard", "max_attempts": _max_attempts()} if max_attempts is None
            else {"mode": "standard", "total_max_attempts": max_attempts}
        ),
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=32,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def _max_attempts() -> int:
    try:
        return max(1, int(os.environ.get("AWS_MAX_ATTEMPTS", "10")))
    except ValueError:
        return 10


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """Which Currents keys a backfill selects: queue-hour range and event types."""

    since: datetime | None = None
    until: datetime | None = None  # inclusive hour
    event_types: frozenset[str] = frozenset()

    def accepts(self, key: str) -> bool:
        try:
            parsed = parse_key(key)
        except NotACurrentsKey:
            return False
        if self.event_types and parsed.event_type not in self.event_types:
            return False
        if self.since is None and self.until is None:
            return True
        if parsed.queue_hour is None:
            return False
        if self.since is not None and parsed.queue_hour < self.since:
            return False
        return self.until is None or parsed.queue_hour <= self.until


def list_objects(
    client: S3Client, location: S3Location, key_filter: KeyFilter = KeyFilter()
) -> Iterator[SourceObject]:
    """Every selected Currents object under the prefix, at any depth, in key order."""
    for key, item in _listed(client, location):
        if key_filter.accepts(key):
            yield s3_object(client, location.bucket, key, size=item.get("Size"),
                            etag=item.get("ETag"))


def _listed(client: S3Client, location: S3Location) -> Iterator[tuple[str, Any]]:
    """(key, ListObjectsV2 entry) of every object under the prefix, in key order."""
    paginator = client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=location.bucket, Prefix=location.prefix):
            for item in page.get("Contents", []):
                yield item["Key"], item
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise SourceError(
            f"{_shown_uri(location.bucket, location.prefix)}: cannot list ({printable(code)}); "
            "check the bucket name, the prefix and that the credentials allow s3:ListBucket"
        ) from None


def s3_object(
    client: S3Client,
    bucket: str,
    key: str,
    *,
    size: int | None = None,
    etag: str | None = None,
    version_id: str | None = None,
) -> SourceObject:
    """One S3 object. Outside the Currents layout its identity is ``s3etag:<ETag>`` when the
    ETag is known (the same for a byte-identical copy uploaded the same way: a multipart
    upload's ETag depends on its part size, and SSE-KMS ETags are not content digests, so
    such copies may count as new objects), else the SHA-256 of its content."""
    tag = (etag or "").strip('"')
    return SourceObject(
        uri=f"s3://{bucket}/{key}",
        key=key,
        size=size,
        opener=partial(_open, client, bucket, key, version_id),
        fingerprint=f"s3etag:{tag}" if tag else None,
        origin=("s3", bucket, key, version_id or ""),
    )


@contextmanager
def _open(client: S3Client, bucket: str, key: str, version_id: str | None) -> Iterator[IO[bytes]]:
    arguments: GetObjectRequestTypeDef = {"Bucket": bucket, "Key": key}
    if version_id:
        arguments["VersionId"] = version_id
    try:
        response = client.get_object(**arguments)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise S3ReadError(f"{_shown_uri(bucket, key)}: GetObject failed ({printable(code)})",
                          permanent=code in ("NoSuchKey", "NoSuchBucket")) from None
    except BotoCoreError as exc:  # its text may name the endpoint URL, credentials and all
        raise S3ReadError(f"{_shown_uri(bucket, key)}: GetObject failed ({shown(str(exc))})"
                          ) from None
    body = response["Body"]
    try:
        yield io.BufferedReader(_BodyStream(body, _shown_uri(bucket, key)), READ_BUFFER_BYTES)
    finally:
        body.close()


class _BodyStream(io.RawIOBase):
    """GetObject's body as a raw, forward-only stream; network errors become S3ReadError."""

    def __init__(self, body: StreamingBody, name: str) -> None:
        self._body = body
        self._name = name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            chunk = self._body.read(len(buffer))
        except Exception as exc:  # botocore/urllib3 raise several kinds for a broken stream
            raise S3ReadError(f"{self._name}: the download broke ({type(exc).__name__})") from None
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _shown_uri(bucket: str, key: str) -> str:
    """``s3://bucket/key`` for a message: one line, whatever the key holds."""
    return printable(f"s3://{bucket}/{key}")


def object_or_prefix(client: S3Client, uri: str) -> tuple[list[SourceObject], bool]:
    """What ``inspect`` reads of s3://BUCKET/KEY_OR_PREFIX: the object the key names, if
    there is one (and True); else every ``.avro`` object under it as a prefix, Currents
    layout or not, in key order (and False), as of a folder.

    Raises SourceError when the prefix holds no ``.avro`` object (saying what it holds)
    or cannot be listed.
    """
    location = S3Location.parse(uri)
    if location.prefix and not location.prefix.endswith("/"):
        found = _head(client, location.bucket, location.prefix)
        if found is not None:
            return [found], True
    objects: list[SourceObject] = []
    others: list[str] = []
    for key, item in _listed(client, location):
        if key.endswith(".avro"):
            objects.append(s3_object(client, location.bucket, key, size=item.get("Size"),
                                     etag=item.get("ETag")))
        elif not key.endswith("/"):  # a "folder" made in the console is no object to read
            others.append(key)
    if objects:
        return objects, False
    where = _shown_uri(location.bucket, location.prefix)
    if not others:
        raise SourceError(f"{where}: nothing there (no object with this key, none under this "
                          "prefix); check the bucket and the prefix (`aws s3 ls`)")
    raise SourceError(f"{where}: no .avro object under this prefix ({len(others)} other "
                      f"object{'s' if len(others) > 1 else ''}, e.g. "
                      f"{_shown_uri(location.bucket, others[0])}); give the folder Braze "
                      "writes into, or one .avro object")


def _head(client: S3Client, bucket: str, key: str) -> SourceObject | None:
    """The object at ``key`` (its size and ETag from HeadObject), or None when there is no
    such object (or it may not be read: the listing then says what is wrong)."""
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError:  # 404, or 403 without s3:ListBucket for a missing key
        return None
    return s3_object(client, bucket, key, size=head.get("ContentLength"),
                     etag=head.get("ETag"))
