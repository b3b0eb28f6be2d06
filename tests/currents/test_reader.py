"""Streaming records with the writer schema found in the file."""

from __future__ import annotations

import io

import fastavro
import pytest

from currents_export.currents.reader import open_records
from currents_export.currents.schemas import writer_schema
from currents_export.errors import IncompleteObject, UnreadableObject
from tests.support.records import minimal_record

EVENT_TYPE = "users.behaviors.Purchase"


class ForwardOnly(io.RawIOBase):
    """A stream that refuses to seek or tell, like an HTTP response body."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def seekable(self) -> bool:
        return False

    def seek(self, *args: object) -> int:
        raise OSError("not seekable")

    def tell(self) -> int:
        raise OSError("not seekable")


def avro_bytes(event_type: str, count: int, codec: str = "null") -> bytes:
    out = io.BytesIO()
    records = [
        minimal_record(event_type, id=f"id-{i}", price=9.99, currency="USD")
        if event_type == EVENT_TYPE
        else minimal_record(event_type, id=f"id-{i}")
        for i in range(count)
    ]
    fastavro.writer(out, fastavro.parse_schema(writer_schema(event_type)), records, codec=codec)
    return out.getvalue()


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_round_trip_through_a_forward_only_stream(codec: str) -> None:
    data = avro_bytes(EVENT_TYPE, 2_500, codec)
    stream = open_records(io.BufferedReader(ForwardOnly(data)), "mem", EVENT_TYPE)
    assert stream.event_type == EVENT_TYPE
    assert stream.codec == codec
    assert stream.float_fields == frozenset({"price"})
    ids = [record["id"] for record in stream.records]
    assert ids == [f"id-{i}" for i in range(2_500)]


def test_schema_name_wins_over_a_mismatching_key(caplog: pytest.LogCaptureFixture) -> None:
    data = avro_bytes("users.messages.email.Open", 1)
    stream = open_records(io.BytesIO(data), "odd-object", "users.messages.email.Send")
    assert stream.type_mismatch
    assert stream.event_type == "users.messages.email.Open"
    assert "odd-object" in caplog.text and "users.messages.email.Send" in caplog.text


def test_key_type_is_used_when_the_schema_name_is_not_a_currents_name() -> None:
    schema = {"type": "record", "name": "Something", "fields": [{"name": "id", "type": "string"}]}
    out = io.BytesIO()
    fastavro.writer(out, schema, [{"id": "x"}])
    out.seek(0)
    stream = open_records(out, "obj", "users.behaviors.CustomEvent")
    assert stream.event_type == "users.behaviors.CustomEvent"
    with pytest.raises(UnreadableObject, match="cannot tell the event type"):
        open_records(io.BytesIO(out.getvalue()), "obj", None)


def test_not_avro_is_reported_with_the_object_name() -> None:
    with pytest.raises(UnreadableObject, match=r"^bad\.avro: not an Avro container file"):
        open_records(io.BytesIO(b"this is not avro at all"), "bad.avro")


def test_truncated_file_fails_after_the_records_it_could_read() -> None:
    """A file cut short (still being copied?) is incomplete, so retried: not unreadable."""
    data = avro_bytes("users.messages.email.Open", 50)
    stream = open_records(io.BytesIO(data[: len(data) - 40]), "cut.avro")
    read: list[dict] = []
    with pytest.raises(IncompleteObject, match=r"^cut\.avro: ends early: after record") as info:
        read.extend(stream.records)
    assert f"after record {len(read)}," in str(info.value)
    assert str(info.value).endswith("if it is still being copied, run again once it is complete")
    assert info.value.retryable and not isinstance(info.value, UnreadableObject)


def test_mapped_records_yield_each_record_with_its_outcome_and_the_header() -> None:
    """The one decode-and-map loop (pipeline, inspect, benchmark): indexes from the object's
    first record, a resumed start, copies recognised before mapping, a mapper that raises
    turned into a rejection, and what the header says."""
    from currents_export.errors import MAPPING_ERROR
    from currents_export.mapping import (
        DUPLICATE,
        Mapped,
        MappingOptions,
        Rejected,
        mapped_records,
    )

    data = avro_bytes(EVENT_TYPE, 6, "deflate")
    seen: list[str] = []

    def repeated(record: dict[str, object]) -> bool:
        seen.append(str(record["id"]))
        return record["id"] == "id-3"

    records = mapped_records(io.BytesIO(data), "mem", MappingOptions(), EVENT_TYPE,
                             start=2, repeated=repeated)
    assert (records.event_type, records.codec) == (EVENT_TYPE, "deflate")
    assert records.float_fields == frozenset({"price"})
    assert records.key_event_type == records.schema_event_type == EVENT_TYPE
    assert records.writer_schema["fields"]
    assert records.mapper.event_type == EVENT_TYPE

    real = records.mapper

    class Flaky:  # a mapper with a bug on one record
        def map(self, record: dict[str, object]) -> object:
            if record["id"] == "id-4":
                raise ValueError("boom")
            return real.map(record)  # type: ignore[arg-type]

    records.mapper = Flaky()  # type: ignore[assignment]
    out = [(index, record["id"], outcome) for index, record, outcome in records]
    assert seen == [f"id-{i}" for i in range(6)]  # those before start too (their ids count)
    assert [index for index, _id, _outcome in out] == [2, 3, 4, 5]
    assert [record_id for _index, record_id, _outcome in out] == ["id-2", "id-3", "id-4", "id-5"]
    outcomes = [outcome for _index, _id, outcome in out]
    assert isinstance(outcomes[0], Mapped) and outcomes[0].event["revenue"] == 9.99
    assert outcomes[1] is DUPLICATE
    assert outcomes[2] == Rejected(MAPPING_ERROR, "ValueError: boom", "ValueError")
    assert isinstance(outcomes[3], Mapped)
