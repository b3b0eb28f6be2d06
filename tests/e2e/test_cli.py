"""The other commands: fixtures, inspect, emulator, and the module entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import orjson
from click.testing import CliRunner

from currents_export.cli import main


def test_fixtures_command_writes_the_braze_layout(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "fixtures", str(tmp_path), "--events", "12", "--event-type", "users.behaviors.Purchase",
        "--event-type", "users.messages.email.Open", "--codec", "deflate", "--seed", "5",
    ])
    assert result.exit_code == 0, result.output
    files = sorted(tmp_path.rglob("*.avro"))
    assert len(files) == 4
    assert "wrote 4 files, 24 records" in result.output
    assert all("/event_type=" in f.as_posix() and "/date=" in f.as_posix() for f in files)


def test_fixtures_command_refuses_an_unknown_type(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["fixtures", str(tmp_path), "--event-type", "users.Nope"])
    assert result.exit_code == 2
    assert "users.Nope" in result.output


def test_inspect_shows_schema_count_and_mapped_samples(tmp_path: Path) -> None:
    CliRunner().invoke(main, ["fixtures", str(tmp_path), "--events", "10", "--files-per-type",
                              "1", "--event-type", "users.behaviors.CustomEvent"])
    [avro] = tmp_path.rglob("*.avro")
    result = CliRunner().invoke(main, ["inspect", str(avro), "--samples", "2"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    assert report["event_type"] == "users.behaviors.CustomEvent"
    assert report["records"] == 10 and sum(report["outcomes"].values()) == 10
    assert report["writer_schema"]["name"] == "dataexport.S3.inner.users.behaviors.CustomEvent"
    assert len(report["sample_events"]) == 2
    assert report["sample_events"][0]["event_type"].startswith("[Appboy] [Custom Event] ")


def test_inspect_reports_a_bad_file_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.avro"
    bad.write_bytes(b"nope")
    result = CliRunner().invoke(main, ["inspect", str(bad)])
    assert result.exit_code == 1
    assert "bad.avro" in result.output and "not an Avro container file" in result.output


def test_module_entry_point_and_emulator_command() -> None:
    version = subprocess.run([sys.executable, "-m", "currents_export", "--version"],
                             capture_output=True, text=True, check=True)
    assert "currents-export" in version.stdout

    process = subprocess.Popen(
        [sys.executable, "-m", "currents_export", "emulator", "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        url = banner.split("listening on ")[1].split()[0]
        body = {"api_key": "k", "events": [{"event_type": "e", "user_id": "user-1",
                                            "insert_id": "x-1", "time": 1}]}
        answer = httpx.post(f"{url}/2/httpapi", json=body).json()
        assert answer["code"] == 200 and answer["events_ingested"] == 1
        stored = httpx.get(f"{url}/_emulator/events").json()["events"]
        assert [e["insert_id"] for e in stored] == ["x-1"]
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---- a command line that answers for itself --------------------------------------------------

def test_every_command_and_option_has_help_and_the_command_list_is_not_cut_off() -> None:
    listing = CliRunner().invoke(main, ["--help"]).output
    for name, command in main.commands.items():
        assert command.short_help and not command.short_help.endswith("..."), name
        assert command.short_help in listing, name
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.name} has no help"  # type: ignore[attr-defined]
    backfill = CliRunner().invoke(main, ["backfill", "--help"]).output
    assert "dynamodb://TABLE" in backfill and "s3://BUCKET/PREFIX" in backfill


def test_replay_of_an_s3_uri_points_to_backfill() -> None:
    result = CliRunner().invoke(main, ["replay", "s3://bucket/currents", "--dry-run"])
    assert result.exit_code == 2
    assert "currents-export backfill s3://bucket/currents" in result.output


def test_inspect_of_a_folder_reports_each_file_or_says_why_not(tmp_path: Path) -> None:
    CliRunner().invoke(main, ["fixtures", str(tmp_path / "bucket"), "--events", "6",
                              "--files-per-type", "2", "--event-type",
                              "users.behaviors.CustomEvent"])
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "bucket"), "--samples", "1"])
    assert result.exit_code == 0, result.output
    reports = orjson.loads(result.output)
    assert len(reports) == 2 and sum(r["records"] for r in reports) == 6
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(main, ["inspect", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "no .avro files there" in empty.output


def test_a_demo_explains_the_types_it_sends_nothing_for(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--events", "5", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "event types sent nothing (no_identity" in result.output
    assert "--identity-fallback braze_id" in result.output
    assert "--api-key" not in result.output  # the demo's key is its own: no warning to give


def test_a_demo_run_again_in_its_workdir_follows_its_new_emulator(tmp_path: Path) -> None:
    """Each demo starts an emulator on a new port: the workdir's ledger is rebound to it
    instead of refusing it as another destination."""
    first = CliRunner().invoke(main, ["demo", "--events", "3", "--workdir", str(tmp_path)])
    assert first.exit_code == 0, first.output
    status = CliRunner().invoke(main, ["status", "--state", str(tmp_path / "state.sqlite"),
                                       "--json"])
    host = orjson.loads(status.stdout)["destination"]["host"]
    again = CliRunner().invoke(main, ["demo", "--events", "3", "--workdir", str(tmp_path)])
    assert again.exit_code == 0, again.output
    assert "0 done, " in again.output  # what the first demo did stays done
    status = CliRunner().invoke(main, ["status", "--state", str(tmp_path / "state.sqlite"),
                                       "--json"])
    moved = orjson.loads(status.stdout)["destination"]
    assert moved["host"] != host and moved["previous"].startswith(host)
