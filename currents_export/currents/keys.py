"""Parse Braze Currents object keys leniently, by search rather than by position."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from currents_export.errors import NotACurrentsKey

_EVENT_TYPE = re.compile(r"(?:^|/)event_type=([^/]+)")
_QUEUE_HOUR = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2}-\d{2})(?:/|$)")
_INTEGRATION = re.compile(r"dataexport\.(?:([^./]+)\.)?(S3|AzureBlob|GCS)\.integration\.([^/+]+)")


@dataclass(frozen=True, slots=True)
class CurrentsKey:
    key: str
    event_type: str
    queue_hour: datetime | None
    schema_id: int | None
    cluster: str | None
    connection: str | None
    integration_id: str | None
    partition: int | None
    offset: int | None

    @property
    def queue_hour_label(self) -> str | None:
        return self.queue_hour.strftime("%Y-%m-%d-%H") if self.queue_hour else None


def parse_key(key: str) -> CurrentsKey:
    """Extract what a Currents key says about its file.

    Raises NotACurrentsKey when the key has no ``event_type=`` segment or does not end in
    ``.avro``. Everything else is optional metadata; unknown segments are ignored.
    """
    if not key.endswith(".avro"):
        raise NotACurrentsKey(f"{key!r} does not end in .avro")
    event_type_match = _EVENT_TYPE.search(key)
    if not event_type_match:
        raise NotACurrentsKey(f"{key!r} has no event_type=<type> segment")
    segments = key.split("/")

    queue_hour = None
    schema_id = None
    hour_match = _QUEUE_HOUR.search(key)
    if hour_match:
        try:
            queue_hour = datetime.strptime(hour_match.group(1), "%Y-%m-%d-%H").replace(tzinfo=UTC)
        except ValueError:
            queue_hour = None
        date_index = segments.index(f"date={hour_match.group(1)}")
        schema_id = next(
            (int(segment) for segment in segments[date_index + 1 : -1] if segment.isdigit()),
            None,
        )

    cluster = connection = integration_id = None
    integration_match = _INTEGRATION.search(key)
    if integration_match:
        cluster, connection, integration_id = integration_match.groups()

    partition = offset = None
    stem = segments[-1][: -len(".avro")]
    pieces = stem.rsplit("+", 2)
    if len(pieces) == 3 and pieces[1].isdigit() and pieces[2].isdigit():
        partition, offset = int(pieces[1]), int(pieces[2])

    return CurrentsKey(
        key=key,
        event_type=event_type_match.group(1),
        queue_hour=queue_hour,
        schema_id=schema_id,
        cluster=cluster,
        connection=connection,
        integration_id=integration_id,
        partition=partition,
        offset=offset,
    )


def object_key(
    prefix: str,
    integration: str,
    event_type: str,
    queue_hour: datetime,
    schema_id: int,
    zone: str,
    partition: int,
    offset: int,
) -> str:
    """Build a key the way Braze lays files out (used by the fixture generator)."""
    folder = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return (
        f"{folder}{integration}/event_type={event_type}/date={queue_hour:%Y-%m-%d-%H}/"
        f"{schema_id}/{zone}/{integration}+{partition}+{offset:010d}.avro"
    )


def currents_identity(key: str) -> str | None:
    """What a Currents file is, whatever folder, bucket or prefix it was copied to.

    The key from its ``event_type=`` segment on (``event_type=T/date=H/SCHEMA/ZONE/FILE.avro``):
    Braze writes each file once under that path, and copies keep it below their own prefix.
    None when the key is not in the Currents layout (see :func:`parse_key`).
    """
    try:
        parse_key(key)
    except NotACurrentsKey:
        return None
    match = _EVENT_TYPE.search(key)
    assert match is not None  # parse_key found it
    return key[match.start(1) - len("event_type=") :]
