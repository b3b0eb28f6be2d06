"""The deployable stack: the template agrees with the code, lints clean, and the Lambda
package builds with the right contents."""

from __future__ import annotations

import copy
import importlib
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from currents_export import aws_lambda

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "template.yaml"
WHEELHOUSE = ROOT / "infra" / "build" / "wheels-arm64-3.12"
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
    for policy in worker["Policies"]:
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
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
    subprocess.run([sys.executable, str(ROOT / "infra" / "build_lambda.py"), "--offline",
                    "--out", str(out)], check=True, capture_output=True)
    names = zipfile.ZipFile(out).namelist()
    assert "currents_export/aws_lambda.py" in names
    assert "currents_export/currents/catalogue.py" in names
    tops = {name.split("/")[0] for name in names}
    assert {"fastavro", "orjson", "httpx", "click"} <= tops
    assert not {"boto3", "botocore"} & tops  # the runtime has them
    assert not any("__pycache__" in name for name in names)
    native = [n for n in names if n.endswith(".so")]
    assert native and all("x86_64" not in n for n in native)
    assert any("aarch64" in n for n in native)
    assert out.stat().st_size < 15_000_000
