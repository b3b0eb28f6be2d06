"""The README's commands work as written: every command of "Using it on your own data"
(after the installation, which `.ci/run` does, and not the test command itself) is run here,
in a folder holding what the commands name — Currents files in ./currents-download/ and
./day/, an S3 bucket `my-bucket` (moto's server), the emulator standing in for Amplitude —
and must exit 0. A command added to that block runs here too."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import httpx
import pytest
from click.testing import CliRunner

from currents_export import __version__
from currents_export.cli import main
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import generate_fixtures

README = Path(__file__).resolve().parents[2] / "README.md"
KEY = "0123456789abcdef0123456789abcdef"


def readme_commands() -> list[list[str]]:
    """The commands of the first ```sh block of "Using it on your own data"."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Using it on your own data"):]
    start = section.index("```sh\n") + len("```sh\n")
    block = section[start:section.index("```", start)]
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [words for words in commands if words and words[0] != "export"]


def test_the_readme_block_is_what_this_test_runs() -> None:
    commands = readme_commands()
    assert all(words[0] == "currents-export" for words in commands)
    names = {words[1] for words in commands}
    assert {"check", "replay", "status", "inspect", "redrive", "emulator"} <= names


def test_every_readme_command_runs_as_written(
    aws: str, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    types = ["users.behaviors.CustomEvent", "users.behaviors.app.SessionStart"]
    download = generate_fixtures(tmp_path / "currents-download", events_per_type=60, seed=1,
                                 event_types=types)
    generate_fixtures(tmp_path / "day", events_per_type=40, seed=2, event_types=types)
    (tmp_path / "path" / "to").mkdir(parents=True)
    shutil.copy(download[0].path, tmp_path / "path" / "to" / "file.avro")
    s3 = boto3.client("s3", endpoint_url=aws)
    s3.create_bucket(Bucket="my-bucket")
    for fixture in download:
        s3.put_object(Bucket="my-bucket", Key=fixture.key, Body=fixture.path.read_bytes())
    # A device Amplitude silences: something reaches the dead letter, for redrive.
    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"silenced_device_ids": [first_device(download[-1].path)]}
                ).raise_for_status()
    env = {"AMPLITUDE_API_KEY": KEY, "CURRENTS_EXPORT_AMPLITUDE_URL": emulator.url,
           "AWS_ENDPOINT_URL": aws}
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    ran = []
    for words in readme_commands():
        args = words[1:]
        if args[0] == "redrive" and args[1].startswith("s3://"):
            copy_dead_letter_to_s3(s3, tmp_path / ".currents-export" / "dead-letter")
        if args[0] == "emulator":
            run_emulator(args)
        else:
            result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
            assert result.exit_code == 0, (words, result.output)
            if args == ["--version"]:
                assert __version__ in result.output
        ran.append(args[0])
    assert "redrive" in ran and (tmp_path / "summary.json").exists()
    assert (tmp_path / "events.jsonl").stat().st_size > 0  # the dry run's --output
    assert len(list((tmp_path / "bucket").rglob("*.avro"))) > 0  # fixtures


def first_device(path: Path) -> str:
    import fastavro

    with path.open("rb") as stream:
        return next(str(r["device_id"]) for r in fastavro.reader(stream)
                    if isinstance(r, dict) and r.get("device_id"))


def copy_dead_letter_to_s3(s3: object, folder: Path) -> None:
    files = sorted(folder.glob("*.jsonl"))
    assert files, "the replays dead-lettered nothing: the redrive lines would not be tried"
    for path in files:
        s3.put_object(Bucket="my-bucket", Key=f"dead-letter/{path.name}",  # type: ignore[attr-defined]
                      Body=path.read_bytes())


def run_emulator(args: list[str]) -> None:
    """`emulator --port 8787` in a process of its own (on a free port: 8787 may be taken
    on a test machine), until it says it listens."""
    args = ["0" if arg == "8787" else arg for arg in args]
    process = subprocess.Popen([sys.executable, "-m", "currents_export", *args],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "Amplitude emulator listening on http://127.0.0.1:" in line, line
    finally:
        process.terminate()
        process.wait(timeout=10)
