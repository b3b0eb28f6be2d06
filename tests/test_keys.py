from datetime import UTC, datetime

import pytest

from currents_export.currents.keys import NotACurrentsKey, object_key, parse_key

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
