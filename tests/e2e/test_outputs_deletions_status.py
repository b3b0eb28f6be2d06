"""`deletions status`: only its own options (--state, --config), and since when deletions
are pending, in text and JSON, through the command line against a real ledger and the
emulator's User Privacy API."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import click
import fastavro
import orjson
import pytest
from click.testing import CliRunner, Result

from currents_export.cli import main
from currents_export.currents.schemas import writer_schema
from currents_export.deletions.store import PENDING, SUBMITTED, UNRESOLVED, Deletion
from currents_export.deletions.submit import deletion_status, render_status
from currents_export.kit.emulator import Emulator
from tests.support.records import minimal_record

API_KEY = "test-key-0123456789"
SECRET_KEY = "secret-KEY-MARKER-42"
CUSTOM, DELETE = "users.behaviors.CustomEvent", "users.UserDeleteRequest"
PREFIX = "currents/dataexport.prod-01.S3.integration.0123456789abcdef01234567"
HOUR = 3_600
SINCE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC \(([^)]*)\)")


def braze(n: int) -> str:
    return f"{n:024x}"


def write_file(root: Path, event_type: str, hour: str, records: list[dict[str, Any]]) -> None:
    folder = root / PREFIX / f"event_type={event_type}" / f"date=2026-11-30-{hour}" / "1" / "a"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{hour}.avro").open("wb") as out:
        fastavro.writer(out, fastavro.parse_schema(writer_schema(event_type)), records)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "currents-export.toml").write_text("[deletions]\n")
    bucket = tmp_path / "bucket"
    write_file(bucket, CUSTOM, "10", [
        minimal_record(CUSTOM, id="evt-1", user_id=braze(1), external_user_id="alice_0001",
                       time=1_764_496_800, name="opened_app")])
    write_file(bucket, DELETE, "11", [
        minimal_record(DELETE, id=f"del-{n}", user_id=braze(n), time=1_764_500_400)
        for n in (1, 2)])  # alice (seen with a user id) and one never seen
    return tmp_path


def cli(work: Path, emulator: Emulator, *args: str, **extra: str) -> Result:
    env = {"CURRENTS_EXPORT_CONFIG": str(work / "currents-export.toml"),
           "AMPLITUDE_API_KEY": API_KEY, "AMPLITUDE_SECRET_KEY": SECRET_KEY,
           "CURRENTS_EXPORT_AMPLITUDE_URL": emulator.url,
           "CURRENTS_EXPORT_PRIVACY_URL": emulator.url,
           "CURRENTS_EXPORT_STATE": str(work / "state.sqlite"),
           "CURRENTS_EXPORT_DEAD_LETTER": str(work / "dead-letter"),
           "CURRENTS_EXPORT_RETRY_HORIZON": "0", **extra}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def age_rows(work: Path, seconds: float, braze_id: str) -> float:
    """Record ``braze_id``'s deletion ``seconds`` earlier; → its new recorded_at."""
    from currents_export.deletions.store import braze_key

    when = time.time() - seconds
    with sqlite3.connect(work / "state.sqlite") as db:
        db.execute("UPDATE deletions SET recorded_at = ? WHERE braze_key = ?",
                   (when, braze_key(braze_id)))
    return when


def test_deletions_status_takes_only_the_options_it_uses() -> None:
    group = main.commands["deletions"]
    assert isinstance(group, click.Group)
    status = group.commands["status"]
    options = {name for param in status.params for name in param.opts
               if param.param_type_name == "option"}
    assert options == {"--config", "--state", "--all", "--json"}
    submit = {name for param in group.commands["submit"].params for name in param.opts}
    assert {"--api-key", "--secret-key", "--privacy-url", "--dry-run", "--summary-json"} <= submit
    for option in ("--summary-json", "--api-key", "--dry-run", "--privacy-url"):
        refused = CliRunner().invoke(main, ["deletions", "status", option, "x"])
        assert refused.exit_code == 2 and "No such option" in refused.output, option


def test_pending_since_in_text_and_json(emulator: Emulator, work: Path) -> None:
    replayed = cli(work, emulator, "replay", str(work / "bucket"))
    assert replayed.exit_code == 0, replayed.output

    # Just recorded: both pending, within the grace period, since just now.
    text = cli(work, emulator, "deletions", "status")
    assert text.exit_code == 0, text.output
    assert "2 pending (2 within the grace period)" in text.output
    [since_line] = [line for line in text.output.splitlines()
                    if line.startswith("  pending since ")]
    assert SINCE.search(since_line)
    assert SINCE.search(since_line).group(1) == "just now"  # type: ignore[union-attr]
    items = [line for line in text.output.splitlines() if " pending " in line
             and "since" in line and not line.startswith("  pending since")]
    assert len(items) == 2 and all(line.endswith("within the grace period") for line in items)

    # The oldest pending one names the line; each says its own age; one past the grace
    # period waits to be sent.
    oldest = age_rows(work, 5 * HOUR + 60, braze(2))
    age_rows(work, 2 * HOUR + 60, braze(1))
    text = cli(work, emulator, "deletions", "status").output
    assert "2 pending (0 within the grace period)" in text
    head = next(line for line in text.splitlines() if line.startswith("  pending since "))
    assert time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(oldest)) in head
    assert "(5 h ago)" in head
    ages = sorted(SINCE.search(line).group(1)  # type: ignore[union-attr]
                  for line in text.splitlines() if " pending    " in line)
    assert ages == ["2 h ago", "5 h ago"]
    assert all(line.endswith("waiting to be sent") for line in text.splitlines()
               if " pending    " in line)

    report = orjson.loads(cli(work, emulator, "deletions", "status", "--json").output)
    assert report["pending"] == 2 and report["pending_since"] == pytest.approx(oldest)
    assert 5 * HOUR + 60 <= report["pending_for_s"] < 5 * HOUR + 600
    assert {item["status"] for item in report["items"]} == {PENDING}
    assert sorted(item["pending_since"] for item in report["items"])[0] == \
        pytest.approx(oldest)
    assert all(item["pending_since"] == item["recorded_at"] and not item["within_grace_period"]
               and item["pending_for_s"] >= 2 * HOUR for item in report["items"])

    # Submitted and unresolved deletions are no longer pending: nothing is pending since.
    submitted = cli(work, emulator, "deletions", "submit")
    assert submitted.exit_code == 0, submitted.output
    report = orjson.loads(cli(work, emulator, "deletions", "status", "--json", "--all").output)
    assert (report["pending"], report["submitted"], report["unresolved"]) == \
        (0, 1, {"never_seen": 1})
    assert report["pending_since"] is None and report["pending_for_s"] is None
    assert all(item["pending_since"] is None for item in report["items"])
    text = cli(work, emulator, "deletions", "status").output
    assert "pending since" not in text and not SINCE.search(text)


def test_options_of_other_commands_do_not_matter_to_it(emulator: Emulator, work: Path) -> None:
    """A bad value for an option deletions status does not use (from the environment) is
    no error for it, and it writes no --summary-json; deletions submit still checks it."""
    assert cli(work, emulator, "replay", str(work / "bucket")).exit_code == 0
    summary = work / "summary.json"
    odd = {"CURRENTS_EXPORT_REGION": "mars", "CURRENTS_EXPORT_SUMMARY_JSON": str(summary),
           "CURRENTS_EXPORT_DRY_RUN": "perhaps"}
    status = cli(work, emulator, "deletions", "status", **odd)
    assert status.exit_code == 0, status.output
    assert "2 recorded" in status.output and not summary.exists()
    submit = cli(work, emulator, "deletions", "submit", **odd)
    assert submit.exit_code == 2


def test_the_view_is_a_function_of_the_deletions_and_the_time() -> None:
    now = 100 * HOUR
    found = [Deletion("a" * 40, 1.0, now - 3 * HOUR),
             Deletion("b" * 40, 1.0, now - 30 * 60),  # within the grace period
             Deletion("c" * 40, 1.0, now - 9 * HOUR, status=SUBMITTED, job_day="2026-12-10",
                      job_status="staging", user_ids=2),
             Deletion("d" * 40, 1.0, now - 7 * HOUR, status=UNRESOLVED, reason="never_seen")]
    status = deletion_status(found, grace_s=HOUR, now=now)
    assert status["pending_since"] == now - 3 * HOUR and status["pending_for_s"] == 3 * HOUR
    assert [item["key"][0] for item in status["items"]] == ["a", "b", "d"]
    assert [item["pending_since"] for item in status["items"]] == [now - 3 * HOUR,
                                                                  now - 30 * 60, None]
    text = render_status(status)
    assert "  pending since 1970-01-05 01:00 UTC (3 h ago)" in text
    lines = text.splitlines()
    assert lines[-3].endswith("since 1970-01-05 01:00 UTC (3 h ago), waiting to be sent")
    assert lines[-2].endswith("since 1970-01-05 03:30 UTC (30 min ago), within the grace "
                              "period")
    assert lines[-1].endswith("unresolved  never_seen")
    none = deletion_status(found[2:], grace_s=HOUR, now=now)
    assert none["pending_since"] is None and "pending since" not in render_status(none)
