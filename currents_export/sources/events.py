"""Parse every event shape the Lambda receives into objects to process, and build its responses.

Pure functions, no I/O. Shapes (``parse_invocation``): S3 notifications (and
``s3:TestEvent``), direct or in SQS, in SNS (S3 → SNS → SQS) or EventBridge envelopes; SNS
and EventBridge direct; our backfill dispatcher's ``currents_export`` messages; S3 Batch
Operations (schemas 1.0 and 2.0).

Keys: S3 notifications and Batch Operations tasks are form-URL-encoded (``+`` is a space,
``%2B`` a plus) and decoded exactly once with ``unquote_plus``; the dispatcher's come from
``ListObjectsV2`` raw and are never decoded; EventBridge's only when they contain ``%``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_plus

__all__ = [
    "BATCH_RESULT_CODES",
    "DISPATCH_MESSAGE_VERSION",
    "Invocation",
    "InvocationKind",
    "ObjectRef",
    "WorkItem",
    "batch_operations_response",
    "decode_eventbridge_key",
    "decode_notification_key",
    "parse_invocation",
    "sqs_response",
]

InvocationKind = Literal["sqs", "s3", "sns", "eventbridge", "batch_operations", "unknown"]

DISPATCH_MESSAGE_VERSION = 1  # the "currents_export" field written by backfill.dispatch_message
BATCH_RESULT_CODES = frozenset({"Succeeded", "TemporaryFailure", "PermanentFailure"})

_S3_BUCKET_ARN = re.compile(r"^arn:[^:]+:s3:::([^/]+)$")
_REASON_TEXT_LIMIT = 80  # cap for AWS-supplied labels (eventName, detail-type…) in reasons


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One S3 object named by an event; ``key`` is decoded (the real S3 key)."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None

    @property
    def uri(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One unit the handler must report on: an SQS message, a Batch Operations task, or the
    whole invocation for direct/SNS/EventBridge events."""

    item_id: str | None
    objects: tuple[ObjectRef, ...]
    ignored: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Invocation:
    """A parsed Lambda event: what kind it was and the work items it holds."""

    kind: InvocationKind
    items: tuple[WorkItem, ...]
    batch_schema_version: str | None = None
    batch_invocation_id: str | None = None
    user_arguments: dict[str, str] | None = None


# --------------------------------------------------------------------------- keys


def decode_notification_key(raw: str) -> str:
    """Decode a key from an S3 notification or Batch Operations task, exactly once."""
    return unquote_plus(raw)


def decode_eventbridge_key(raw: str) -> str:
    """Decode an EventBridge ``detail.object.key`` only if it looks URL-encoded.

    AWS does not document whether it is encoded. A raw Currents key never contains ``%``
    (nor spaces); an encoded one always does (``%2B``), so decode only when ``%`` is present.
    """
    return unquote_plus(raw) if "%" in raw else raw


# --------------------------------------------------------------------------- helpers


@dataclass(slots=True)
class _Found:
    """Accumulates objects and ignored reasons while walking one work item."""

    objects: list[ObjectRef]
    ignored: list[str]

    def item(self, item_id: str | None) -> WorkItem:
        return WorkItem(item_id=item_id, objects=tuple(self.objects), ignored=tuple(self.ignored))


def _new() -> _Found:
    return _Found(objects=[], ignored=[])


def _label(value: Any) -> str:
    """A short, printable rendering of an AWS-supplied label (never record contents)."""
    text = value if isinstance(value, str) else type(value).__name__
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    if len(text) > _REASON_TEXT_LIMIT:
        text = text[:_REASON_TEXT_LIMIT] + "…"
    return repr(text)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    """A non-empty string, or None."""
    return value if isinstance(value, str) and value else None


def _size(value: Any) -> int | None:
    """Object size in bytes: an int, or a decimal string in hand-written events; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _json_object(text: Any, what: str) -> tuple[Mapping[str, Any] | None, str | None]:
    """Parse ``text`` as a JSON object; return (object, None) or (None, reason)."""
    if not isinstance(text, str):
        return None, f"{what} is not a string"
    if not text.strip():
        return None, f"{what} is empty"
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None, f"{what} is not JSON"
    if not isinstance(value, Mapping):
        return None, f"{what} is JSON {type(value).__name__}, not an object"
    return value, None


def _add_object(found: _Found, ref: ObjectRef) -> None:
    if not ref.key.endswith(".avro"):
        found.ignored.append(f"not .avro: {ref.uri}")
        return
    found.objects.append(ref)


# --------------------------------------------------------------------------- payload shapes


def _s3_records(records: Any, found: _Found) -> None:
    """S3 notification ``Records`` (direct, or inside SQS/SNS): decode keys once."""
    if not isinstance(records, list) or not records:
        found.ignored.append("S3 notification without records")
        return
    for record in records:
        if not isinstance(record, Mapping):
            found.ignored.append("S3 notification record is not an object")
            continue
        source = record.get("eventSource")
        if source is not None and source != "aws:s3":
            found.ignored.append(f"record from {_label(source)}, not aws:s3")
            continue
        s3 = _mapping(record.get("s3"))
        bucket = _text(_mapping(s3.get("bucket")).get("name"))
        obj = _mapping(s3.get("object"))
        raw_key = _text(obj.get("key"))
        key = decode_notification_key(raw_key) if raw_key is not None else None
        event_name = record.get("eventName")
        name = event_name.removeprefix("s3:") if isinstance(event_name, str) else None
        where = f": s3://{bucket}/{key}" if bucket and key else ""
        if name is None:
            found.ignored.append(f"S3 record without eventName{where}")
            continue
        if not name.startswith("ObjectCreated:"):
            found.ignored.append(f"{_label(name)} is not ObjectCreated{where}")
            continue
        if bucket is None or key is None:
            found.ignored.append("S3 record without bucket name or object key")
            continue
        _add_object(
            found,
            ObjectRef(
                bucket=bucket,
                key=key,
                size=_size(obj.get("size")),
                etag=_text(obj.get("eTag")),
                version_id=_text(obj.get("versionId")),
            ),
        )


def _eventbridge(event: Mapping[str, Any], found: _Found) -> None:
    """An EventBridge S3 event; only ``aws.s3`` / ``Object Created`` names an object."""
    source = event.get("source")
    detail_type = event.get("detail-type")
    if source != "aws.s3" or detail_type != "Object Created":
        found.ignored.append(
            f"EventBridge {_label(source)} {_label(detail_type)} is not an S3 Object Created event"
        )
        return
    detail = _mapping(event.get("detail"))
    bucket = _text(_mapping(detail.get("bucket")).get("name"))
    obj = _mapping(detail.get("object"))
    raw_key = _text(obj.get("key"))
    if bucket is None or raw_key is None:
        found.ignored.append("EventBridge event without bucket name or object key")
        return
    _add_object(
        found,
        ObjectRef(
            bucket=bucket,
            key=decode_eventbridge_key(raw_key),
            size=_size(obj.get("size")),
            etag=_text(obj.get("etag")),
            version_id=_text(obj.get("version-id")),
        ),
    )


def _dispatch_message(message: Mapping[str, Any], found: _Found) -> None:
    """A message from our backfill dispatcher; its key is raw (from ListObjectsV2)."""
    version = message.get("currents_export")
    if version != DISPATCH_MESSAGE_VERSION or isinstance(version, bool):
        shown = version if isinstance(version, int) and not isinstance(version, bool) else "?"
        found.ignored.append(f"currents_export message version {shown} is not supported")
        return
    bucket = _text(message.get("bucket"))
    key = _text(message.get("key"))
    if bucket is None or key is None:
        found.ignored.append("currents_export message without bucket or key")
        return
    _add_object(
        found,
        ObjectRef(
            bucket=bucket,
            key=key,  # raw: never decode
            size=_size(message.get("size")),
            etag=_text(message.get("etag")),
            version_id=_text(message.get("version_id")),
        ),
    )


def _payload(payload: Mapping[str, Any], found: _Found, *, allow_sns: bool) -> None:
    """Whatever an SQS body or SNS message holds, once parsed as a JSON object."""
    if "currents_export" in payload:
        _dispatch_message(payload, found)
    elif "Records" in payload:
        _s3_records(payload.get("Records"), found)
    elif payload.get("Event") == "s3:TestEvent":
        found.ignored.append("s3:TestEvent")
    elif "detail-type" in payload:
        _eventbridge(payload, found)
    elif _is_sns_envelope(payload):
        if not allow_sns:
            found.ignored.append("SNS envelope nested inside an SNS message")
        elif payload.get("Type") != "Notification":
            found.ignored.append(f"SNS {_label(payload.get('Type'))} message, not a Notification")
        else:
            _sns_message(payload.get("Message"), found)
    else:
        found.ignored.append(
            "unrecognised message: not an S3 notification, SNS envelope, EventBridge event "
            "or currents_export message"
        )


def _is_sns_envelope(payload: Mapping[str, Any]) -> bool:
    """An SNS envelope (S3 → SNS → SQS without RawMessageDelivery)."""
    return isinstance(payload.get("Type"), str) and (
        "TopicArn" in payload or "Message" in payload
    )


def _sns_message(message: Any, found: _Found) -> None:
    """The ``Message`` string of an SNS notification: an S3 notification (or test event)."""
    payload, problem = _json_object(message, "SNS Message")
    if payload is None:
        found.ignored.append(problem or "SNS Message is unreadable")
        return
    _payload(payload, found, allow_sns=False)


# --------------------------------------------------------------------------- invocations


def _record_source(record: Any) -> str | None:
    if not isinstance(record, Mapping):
        return None
    source = record.get("eventSource", record.get("EventSource"))
    if isinstance(source, str):
        return source
    if "s3" in record:
        return "aws:s3"
    if "Sns" in record:
        return "aws:sns"
    if "messageId" in record and "body" in record:
        return "aws:sqs"
    return None


def _sqs(records: list[Any]) -> Invocation:
    items = []
    for record in records:
        found = _new()
        message_id = _text(record.get("messageId")) if isinstance(record, Mapping) else None
        source = _record_source(record)
        if source != "aws:sqs":
            found.ignored.append(f"record from {_label(source)} in an SQS batch")
        else:
            payload, problem = _json_object(record.get("body"), "message body")
            if payload is None:
                found.ignored.append(problem or "message body is unreadable")
            else:
                _payload(payload, found, allow_sns=True)
        items.append(found.item(message_id))
    return Invocation(kind="sqs", items=tuple(items))


def _sns(records: list[Any]) -> Invocation:
    found = _new()
    for record in records:
        if _record_source(record) != "aws:sns":
            found.ignored.append(f"record from {_label(_record_source(record))}, not aws:sns")
            continue
        _sns_message(_mapping(record.get("Sns")).get("Message"), found)
    return Invocation(kind="sns", items=(found.item(None),))


def _batch_bucket(task: Mapping[str, Any]) -> str | None:
    bucket = _text(task.get("s3Bucket"))
    if bucket is not None:
        return bucket
    arn = _text(task.get("s3BucketArn"))
    match = _S3_BUCKET_ARN.match(arn) if arn else None
    return match.group(1) if match else None


def _batch_operations(event: Mapping[str, Any]) -> Invocation:
    version = event.get("invocationSchemaVersion")
    job = _mapping(event.get("job"))
    raw_arguments = job.get("userArguments")
    user_arguments = (
        {str(k): str(v) for k, v in raw_arguments.items() if v is not None}
        if isinstance(raw_arguments, Mapping)
        else None
    )
    items = []
    tasks = event.get("tasks")
    for task in tasks if isinstance(tasks, list) else []:
        found = _new()
        task_map = _mapping(task)
        bucket = _batch_bucket(task_map)
        raw_key = _text(task_map.get("s3Key"))
        if bucket is None or raw_key is None:
            found.ignored.append("Batch Operations task without a readable bucket or key")
        else:
            _add_object(
                found,
                ObjectRef(
                    bucket=bucket,
                    key=decode_notification_key(raw_key),
                    version_id=_text(task_map.get("s3VersionId")),
                ),
            )
        items.append(found.item(_text(task_map.get("taskId"))))
    return Invocation(
        kind="batch_operations",
        items=tuple(items),
        batch_schema_version=str(version) if version is not None else None,
        batch_invocation_id=_text(event.get("invocationId")),
        user_arguments=user_arguments,
    )


def parse_invocation(event: Mapping[str, Any]) -> Invocation:
    """Turn a Lambda event into work items; never raises on malformed input."""
    if not isinstance(event, Mapping):
        return Invocation(kind="unknown", items=())
    if "invocationSchemaVersion" in event and "tasks" in event:
        return _batch_operations(event)
    records = event.get("Records")
    if isinstance(records, list) and records:
        source = _record_source(records[0])
        if source == "aws:sqs":
            return _sqs(records)
        if source == "aws:sns":
            return _sns(records)
        if source == "aws:s3":
            found = _new()
            _s3_records(records, found)
            return Invocation(kind="s3", items=(found.item(None),))
        return Invocation(kind="unknown", items=())
    if "detail-type" in event and "source" in event:
        found = _new()
        _eventbridge(event, found)
        return Invocation(kind="eventbridge", items=(found.item(None),))
    if event.get("Event") == "s3:TestEvent":
        return Invocation(kind="s3", items=(WorkItem(None, (), ("s3:TestEvent",)),))
    return Invocation(kind="unknown", items=())


# --------------------------------------------------------------------------- responses


def sqs_response(failed_item_ids: Iterable[str]) -> dict[str, Any]:
    """The partial batch response: only the listed messages become visible again.

    Raises ValueError on an empty id (AWS would treat the whole batch as failed).
    """
    failures: list[dict[str, str]] = []
    seen: set[str] = set()
    for item_id in failed_item_ids:
        if not isinstance(item_id, str) or not item_id:
            raise ValueError(f"SQS itemIdentifier must be a non-empty string, got {item_id!r}")
        if item_id not in seen:
            seen.add(item_id)
            failures.append({"itemIdentifier": item_id})
    return {"batchItemFailures": failures}


def batch_operations_response(
    invocation: Invocation, results: Mapping[str, tuple[str, str]]
) -> dict[str, Any]:
    """The S3 Batch Operations response, echoing schema version and invocation id.

    ``results`` maps taskId → (resultCode, resultString). Tasks are reported in invocation
    order; a task with no result is reported as ``PermanentFailure``. Raises ValueError for an
    unknown result code, a result for a task the invocation does not hold, or a non-Batch
    invocation.
    """
    if invocation.kind != "batch_operations":
        raise ValueError(f"not a Batch Operations invocation: {invocation.kind}")
    task_ids = [item.item_id for item in invocation.items if item.item_id is not None]
    unknown = set(results) - set(task_ids)
    if unknown:
        raise ValueError(f"results for tasks not in this invocation: {sorted(unknown)}")
    entries = []
    for task_id in task_ids:
        code, text = results.get(task_id, ("PermanentFailure", "no result recorded for task"))
        if code not in BATCH_RESULT_CODES:
            raise ValueError(f"task {task_id}: resultCode {code!r} is not one of "
                             f"{sorted(BATCH_RESULT_CODES)}")
        entries.append({"taskId": task_id, "resultCode": code, "resultString": text})
    return {
        "invocationSchemaVersion": invocation.batch_schema_version or "1.0",
        "treatMissingKeysAs": "PermanentFailure",
        "invocationId": invocation.batch_invocation_id,
        "results": entries,
    }
