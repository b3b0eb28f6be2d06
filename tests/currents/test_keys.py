import hashlib
import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest

from currents_export.currents.keys import (
    currents_identity,
    object_key,
    parse_key,
)
from currents_export.errors import NotACurrentsKey
from currents_export.sources import SourceObject, find_local_objects
from currents_export.sources.s3 import s3_object

INTEGRATION = "dataexport.prod-01.S3.integration.5a1b2c3d4e5f60718293a4b5"
FULL_KEY = (
    f"currents/{INTEGRATION}/event_type=users.behaviors.CustomEvent/date=2025-10-08-14/"
    f"123/a/{INTEGRATION}+0+0000012345.avro"
)


def test_full_key_is_parsed_by_search() -> None:
    key = parse_key(FULL_KEY)
    assert key.event_type == "users.behaviors.CustomEvent"
    assert key.queue_hour == datetime(2025, 10, 8, 14, tzinfo=UTC)
    assert key.queue_hour_label == "2025-10-08-14"
    assert key.schema_id == 123
    assert (key.cluster, key.connection, key.integration_id) == (
        "prod-01",
        "S3",
        "5a1b2c3d4e5f60718293a4b5",
    )
    assert (key.partition, key.offset) == (0, 12345)


def test_older_names_without_cluster_and_extra_prefix_segments() -> None:
    old = "dataexport.S3.integration.599f118afbe76a01c513c63c"
    key = parse_key(
        f"a/b/c/{old}/event_type=users.messages.email.Send/date=2017-09-01-00/"
        f"{old}+2+0000035465.avro"
    )
    assert key.event_type == "users.messages.email.Send"
    assert key.cluster is None and key.connection == "S3"
    assert key.schema_id is None
    assert (key.partition, key.offset) == (2, 35465)


def test_extra_folders_below_date_are_ignored() -> None:
    key = parse_key(
        "x/event_type=users.behaviors.Purchase/date=2026-01-01-05/7/zone/extra/file.avro"
    )
    assert key.schema_id == 7
    assert key.partition is None and key.offset is None


def test_key_without_date_is_still_a_currents_key() -> None:
    key = parse_key("/tmp/event_type=users.behaviors.Location/some.avro")
    assert key.event_type == "users.behaviors.Location"
    assert key.queue_hour is None


@pytest.mark.parametrize(
    "bad",
    [
        "currents/event_type=users.behaviors.CustomEvent/date=2025-10-08-14/",
        "currents/event_type=users.behaviors.CustomEvent/file.json",
        "currents/no-type/date=2025-10-08-14/file.avro",
    ],
)
def test_non_currents_keys_are_refused_with_the_key_in_the_message(bad: str) -> None:
    with pytest.raises(NotACurrentsKey) as info:
        parse_key(bad)
    assert bad in str(info.value)


def test_object_key_round_trips_through_parse_key() -> None:
    hour = datetime(2026, 1, 15, 10, tzinfo=UTC)
    built = object_key("currents", INTEGRATION, "users.messages.sms.Send", hour, 42, "b", 3, 17)
    assert built.endswith(f"{INTEGRATION}+3+0000000017.avro")
    key = parse_key(built)
    assert (key.event_type, key.queue_hour, key.schema_id) == ("users.messages.sms.Send", hour, 42)
    assert (key.partition, key.offset) == (3, 17)


TAIL = "event_type=users.behaviors.CustomEvent/date=2026-01-01-00/123/prod-03/foo.avro"


@pytest.mark.parametrize(
    "where",
    [
        f"/home/me/downloads/{TAIL}",  # a local copy
        f"/mnt/other/folder/currents/{INTEGRATION}/{TAIL}",  # another folder, full layout
        f"{TAIL}",  # the bucket's root
        f"currents/{INTEGRATION}/{TAIL}",  # S3, Braze's prefix
        f"archive/2026/{INTEGRATION}/{TAIL}",  # S3, another bucket and prefix
    ],
)
def test_the_identity_is_the_same_wherever_the_file_lies(where: str) -> None:
    assert currents_identity(where) == TAIL


def test_the_identity_keeps_what_distinguishes_files() -> None:
    assert currents_identity(FULL_KEY) == FULL_KEY[FULL_KEY.index("event_type=") :]
    other = FULL_KEY.replace("+0+0000012345", "+0+0000012346")
    assert currents_identity(other) != currents_identity(FULL_KEY)


@pytest.mark.parametrize(
    "outside",
    [
        "/home/me/export.avro",  # no event_type= segment
        "currents/event_type=users.behaviors.CustomEvent/date=2025-10-08-14/file.json",
        "currents/xevent_type=users.behaviors.CustomEvent/file.avro",  # not a segment
        "",
    ],
)
def test_keys_outside_the_layout_have_no_currents_identity(outside: str) -> None:
    assert currents_identity(outside) is None


# ---- SourceObject.identity -----------------------------------------------------------------

def test_copies_of_a_currents_file_share_one_identity_and_keep_their_own_uri(
    tmp_path: Path,
) -> None:
    first = tmp_path / "a" / f"currents/{INTEGRATION}/{TAIL}"
    first.parent.mkdir(parents=True)
    first.write_bytes(b"not read")
    second = tmp_path / "b" / TAIL
    second.parent.mkdir(parents=True)
    shutil.copy(first, second)
    local_a = find_local_objects([tmp_path / "a"])[0]
    local_b = find_local_objects([second])[0]
    in_s3 = s3_object(None, "bucket", f"currents/{INTEGRATION}/{TAIL}")
    elsewhere = s3_object(None, "archive", f"2026/{TAIL}", etag='"abc"')
    assert {o.identity for o in (local_a, local_b, in_s3, elsewhere)} == {f"currents:{TAIL}"}
    assert local_a.uri == str(first.resolve()) and local_b.uri == str(second.resolve())
    assert in_s3.uri == f"s3://bucket/currents/{INTEGRATION}/{TAIL}"


def test_a_local_file_outside_the_layout_is_known_by_its_content(tmp_path: Path) -> None:
    content = bytes(range(256)) * 10_000  # several digest chunks
    (tmp_path / "one.avro").write_bytes(content)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "renamed.avro").write_bytes(content)
    (tmp_path / "other.avro").write_bytes(content + b"!")
    one, other, renamed = find_local_objects([tmp_path])
    expected = f"sha256:{hashlib.sha256(content).hexdigest()}"
    assert one.identity == renamed.identity == expected
    assert other.identity != expected


def test_the_digest_is_computed_lazily_and_once() -> None:
    opened: list[int] = []

    @contextmanager
    def opener() -> Iterator[IO[bytes]]:
        opened.append(1)
        yield io.BytesIO(b"payload")

    source = SourceObject(uri="/x/payload.avro", key="/x/payload.avro", size=7, opener=opener)
    assert opened == []
    assert source.identity == f"sha256:{hashlib.sha256(b'payload').hexdigest()}"
    assert source.identity == source.identity and opened == [1]


def test_an_s3_object_outside_the_layout_is_known_by_its_etag() -> None:
    etag = "9b2cf535f27731c974343645a3985328"
    tagged = s3_object(None, "bucket", "exports/file.avro", etag=f'"{etag}"')
    assert tagged.identity == f"s3etag:{etag}"
    copy = s3_object(None, "other", "x/y.avro", etag=f'"{etag}"')
    assert copy.identity == tagged.identity and copy.uri == "s3://other/x/y.avro"
