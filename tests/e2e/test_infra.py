"""The deployable stack: the template agrees with the code, lints clean, and the Lambda
package builds with the right contents."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import orjson
import pytest
from cfnlint.decode import cfn_yaml
from packaging.requirements import Requirement
from samtranslator.metrics.method_decorator import MetricsMethodWrapperSingleton
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform as sam_transform

from currents_export import aws_lambda
from currents_export.aws_lambda.observability import (
    METRICS,
    NAMESPACE,
    SERVICE,
    add_sending_metrics,
    emit_object_metrics,
    metrics,
)
from currents_export.counts import ObjectReport, SendingReport
from tests.support import REPO_ROOT

TEMPLATE = REPO_ROOT / "infra" / "template.yaml"
WHEELHOUSE = REPO_ROOT / "infra" / "build" / "wheels-arm64-3.12"
REQUIRED_ENV = {"AMPLITUDE_API_KEY_SECRET", "CURRENTS_EXPORT_STATE",
                "CURRENTS_EXPORT_DEAD_LETTER"}


def template_problems(template: dict[str, Any]) -> list[str]:
    """Where the template and the code disagree (empty when they agree)."""
    problems = []
    worker = worker_of(template)
    module_name, _, function = worker["Handler"].rpartition(".")
    try:
        if not callable(getattr(importlib.import_module(module_name), function, None)):
            problems.append(f"handler {worker['Handler']} is not a function")
    except ImportError:
        problems.append(f"handler module {module_name} does not exist")
    variables = set(worker["Environment"]["Variables"])
    problems += [f"unknown environment variable {name}"
                 for name in sorted(variables - aws_lambda.ENVIRONMENT_VARIABLES)]
    problems += [f"missing environment variable {name}" for name in sorted(REQUIRED_ENV
                                                                            - variables)]
    if worker.get("Role") != {"Fn::GetAtt": ["WorkerRole", "Arn"]} or "Policies" in worker:
        problems.append("the function does not use the stack's WorkerRole (SAM would make one)")
    granted = set()
    for statement in statements(template):
        actions = statement["Action"]
        granted |= {actions} if isinstance(actions, str) else set(actions)
    problems += [f"IAM action {action} used by the code is not granted"
                 for action in sorted(aws_lambda.IAM_ACTIONS - granted)]
    problems += [f"IAM action {action} is granted but the code does not use it"
                 for action in sorted(granted - aws_lambda.IAM_ACTIONS)]
    sqs = [event["Properties"] for event in worker["Events"].values() if event["Type"] == "SQS"]
    if not sqs or "ReportBatchItemFailures" not in sqs[0].get("FunctionResponseTypes", []):
        problems.append("the SQS event source does not report batch item failures")
    if worker["Runtime"] != "python3.12" or worker["Architectures"] != ["arm64"]:
        problems.append("the runtime is not python3.12 on arm64 (the package's target)")
    return problems


def worker_of(template: dict[str, Any]) -> dict[str, Any]:
    worker: dict[str, Any] = template["Resources"]["Worker"]["Properties"]
    return worker


def role_policy(template: dict[str, Any], name: str) -> dict[str, Any]:
    """The policy document of one of the WorkerRole's inline policies."""
    documents: list[dict[str, Any]] = [
        policy["PolicyDocument"] for policy in
        template["Resources"]["WorkerRole"]["Properties"]["Policies"]
        if policy["PolicyName"] == name]
    [document] = documents
    return document


CODE_POLICY = "currents-export"  # what the code calls (aws_lambda.IAM_ACTIONS)
SERVICE_POLICY = "lambda-service"  # what Lambda does with the role: logs, polling the inbox


def statements(template: dict[str, Any], policy: str = CODE_POLICY) -> list[dict[str, Any]]:
    """The statements of one of the role's inline policies (by default the code's); a
    conditional one (``Fn::If``) by its granting branch."""
    found = []
    for statement in role_policy(template, policy)["Statement"]:
        if "Fn::If" in statement:
            _, granting, otherwise = statement["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}, statement
            statement = granting
        found.append(statement)
    return found


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return cfn_yaml.load(str(TEMPLATE))


def test_the_template_agrees_with_the_code(template: dict[str, Any]) -> None:
    assert template_problems(template) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda t: worker_of(t).update(Handler="currents_export.lambda_handler.handler"),
         "handler module currents_export.lambda_handler does not exist"),
        (lambda t: worker_of(t).update(Handler="currents_export.aws_lambda.main"),
         "is not a function"),
        (lambda t: worker_of(t)["Environment"]["Variables"].update(AMPLITUDE_KEY="x"),
         "unknown environment variable AMPLITUDE_KEY"),
        (lambda t: worker_of(t)["Environment"]["Variables"].pop("CURRENTS_EXPORT_STATE"),
         "missing environment variable CURRENTS_EXPORT_STATE"),
        (lambda t: role_policy(t, CODE_POLICY)["Statement"].pop(2),
         "IAM action dynamodb:GetItem used by the code is not granted"),
        (lambda t: worker_of(t)["Events"]["Files"]["Properties"].pop("FunctionResponseTypes"),
         "does not report batch item failures"),
        (lambda t: worker_of(t).pop("Role"), "does not use the stack's WorkerRole"),
    ],
)
def test_the_consistency_check_catches_a_drift(
    template: dict[str, Any], change: Any, problem: str
) -> None:
    drifted = copy.deepcopy(template)
    change(drifted)
    assert any(problem in found for found in template_problems(drifted)), problem


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: resource["Properties"] for name, resource in template["Resources"].items()
            if resource["Type"] == "AWS::CloudWatch::Alarm"}


@pytest.mark.parametrize(
    ("name", "namespace", "metric", "dimensions"),
    [
        ("ObjectsFailedAlarm", NAMESPACE, "ObjectsFailed", None),
        ("ObjectsFailedPermanentlyAlarm", NAMESPACE, "ObjectsFailedPermanently", None),
        ("InboxAgeAlarm", "AWS/SQS", "ApproximateAgeOfOldestMessage",
         [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["Inbox", "QueueName"]}}]),
        ("DeadLetterQueueAlarm", "AWS/SQS", "ApproximateNumberOfMessagesVisible",
         [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["InboxDLQ", "QueueName"]}}]),
        ("ProjectThrottlesAlarm", NAMESPACE, "ProjectThrottles", None),
    ],
)
def test_the_operator_alarms(
    template: dict[str, Any], name: str, namespace: str, metric: str, dimensions: Any
) -> None:
    alarm = alarms(template)[name]
    assert (alarm["Namespace"], alarm["MetricName"]) == (namespace, metric)
    assert alarm.get("Dimensions") == dimensions  # None: the EMF set without dimensions
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"


def test_the_inbox_age_threshold_is_a_parameter(template: dict[str, Any]) -> None:
    alarm = alarms(template)["InboxAgeAlarm"]
    assert alarm["Threshold"] == {"Ref": "InboxAgeAlarmSeconds"}
    assert alarm["Statistic"] == "Maximum"
    assert template["Parameters"]["InboxAgeAlarmSeconds"]["Default"] == 3600
    assert alarms(template)["DeadLetterQueueAlarm"]["Threshold"] == 0


def test_every_alarm_notifies_the_stack_topic_and_the_optional_one(
    template: dict[str, Any]
) -> None:
    expected = [{"Ref": "AlarmTopic"},
                {"Fn::If": ["HasAlarmTopic", {"Ref": "AlarmTopicArn"}, {"Ref": "AWS::NoValue"}]}]
    found = alarms(template)
    assert len(found) >= 6
    for name, alarm in found.items():
        assert alarm["AlarmActions"] == expected, name


def test_the_alarm_topic_its_email_subscription_and_outputs(template: dict[str, Any]) -> None:
    resources, parameters = template["Resources"], template["Parameters"]
    assert resources["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    subscription = resources["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"] == {"TopicArn": {"Ref": "AlarmTopic"}, "Protocol": "email",
                                          "Endpoint": {"Ref": "AlarmEmail"}}
    assert parameters["AlarmEmail"]["Default"] == parameters["AlarmTopicArn"]["Default"] == ""
    assert template["Conditions"]["HasAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [
        {"Ref": "AlarmEmail"}, ""]}]}
    assert template["Outputs"]["AlarmTopic"]["Value"] == {"Ref": "AlarmTopic"}
    assert template["Outputs"]["AlarmTopicName"]["Value"] == {
        "Fn::GetAtt": ["AlarmTopic", "TopicName"]}


def emitted(emit: Any) -> list[dict[str, Any]]:
    """The EMF documents ``emit()`` writes on stdout."""
    out = io.StringIO()
    with redirect_stdout(out):
        emit()
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def value(document: dict[str, Any], name: str) -> float:
    """A metric's value in an EMF document (Powertools writes a list of values)."""
    found = document[name]
    return float(sum(found)) if isinstance(found, list) else float(found)


def registry_problems(document: dict[str, Any]) -> list[str]:
    """Where an EMF document disagrees with the registry (``observability.METRICS``)."""
    problems = []
    [directive] = document["_aws"]["CloudWatchMetrics"]
    if directive["Namespace"] != NAMESPACE:
        problems.append(f"namespace {directive['Namespace']}")
    sets = {tuple(sorted(names)) for names in directive["Dimensions"]}
    for metric in directive["Metrics"]:
        spec = METRICS.get(metric["Name"])
        if spec is None:
            problems.append(f"{metric['Name']} is not in the registry")
            continue
        if metric["Unit"] != spec.unit.value:
            problems.append(f"{spec.name} in {metric['Unit']}, not {spec.unit.value}")
        if sets != {tuple(sorted(names)) for names in spec.dimensions}:
            problems.append(f"{spec.name} with dimensions {sorted(sets)}")
    return problems


def emf(report: ObjectReport) -> dict[str, Any]:
    [document] = emitted(lambda: emit_object_metrics(report, now_ms=int(time.time() * 1000)))
    return document


@pytest.mark.parametrize(
    ("report", "failed", "permanently"),
    [
        (ObjectReport(object="s3://b/k.avro", event_type="users.messages.email.Send"), 0, 0),
        (ObjectReport(object="s3://b/k.avro", status="failed", error="Amplitude unreachable"),
         1, 0),
        (ObjectReport(object="s3://b/k.avro", status="failed", error="not Avro",
                      retryable=False), 1, 1),
        (ObjectReport(object="s3://b/k.avro", retryable=False), 0, 0),  # done: not a failure
    ],
)
def test_the_object_metrics_count_failed_objects(
    report: ObjectReport, failed: int, permanently: int
) -> None:
    document = emf(report)
    assert (value(document, "ObjectsFailed"),
            value(document, "ObjectsFailedPermanently")) == (failed, permanently)
    assert value(document, "Records") == 0  # the other metrics are still there
    assert registry_problems(document) == []


def test_the_alarms_watch_metrics_the_code_emits_without_dimensions(
    template: dict[str, Any]
) -> None:
    document = emf(ObjectReport(object="s3://b/k.avro", status="failed", retryable=False))
    [directive] = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    assert [] in directive["Dimensions"]  # one alarm covers every event type
    assert ["EventType"] in directive["Dimensions"]
    assert document["EventType"] == "unknown"
    assert "service" not in json.dumps(directive)  # Powertools' service dimension: none
    ours = [alarm for alarm in alarms(template).values() if alarm["Namespace"] == NAMESPACE]
    assert {alarm["MetricName"] for alarm in ours} == {
        "ObjectsFailed", "ObjectsFailedPermanently", "EventsDeadLettered", "ProjectThrottles"}

    def sending() -> None:
        add_sending_metrics(
            SendingReport(events_per_second=75.0, requests_per_second=None,
                          found_events_per_second=60.0, refused=2, throttled=1,
                          waited_on_budget_s=3.5, waited_on_amplitude_s=60.0),
            delivered=1_200, elapsed_s=80.0)
        metrics.flush_metrics()  # as log_metrics does when the handler returns

    [per_invocation] = emitted(sending)
    assert per_invocation["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]
    assert registry_problems(per_invocation) == []
    assert (value(per_invocation, "ProjectThrottles"), value(per_invocation, "IdThrottles")) \
        == (2, 1)
    assert (value(per_invocation, "BudgetWaitSeconds"),
            value(per_invocation, "AmplitudeWaitSeconds")) == (3.5, 60.0)
    assert (value(per_invocation, "EventsPerSecond"),
            value(per_invocation, "BudgetEventsPerSecond")) == (15.0, 60.0)
    for alarm in ours:
        assert () in METRICS[alarm["MetricName"]].dimensions, alarm["MetricName"]
        assert "Dimensions" not in alarm


def test_powertools_gets_the_namespace_the_alarms_watch(template: dict[str, Any]) -> None:
    variables = worker_of(template)["Environment"]["Variables"]
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
    assert variables["POWERTOOLS_SERVICE_NAME"] == SERVICE
    namespaces = {alarm["Namespace"] for alarm in alarms(template).values()}
    assert namespaces == {NAMESPACE, "AWS/SQS", "AWS/Lambda"}


# ---- the dashboard ----------------------------------------------------------------------------

SEARCH = re.compile(r"SEARCH\('\{([^}]*)\}\s+MetricName=\"([^\"]+)\"'")
# Dimensions of AWS's metrics the dashboard may name, and the stack's resource each names:
# (resource type, attribute; None: its Ref).
STACK_DIMENSIONS = {
    ("AWS/SQS", "QueueName"): ("AWS::SQS::Queue", "QueueName"),
    ("AWS/Lambda", "FunctionName"): ("AWS::Serverless::Function", None),
    (NAMESPACE, "function_name"): ("AWS::Serverless::Function", None),  # ColdStart
}


def dashboard_source(template: dict[str, Any]) -> str:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    assert isinstance(body, str), "the body is one Fn::Sub string"
    return body


def dashboard_body(template: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """The dashboard as CloudFormation would deploy it: each ``${Parameter}`` at its
    default, each ``${Resource}``, ``${Resource.Attribute}`` and ``${AWS::...}`` as the
    marker ``<ref:...>``."""
    defaults = {name: str(spec.get("Default", "")) for name, spec in
                template["Parameters"].items()}

    def substitute(match: re.Match[str]) -> str:
        return defaults.get(match[1], f"<ref:{match[1]}>")

    body: dict[str, Any] = json.loads(
        re.sub(r"\$\{([^}]+)\}", substitute, source or dashboard_source(template)))
    return body


def dashboard_metrics(body: dict[str, Any]) -> list[tuple[str, str, dict[str, str | None]]]:
    """(namespace, metric, {dimension: value}) of every metric a widget names: the explicit
    ones (``"."`` repeats the entry above) and those a ``SEARCH`` selects (values None)."""
    found: list[tuple[str, str, dict[str, str | None]]] = []
    for widget in body["widgets"]:
        previous: list[str] = []
        for entry in widget.get("properties", {}).get("metrics", []):
            parts = [part for part in entry if not isinstance(part, dict)]
            if not parts:  # an expression: the metrics its SEARCH selects
                for option in entry:
                    for match in SEARCH.finditer(option.get("expression", "")):
                        namespace, *names = (name.strip() for name in match[1].split(","))
                        found.append((namespace, match[2], dict.fromkeys(names)))
                continue
            parts = [previous[i] if part == "." else part for i, part in enumerate(parts)]
            previous = parts
            namespace, metric, *dimensions = parts
            found.append((namespace, metric, dict(zip(dimensions[0::2], dimensions[1::2],
                                                      strict=True))))
    return found


def dashboard_problems(template: dict[str, Any], source: str | None = None) -> list[str]:
    """Where the dashboard names what the code does not emit (a metric, or a dimension set),
    or what is not the stack's (a queue, a function, a region)."""
    body = dashboard_body(template, source)
    resources = template["Resources"]
    problems = []
    for widget in body["widgets"]:
        if widget["type"] == "metric" and widget["properties"]["region"] != "<ref:AWS::Region>":
            problems.append(f"{widget['properties']['title']}: not the stack's region")
    for namespace, metric, dimensions in dashboard_metrics(body):
        if namespace == NAMESPACE:
            spec = METRICS.get(metric)
            if spec is None:
                problems.append(f"{metric}: not a metric the code emits")
                continue
            if tuple(sorted(dimensions)) not in {tuple(sorted(d)) for d in spec.dimensions}:
                problems.append(f"{metric}: not emitted with dimensions {sorted(dimensions)}")
        elif namespace not in ("AWS/SQS", "AWS/Lambda"):
            problems.append(f"{namespace} {metric}: a namespace the stack does not publish")
            continue
        for name, shown in dimensions.items():
            if shown is None and namespace == NAMESPACE and name == "EventType":
                continue  # every event type (a SEARCH)
            wanted = STACK_DIMENSIONS.get((namespace, name))
            target = re.fullmatch(r"<ref:([A-Za-z0-9]+)(?:\.([A-Za-z]+))?>", shown or "")
            if wanted is None or target is None or target[1] not in resources or (
                    resources[target[1]]["Type"], target[2]) != wanted:
                problems.append(f"{namespace} {metric}: {name}={shown} is not the stack's")
    return problems


def test_the_dashboard_names_only_what_the_code_emits_and_the_stack_has(
    template: dict[str, Any]
) -> None:
    assert template["Resources"]["Dashboard"]["Type"] == "AWS::CloudWatch::Dashboard"
    assert dashboard_problems(template) == []


def test_the_dashboard_shows_what_operators_need(template: dict[str, Any]) -> None:
    named = dashboard_metrics(dashboard_body(template))
    ours = {metric for namespace, metric, _ in named if namespace == NAMESPACE}
    by_type = {metric for namespace, metric, dimensions in named
               if namespace == NAMESPACE and dimensions == {"EventType": None}}
    assert by_type == {"EventsDelivered", "EventsSkipped", "EventsDeadLettered"}
    assert {"ObjectsFailed", "ObjectsFailedPermanently", "EventsPerSecond",
            "BudgetEventsPerSecond", "ProjectThrottles", "IdThrottles", "BudgetWaitSeconds",
            "AmplitudeWaitSeconds", "DeliveryLagSeconds", "ColdStart", "DeletionsRequested",
            "DeletionsSubmitted", "DeletionsFailed"} <= ours
    queues = {(metric, dimensions["QueueName"]) for namespace, metric, dimensions in named
              if namespace == "AWS/SQS"}
    for metric in ("ApproximateAgeOfOldestMessage", "ApproximateNumberOfMessagesVisible"):
        for queue in ("Inbox", "InboxDLQ"):
            assert (metric, f"<ref:{queue}.QueueName>") in queues
    function = {metric for namespace, metric, _ in named if namespace == "AWS/Lambda"}
    assert {"Invocations", "Errors", "Throttles", "Duration"} <= function
    [status] = [w for w in dashboard_body(template)["widgets"] if w["type"] == "alarm"]
    assert set(status["properties"]["alarms"]) == {f"<ref:{name}.Arn>"
                                                   for name in alarms(template)}
    url = template["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]
    assert url.startswith("https://${AWS::Region}.console.aws.amazon.com/cloudwatch/")
    assert url.endswith("#dashboards:name=${Dashboard}")


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ('"ProjectThrottles"', '"ProjectThrottled"', "ProjectThrottled: not a metric the code"),
        ('{CurrentsExport,EventType} MetricName=\\"EventsSkipped\\"',
         '{CurrentsExport,EventType,Reason} MetricName=\\"EventsSkipped\\"',
         "EventsSkipped: not emitted with dimensions ['EventType', 'Reason']"),
        ('"IdThrottles", {', '"IdThrottles", "EventType", "users.behaviors.Purchase", {',
         "IdThrottles: not emitted with dimensions ['EventType']"),
        ('"${Inbox.QueueName}"', '"currents-inbox"',
         "AWS/SQS ApproximateAgeOfOldestMessage: QueueName=currents-inbox is not the stack's"),
        ('"FunctionName", "${Worker}"', '"FunctionName", "${AlarmTopic.TopicName}"',
         "AWS/Lambda Invocations: FunctionName=<ref:AlarmTopic.TopicName> is not the stack's"),
        ('"region": "${AWS::Region}"', '"region": "us-east-1"', "not the stack's region"),
    ],
)
def test_the_dashboard_check_catches_a_drift(
    template: dict[str, Any], old: str, new: str, problem: str
) -> None:
    source = dashboard_source(template)
    assert old in source, old
    found = dashboard_problems(template, source.replace(old, new, 1))
    assert any(problem in line for line in found), found


def test_cfn_lint_is_clean() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    lint = subprocess.run([str(cfn_lint), str(TEMPLATE)],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_lambda_package_builds_small_for_arm64(tmp_path: Path) -> None:
    assert WHEELHOUSE.is_dir(), (
        "run `python infra/build_lambda.py --download-only` first (scripts/test does)"
    )
    out = tmp_path / "lambda.zip"
    subprocess.run([sys.executable, str(REPO_ROOT / "infra" / "build_lambda.py"), "--offline",
                    "--out", str(out)], check=True, capture_output=True)
    names = zipfile.ZipFile(out).namelist()
    assert "currents_export/aws_lambda/__init__.py" in names
    assert "currents_export/currents/catalogue.py" in names
    assert not [name for name in names if name.startswith("currents_export/kit/")]
    tops = {name.split("/")[0] for name in names}
    assert {"fastavro", "orjson", "httpx", "click", "aws_lambda_powertools"} <= tops
    assert not {"boto3", "botocore"} & tops  # the runtime has them
    assert not any("__pycache__" in name for name in names)
    native = [n for n in names if n.endswith(".so")]
    assert native and all("x86_64" not in n for n in native)
    assert any("aarch64" in n for n in native)
    assert out.stat().st_size < 15_000_000
    # Without the kit, the handler still imports: the zip's own currents_export (the
    # dependencies' wheels are for arm64 / 3.12, so this interpreter's are used).
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(out) as archive:
        archive.extractall(unpacked, [n for n in names if n.startswith("currents_export/")])
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys, currents_export, currents_export.aws_lambda as h;"
         "print(currents_export.__file__);"
         "print(callable(h.handler),"
         "      any(m.startswith('currents_export.kit') for m in sys.modules))"],
        env={**os.environ, "PYTHONPATH": str(unpacked)}, cwd=tmp_path,
        capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    where, imported = probe.stdout.splitlines()
    assert Path(where).is_relative_to(unpacked)
    assert imported == "True False"


# ---- secrets and data at rest -----------------------------------------------------------------

def statement(template: dict[str, Any], sid: str, policy: str = CODE_POLICY) -> dict[str, Any]:
    [found] = [s for s in statements(template, policy) if s.get("Sid") == sid]
    return found


def conditional_statement(template: dict[str, Any], sid: str) -> tuple[str, dict[str, Any]]:
    """The condition and the statement of a grant that exists only when a parameter is set."""
    for item in role_policy(template, CODE_POLICY)["Statement"]:
        if "Fn::If" in item and item["Fn::If"][1].get("Sid") == sid:
            return item["Fn::If"][0], item["Fn::If"][1]
    raise AssertionError(f"no conditional statement {sid}")


def test_every_bucket_the_stack_creates_is_encrypted_private_and_tls_only(
    template: dict[str, Any]
) -> None:
    resources = template["Resources"]
    buckets = {name: r for name, r in resources.items() if r["Type"] == "AWS::S3::Bucket"}
    assert buckets, "the stack creates the dead-letter bucket"
    policies = [r["Properties"] for r in resources.values()
                if r["Type"] == "AWS::S3::BucketPolicy"]
    for name, bucket in buckets.items():
        properties = bucket["Properties"]
        [rule] = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"] == {"Fn::If": [
            "HasDeadLetterKmsKey",
            {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Ref": "DeadLetterKmsKeyArn"}},
            {"SSEAlgorithm": "AES256"}]}, name
        assert properties["PublicAccessBlockConfiguration"] == dict.fromkeys(
            ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls",
             "RestrictPublicBuckets"), True), name
        assert properties["OwnershipControls"] == {
            "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}, name
        [policy] = [p for p in policies if p["Bucket"] == {"Ref": name}]
        [deny] = policy["PolicyDocument"]["Statement"]
        assert deny["Effect"] == "Deny" and deny["Action"] == "s3:*"
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert bucket["DeletionPolicy"] == "Retain"  # dead letters are not lost with the stack


def test_the_dead_letter_prefix_expires_after_the_retention_parameter(
    template: dict[str, Any]
) -> None:
    parameters, resources = template["Parameters"], template["Resources"]
    assert parameters["DeadLetterRetentionDays"]["Default"] == 90
    assert parameters["DeadLetterBucket"]["Default"] == "create"
    bucket = resources["DeadLetterStore"]
    assert bucket["Condition"] == "CreateDeadLetterBucket"
    [rule] = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["Prefix"] == {"Fn::Sub": "${DeadLetterPrefix}/"}
    assert rule["ExpirationInDays"] == {"Ref": "DeadLetterRetentionDays"}
    # The function writes there (or, with DeadLetterBucket=currents, to the Currents
    # bucket, which the stack does not own: infra/README.md says how to add the rule).
    variables = worker_of(template)["Environment"]["Variables"]
    assert variables["CURRENTS_EXPORT_DEAD_LETTER"] == {"Fn::If": [
        "CreateDeadLetterBucket", {"Fn::Sub": "s3://${DeadLetterStore}/${DeadLetterPrefix}"},
        {"Fn::Sub": "s3://${BucketName}/${DeadLetterPrefix}"}]}
    assert statement(template, "WriteDeadLetter")["Resource"] == {"Fn::If": [
        "CreateDeadLetterBucket", {"Fn::Sub": "${DeadLetterStore.Arn}/${DeadLetterPrefix}/*"},
        {"Fn::Sub": "arn:${AWS::Partition}:s3:::${BucketName}/${DeadLetterPrefix}/*"}]}
    assert template["Outputs"]["DeadLetter"]["Value"] == variables["CURRENTS_EXPORT_DEAD_LETTER"]


def test_the_kms_key_reaches_the_function_and_its_grant_only_when_given(
    template: dict[str, Any]
) -> None:
    assert template["Parameters"]["DeadLetterKmsKeyArn"]["Default"] == ""  # SSE-S3
    assert template["Conditions"]["HasDeadLetterKmsKey"] == {"Fn::Not": [{"Fn::Equals": [
        {"Ref": "DeadLetterKmsKeyArn"}, ""]}]}
    variables = worker_of(template)["Environment"]["Variables"]
    assert variables["CURRENTS_EXPORT_DEAD_LETTER_KMS_KEY"] == {"Fn::If": [
        "HasDeadLetterKmsKey", {"Ref": "DeadLetterKmsKeyArn"}, {"Ref": "AWS::NoValue"}]}
    condition, grant = conditional_statement(template, "DeadLetterKey")
    assert condition == "HasDeadLetterKmsKey"
    assert sorted(grant["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert grant["Resource"] == {"Ref": "DeadLetterKmsKeyArn"}


def test_the_salt_secret_or_parameter_reaches_the_function_and_its_grant_only_when_given(
    template: dict[str, Any]
) -> None:
    variables = worker_of(template)["Environment"]["Variables"]
    for variable, parameter, condition, sid, action in [
        ("CURRENTS_EXPORT_PII_SALT_SECRET", "PiiSaltSecretArn", "HasPiiSaltSecret",
         "PiiSaltSecret", "secretsmanager:GetSecretValue"),
        ("CURRENTS_EXPORT_PII_SALT_PARAMETER", "PiiSaltParameterName", "HasPiiSaltParameter",
         "PiiSaltParameter", "ssm:GetParameter"),
    ]:
        assert template["Parameters"][parameter]["Default"] == ""
        assert variables[variable] == {"Fn::If": [condition, {"Ref": parameter},
                                                  {"Ref": "AWS::NoValue"}]}
        found_condition, grant = conditional_statement(template, sid)
        assert (found_condition, grant["Action"]) == (condition, action)
    assert conditional_statement(template, "PiiSaltSecret")[1]["Resource"] == {
        "Ref": "PiiSaltSecretArn"}
    assert conditional_statement(template, "PiiSaltParameter")[1]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:"
                   "parameter${PiiSaltParameterName}"}
    assert variables["CURRENTS_EXPORT_CONFIG"] == {"Fn::If": [
        "HasMappingConfig", {"Ref": "MappingConfig"}, {"Ref": "AWS::NoValue"}]}
    [assertion] = template["Rules"]["OneSaltSource"]["Assertions"]
    assert "not both" in assertion["AssertDescription"]


# ---- the rate budget (Amplitude's project limits) ---------------------------------------------

BUDGET_VARIABLES = ("CURRENTS_EXPORT_MAX_EVENTS_PER_SECOND",
                    "CURRENTS_EXPORT_MAX_REQUESTS_PER_SECOND", "CURRENTS_EXPORT_BUDGET_SHARES")
_NO_VALUE = object()


def resolved(template: dict[str, Any], **given: int | str) -> dict[str, Any]:
    """The template with these parameter values (the rest their defaults), as CloudFormation
    would deploy it: parameters are strings, ``Fn::If`` takes its branch, ``AWS::NoValue``
    drops the property. Other intrinsics (``Fn::Sub``, ``Fn::GetAtt``, resource refs) stay."""
    parameters = template["Parameters"]
    assert set(given) <= set(parameters), set(given) - set(parameters)
    values = {name: str(given.get(name, spec.get("Default", ""))) for name, spec in
              parameters.items()}
    conditions: dict[str, bool] = {}

    def condition(name: str) -> bool:
        if name not in conditions:
            conditions[name] = bool(value(template["Conditions"][name]))
        return conditions[name]

    def value(node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            [(key, arguments)] = node.items()
            if key == "Ref" and arguments == "AWS::NoValue":
                return _NO_VALUE
            if key == "Ref" and arguments in values:
                return values[arguments]
            if key == "Condition":
                return condition(arguments)
            if key == "Fn::If":
                name, then, otherwise = arguments
                return value(then if condition(name) else otherwise)
            if key == "Fn::Equals":
                left, right = (value(argument) for argument in arguments)
                return str(left) == str(right)
            if key == "Fn::Not":
                [argument] = arguments
                return not value(argument)
            if key == "Fn::Or":
                return any(value(argument) for argument in arguments)
            if key == "Fn::And":
                return all(value(argument) for argument in arguments)
        if isinstance(node, dict):
            found = {key: value(item) for key, item in node.items()}
            return {key: item for key, item in found.items() if item is not _NO_VALUE}
        if isinstance(node, list):
            return [item for item in map(value, node) if item is not _NO_VALUE]
        return node

    resources = {name: value(resource) for name, resource in template["Resources"].items()
                 if "Condition" not in resource or condition(resource["Condition"])}
    return {"Resources": resources}


def budget_of(template: dict[str, Any], **given: int | str) -> tuple[Any, dict[str, Any]]:
    """The Worker's reserved concurrency (None: none) and its budget variables."""
    worker = resolved(template, **given)["Resources"]["Worker"]["Properties"]
    variables = worker["Environment"]["Variables"]
    return (worker.get("ReservedConcurrentExecutions"),
            {name: variables[name] for name in BUDGET_VARIABLES if name in variables})


def test_the_evaluator_resolves_conditions_the_way_cloudformation_does(
    template: dict[str, Any]
) -> None:
    variables = resolved(template, PiiSaltSecretArn="arn:aws:secretsmanager:x")[
        "Resources"]["Worker"]["Properties"]["Environment"]["Variables"]
    assert variables["CURRENTS_EXPORT_PII_SALT_SECRET"] == "arn:aws:secretsmanager:x"
    assert "CURRENTS_EXPORT_PII_SALT_PARAMETER" not in variables
    assert variables["CURRENTS_EXPORT_DEAD_LETTER"] == {
        "Fn::Sub": "s3://${DeadLetterStore}/${DeadLetterPrefix}"}
    resources = resolved(template, DeadLetterBucket="currents")["Resources"]
    assert "DeadLetterStore" not in resources
    assert resources["Worker"]["Properties"]["Environment"]["Variables"][
        "CURRENTS_EXPORT_DEAD_LETTER"] == {"Fn::Sub": "s3://${BucketName}/${DeadLetterPrefix}"}


def test_the_budget_parameters_default_to_none(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    reserved = parameters["ReservedConcurrency"]
    assert (reserved["Type"], reserved["Default"], reserved["MinValue"]) == ("Number", 0, 0)
    # The budgets are whole numbers, checked when the stack deploys: a value the function
    # would refuse (950.5, 0.0, -1) never reaches it, where every invocation would fail.
    for name in ("AmplitudeEventsPerSecond", "AmplitudeRequestsPerSecond"):
        parameter = parameters[name]
        assert (parameter["Type"], parameter["Default"]) == ("String", "0"), name
        pattern = re.compile(parameter["AllowedPattern"])
        assert all(pattern.fullmatch(ok) for ok in ("0", "1", "750", "50000")), name
        assert not any(pattern.fullmatch(bad) for bad in ("950.5", "0.0", "-1", "07", "")), name


@pytest.mark.parametrize("given", [{}, {"ReservedConcurrency": 12}, {"MaxConcurrency": 50}])
def test_without_a_budget_the_function_reserves_nothing_and_gets_no_budget(
    template: dict[str, Any], given: dict[str, int]
) -> None:
    # Reserving concurrency can fail on an account with a small limit: a stack without a
    # budget must deploy as before.
    assert budget_of(template, **given) == (None, {})


def test_an_events_budget_reserves_max_concurrency_and_shares_the_budget(
    template: dict[str, Any]
) -> None:
    assert budget_of(template, AmplitudeEventsPerSecond=750, MaxConcurrency=10) == ("10", {
        "CURRENTS_EXPORT_MAX_EVENTS_PER_SECOND": "750",
        "CURRENTS_EXPORT_BUDGET_SHARES": "10"})


def test_a_requests_budget_alone_reserves_and_shares_too(template: dict[str, Any]) -> None:
    assert budget_of(template, AmplitudeRequestsPerSecond=95, MaxConcurrency=20) == ("20", {
        "CURRENTS_EXPORT_MAX_REQUESTS_PER_SECOND": "95",
        "CURRENTS_EXPORT_BUDGET_SHARES": "20"})


def test_reserved_concurrency_overrides_the_reservation_and_the_shares(
    template: dict[str, Any]
) -> None:
    assert budget_of(template, AmplitudeEventsPerSecond=750, AmplitudeRequestsPerSecond=95,
                     MaxConcurrency=10, ReservedConcurrency=12) == ("12", {
        "CURRENTS_EXPORT_MAX_EVENTS_PER_SECOND": "750",
        "CURRENTS_EXPORT_MAX_REQUESTS_PER_SECOND": "95",
        "CURRENTS_EXPORT_BUDGET_SHARES": "12"})


def test_the_alarm_on_sustained_project_throttling(template: dict[str, Any]) -> None:
    alarm = alarms(template)["ProjectThrottlesAlarm"]
    assert (alarm["Namespace"], alarm["MetricName"]) == (NAMESPACE, "ProjectThrottles")
    assert "Dimensions" not in alarm  # the project's limit: every invocation together
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"],
            alarm["DatapointsToAlarm"]) == ("Sum", 300, 3, 3)  # 15 minutes, every period
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
    assert alarm["TreatMissingData"] == "notBreaching"
    assert "AmplitudeEventsPerSecond" in alarm["AlarmDescription"]


# ---- least privilege as deployed: the SAM transform expanded ----------------------------------
#
# cfn-lint reads the template as written; what CloudFormation deploys is the SAM transform's
# output, where SAM may add roles and AWS managed policies of its own (for an SQS event source:
# AWSLambdaSQSQueueExecutionRole, sqs:ReceiveMessage/DeleteMessage on "*"). The translator
# library expands the template here, offline: no IAM call (the managed-policy loader is a stub)
# and no socket.

# AWS managed policies the expanded stack may attach, with the reason. None: the two SAM
# would attach grant on "*" (AWSLambdaBasicExecutionRole: logs:CreateLogGroup, CreateLogStream,
# PutLogEvents on every log group; AWSLambdaSQSQueueExecutionRole: every queue), and the
# WorkerRole grants what they are for, scoped to the stack's log group and inbox.
ALLOWED_MANAGED_POLICIES: dict[str, str] = {}

# Actions that may be granted on Resource "*", each because AWS authorizes it on no narrower
# resource. The stack grants none of them today.
ALLOWED_ON_ANY_RESOURCE: dict[str, str] = {
    # Lambda's active tracing (Tracing: Active) writes with the function's role, and X-Ray
    # has no resource-level permissions for these.
    "xray:PutTraceSegments": "X-Ray: no resource-level permissions",
    "xray:PutTelemetryRecords": "X-Ray: no resource-level permissions",
}

CODE_URI = "s3://package-bucket/currents-export-lambda.zip"  # what `sam package` puts there
IAM_TYPES = {"AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy",
             "AWS::IAM::User", "AWS::IAM::Group"}
POLICY_DOCUMENTS = {  # resource type -> where its policy documents are
    "AWS::IAM::Role": "Policies", "AWS::IAM::User": "Policies", "AWS::IAM::Group": "Policies",
    "AWS::IAM::Policy": "PolicyDocument", "AWS::IAM::ManagedPolicy": "PolicyDocument",
    "AWS::SQS::QueuePolicy": "PolicyDocument", "AWS::S3::BucketPolicy": "PolicyDocument",
    "AWS::SNS::TopicPolicy": "PolicyDocument",
}


class OfflinePolicyLoader(ManagedPolicyLoader):
    """The translator's managed-policy loader without IAM: the names the stack may use, mapped
    to their ARNs (SAM asks only when a function's Policies name one)."""

    def __init__(self) -> None:  # no IAM client
        pass

    def load(self) -> dict[str, str]:
        return {name: f"arn:aws:iam::aws:policy/service-role/{name}"
                for name in ALLOWED_MANAGED_POLICIES}


def expand(template: dict[str, Any]) -> dict[str, Any]:
    """The SAM transform of ``template`` (as after `sam package`), computed offline."""
    source = json.loads(json.dumps(template))  # plain dicts: the translator changes its input
    source["Resources"]["Worker"]["Properties"]["CodeUri"] = CODE_URI

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the SAM expansion tried to reach the network")

    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as home:
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # the translator's boto3 Session
        patch.setenv("AWS_CONFIG_FILE", str(Path(home, "config")))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(Path(home, "credentials")))
        patch.setattr(socket, "create_connection", refuse)
        patch.setattr(socket.socket, "connect", refuse)
        expanded: dict[str, Any] = sam_transform(
            source, {"BucketName": "acme-currents",
                     "AmplitudeKeySecretArn": "arn:aws:secretsmanager:us-east-1:"
                                              "123456789012:secret:currents-export/amplitude"},
            OfflinePolicyLoader())
    # The translator times itself into a metrics cache for CloudWatch; hand it to its dummy
    # publisher (offline: publishes nothing), or the cache warns when the interpreter exits.
    MetricsMethodWrapperSingleton.get_instance().publish()
    return expanded


def _branches(node: Any) -> list[Any]:
    """A value as each branch of its ``Fn::If`` s gives it (``AWS::NoValue`` dropped)."""
    if isinstance(node, dict) and list(node) == ["Fn::If"]:
        _, then, otherwise = node["Fn::If"]
        return _branches(then) + _branches(otherwise)
    if node == {"Ref": "AWS::NoValue"}:
        return []
    return [node]


def _as_text(node: Any) -> str | None:
    """A literal or ``Fn::Sub`` resource as text with each ``${...}`` as X; None for a
    ``Ref``/``Fn::GetAtt`` (one resource of the stack or a parameter's ARN)."""
    if isinstance(node, dict) and "Fn::Sub" in node:
        node = node["Fn::Sub"][0] if isinstance(node["Fn::Sub"], list) else node["Fn::Sub"]
    if isinstance(node, dict) and "Fn::Join" in node:
        separator, parts = node["Fn::Join"]
        node = separator.join(part if isinstance(part, str) else "X" for part in parts)
    return re.sub(r"\$\{[^}]*\}", "X", node) if isinstance(node, str) else None


def on_any_resource(resource: Any) -> bool:
    """``*``, or an ARN whose resource part is ``*`` (``arn:aws:s3:::*``)."""
    text = _as_text(resource)
    if text is None:
        return False
    parts = text.split(":", 5)
    return text == "*" or (len(parts) == 6 and parts[0] == "arn" and parts[5] == "*")


def policy_documents(resource: dict[str, Any]) -> list[dict[str, Any]]:
    where = POLICY_DOCUMENTS.get(resource["Type"])
    properties = resource.get("Properties", {})
    if where == "Policies":
        return [policy["PolicyDocument"] for policy in properties.get("Policies", [])]
    return [properties[where]] if where and where in properties else []


def privilege_problems(expanded: dict[str, Any]) -> list[str]:
    """What in the expanded stack grants more than its resources: AWS managed policies not
    allowed above, and Allow statements on any resource (or with NotAction/NotResource, or
    an action wildcard)."""
    problems = []
    for name, resource in sorted(expanded["Resources"].items()):
        for arn in resource.get("Properties", {}).get("ManagedPolicyArns", []):
            text = arn if isinstance(arn, str) else json.dumps(arn)
            if (_as_text(arn) or text).rsplit("/", 1)[-1] not in ALLOWED_MANAGED_POLICIES:
                problems.append(f"{name}: managed policy {text}")
        for document in policy_documents(resource):
            for item in document.get("Statement", []):
                for grant in _branches(item):
                    if grant.get("Effect") != "Allow":
                        continue
                    where = f"{name}: {grant.get('Sid', 'a statement')}"
                    problems += [f"{where} uses {key}" for key in ("NotAction", "NotResource")
                                 if key in grant]
                    actions = grant.get("Action", [])
                    actions = [actions] if isinstance(actions, str) else actions
                    problems += [f"{where} grants {action}" for action in actions
                                 if action == "*" or action.endswith(":*")]
                    resources = grant.get("Resource", [])
                    resources = resources if isinstance(resources, list) else [resources]
                    anywhere = [r for r in resources for b in _branches(r) if on_any_resource(b)]
                    if anywhere and not set(actions) <= set(ALLOWED_ON_ANY_RESOURCE):
                        problems.append(f"{where} grants {', '.join(actions)} on any resource")
    return problems


@pytest.fixture(scope="module")
def expanded(template: dict[str, Any]) -> dict[str, Any]:
    return expand(template)


def test_the_deployed_stack_has_no_managed_policy_and_nothing_on_any_resource(
    expanded: dict[str, Any]
) -> None:
    assert privilege_problems(expanded) == []


def test_sam_adds_no_role_or_policy_of_its_own(
    template: dict[str, Any], expanded: dict[str, Any]
) -> None:
    def iam(resources: dict[str, Any]) -> set[str]:
        return {name for name, r in resources.items() if r["Type"] in IAM_TYPES}

    assert iam(expanded["Resources"]) == iam(template["Resources"]) == {"WorkerRole"}
    assert expanded["Resources"]["WorkerRole"] == json.loads(json.dumps(
        template["Resources"]["WorkerRole"]))  # deployed as written
    [function] = [r for r in expanded["Resources"].values()
                  if r["Type"] == "AWS::Lambda::Function"]
    assert function["Properties"]["Role"] == {"Fn::GetAtt": ["WorkerRole", "Arn"]}


def test_lambda_gets_its_logs_and_the_inbox_only(template: dict[str, Any]) -> None:
    logs = statement(template, "Logs", SERVICE_POLICY)
    assert sorted(logs["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert logs["Resource"] == {"Fn::GetAtt": ["WorkerLogs", "Arn"]}
    assert worker_of(template)["LoggingConfig"] == {"LogGroup": {"Ref": "WorkerLogs"}}
    poll = statement(template, "PollInbox", SERVICE_POLICY)
    assert sorted(poll["Action"]) == ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage",
                                      "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
    assert poll["Resource"] == {"Fn::GetAtt": ["Inbox", "Arn"]}
    [source] = worker_of(template)["Events"].values()
    assert source["Properties"]["Queue"] == {"Fn::GetAtt": ["Inbox", "Arn"]}
    assert len(statements(template, SERVICE_POLICY)) == 2


def _sam_role(t: dict[str, Any]) -> None:
    """The function as before issue 23: SAM's generated role, with its poller policy."""
    worker = worker_of(t)
    worker.pop("Role")
    worker["Policies"] = [{"SQSPollerPolicy": {"QueueName": {"Fn::GetAtt": ["Inbox",
                                                                            "QueueName"]}}},
                          role_policy(t, CODE_POLICY)]
    del t["Resources"]["WorkerRole"]


def _grant(t: dict[str, Any], action: str, resource: Any) -> None:
    role_policy(t, CODE_POLICY)["Statement"].append(
        {"Sid": "Added", "Effect": "Allow", "Action": action, "Resource": resource})


@pytest.mark.parametrize(
    ("change", "found"),
    [
        (_sam_role, ["WorkerRole: managed policy arn:aws:iam::aws:policy/service-role/"
                     "AWSLambdaBasicExecutionRole",
                     "WorkerRole: managed policy arn:aws:iam::aws:policy/service-role/"
                     "AWSLambdaSQSQueueExecutionRole"]),
        (lambda t: t["Resources"]["WorkerRole"]["Properties"].update(
            ManagedPolicyArns=["arn:aws:iam::aws:policy/ReadOnlyAccess"]),
         ["WorkerRole: managed policy arn:aws:iam::aws:policy/ReadOnlyAccess"]),
        (lambda t: _grant(t, "logs:PutLogEvents", "*"),
         ["WorkerRole: Added grants logs:PutLogEvents on any resource"]),
        (lambda t: _grant(t, "s3:GetObject", {"Fn::Sub": "arn:${AWS::Partition}:s3:::*"}),
         ["WorkerRole: Added grants s3:GetObject on any resource"]),
        (lambda t: _grant(t, "sqs:*", {"Fn::GetAtt": ["Inbox", "Arn"]}),
         ["WorkerRole: Added grants sqs:*"]),
        (lambda t: _grant(t, "xray:PutTraceSegments", "*"), []),  # an allowed exception
    ],
)
def test_the_privilege_check_catches_a_broader_grant(
    template: dict[str, Any], change: Any, found: list[str]
) -> None:
    changed = copy.deepcopy(template)
    change(changed)
    assert privilege_problems(expand(changed)) == found


# ---- the Lambda's dependencies: the lock -----------------------------------------------------

LOCK = REPO_ROOT / "infra" / "lambda-requirements.txt"


def _build_lambda() -> Any:
    spec = importlib.util.spec_from_file_location(
        "build_lambda", REPO_ROOT / "infra" / "build_lambda.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_pins_every_runtime_dependency_within_its_bounds_with_hashes(
    template: dict[str, Any]
) -> None:
    build_lambda = _build_lambda()
    pins = build_lambda.locked()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    # Powertools comes with the lambda extra (a dependency of the Lambda's only), bare.
    [powertools] = project["optional-dependencies"][build_lambda.LAMBDA_EXTRA]
    assert Requirement(powertools).name == "aws-lambda-powertools"
    assert not Requirement(powertools).extras
    for line in [*project["dependencies"], powertools]:
        requirement = Requirement(line)
        name = build_lambda.canonical_name(requirement.name)
        if name in build_lambda.IN_RUNTIME:
            assert name not in pins, f"{name} is the runtime's: not in the zip"
            continue
        assert name in pins, f"the lock does not pin {name}: run build_lambda.py --lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside pyproject.toml's {requirement.specifier}: "
            "run build_lambda.py --lock")
    text = LOCK.read_text()
    entries = re.findall(r"^(\S+)==(\S+)((?: \\\n    --hash=sha256:[0-9a-f]{64})+)$", text,
                         re.MULTILINE)
    assert {build_lambda.canonical_name(n) for n, _, _ in entries} == set(pins)
    runtime = worker_of(template)["Runtime"]
    assert build_lambda.LOCK_PYTHON.search(text)[1] == runtime.removeprefix("python")
    assert "python infra/build_lambda.py --lock" in text  # how to refresh it


def test_the_build_refuses_a_wheel_the_lock_does_not_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert WHEELHOUSE.is_dir(), (
        "run `python infra/build_lambda.py --download-only` first (scripts/test does)"
    )
    build_lambda = _build_lambda()
    text = LOCK.read_text()
    [entry] = re.findall(r"^orjson==\S+(?: \\\n    --hash=sha256:[0-9a-f]{64})+$", text,
                         re.MULTILINE)
    tampered = tmp_path / "lambda-requirements.txt"  # no hash of any orjson wheel matches
    tampered.write_text(text.replace(entry, re.sub("[0-9a-f]{64}", "0" * 64, entry)))
    monkeypatch.setattr(build_lambda, "LOCK", tampered)
    with pytest.raises(subprocess.CalledProcessError):  # pip: "THESE PACKAGES DO NOT MATCH"
        build_lambda.build(tmp_path / "lambda.zip", WHEELHOUSE, "arm64", "3.12")
    assert not (tmp_path / "lambda.zip").exists(), "built with an orjson the lock does not hash"
