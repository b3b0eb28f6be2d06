"""The first hour: `currents-export check`, and the probe every run makes before reading.
A wrong URL, a refused connection, a name that does not resolve, a rejected key, a server
that is not Amplitude, an outage from the start, an unreachable User Privacy API: exit 2
with one message each, and nothing created on disk. Against the emulator, moto's S3 and
closed ports on loopback (no timing assertions: the seconds are measured by hand)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import orjson
import pytest
from click.testing import CliRunner, Result

from currents_export.amplitude.probe import probe_upload
from currents_export.cli import main
from currents_export.errors import AmplitudeSetupError, EndpointUnreachable
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile, generate_fixtures
from tests.support.emulator import is_probe, stored_events

KEY = "0123456789abcdef0123456789abcdef"
CUSTOM = "users.behaviors.CustomEvent"


def closed_port_url() -> str:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{closed.getsockname()[1]}"


def fixtures(root: Path) -> list[FixtureFile]:
    return generate_fixtures(root / "bucket", events_per_type=20, seed=3, files_per_type=2,
                             event_types=[CUSTOM])


def cli(root: Path, *args: str, key: str = KEY, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [
        *args, "--state", str(root / "state" / "state.sqlite"),
        "--dead-letter", str(root / "dead-letter"),
    ], env={"AMPLITUDE_API_KEY": key, **(env or {})}, catch_exceptions=False)


def created(root: Path) -> list[str]:
    """What a command left in ``root`` besides the fixtures and a summary it was asked for."""
    return sorted(p.name for p in root.iterdir() if p.name not in ("bucket", "summary.json"))


def test_check_reports_every_part_ready(emulator: Emulator, tmp_path: Path) -> None:
    fixtures(tmp_path)
    result = cli(tmp_path, "check", str(tmp_path / "bucket"), "--amplitude-url", emulator.url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for part in ("settings", "outputs", "Amplitude", "ledger", "dead letter", "source"):
        assert any(line.startswith("ok") and f" {part}:" in line for line in lines), part
    assert "took the key" in result.output and "2 .avro files" in result.output
    assert "not created yet" in result.output
    assert created(tmp_path) == []  # checked, not made
    assert stored_events(emulator) == []  # the probe's event is one Amplitude refuses
    [probe] = emulator.requests_log()
    assert is_probe(probe) and probe["status"] == 400
    assert KEY not in result.output


@pytest.mark.parametrize(("url", "said"), [
    (None, "connection refused"),
    ("http://currents-export-check.invalid", "does not resolve"),
])
def test_a_url_that_cannot_be_reached_is_one_message_and_exit_2(
    tmp_path: Path, url: str | None, said: str
) -> None:
    fixtures(tmp_path)
    url = url or closed_port_url()
    checked = cli(tmp_path, "check", "--amplitude-url", url)
    assert checked.exit_code == 2
    assert "FAIL  Amplitude: cannot reach Amplitude" in checked.output and said in checked.output
    run = cli(tmp_path, "replay", str(tmp_path / "bucket"), "--amplitude-url", url,
              "--retry-horizon", "900", "--summary-json", str(tmp_path / "summary.json"))
    assert run.exit_code == 2
    assert run.output.count("cannot reach Amplitude") == 1 and said in run.output
    assert "wrong --amplitude-url" in run.output
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert "cannot reach Amplitude" in summary["configuration_error"]
    assert summary["records"] == 0
    assert created(tmp_path) == []  # no ledger, no dead-letter folder


def test_a_rejected_key_stops_at_the_first_answer(emulator: Emulator, tmp_path: Path) -> None:
    fixtures(tmp_path)
    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"valid_api_keys": ["another-key-entirely"]}).raise_for_status()
    checked = cli(tmp_path, "check", "--amplitude-url", emulator.url)
    assert checked.exit_code == 2 and "FAIL  Amplitude: " in checked.output
    assert "rejected the API key" in checked.output and KEY not in checked.output
    run = cli(tmp_path, "replay", str(tmp_path / "bucket"), "--amplitude-url", emulator.url)
    assert run.exit_code == 2 and run.output.count("rejected the API key") == 1
    assert len(emulator.requests_log()) == 2  # one probe each, nothing else sent
    assert created(tmp_path) == []


@pytest.mark.parametrize(("rule", "said"), [
    ({"action": "status", "status": 503}, "HTTP 503 every time"),
    ({"action": "not_amplitude"}, "does not answer as Amplitude"),
])
def test_an_outage_or_not_amplitude_from_the_start_is_exit_2(
    emulator: Emulator, tmp_path: Path, rule: dict[str, Any], said: str
) -> None:
    files = fixtures(tmp_path)
    emulator.set_faults([rule], seed=1)
    run = cli(tmp_path, "replay", str(tmp_path / "bucket"), "--amplitude-url", emulator.url,
              "--retry-horizon", "900")
    assert run.exit_code == 2 and run.output.count(said) == 1
    assert created(tmp_path) == [] and stored_events(emulator) == []
    emulator.clear_faults()
    again = cli(tmp_path, "replay", str(tmp_path / "bucket"), "--amplitude-url", emulator.url)
    assert again.exit_code == 0, again.output  # nothing was marked anything: all delivered
    assert len(stored_events(emulator)) == sum(f.records for f in files)


def test_the_probe_takes_a_throttled_project_as_amplitude(emulator: Emulator) -> None:
    emulator.set_faults([{"action": "status", "status": 429}], seed=1)
    answer = probe_upload(f"{emulator.url}/batch", KEY)
    assert answer.status == 429 and "throttled" in answer.detail


def test_the_probe_names_the_flag_that_set_the_url() -> None:
    with pytest.raises(EndpointUnreachable, match="CURRENTS_EXPORT_AMPLITUDE_URL"):
        probe_upload(closed_port_url() + "/batch", KEY, flag="CURRENTS_EXPORT_AMPLITUDE_URL",
                     deadline_s=2)


def test_the_probe_says_a_refused_key_apart_from_an_unreachable_host(
    emulator: Emulator
) -> None:
    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"valid_api_keys": ["k"]}).raise_for_status()
    with pytest.raises(AmplitudeSetupError, match="rejected the API key") as refused:
        probe_upload(f"{emulator.url}/2/httpapi", KEY)
    assert KEY not in str(refused.value)


def test_check_finds_a_ledger_bound_elsewhere(emulator: Emulator, tmp_path: Path) -> None:
    fixtures(tmp_path)
    assert cli(tmp_path, "replay", str(tmp_path / "bucket"),
               "--amplitude-url", emulator.url).exit_code == 0
    other_key = "fedcba9876543210fedcba9876543210"
    checked = cli(tmp_path, "check", "--amplitude-url", emulator.url, key=other_key)
    assert checked.exit_code == 2
    assert "FAIL  ledger: " in checked.output and "another API key" in checked.output
    assert "ok    Amplitude" in checked.output  # the other checks still ran


def test_check_reads_an_s3_prefix(aws: str, emulator: Emulator, tmp_path: Path) -> None:
    files = fixtures(tmp_path)
    s3 = boto3.client("s3", endpoint_url=aws)
    s3.create_bucket(Bucket="acme")
    for fixture in files:
        s3.put_object(Bucket="acme", Key=fixture.key, Body=fixture.path.read_bytes())
    ok = cli(tmp_path, "check", "s3://acme/currents", "--s3-endpoint-url", aws,
             "--amplitude-url", emulator.url)
    assert ok.exit_code == 0, ok.output
    assert "s3://acme/currents: 2 Currents objects readable" in ok.output
    empty = cli(tmp_path, "check", "s3://acme/elsewhere", "--s3-endpoint-url", aws,
                "--amplitude-url", emulator.url)
    assert empty.exit_code == 2 and "FAIL  source: " in empty.output
    assert "no Currents objects under this prefix" in empty.output


@pytest.fixture
def deletions_config(tmp_path: Path) -> Iterator[Path]:
    config = tmp_path / "config.toml"
    config.write_text('lanes = 4\n\n[deletions]\nrequester = "privacy-team"\n')
    config.chmod(0o600)
    yield config


def test_check_and_submit_say_at_once_that_the_privacy_api_is_unreachable(
    emulator: Emulator, tmp_path: Path, deletions_config: Path
) -> None:
    env = {"CURRENTS_EXPORT_CONFIG": str(deletions_config),
           "AMPLITUDE_SECRET_KEY": "secret-0123456789"}
    ok = cli(tmp_path, "check", "--amplitude-url", emulator.url, "--privacy-url", emulator.url,
             env=env)
    assert ok.exit_code == 0, ok.output
    assert "ok    User Privacy API: " in ok.output
    assert [r["method"] for r in emulator.deletion_requests()] == ["GET"]  # a listing only
    dead = closed_port_url()
    checked = cli(tmp_path, "check", "--amplitude-url", emulator.url, "--privacy-url", dead,
                  env=env)
    assert checked.exit_code == 2 and "FAIL  User Privacy API: " in checked.output
    assert "wrong --privacy-url" in checked.output
    assert "secret-0123456789" not in checked.output
    # A submit says the same before any work (its ledger is made by a run first).
    assert cli(tmp_path, "replay", str(fixtures(tmp_path)[0].path), "--amplitude-url",
               emulator.url, env=env).exit_code == 0
    submit = CliRunner().invoke(main, [
        "deletions", "submit", "--state", str(tmp_path / "state" / "state.sqlite"),
        "--privacy-url", dead], env={"AMPLITUDE_API_KEY": KEY, **env})
    assert submit.exit_code == 2 and submit.output.count("wrong --privacy-url") == 1


def test_one_config_file_in_the_working_directory_serves_every_command(
    aws: str, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run options, [mapping] and [deletions] in one currents-export.toml, read by default
    from the working directory, used unchanged by every command."""
    monkeypatch.chdir(tmp_path)
    files = fixtures(tmp_path)
    config = tmp_path / "currents-export.toml"
    config.write_text(
        f'lanes = 4\napi = "http"\nstate = "ledger.sqlite"\ndead_letter = "dl"\n'
        f'amplitude_url = "{emulator.url}"\nprivacy_url = "{emulator.url}"\n'
        f'retry_horizon = 60\nsummary_json = "summary.json"\n'
        '[mapping]\nprofile = "plain"\n[deletions]\ngrace_period_s = 0\n')
    config.chmod(0o600)
    s3 = boto3.client("s3", endpoint_url=aws)
    s3.create_bucket(Bucket="acme")
    for fixture in files:
        s3.put_object(Bucket="acme", Key=fixture.key, Body=fixture.path.read_bytes())
    (tmp_path / "dl").mkdir(mode=0o700)
    env = {"AMPLITUDE_API_KEY": KEY, "AMPLITUDE_SECRET_KEY": "secret-0123456789",
           "AWS_ENDPOINT_URL": aws}
    commands = [
        ["check", "bucket"], ["replay", "bucket"], ["status"], ["inspect", "bucket"],
        ["backfill", "s3://acme/currents", "--force"], ["redrive", "dl"],
        ["deletions", "status"], ["deletions", "submit", "--dry-run"],
    ]
    for command in commands:
        result = CliRunner().invoke(main, command, env=env, catch_exceptions=False)
        assert result.exit_code == 0, (command, result.output)
    # It was read: the ledger and the profile it names were used.
    assert (tmp_path / "ledger.sqlite").exists()
    assert all(not e["event_type"].startswith("[Appboy]") for e in stored_events(emulator))
    assert orjson.loads((tmp_path / "summary.json").read_bytes())["deletions"] is not None
