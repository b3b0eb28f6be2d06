"""The Lambda handler against moto's server (S3, SQS, DynamoDB, Secrets Manager) and the
Amplitude emulator, with events in the shapes AWS sends them."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import boto3
import httpx
import pytest

from currents_export import aws_lambda
from currents_export.aws_lambda.observability import (
    METRICS,
    NAMESPACE,
    OBJECT_METRICS,
    SENDING_METRICS,
)
from currents_export.currents.keys import currents_identity
from currents_export.errors import LambdaConfigError
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile, generate_fixtures
from currents_export.ledger import open_ledger
from currents_export.sources.s3 import s3_client
from tests.support import REPO_ROOT
from tests.support.emulator import is_probe
from tests.support.runs import read_all

BUCKET = "acme-currents"
TABLE = "currents-ledger"
SECRET_KEY = "lambda-secret-api-key-7"


FUNCTION_NAME = "currents-export-Worker-1A2B3C4D"


class Context:
    """What the Lambda runtime passes: the remaining time, a request id and the function."""

    function_name = FUNCTION_NAME
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}"

    def __init__(self, remaining_ms: int = 600_000, request_id: str = "req-1") -> None:
        self.remaining_ms = remaining_ms
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def stack(aws: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """Bucket with notifications to a queue, the ledger table, the secret, the environment."""
    s3 = boto3.client("s3", endpoint_url=aws)
    sqs = boto3.client("sqs", endpoint_url=aws)
    s3.create_bucket(Bucket=BUCKET)
    queue = sqs.create_queue(QueueName="currents-inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    boto3.client("dynamodb", endpoint_url=aws).create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    secret = boto3.client("secretsmanager", endpoint_url=aws).create_secret(
        Name="amplitude", SecretString=json.dumps({"api_key": SECRET_KEY}))["ARN"]
    for name, value in {
        "AWS_ENDPOINT_URL": aws, "AMPLITUDE_API_KEY_SECRET": secret,
        "AMPLITUDE_URL": emulator.url, "CURRENTS_EXPORT_STATE": f"dynamodb://{TABLE}",
        "CURRENTS_EXPORT_DEAD_LETTER": f"s3://{BUCKET}/dead-letter",
        "CURRENTS_EXPORT_DEADLINE_MARGIN_S": "5", "CURRENTS_EXPORT_CHECKPOINT_EVERY": "500",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AMPLITUDE_API_KEY", raising=False)
    aws_lambda.reset_runtime()
    yield {"s3": s3, "sqs": sqs, "queue": queue}
    aws_lambda.reset_runtime()
    logging.getLogger().handlers.clear()


def uploads(server: Emulator) -> list[dict[str, Any]]:
    """The uploads a server saw, without the check each container makes before its first
    object (``amplitude.probe``)."""
    return [entry for entry in server.requests_log() if not is_probe(entry)]


def upload(stack: dict, files: list[FixtureFile]) -> None:
    for fixture in files:
        stack["s3"].put_object(Bucket=BUCKET, Key=fixture.key, Body=fixture.path.read_bytes())


def sqs_event(stack: dict) -> dict[str, Any]:
    """Receive what S3 sent to the queue and wrap it as the SQS event source does."""
    records = []
    while True:
        reply = stack["sqs"].receive_message(QueueUrl=stack["queue"], MaxNumberOfMessages=10)
        if not reply.get("Messages"):
            break
        for message in reply["Messages"]:
            records.append({
                "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"], "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {}, "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:currents-inbox",
                "awsRegion": "us-east-1",
            })
    return {"Records": records}


def invoke(event: dict[str, Any], context: Context | None = None) -> tuple[Any, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        result = aws_lambda.handler(event, context or Context())
    return result, out.getvalue()


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def emf_documents(stdout: str) -> list[dict[str, Any]]:
    """The CloudWatch EMF documents written on stdout."""
    return [line for line in json_lines(stdout) if "_aws" in line]


def value(document: dict[str, Any], name: str) -> float:
    """A metric's value in an EMF document (Powertools writes a list of values)."""
    found = document[name]
    return float(sum(found)) if isinstance(found, list) else float(found)


def emitted(stdout: str, name: str) -> list[float]:
    """Every value of the metric ``name`` in the EMF documents of ``stdout``."""
    return [value(document, name) for document in emf_documents(stdout) if name in document]


def valid_ids(files: list[FixtureFile]) -> list[str]:
    first: dict[str, dict] = {}
    for _, record in read_all(files):
        first.setdefault(record["id"], record)
    return sorted(i for i, r in first.items() if r.get("external_user_id") or r.get("device_id"))


def test_sqs_notifications_processed_once_even_when_delivered_twice(
    stack: dict, emulator: Emulator, tmp_path: Path
) -> None:
    files = generate_fixtures(tmp_path, events_per_type=60, seed=41,
                              event_types=["users.behaviors.CustomEvent",
                                           "users.messages.email.Open"])
    upload(stack, files)
    event = sqs_event(stack)
    bodies = [json.loads(r["body"]) for r in event["Records"]]
    assert any(b.get("Event") == "s3:TestEvent" for b in bodies)  # S3 sends one first
    duplicate = dict(next(r for r in event["Records"] if "Records" in json.loads(r["body"])))
    duplicate["messageId"] = "redelivered-1"
    event["Records"].append(duplicate)

    result, stdout = invoke(event)
    assert result == {"batchItemFailures": []}
    stored = sorted(e["insert_id"] for e in emulator.events())
    assert stored == valid_ids(files)
    lines = json_lines(stdout)
    emf = [line for line in emf_documents(stdout) if "EventType" in line]
    [sending] = [line for line in emf_documents(stdout) if "ProjectThrottles" in line]
    assert value(sending, "ProjectThrottles") == 0 and value(sending, "EventsPerSecond") > 0
    assert len(emf) == len(files)  # one per processed object; the repeat was already done
    assert sum(value(line, "EventsDelivered") for line in emf) == len(stored)
    assert all("DeliveryLagSeconds" in line for line in emf)
    logged = [line for line in lines if line.get("message", "").startswith("object")]
    assert {line["status"] for line in logged} == {"done", "already_done"}
    # Each object's own requests (a run per object): together, every request of the call.
    assert all(line["requests"] > 0 for line in logged if line["status"] == "done")
    assert sum(line["requests"] for line in logged) == len(uploads(emulator))
    assert SECRET_KEY not in stdout

    ledger = open_ledger(f"dynamodb://{TABLE}")
    assert all(ledger.is_done(f"currents:{currents_identity(f.key)}") for f in files)

    # Redelivering the whole batch sends nothing more.
    before = len(uploads(emulator))
    again, _ = invoke(event)
    assert again == {"batchItemFailures": []}
    assert len(uploads(emulator)) == before


def batch_event(version: str, tasks: list[tuple[str, str]]) -> dict[str, Any]:
    if version == "1.0":
        task_list = [{"taskId": tid, "s3Key": quote_plus(key), "s3VersionId": None,
                      "s3BucketArn": f"arn:aws:s3:::{BUCKET}"} for tid, key in tasks]
        job: dict[str, Any] = {"id": "job-1"}
    else:
        task_list = [{"taskId": tid, "s3Key": quote_plus(key), "s3VersionId": None,
                      "s3Bucket": BUCKET} for tid, key in tasks]
        job = {"id": "job-2", "userArguments": {"note": "backfill"}}
    return {"invocationSchemaVersion": version, "invocationId": f"inv-{version}", "job": job,
            "tasks": task_list}


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_s3_batch_operations_results(
    stack: dict, emulator: Emulator, tmp_path: Path, version: str
) -> None:
    files = generate_fixtures(tmp_path, events_per_type=40, seed=42, files_per_type=1,
                              event_types=["users.messages.sms.Send"])
    upload(stack, files)
    stack["s3"].put_object(Bucket=BUCKET, Key="currents/broken+0+1.avro", Body=b"not avro")
    result, _ = invoke(batch_event(version, [
        ("t-ok", files[0].key), ("t-missing", "currents/nope+0+2.avro"),
        ("t-broken", "currents/broken+0+1.avro"),
    ]))
    assert result["invocationSchemaVersion"] == version
    assert result["invocationId"] == f"inv-{version}"
    codes = {r["taskId"]: (r["resultCode"], r["resultString"]) for r in result["results"]}
    assert codes["t-ok"][0] == "Succeeded" and "delivered=" in codes["t-ok"][1]
    assert codes["t-missing"][0] == "PermanentFailure" and "NoSuchKey" in codes["t-missing"][1]
    assert codes["t-broken"][0] == "PermanentFailure"
    assert sorted(e["insert_id"] for e in emulator.events()) == valid_ids(files)


def test_a_short_deadline_saves_progress_and_the_redelivery_resumes(
    stack: dict, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CURRENTS_EXPORT_LANES", "1")  # one request at a time: slow enough
    aws_lambda.reset_runtime()
    files = generate_fixtures(tmp_path, events_per_type=12_000, seed=43, files_per_type=1,
                              event_types=["users.behaviors.CustomEvent"])
    upload(stack, files)
    event = sqs_event(stack)
    message_id = next(r["messageId"] for r in event["Records"]
                      if "Records" in json.loads(r["body"]))
    emulator.set_faults([{"action": "delay", "delay_s": 0.6}])  # slow Amplitude
    # 5 s margin: with 7 s left the handler has about 2 s of work before it must stop.
    result, _ = invoke(event, Context(remaining_ms=7_000))
    assert result == {"batchItemFailures": [{"itemIdentifier": message_id}]}
    ledger = open_ledger(f"dynamodb://{TABLE}")
    uri = f"currents:{currents_identity(files[0].key)}"
    assert not ledger.is_done(uri)

    emulator.clear_faults()
    result, stdout = invoke(event)
    assert result == {"batchItemFailures": []}
    assert ledger.is_done(uri)
    assert sorted(e["insert_id"] for e in emulator.events()) == valid_ids(files)
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    finished = next(line for line in lines if line.get("message") == "object done")
    assert finished["records"] == files[0].records
    assert finished["resumed"] > 0  # the second attempt started from the saved checkpoint


def test_eventbridge_and_test_events(stack: dict, emulator: Emulator, tmp_path: Path) -> None:
    files = generate_fixtures(tmp_path, events_per_type=20, seed=44, files_per_type=1,
                              event_types=["users.messages.pushnotification.Send"])
    upload(stack, files)
    event = {"version": "0", "id": "e-1", "detail-type": "Object Created", "source": "aws.s3",
             "account": "123456789012", "time": "2026-01-15T10:00:00Z", "region": "us-east-1",
             "resources": [f"arn:aws:s3:::{BUCKET}"],
             "detail": {"version": "0", "bucket": {"name": BUCKET},
                        "object": {"key": files[0].key, "size": 1}, "reason": "PutObject"}}
    result, _ = invoke(event)
    assert result == {"objects": 1}
    assert sorted(e["insert_id"] for e in emulator.events()) == valid_ids(files)
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET}
    result, _ = invoke({"Records": [{"messageId": "m-test", "body": json.dumps(test_event),
                                     "eventSource": "aws:sqs"}]})
    assert result == {"batchItemFailures": []}


@pytest.mark.filterwarnings("ignore:No application metrics to publish")  # nothing to publish
def test_configuration_errors_name_the_variable(
    stack: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CURRENTS_EXPORT_DEAD_LETTER")
    aws_lambda.reset_runtime()
    with pytest.raises(LambdaConfigError, match="CURRENTS_EXPORT_DEAD_LETTER"):
        aws_lambda.handler({"Records": []}, Context())
    monkeypatch.setenv("CURRENTS_EXPORT_DEAD_LETTER", f"s3://{BUCKET}/dl")
    monkeypatch.setenv("AMPLITUDE_API", "grpc")
    aws_lambda.reset_runtime()
    with pytest.raises(LambdaConfigError, match="AMPLITUDE_API"):
        aws_lambda.handler({"Records": []}, Context())


def test_an_amplitude_answering_503_forever_cannot_make_the_lambda_overrun(
    stack: dict, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retries and backoff are bounded by the deadline: the handler returns at the margin
    with the checkpoint saved, and the redelivery resumes from it."""
    monkeypatch.setenv("CURRENTS_EXPORT_LANES", "1")  # requests in record order
    aws_lambda.reset_runtime()
    files = generate_fixtures(tmp_path, events_per_type=7_000, seed=46, files_per_type=1,
                              event_types=["users.behaviors.CustomEvent"])
    upload(stack, files)
    event = sqs_event(stack)
    message_id = next(r["messageId"] for r in event["Records"]
                      if "Records" in json.loads(r["body"]))
    # Two requests get through (a checkpoint is saved), then Amplitude fails for good.
    emulator.set_faults([{"action": "status", "status": 503, "after": 2}])
    # 15 s left, 5 s margin: the default 900 s retry horizon would overrun by far.
    result, stdout = invoke(event, Context(remaining_ms=15_000))
    assert result == {"batchItemFailures": [{"itemIdentifier": message_id}]}
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    failed = next(line for line in lines if line.get("message") == "object failed")
    # Stopped by the deadline, or by the horizon, which the deadline bounds.
    assert "deadline" in failed["error"] or "unavailable since" in failed["error"]
    identity = f"currents:{currents_identity(files[0].key)}"
    state = open_ledger(f"dynamodb://{TABLE}").state(identity)
    assert state is not None and state.status == "failed" and not state.permanent
    assert state.next_index > 0  # progress was checkpointed before returning

    emulator.clear_faults()
    result, stdout = invoke(event)
    assert result == {"batchItemFailures": []}
    assert sorted(e["insert_id"] for e in emulator.events()) == valid_ids(files)


def test_an_object_that_can_never_be_read_is_handled_not_redelivered(
    stack: dict, emulator: Emulator, tmp_path: Path
) -> None:
    files = generate_fixtures(tmp_path, events_per_type=20, seed=47, files_per_type=1,
                              event_types=["users.messages.email.Send"])
    upload(stack, files)
    broken_key = files[0].key.replace(".avro", "-broken.avro")
    stack["s3"].put_object(Bucket=BUCKET, Key=broken_key, Body=b"<html>not avro</html>")
    event = sqs_event(stack)
    result, stdout = invoke(event)
    # Redelivering it ten times cannot help: it is reported handled...
    assert result == {"batchItemFailures": []}
    assert sorted(e["insert_id"] for e in emulator.events()) == valid_ids(files)
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    # ...with an error log line, a metric,
    error = next(line for line in lines if line.get("message") == "object failed")
    assert error["level"] == "ERROR" and error["permanent"] is True
    assert broken_key in error["object"] and "not an Avro container" in error["error"]
    assert emitted(stdout, "ObjectsFailedPermanently") == [0, 1]  # the good one, the broken
    # ...and that line is the only one at ERROR (the core's own is not repeated),
    assert [line for line in lines if line.get("level") == "ERROR"] == [error]
    # ...an object-level dead-letter entry,
    s3 = stack["s3"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="dead-letter/")
            .get("Contents", [])]
    entries = [json.loads(line) for key in keys
               for line in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().splitlines()]
    assert [(e["reason"], e["object"]) for e in entries] == [
        ("object_failed", f"s3://{BUCKET}/{broken_key}")]
    # ...and the ledger, which later notifications of the same object respect.
    state = open_ledger(f"dynamodb://{TABLE}").state(
        f"currents:{currents_identity(broken_key)}")
    assert state is not None and state.permanent


# ---- what operators read: Powertools' log keys and EMF metrics ---------------------------------

# A fresh execution environment: a new process, two invocations of the same batch.
FRESH_RUNTIME = f"""
import io, json, sys
from contextlib import redirect_stdout

from currents_export import aws_lambda

class Context:
    function_name = {FUNCTION_NAME!r}
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + function_name

    def __init__(self, request_id):
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self):
        return 600_000

event = json.loads(open(sys.argv[1]).read())
calls = []
for request_id in ("req-cold", "req-warm"):
    out = io.StringIO()
    with redirect_stdout(out):
        result = aws_lambda.handler(event, Context(request_id))
    calls.append({{"result": result, "stdout": out.getvalue()}})
print(json.dumps(calls))
"""


def template_variables() -> dict[str, Any]:
    """The function's environment as infra/template.yaml sets it."""
    from cfnlint.decode import cfn_yaml

    template = cfn_yaml.load(str(REPO_ROOT / "infra" / "template.yaml"))
    variables: dict[str, Any] = template["Resources"]["Worker"]["Properties"][
        "Environment"]["Variables"]
    return variables


def test_log_lines_carry_request_cold_start_function_message_and_object_and_emf_metrics(
    stack: dict, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variables = template_variables()
    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"):
        monkeypatch.setenv(name, variables[name])
    files = generate_fixtures(tmp_path, events_per_type=30, seed=48, files_per_type=1,
                              event_types=["users.messages.email.Send"])
    upload(stack, files)
    broken_key = files[0].key.replace(".avro", "-broken.avro")
    stack["s3"].put_object(Bucket=BUCKET, Key=broken_key, Body=b"<html>not avro</html>")
    event = sqs_event(stack)
    message_of = {unquote_plus(record["s3"]["object"]["key"]): message["messageId"]
                  for message in event["Records"]
                  for record in json.loads(message["body"]).get("Records", [])}
    assert set(message_of) == {files[0].key, broken_key}
    (tmp_path / "event.json").write_text(json.dumps(event))
    run = subprocess.run([sys.executable, "-c", FRESH_RUNTIME, str(tmp_path / "event.json")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    cold, warm = json.loads(run.stdout)
    assert cold["result"] == warm["result"] == {"batchItemFailures": []}

    per_object = {}
    for call, request_id, cold_start in ((cold, "req-cold", True), (warm, "req-warm", False)):
        assert SECRET_KEY not in call["stdout"]
        logs = [line for line in json_lines(call["stdout"]) if "_aws" not in line]
        for line in logs:  # every line: the request, the cold start, the function
            assert line["function_request_id"] == request_id, line
            assert line["cold_start"] is cold_start, line
            assert line["function_name"] == FUNCTION_NAME, line
            assert line["service"] == variables["POWERTOOLS_SERVICE_NAME"], line
        objects = {line["s3_key"]: line for line in logs
                   if line["message"].startswith("object ")}
        assert set(objects) == set(message_of)  # one line per object, with its key...
        for key, line in objects.items():  # ...and the SQS message that named it
            assert (line["s3_bucket"], line["sqs_message_id"]) == (BUCKET, message_of[key])
            assert line["object"] == f"s3://{BUCKET}/{key}"
        [ignored] = [line for line in logs if line["message"] == "ignored"]
        assert ignored["reason"] == "s3:TestEvent" and "s3_key" not in ignored
        assert ignored["sqs_message_id"] == ignored["item"] not in message_of.values()
        per_object[request_id] = (objects, logs)

    objects, logs = per_object["req-cold"]
    done, failed = objects[files[0].key], objects[broken_key]
    assert done["status"] == "done" and done["delivered"] > 0
    assert done["requests"] == len(uploads(emulator)) > 0  # the object's own requests
    assert failed["permanent"] is True and failed["requests"] == 0
    assert [line for line in logs if line["level"] == "ERROR"] == [failed]  # one line
    objects, _ = per_object["req-warm"]
    assert (objects[files[0].key]["status"], objects[broken_key]["status"]) == (
        "already_done", "skipped_failed")

    for call, cold_start in ((cold, True), (warm, False)):
        documents = emf_documents(call["stdout"])
        for document in documents:  # each metric: in the registry, with its unit and sets
            [directive] = document["_aws"]["CloudWatchMetrics"]
            assert directive["Namespace"] == variables["POWERTOOLS_METRICS_NAMESPACE"]
            assert directive["Namespace"] == NAMESPACE
            sets = sorted(tuple(names) for names in directive["Dimensions"])
            for metric in directive["Metrics"]:
                spec = METRICS[metric["Name"]]
                assert (metric["Unit"], sets) == (spec.unit.value, sorted(spec.dimensions))
        names = {metric["Name"] for document in documents
                 for metric in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
        assert ("ColdStart" in names) is cold_start
        assert set(SENDING_METRICS) <= names
    cold_names = {name for document in emf_documents(cold["stdout"]) for name in document}
    assert set(OBJECT_METRICS) - {"DeletionsRequested", "EventsSkippedDeletedUser"} \
        <= cold_names
    [start] = [document for document in emf_documents(cold["stdout"]) if "ColdStart" in document]
    assert start["function_name"] == FUNCTION_NAME and value(start, "ColdStart") == 1
    assert emitted(cold["stdout"], "EventsDelivered") == [done["delivered"], 0]


@pytest.mark.parametrize(("margin", "connect", "read"), [
    ("60", 3.0, 6.0),  # the default margin
    ("300", 5.0, 30.0),  # the caps
    ("5", 1.0, 1.0),  # the floors
])
def test_the_lambdas_s3_and_dynamodb_calls_are_bounded_by_the_deadline_margin(
    stack: dict, monkeypatch: pytest.MonkeyPatch, margin: str, connect: float, read: float
) -> None:
    """A stalled GetObject stream or a slow DynamoDB call cannot outlive the hard timeout:
    each client's timeouts and attempts come from the deadline margin."""
    monkeypatch.setenv("CURRENTS_EXPORT_DEADLINE_MARGIN_S", margin)
    runtime = aws_lambda.Runtime(os.environ)
    dynamodb = runtime.destinations.ledger._client  # type: ignore[attr-defined]
    dead_letter_s3 = runtime.destinations.dead_letter._client  # type: ignore[attr-defined]
    assert dead_letter_s3 is runtime.s3
    for client in (runtime.s3, dynamodb):
        config = client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (connect, read)
        assert config.retries["total_max_attempts"] == 3  # the first attempt included
    limits = aws_lambda.aws_call_limits(float(margin))
    if float(margin) >= 60:
        assert limits.worst_case_s <= float(margin) / 2
    else:
        assert limits.worst_case_s < float(margin) * 2  # floors: 1 s timeouts at least


def test_the_cli_keeps_its_longer_aws_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = s3_client().meta.config
    assert (s3.connect_timeout, s3.read_timeout) == (10, 120)
    assert s3.retries["total_max_attempts"] == 11  # botocore's max_attempts=10: retries
    dynamodb = open_ledger(f"dynamodb://{TABLE}")._client.meta.config  # type: ignore[attr-defined]
    assert (dynamodb.connect_timeout, dynamodb.read_timeout) == (60, 60)  # botocore's
    assert dynamodb.retries["total_max_attempts"] == 11


# ---- the hashing salt from Secrets Manager or SSM; nothing secret in DEBUG logs ---------------

SALT = "lambda-salt-0123456789abcdef"
SESSION_TOKEN = "session-token-MARKER-31f0"
SECRET_ACCESS_KEY = "secret-access-key-MARKER-77aa"


def hash_config(tmp_path: Path, salt_env: str | None = None) -> Path:
    config = tmp_path / "currents-export.toml"
    config.write_text('[mapping.pii]\nexternal_user_id = "hash"\n'
                      + (f'salt_env = "{salt_env}"\n' if salt_env else ""))
    return config


def salted(value: str, salt: str = SALT) -> str:
    return hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("where", ["secret", "secret-json", "parameter"])
def test_the_hashing_salt_comes_from_secrets_manager_or_ssm(
    stack: dict, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    aws: str, where: str,
) -> None:
    # With SSM, the file names its own salt variable: the salt is supplied under that name.
    config = hash_config(tmp_path, "ACME_PII_SALT" if where == "parameter" else None)
    if where == "parameter":
        boto3.client("ssm", endpoint_url=aws).put_parameter(  # written from a file: a newline
            Name="/currents-export/pii-salt", Value=SALT + "\n", Type="SecureString")
        monkeypatch.setenv("CURRENTS_EXPORT_PII_SALT_PARAMETER", "/currents-export/pii-salt")
    else:
        text = SALT if where == "secret" else json.dumps({"salt": SALT})
        secret = boto3.client("secretsmanager", endpoint_url=aws).create_secret(
            Name="pii-salt", SecretString=text)
        monkeypatch.setenv("CURRENTS_EXPORT_PII_SALT_SECRET",
                           secret["ARN"] if where == "secret" else secret["Name"])
    monkeypatch.delenv("CURRENTS_EXPORT_PII_SALT", raising=False)
    monkeypatch.delenv("ACME_PII_SALT", raising=False)
    monkeypatch.setenv("CURRENTS_EXPORT_CONFIG", str(config))
    aws_lambda.reset_runtime()
    files = generate_fixtures(tmp_path / "fixtures", events_per_type=40, seed=45,
                              files_per_type=1, event_types=["users.behaviors.CustomEvent"])
    upload(stack, files)
    result, stdout = invoke(sqs_event(stack))
    assert result == {"batchItemFailures": []}
    records = {record["id"]: record for _, record in read_all(files)}
    events = emulator.events()
    hashed = [e for e in events if records[e["insert_id"]].get("external_user_id")]
    assert hashed and len({e["user_id"] for e in hashed}) > 1  # users stay distinguishable
    for event in hashed:
        assert event["user_id"] == salted(records[event["insert_id"]]["external_user_id"])
    assert SALT not in stdout
    assert "ACME_PII_SALT" not in os.environ  # supplied to the mapping, not to the process


def test_salt_settings_errors_name_the_setting_never_the_value(
    stack: dict, tmp_path: Path, aws: str
) -> None:
    secrets = boto3.client("secretsmanager", endpoint_url=aws)
    good = secrets.create_secret(Name="pii-salt", SecretString=SALT)["ARN"]
    short = secrets.create_secret(Name="short-salt", SecretString="tiny-SALT-9")["ARN"]
    env = {"CURRENTS_EXPORT_STATE": f"dynamodb://{TABLE}",
           "CURRENTS_EXPORT_DEAD_LETTER": f"s3://{BUCKET}/dl",
           "CURRENTS_EXPORT_CONFIG": str(hash_config(tmp_path))}
    cases = [
        ({"CURRENTS_EXPORT_PII_SALT_SECRET": good,
          "CURRENTS_EXPORT_PII_SALT_PARAMETER": "/p"}, "not both"),
        ({"CURRENTS_EXPORT_PII_SALT_SECRET": "no-such-secret"},
         "CURRENTS_EXPORT_PII_SALT_SECRET: cannot read the hashing salt from secret "
         "'no-such-secret': ResourceNotFoundException"),
        ({"CURRENTS_EXPORT_PII_SALT_SECRET": good, "CURRENTS_EXPORT_PII_SALT": SALT},
         "set twice"),
        ({"CURRENTS_EXPORT_PII_SALT_SECRET": short}, "at least 16 characters"),
        ({"CURRENTS_EXPORT_PII_SALT_PARAMETER": "/missing"}, "ParameterNotFound"),
    ]
    for extra, problem in cases:
        with pytest.raises(LambdaConfigError) as info:
            aws_lambda.lambda_settings({**env, **extra})
        assert problem in str(info.value), str(info.value)
        assert SALT not in str(info.value) and "tiny-SALT-9" not in str(info.value)
    settings = aws_lambda.lambda_settings(
        {**env, "CURRENTS_EXPORT_PII_SALT_SECRET": good})
    assert settings.mapping.pii_salt == SALT.encode() and SALT not in repr(settings)


def test_debug_logging_prints_no_token_key_or_salt_and_kms_dead_letters(
    stack: dict, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    aws: str, capsys: pytest.CaptureFixture[str],
) -> None:
    secret = boto3.client("secretsmanager", endpoint_url=aws).create_secret(
        Name="pii-salt", SecretString=json.dumps({"salt": SALT}))["ARN"]
    key = boto3.client("kms", endpoint_url=aws).create_key()["KeyMetadata"]["Arn"]
    for name, value in {
        "CURRENTS_EXPORT_CONFIG": str(hash_config(tmp_path)),
        "CURRENTS_EXPORT_PII_SALT_SECRET": secret, "CURRENTS_EXPORT_LOG_LEVEL": "DEBUG",
        "CURRENTS_EXPORT_DEAD_LETTER_KMS_KEY": key, "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CURRENTS_EXPORT_PII_SALT", raising=False)
    aws_lambda.reset_runtime()
    files = generate_fixtures(tmp_path / "fixtures", events_per_type=40, seed=46,
                              files_per_type=1, event_types=["users.behaviors.CustomEvent"])
    upload(stack, files)
    devices = [r["device_id"] for _, r in read_all(files) if r.get("device_id")]
    httpx.patch(f"{emulator.url}/_emulator/config", json={"silenced_device_ids": devices[:3]})
    root = logging.getLogger()
    level = root.level
    try:
        result, stdout = invoke(sqs_event(stack))
        assert root.level == logging.DEBUG
        for name in ("botocore", "botocore.endpoint", "urllib3", "httpcore", "httpx"):
            assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
    finally:
        root.setLevel(level)
    assert result == {"batchItemFailures": []}
    output = stdout + "".join(capsys.readouterr())
    for marker in (SECRET_KEY, SALT, SESSION_TOKEN, SECRET_ACCESS_KEY):
        assert marker not in output, marker
    listed = stack["s3"].list_objects_v2(Bucket=BUCKET, Prefix="dead-letter/")["Contents"]
    assert listed
    for item in listed:
        head = stack["s3"].head_object(Bucket=BUCKET, Key=item["Key"])
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key)


def test_the_log_level_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert aws_lambda.log_level({}) == logging.INFO
    assert aws_lambda.log_level({"CURRENTS_EXPORT_LOG_LEVEL": "debug"}) == logging.DEBUG
    assert aws_lambda.log_level({"AWS_LAMBDA_LOG_LEVEL": "WARN"}) == logging.WARNING
    with pytest.raises(LambdaConfigError, match="CURRENTS_EXPORT_LOG_LEVEL"):
        aws_lambda.log_level({"CURRENTS_EXPORT_LOG_LEVEL": "LOUD"})


# ---- deletions: the SQS path records them, the schedule submits them ------------------------

def _avro(event_type: str, records: list[dict[str, Any]]) -> bytes:
    import fastavro

    from currents_export.currents.schemas import writer_schema

    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(writer_schema(event_type)), records)
    return out.getvalue()


def test_deletions_recorded_from_sqs_and_submitted_on_schedule(
    stack: dict, emulator: Emulator, tmp_path: Path, aws: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from currents_export.ledger.dynamodb import DynamoDbLedger
    from tests.support.records import minimal_record

    table = "currents-ledger-deletions"
    DynamoDbLedger.create_table(boto3.client("dynamodb", endpoint_url=aws), table)
    secret_key = "privacy-SECRET-marker-99"
    key_secret = boto3.client("secretsmanager", endpoint_url=aws).create_secret(
        Name="amplitude-secret-key", SecretString=json.dumps({"secret_key": secret_key}))["ARN"]
    config = tmp_path / "currents-export.toml"
    config.write_text("[deletions]\ngrace_period_s = 0\n")
    monkeypatch.setenv("CURRENTS_EXPORT_STATE", f"dynamodb://{table}")
    monkeypatch.setenv("CURRENTS_EXPORT_CONFIG", str(config))
    monkeypatch.setenv("CURRENTS_EXPORT_SECRET_KEY_SECRET", key_secret)
    monkeypatch.setenv("CURRENTS_EXPORT_PRIVACY_URL", emulator.url)
    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"secret_keys": {SECRET_KEY: secret_key}}).raise_for_status()
    aws_lambda.reset_runtime()
    alice, dave, frank = "a" * 24, "d" * 24, "f" * 24
    custom = "users.behaviors.CustomEvent"
    prefix = "currents/dataexport.prod-01.S3.integration.0123456789abcdef01234567"

    def put(event_type: str, hour: str, records: list[dict[str, Any]]) -> None:
        key = f"{prefix}/event_type={event_type}/date=2026-11-30-{hour}/1/a/f{hour}.avro"
        stack["s3"].put_object(Bucket=BUCKET, Key=key, Body=_avro(event_type, records))

    put(custom, "10", [
        minimal_record(custom, id="e1", user_id=alice, external_user_id="alice_0001"),
        minimal_record(custom, id="e2", user_id=dave, external_user_id=None,
                       device_id="device-dave-04"),
        minimal_record(custom, id="e3", user_id=frank, external_user_id="frank_0006")])
    assert invoke(sqs_event(stack))[0] == {"batchItemFailures": []}
    put("users.UserDeleteRequest", "11", [
        minimal_record("users.UserDeleteRequest", id=f"d{n}", user_id=who)
        for n, who in enumerate([alice, dave, "e" * 24, alice])])
    result, stdout = invoke(sqs_event(stack))
    assert result == {"batchItemFailures": []}
    assert emitted(stdout, "DeletionsRequested") == [4]  # the object's EMF document

    submitted, stdout = invoke(dict(aws_lambda.SUBMIT_DELETIONS))
    figures = submitted["deletions"]
    assert (figures["submitted"], figures["user_ids"], figures["requests"]) == (1, 1, 1)
    assert figures["unresolved"] == {"device_only": 1, "never_seen": 1}
    jobs = emulator.deletion_jobs()
    assert [entry["user_id"] for job in jobs for entry in job["amplitude_ids"]] == ["alice_0001"]
    assert emitted(stdout, "DeletionsSubmitted") == [1]
    assert emitted(stdout, "DeletionsUnresolvedDeviceOnly") == [1]
    assert secret_key not in stdout

    again, _ = invoke(dict(aws_lambda.SUBMIT_DELETIONS))  # a repeated schedule sends nothing
    assert again["deletions"]["submitted"] == 0 and len(emulator.deletion_requests()) == 1
    before = len(emulator.events())
    put(custom, "12", [
        minimal_record(custom, id="e4", user_id=alice, external_user_id="alice_0001"),
        minimal_record(custom, id="e5", user_id=frank, external_user_id="frank_0006")])
    later, stdout = invoke(sqs_event(stack))
    assert later == {"batchItemFailures": []}
    assert emitted(stdout, "EventsSkippedDeletedUser") == [1]
    assert [e["user_id"] for e in emulator.events()[before:]] == ["frank_0006"]
    # The ledger's object listing (status) shows objects only, not the deletions' items.
    ledger = open_ledger(f"dynamodb://{table}")
    try:
        assert all(state.object_id.startswith("currents:") for state in ledger.objects())
    finally:
        ledger.close()


# ---- the ledger's destination ----------------------------------------------------------------

def configuration_errors(stdout: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == "configuration error"]


def test_the_table_is_bound_by_the_first_invocation_and_another_destination_is_refused(
    stack: dict, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    aws: str,
) -> None:
    from currents_export.ledger.destination import destination_host, key_fingerprint

    files = generate_fixtures(tmp_path / "first", events_per_type=20, seed=71,
                              files_per_type=1, event_types=["users.messages.email.Send"])
    upload(stack, files)
    assert invoke(sqs_event(stack))[0] == {"batchItemFailures": []}
    ledger = open_ledger(f"dynamodb://{TABLE}")
    bound = ledger.destination()
    assert bound is not None and bound.recorded
    assert (bound.host, bound.key_fingerprint) == (destination_host(emulator.url),
                                                  key_fingerprint(SECRET_KEY))
    items = boto3.client("dynamodb", endpoint_url=aws).scan(TableName=TABLE)["Items"]
    assert SECRET_KEY not in json.dumps(items)  # the key is in no item, the fingerprint is

    # The stack is pointed at another Amplitude: a new container, the same table.
    with Emulator() as other:
        monkeypatch.setenv("AMPLITUDE_URL", other.url)
        aws_lambda.reset_runtime()
        more = generate_fixtures(tmp_path / "second", events_per_type=20, seed=72,
                                 files_per_type=1, event_types=["users.behaviors.CustomEvent"])
        upload(stack, more)
        event = sqs_event(stack)
        messages = {r["messageId"] for r in event["Records"] if "Records" in r["body"]}
        result, stdout = invoke(event)
        # Not read, not sent; the queue keeps them (retryable) until the set-up is fixed.
        assert {f["itemIdentifier"] for f in result["batchItemFailures"]} == messages
        assert uploads(other) == []
        [error] = configuration_errors(stdout)
        assert error["level"] == "ERROR"
        assert str(bound) in error["error"] and destination_host(other.url) in error["error"]
        assert "CURRENTS_EXPORT_REBIND_DESTINATION=true" in error["error"]
        assert SECRET_KEY not in stdout
        assert all(ledger.state(f"currents:{currents_identity(f.key)}") is None for f in more)
        again, stdout = invoke(event)  # logged once per container
        assert again == result and configuration_errors(stdout) == []

        # A deliberate rebind (the same project at another address) delivers them.
        monkeypatch.setenv("CURRENTS_EXPORT_REBIND_DESTINATION", "true")
        aws_lambda.reset_runtime()
        rebound, _ = invoke(event)
        assert rebound == {"batchItemFailures": []}
        assert sorted(e["insert_id"] for e in other.events()) == valid_ids(more)
        now = ledger.destination()
        assert now is not None and now.host == destination_host(other.url)
        assert now.previous == str(bound)


def test_a_ledger_table_keyed_otherwise_is_a_configuration_error(
    stack: dict, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    aws: str,
) -> None:
    boto3.client("dynamodb", endpoint_url=aws).create_table(
        TableName="keyed-by-id", BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    monkeypatch.setenv("CURRENTS_EXPORT_STATE", "dynamodb://keyed-by-id")
    aws_lambda.reset_runtime()
    files = generate_fixtures(tmp_path, events_per_type=10, seed=73, files_per_type=1,
                              event_types=["users.messages.email.Send"])
    upload(stack, files)
    result, stdout = invoke(sqs_event(stack))
    assert len(result["batchItemFailures"]) == 1
    [error] = configuration_errors(stdout)
    assert "dynamodb://keyed-by-id" in error["error"]
    assert "partition key pk (string), no sort key" in error["error"]
    assert uploads(emulator) == []


def test_a_wrong_url_or_an_outage_before_delivering_returns_the_items_and_says_so_once(
    stack: dict, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The container checks Amplitude before its first object (``amplitude.probe``): a
    refused connection is said once per container and every item goes back to the queue
    at once, nothing read; once Amplitude answers, the same messages deliver."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("CURRENTS_EXPORT_AMPLITUDE_URL", dead)
    aws_lambda.reset_runtime()
    files = generate_fixtures(tmp_path, events_per_type=20, seed=79, files_per_type=2,
                              event_types=["users.messages.email.Send"])
    upload(stack, files)
    event = sqs_event(stack)
    messages = {r["messageId"] for r in event["Records"] if "Records" in r["body"]}
    result, stdout = invoke(event)
    assert {f["itemIdentifier"] for f in result["batchItemFailures"]} == messages
    [error] = configuration_errors(stdout)
    assert error["level"] == "ERROR" and "cannot reach Amplitude" in error["error"]
    assert "connection refused" in error["error"]
    assert not [line for line in json_lines(stdout) if line.get("message", "").startswith(
        "object ")]  # no object was read: no per-object line, no per-object error
    again, stdout = invoke(event)
    assert again == result and configuration_errors(stdout) == []  # once per container
    monkeypatch.setenv("CURRENTS_EXPORT_AMPLITUDE_URL", emulator.url)
    aws_lambda.reset_runtime()
    done, _ = invoke(event)
    assert done == {"batchItemFailures": []}
    assert sorted(e["insert_id"] for e in emulator.events()) == valid_ids(files)
