"""Parsing of every event shape the Lambda receives, and the response shapes.

Events are written by hand the way AWS sends them: keys in S3 notifications and Batch
Operations tasks are form-URL-encoded (``=`` → ``%3D``, ``+`` → ``%2B``, space → ``+``).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from currents_export.currents.keys import parse_key
from currents_export.sources.events import (
    Invocation,
    ObjectRef,
    WorkItem,
    batch_operations_response,
    decode_eventbridge_key,
    decode_notification_key,
    parse_invocation,
    sqs_response,
)

BUCKET = "acme-currents"
INTEGRATION = "dataexport.prod-01.S3.integration.5a1b2c3d4e5f60718293a4b5"
RAW_KEY = (
    f"currents/{INTEGRATION}/event_type=users.behaviors.CustomEvent/date=2025-10-08-14/"
    f"123/a/{INTEGRATION}+0+0000012345.avro"
)
ENCODED_KEY = (
    f"currents/{INTEGRATION}/event_type%3Dusers.behaviors.CustomEvent/date%3D2025-10-08-14/"
    f"123/a/{INTEGRATION}%2B0%2B0000012345.avro"
)
RAW_KEY_2 = (
    f"currents/{INTEGRATION}/event_type=users.messages.email.Send/date=2025-10-08-14/"
    f"123/b/{INTEGRATION}+3+0000000007.avro"
)
ENCODED_KEY_2 = (
    f"currents/{INTEGRATION}/event_type%3Dusers.messages.email.Send/date%3D2025-10-08-14/"
    f"123/b/{INTEGRATION}%2B3%2B0000000007.avro"
)
ETAG = "d41d8cd98f00b204e9800998ecf8427e"
TOPIC_ARN = "arn:aws:sns:us-east-1:111122223333:acme-currents-created"
QUEUE_ARN = "arn:aws:sqs:us-east-1:111122223333:currents-export"


def s3_record(
    key: str = ENCODED_KEY,
    *,
    event_name: str = "ObjectCreated:Put",
    size: Any = 1843211,
    version_id: str | None = None,
) -> dict[str, Any]:
    """One S3 notification record as S3 writes it (key already URL-encoded by the caller)."""
    obj: dict[str, Any] = {
        "key": key, "size": size, "eTag": ETAG, "sequencer": "0066F1A2B3C4D5E6F7"
    }
    if version_id is not None:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2025-10-08T14:05:12.345Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.10"},
        "responseElements": {
            "x-amz-request-id": "C3D13FE58DE4C810",
            "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "currents-export",
            "bucket": {
                "name": BUCKET,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{BUCKET}",
            },
            "object": obj,
        },
    }


def s3_notification(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records or (s3_record(),))}


S3_TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2025-10-08T14:00:00.000Z",
    "Bucket": BUCKET,
    "RequestId": "5582815E1AEA5ADF",
    "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
}


def sns_envelope(message: dict[str, Any]) -> dict[str, Any]:
    """The SNS envelope, as an SQS body carries it without RawMessageDelivery."""
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC_ARN,
        "Subject": "Amazon S3 Notification",
        "Message": json.dumps(message),
        "Timestamp": "2025-10-08T14:05:12.500Z",
        "SignatureVersion": "1",
        "Signature": (
            "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQvi2egU3N858f"
            "iTDN6bkkOxYDVrY0Ad8L10Hs3zH81mtnPk5uvvolIC1CXGu43obcgFxeL3khZl8IKvO61GWB6jI9b5+gLPoBc1Q="
        ),
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem",
        "UnsubscribeURL": (
            "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn="
            f"{TOPIC_ARN}:c9135db0-26c4-47ec-8998-413945fb5a96"
        ),
    }


def eventbridge_event(
    key: str = RAW_KEY, *, detail_type: str = "Object Created", size: Any = 1843211
) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2025-10-08T14:05:12Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{BUCKET}"],
        "detail": {
            "version": "0",
            "bucket": {"name": BUCKET},
            "object": {
                "key": key,
                "size": size,
                "etag": ETAG,
                "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
                "sequencer": "617f08299329d189",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "203.0.113.10",
            "reason": "PutObject",
        },
    }


def sqs_record(body: str, message_id: str = "059f36b4-87a3-44ab-83d2-661975830a7d") -> dict:
    return {
        "messageId": message_id,
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1728396312500",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1728396312510",
        },
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-east-1",
    }


def sqs_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def only_object(invocation: Invocation) -> ObjectRef:
    (item,) = invocation.items
    (obj,) = item.objects
    return obj


# --------------------------------------------------------------------------- key decoding


def test_notification_keys_are_decoded_once_with_unquote_plus() -> None:
    assert decode_notification_key(ENCODED_KEY) == RAW_KEY
    assert decode_notification_key("this+im+%2B+age.txt") == "this im + age.txt"
    assert decode_notification_key("red+flower.jpg") == "red flower.jpg"
    # once only: an encoded percent sign stays a percent sign
    assert decode_notification_key("100%2525.avro") == "100%25.avro"


def test_eventbridge_keys_are_decoded_only_when_they_contain_percent() -> None:
    assert decode_eventbridge_key(ENCODED_KEY) == RAW_KEY
    assert decode_eventbridge_key(RAW_KEY) == RAW_KEY  # raw `+` is not a space here


def test_key_with_a_real_space_in_a_notification() -> None:
    raw = f"currents/odd folder/event_type=users.behaviors.CustomEvent/{INTEGRATION}+0+1.avro"
    encoded = quote_plus(raw, safe="/")
    assert "+" in encoded and "%2B" in encoded  # space → "+", "+" → "%2B"
    obj = only_object(parse_invocation(s3_notification(s3_record(encoded))))
    assert obj.key == raw


def test_key_with_plus_is_not_turned_into_spaces() -> None:
    obj = only_object(parse_invocation(s3_notification(s3_record(ENCODED_KEY))))
    assert obj.key == RAW_KEY
    assert " " not in obj.key
    parsed = parse_key(obj.key)
    assert (parsed.partition, parsed.offset) == (0, 12345)


@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=200
    )
)
def test_any_key_survives_encoding_and_parsing(stem: str) -> None:
    key = f"{stem}.avro"
    encoded = quote_plus(key)
    direct = parse_invocation(s3_notification(s3_record(encoded)))
    body = json.dumps(s3_notification(s3_record(encoded)))
    via_sqs = parse_invocation(sqs_event(sqs_record(body)))
    assert only_object(direct).key == key
    assert via_sqs.items[0].objects[0].key == key


# --------------------------------------------------------------------------- direct S3


def test_direct_s3_notification() -> None:
    invocation = parse_invocation(s3_notification(s3_record(version_id="3HL4kqtJlcpXroDTDmJ")))
    assert invocation.kind == "s3"
    (item,) = invocation.items
    assert item.item_id is None
    assert item.ignored == ()
    assert item.objects == (
        ObjectRef(
            bucket=BUCKET, key=RAW_KEY, size=1843211, etag=ETAG, version_id="3HL4kqtJlcpXroDTDmJ"
        ),
    )
    assert item.objects[0].uri == f"s3://{BUCKET}/{RAW_KEY}"


def test_direct_s3_notification_with_several_records_is_one_work_item() -> None:
    invocation = parse_invocation(
        s3_notification(
            s3_record(ENCODED_KEY),
            s3_record(ENCODED_KEY_2, event_name="ObjectCreated:CompleteMultipartUpload"),
            s3_record(ENCODED_KEY, event_name="ObjectRemoved:Delete"),
            s3_record("currents/notes%2Btodo.txt"),
        )
    )
    assert invocation.kind == "s3"
    (item,) = invocation.items
    assert [o.key for o in item.objects] == [RAW_KEY, RAW_KEY_2]
    assert len(item.ignored) == 2
    assert "ObjectRemoved:Delete" in item.ignored[0] and RAW_KEY in item.ignored[0]
    assert "not .avro" in item.ignored[1] and "currents/notes+todo.txt" in item.ignored[1]


def test_object_removed_is_ignored_with_a_reason() -> None:
    invocation = parse_invocation(s3_notification(s3_record(event_name="ObjectRemoved:Delete")))
    (item,) = invocation.items
    assert item.objects == ()
    assert item.ignored == (f"'ObjectRemoved:Delete' is not ObjectCreated: s3://{BUCKET}/{RAW_KEY}",)


def test_missing_and_string_fields_are_read_defensively() -> None:
    record = s3_record(size="1843211")
    del record["s3"]["object"]["eTag"]
    assert only_object(parse_invocation(s3_notification(record))) == ObjectRef(
        bucket=BUCKET, key=RAW_KEY, size=1843211
    )
    record = s3_record(size=None)
    del record["s3"]["object"]["size"]
    obj = only_object(parse_invocation(s3_notification(record)))
    assert (obj.size, obj.etag, obj.version_id) == (None, ETAG, None)
    assert only_object(parse_invocation(s3_notification(s3_record(size="big")))).size is None


def test_record_without_bucket_or_key_is_ignored() -> None:
    record = s3_record()
    del record["s3"]["object"]["key"]
    (item,) = parse_invocation(s3_notification(record)).items
    assert item.objects == ()
    assert item.ignored == ("S3 record without bucket name or object key",)


# --------------------------------------------------------------------------- SQS


def test_sqs_with_s3_notification_bodies_one_item_per_message() -> None:
    event = sqs_event(
        sqs_record(json.dumps(s3_notification(s3_record(ENCODED_KEY))), "msg-1"),
        sqs_record(json.dumps(s3_notification(s3_record(ENCODED_KEY_2))), "msg-2"),
    )
    invocation = parse_invocation(event)
    assert invocation.kind == "sqs"
    assert [item.item_id for item in invocation.items] == ["msg-1", "msg-2"]
    assert invocation.items[0].objects == (ObjectRef(BUCKET, RAW_KEY, 1843211, ETAG),)
    assert invocation.items[1].objects[0].key == RAW_KEY_2
    assert all(item.ignored == () for item in invocation.items)


def test_sqs_test_event_is_ignored_but_keeps_its_message_id() -> None:
    invocation = parse_invocation(sqs_event(sqs_record(json.dumps(S3_TEST_EVENT), "msg-test")))
    assert invocation.kind == "sqs"
    assert invocation.items == (WorkItem("msg-test", (), ("s3:TestEvent",)),)


def test_sqs_sns_envelope_without_raw_message_delivery() -> None:
    body = json.dumps(sns_envelope(s3_notification(s3_record(ENCODED_KEY))))
    invocation = parse_invocation(sqs_event(sqs_record(body, "msg-sns")))
    (item,) = invocation.items
    assert invocation.kind == "sqs"
    assert item.item_id == "msg-sns"
    assert [o.key for o in item.objects] == [RAW_KEY]
    assert item.ignored == ()


def test_sqs_sns_with_raw_message_delivery_is_the_s3_json_itself() -> None:
    body = json.dumps(s3_notification(s3_record(ENCODED_KEY)))
    (item,) = parse_invocation(sqs_event(sqs_record(body, "msg-raw"))).items
    assert item.item_id == "msg-raw"
    assert [o.key for o in item.objects] == [RAW_KEY]


def test_sqs_sns_envelope_holding_the_test_event() -> None:
    body = json.dumps(sns_envelope(S3_TEST_EVENT))
    (item,) = parse_invocation(sqs_event(sqs_record(body, "m"))).items
    assert item == WorkItem("m", (), ("s3:TestEvent",))


def test_sqs_eventbridge_body() -> None:
    body = json.dumps(eventbridge_event(RAW_KEY))
    (item,) = parse_invocation(sqs_event(sqs_record(body, "msg-eb"))).items
    assert item.item_id == "msg-eb"
    assert item.objects == (
        ObjectRef(BUCKET, RAW_KEY, 1843211, ETAG, "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"),
    )


def test_sqs_dispatcher_message_key_is_raw_and_keeps_plus() -> None:
    body = json.dumps({"currents_export": 1, "bucket": BUCKET, "key": RAW_KEY})
    (item,) = parse_invocation(sqs_event(sqs_record(body, "msg-bf"))).items
    assert item.item_id == "msg-bf"
    assert item.objects == (ObjectRef(BUCKET, RAW_KEY),)
    assert "+0+0000012345.avro" in item.objects[0].key


def test_sqs_dispatcher_message_matches_what_backfill_writes() -> None:
    from currents_export.sources.backfill import dispatch_message

    key_with_percent_and_space = f"currents/a b/{INTEGRATION}+0+1%2B.avro"
    body = dispatch_message(BUCKET, key_with_percent_and_space)
    (item,) = parse_invocation(sqs_event(sqs_record(body))).items
    assert item.objects == (ObjectRef(BUCKET, key_with_percent_and_space),)


def test_sqs_dispatcher_message_with_unknown_version_is_ignored() -> None:
    body = json.dumps({"currents_export": 2, "bucket": BUCKET, "key": RAW_KEY})
    (item,) = parse_invocation(sqs_event(sqs_record(body, "m"))).items
    assert item.objects == ()
    assert item.ignored == ("currents_export message version 2 is not supported",)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("this is not json {", "message body is not JSON"),
        ("", "message body is empty"),
        ('["a", "list"]', "message body is JSON list, not an object"),
        (
            '{"hello": "secret-value-123"}',
            "unrecognised message: not an S3 notification, SNS envelope, EventBridge event "
            "or currents_export message",
        ),
    ],
)
def test_sqs_unreadable_body_keeps_message_id_and_names_the_problem(
    body: str, reason: str
) -> None:
    invocation = parse_invocation(sqs_event(sqs_record(body, "msg-bad")))
    assert invocation.kind == "sqs"
    assert invocation.items == (WorkItem("msg-bad", (), (reason,)),)
    assert "secret-value-123" not in " ".join(invocation.items[0].ignored)


def test_sqs_body_that_is_not_a_string() -> None:
    record = sqs_record("x", "msg-odd")
    record["body"] = {"Records": []}
    (item,) = parse_invocation(sqs_event(record)).items
    assert item == WorkItem("msg-odd", (), ("message body is not a string",))


def test_sqs_mixed_batch_keeps_every_message_in_order() -> None:
    event = sqs_event(
        sqs_record(json.dumps(S3_TEST_EVENT), "a"),
        sqs_record("garbage", "b"),
        sqs_record(json.dumps(s3_notification(s3_record())), "c"),
    )
    items = parse_invocation(event).items
    assert [i.item_id for i in items] == ["a", "b", "c"]
    assert [len(i.objects) for i in items] == [0, 0, 1]


# --------------------------------------------------------------------------- SNS → Lambda


def test_sns_to_lambda() -> None:
    event = {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{TOPIC_ARN}:c9135db0-26c4-47ec-8998-413945fb5a96",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
                    "TopicArn": TOPIC_ARN,
                    "Subject": "Amazon S3 Notification",
                    "Message": json.dumps(
                        s3_notification(s3_record(ENCODED_KEY), s3_record(ENCODED_KEY_2))
                    ),
                    "Timestamp": "2025-10-08T14:05:12.500Z",
                    "SignatureVersion": "1",
                    "Signature": "EXAMPLE",
                    "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/cert.pem",
                    "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
                    "MessageAttributes": {},
                },
            }
        ]
    }
    invocation = parse_invocation(event)
    assert invocation.kind == "sns"
    (item,) = invocation.items
    assert item.item_id is None
    assert [o.key for o in item.objects] == [RAW_KEY, RAW_KEY_2]


def test_sns_to_lambda_with_test_event_and_bad_message() -> None:
    event = {
        "Records": [
            {"EventSource": "aws:sns", "Sns": {"Message": json.dumps(S3_TEST_EVENT)}},
            {"EventSource": "aws:sns", "Sns": {"Message": "not json"}},
        ]
    }
    invocation = parse_invocation(event)
    assert invocation.kind == "sns"
    assert invocation.items == (WorkItem(None, (), ("s3:TestEvent", "SNS Message is not JSON")),)


# --------------------------------------------------------------------------- EventBridge


def test_eventbridge_with_raw_key() -> None:
    invocation = parse_invocation(eventbridge_event(RAW_KEY))
    assert invocation.kind == "eventbridge"
    (item,) = invocation.items
    assert item.item_id is None
    assert item.objects == (
        ObjectRef(BUCKET, RAW_KEY, 1843211, ETAG, "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"),
    )


def test_eventbridge_with_encoded_key() -> None:
    obj = only_object(parse_invocation(eventbridge_event(ENCODED_KEY, size="1843211")))
    assert obj.key == RAW_KEY
    assert obj.size == 1843211


def test_eventbridge_other_detail_type_is_ignored() -> None:
    invocation = parse_invocation(eventbridge_event(detail_type="Object Deleted"))
    assert invocation.kind == "eventbridge"
    (item,) = invocation.items
    assert item.objects == ()
    assert item.ignored == (
        "EventBridge 'aws.s3' 'Object Deleted' is not an S3 Object Created event",
    )


# --------------------------------------------------------------------------- Batch Operations


def test_batch_operations_schema_1_0() -> None:
    event = {
        "invocationSchemaVersion": "1.0",
        "invocationId": "YXNkbGZqYWRmaiBhc2RmdW9hZHNmZGpmaGFzbGtkaGZza2RmaAo",
        "job": {"id": "f3cc4f60-61f6-4a2b-8a21-d07600c373ce"},
        "tasks": [
            {
                "taskId": "dGFza2lkZ29lc2hlcmUK",
                "s3Key": ENCODED_KEY,
                "s3VersionId": None,
                "s3BucketArn": f"arn:aws:s3:::{BUCKET}",
            },
            {
                "taskId": "dGFza2lkZ29lc2hlcmUL",
                "s3Key": ENCODED_KEY_2,
                "s3VersionId": "1",
                "s3BucketArn": "arn:aws-cn:s3:::china-bucket",
            },
        ],
    }
    invocation = parse_invocation(event)
    assert invocation.kind == "batch_operations"
    assert invocation.batch_schema_version == "1.0"
    assert invocation.batch_invocation_id == "YXNkbGZqYWRmaiBhc2RmdW9hZHNmZGpmaGFzbGtkaGZza2RmaAo"
    assert invocation.user_arguments is None
    assert invocation.items == (
        WorkItem("dGFza2lkZ29lc2hlcmUK", (ObjectRef(BUCKET, RAW_KEY),), ()),
        WorkItem(
            "dGFza2lkZ29lc2hlcmUL",
            (ObjectRef("china-bucket", RAW_KEY_2, version_id="1"),),
            (),
        ),
    )


def test_batch_operations_schema_2_0() -> None:
    event = {
        "invocationSchemaVersion": "2.0",
        "invocationId": "Jr3s8KZqYWRmaiBhc2RmdW9hZHNmZGpmaGFzbGtkaGZza2RmaAo",
        "job": {
            "id": "ry77cd60-61f6-4a2b-8a21-d07600c874gf",
            "userArguments": {"mode": "backfill", "dryRun": "false"},
        },
        "tasks": [
            {
                "taskId": "y5R3a2lkZ29lc2hlcmUK",
                "s3Bucket": BUCKET,
                "s3Key": ENCODED_KEY,
                "s3VersionId": None,
            }
        ],
    }
    invocation = parse_invocation(event)
    assert invocation.kind == "batch_operations"
    assert invocation.batch_schema_version == "2.0"
    assert invocation.user_arguments == {"mode": "backfill", "dryRun": "false"}
    assert invocation.items == (
        WorkItem("y5R3a2lkZ29lc2hlcmUK", (ObjectRef(BUCKET, RAW_KEY),), ()),
    )


def test_batch_operations_task_with_unreadable_bucket_or_non_avro_key() -> None:
    event = {
        "invocationSchemaVersion": "1.0",
        "invocationId": "inv",
        "job": {"id": "job"},
        "tasks": [
            {"taskId": "t1", "s3Key": ENCODED_KEY, "s3BucketArn": "not-an-arn"},
            {"taskId": "t2", "s3Key": "manifest.csv", "s3BucketArn": f"arn:aws:s3:::{BUCKET}"},
        ],
    }
    items = parse_invocation(event).items
    assert items[0] == WorkItem(
        "t1", (), ("Batch Operations task without a readable bucket or key",)
    )
    assert items[1] == WorkItem("t2", (), (f"not .avro: s3://{BUCKET}/manifest.csv",))


# --------------------------------------------------------------------------- unknown


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"Records": []},
        {"Records": [{"eventSource": "aws:kinesis", "kinesis": {"data": "e30="}}]},
        {"key1": "value1"},
        {"source": "aws.events"},
    ],
)
def test_anything_else_is_unknown(event: dict[str, Any]) -> None:
    assert parse_invocation(event) == Invocation(kind="unknown", items=())


# --------------------------------------------------------------------------- responses


def test_sqs_response_empty_is_full_success() -> None:
    assert sqs_response([]) == {"batchItemFailures": []}


def test_sqs_response_lists_failures_in_order_without_duplicates() -> None:
    assert sqs_response(["b", "a", "b"]) == {
        "batchItemFailures": [{"itemIdentifier": "b"}, {"itemIdentifier": "a"}]
    }


def test_sqs_response_rejects_empty_identifier() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        sqs_response([""])


@pytest.mark.parametrize(("version", "invocation_id"), [("1.0", "inv-one"), ("2.0", "inv-two")])
def test_batch_response_echoes_version_and_id_and_keeps_task_order(
    version: str, invocation_id: str
) -> None:
    tasks = [
        {"taskId": task_id, "s3Key": ENCODED_KEY, "s3VersionId": None}
        | ({"s3Bucket": BUCKET} if version == "2.0" else {"s3BucketArn": f"arn:aws:s3:::{BUCKET}"})
        for task_id in ("t-3", "t-1", "t-2")
    ]
    invocation = parse_invocation(
        {"invocationSchemaVersion": version, "invocationId": invocation_id,
         "job": {"id": "j"}, "tasks": tasks}
    )
    response = batch_operations_response(
        invocation,
        {
            "t-1": ("TemporaryFailure", "deadline reached"),
            "t-2": ("PermanentFailure", "not Avro"),
            "t-3": ("Succeeded", "delivered=14873 skipped=2 dead_lettered=0"),
        },
    )
    assert response == {
        "invocationSchemaVersion": version,
        "treatMissingKeysAs": "PermanentFailure",
        "invocationId": invocation_id,
        "results": [
            {"taskId": "t-3", "resultCode": "Succeeded",
             "resultString": "delivered=14873 skipped=2 dead_lettered=0"},
            {"taskId": "t-1", "resultCode": "TemporaryFailure", "resultString": "deadline reached"},
            {"taskId": "t-2", "resultCode": "PermanentFailure", "resultString": "not Avro"},
        ],
    }


def test_batch_response_reports_missing_results_and_rejects_bad_input() -> None:
    invocation = parse_invocation(
        {"invocationSchemaVersion": "1.0", "invocationId": "i", "job": {"id": "j"},
         "tasks": [{"taskId": "t", "s3Key": ENCODED_KEY, "s3BucketArn": f"arn:aws:s3:::{BUCKET}"}]}
    )
    assert batch_operations_response(invocation, {})["results"] == [
        {"taskId": "t", "resultCode": "PermanentFailure",
         "resultString": "no result recorded for task"}
    ]
    with pytest.raises(ValueError, match="resultCode"):
        batch_operations_response(invocation, {"t": ("Done", "")})
    with pytest.raises(ValueError, match="not in this invocation"):
        batch_operations_response(invocation, {"other": ("Succeeded", "")})
    with pytest.raises(ValueError, match="not a Batch Operations invocation"):
        batch_operations_response(parse_invocation(s3_notification()), {})
