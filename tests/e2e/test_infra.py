"""The deployable stack: the template agrees with the code, lints clean, and the Lambda
package builds with the right contents."""

from __future__ import annotations

import copy
import importlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from cfnlint.decode import cfn_yaml

from currents_export import aws_lambda
from currents_export.aws_lambda.observability import NAMESPACE, emf_line, sending_emf_line
from currents_export.counts import ObjectReport, SendingReport
from tests.support import REPO_ROOT

TEMPLATE = REPO_ROOT / "infra" / "template.yaml"
WHEELHOUSE = REPO_ROOT / "infra" / "build" / "wheels-arm64-3.12"
REQUIRED_ENV = {"AMPLITUDE_API_KEY_SECRET", "CURRENTS_EXPORT_STATE",
                "CURRENTS_EXPORT_DEAD_LETTER"}


def template_problems(template: dict[str, Any]) -> list[str]:
    """Where the template and the code disagree (empty when they agree)."""
    problems = []
    worker = template["Resources"]["Worker"]["Properties"]
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
    granted = set()
    for statement in statements(worker):
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


def statements(worker: dict[str, Any]) -> list[dict[str, Any]]:
    """The function's IAM statements; a conditional one (``Fn::If``) by its granting branch."""
    found = []
    for policy in worker["Policies"]:
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
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
        (lambda w: w.update(Handler="currents_export.lambda_handler.handler"),
         "handler module currents_export.lambda_handler does not exist"),
        (lambda w: w.update(Handler="currents_export.aws_lambda.main"), "is not a function"),
        (lambda w: w["Environment"]["Variables"].update(AMPLITUDE_KEY="x"),
         "unknown environment variable AMPLITUDE_KEY"),
        (lambda w: w["Environment"]["Variables"].pop("CURRENTS_EXPORT_STATE"),
         "missing environment variable CURRENTS_EXPORT_STATE"),
        (lambda w: w["Policies"][1]["Statement"].pop(2),
         "IAM action dynamodb:GetItem used by the code is not granted"),
        (lambda w: w["Events"]["Files"]["Properties"].pop("FunctionResponseTypes"),
         "does not report batch item failures"),
    ],
)
def test_the_consistency_check_catches_a_drift(
    template: dict[str, Any], change: Any, problem: str
) -> None:
    drifted = copy.deepcopy(template)
    change(drifted["Resources"]["Worker"]["Properties"])
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


def emf(report: ObjectReport) -> dict[str, Any]:
    line: dict[str, Any] = orjson.loads(emf_line(report, now_ms=1_700_000_000_000))
    return line


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
def test_the_emf_line_counts_failed_objects(
    report: ObjectReport, failed: int, permanently: int
) -> None:
    line = emf(report)
    assert (line["ObjectsFailed"], line["ObjectsFailedPermanently"]) == (failed, permanently)
    assert line["Records"] == 0  # the other metrics are still there


def test_the_emf_metrics_the_alarms_use_exist_without_dimensions(
    template: dict[str, Any]
) -> None:
    line = emf(ObjectReport(object="s3://b/k.avro", status="failed", retryable=False))
    [directive] = line["_aws"]["CloudWatchMetrics"]
    published = {metric["Name"] for metric in directive["Metrics"]}
    assert directive["Namespace"] == NAMESPACE
    assert [] in directive["Dimensions"]  # one alarm covers every event type
    assert ["EventType"] in directive["Dimensions"]
    assert line["EventType"] == "unknown"
    ours = [alarm for alarm in alarms(template).values() if alarm["Namespace"] == NAMESPACE]
    assert {alarm["MetricName"] for alarm in ours} == {
        "ObjectsFailed", "ObjectsFailedPermanently", "EventsDeadLettered", "ProjectThrottles"}
    sending = orjson.loads(sending_emf_line(
        SendingReport(events_per_second=75.0, requests_per_second=None,
                      found_events_per_second=60.0, refused=2, throttled=1,
                      waited_on_budget_s=3.5, waited_on_amplitude_s=60.0),
        delivered=1_200, elapsed_s=80.0))
    [per_invocation] = sending["_aws"]["CloudWatchMetrics"]
    assert per_invocation["Namespace"] == NAMESPACE and per_invocation["Dimensions"] == [[]]
    published |= {metric["Name"] for metric in per_invocation["Metrics"]}
    assert (sending["ProjectThrottles"], sending["IdThrottles"]) == (2, 1)
    assert (sending["BudgetWaitSeconds"], sending["AmplitudeWaitSeconds"]) == (3.5, 60.0)
    assert (sending["EventsPerSecond"], sending["BudgetEventsPerSecond"]) == (15.0, 60.0)
    for alarm in ours:
        assert alarm["MetricName"] in published
        assert "Dimensions" not in alarm


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
    assert {"fastavro", "orjson", "httpx", "click"} <= tops
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

def worker_of(template: dict[str, Any]) -> dict[str, Any]:
    worker: dict[str, Any] = template["Resources"]["Worker"]["Properties"]
    return worker


def statement(template: dict[str, Any], sid: str) -> dict[str, Any]:
    [found] = [s for s in statements(worker_of(template)) if s.get("Sid") == sid]
    return found


def conditional_statement(template: dict[str, Any], sid: str) -> tuple[str, dict[str, Any]]:
    """The condition and the statement of a grant that exists only when a parameter is set."""
    for policy in worker_of(template)["Policies"]:
        for item in policy.get("Statement", []) if isinstance(policy, dict) else []:
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
