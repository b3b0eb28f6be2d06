"""Backfill helpers: hour bounds, SQS dispatch, manifests.

Worker processes (``--workers``) are ``currents_export.workers``; the progress display is
``currents_export.display.LiveProgress``.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING
from urllib.parse import quote

import orjson

from currents_export.sources import SourceObject
from currents_export.sources.events import DISPATCH_MESSAGE_VERSION

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef


def parse_hour(value: str | None, *, end: bool = False) -> datetime | None:
    """``YYYY-MM-DD`` or ``YYYY-MM-DD-HH`` (UTC) → the first hour, or the last when ``end``."""
    if value is None:
        return None
    for pattern, span in (("%Y-%m-%d-%H", timedelta(0)), ("%Y-%m-%d", timedelta(hours=23))):
        try:
            hour = datetime.strptime(value, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
        return hour + span if end else hour
    raise ValueError(f"{value!r} is not YYYY-MM-DD or YYYY-MM-DD-HH")


def queue_url(dispatch: str) -> str:
    """``sqs://HOST/ACCOUNT/QUEUE`` (or the queue's https URL) → the queue URL."""
    if dispatch.startswith(("https://", "http://")):
        return dispatch
    if dispatch.startswith("sqs://"):
        rest = dispatch[len("sqs://") :]
        return rest if rest.startswith(("https://", "http://")) else f"https://{rest}"
    raise ValueError(f"--dispatch {dispatch}: expected sqs://QUEUE_URL")


def dispatch_message(bucket: str, key: str) -> str:
    """What the Lambda handler reads: the raw key (as listed), never URL-encoded."""
    return orjson.dumps({"currents_export": DISPATCH_MESSAGE_VERSION, "bucket": bucket, "key": key}
                        ).decode()


def dispatch_to_sqs(sqs: SQSClient, url: str, bucket: str, objects: Iterable[SourceObject]) -> int:
    """Send one message per object (batches of 10); returns how many were sent."""
    sent = 0
    batch: list[SourceObject] = []

    def send(chunk: list[SourceObject]) -> None:
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": str(n), "MessageBody": dispatch_message(bucket, obj.key)}
            for n, obj in enumerate(chunk)]
        for _attempt in range(5):
            failed = sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed", [])
            if not failed:
                return
            failed_ids = {f["Id"] for f in failed}
            entries = [e for e in entries if e["Id"] in failed_ids]
            time.sleep(0.5)
        raise RuntimeError(f"SQS refused {len(entries)} messages for {url}")

    for source in objects:
        batch.append(source)
        if len(batch) == 10:
            send(batch)
            sent += len(batch)
            batch = []
    if batch:
        send(batch)
        sent += len(batch)
    return sent


def write_manifest(out: IO[str], bucket: str, objects: Iterable[SourceObject]) -> int:
    """An S3 Batch Operations CSV manifest (``Bucket,Key``; keys URL-encoded)."""
    writer = csv.writer(out, lineterminator="\n")
    count = 0
    for source in objects:
        writer.writerow([bucket, quote(source.key, safe="/")])
        count += 1
    return count
