"""Secrets and data at rest: no repr shows a secret, -vv never prints AWS tokens or keys, a key
on the command line is warned about, local files are owner-only, S3 dead letters can use KMS."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3
import httpx
import orjson
import pytest
from click.testing import CliRunner, Result

from currents_export.amplitude.batching import Envelope
from currents_export.amplitude.client import AmplitudeClient
from currents_export.cli import main
from currents_export.compose import build_client
from currents_export.deadletter import (
    DirectoryStore,
    S3DeadLetter,
    S3Store,
    open_dead_letter,
)
from currents_export.deletions.privacy_api import PrivacyClient
from currents_export.errors import DeadLetterConfigError
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile, generate_fixtures
from currents_export.ledger import SqliteLedger
from currents_export.mapping import MappingOptions
from currents_export.settings import Settings
from currents_export.settings.keys import ApiKeyProvider, ApiKeySource
from currents_export.stopping import Stop
from currents_export.support.logs import WIRE_LOGGERS
from tests.support.emulator import stored_events
from tests.support.runs import API_KEY, read_all

KEY_MARKER = "apikey-MARKER-5f1e2d3c"
SALT_MARKER = "salt-MARKER-0123456789abcdef"
SECRET_ACCESS_KEY_MARKER = "secretaccesskey-MARKER-9a8b7c"
SESSION_TOKEN_MARKER = "sessiontoken-MARKER-4d5e6f"
MARKERS = (KEY_MARKER, SALT_MARKER, SECRET_ACCESS_KEY_MARKER, SESSION_TOKEN_MARKER)
BUCKET = "acme-currents"
CUSTOM = "users.behaviors.CustomEvent"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The most permissive umask: what we create must be private by itself."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def small_fixtures(root: Path, seed: int = 5) -> list[FixtureFile]:
    return generate_fixtures(root, events_per_type=40, event_types=[CUSTOM], files_per_type=1,
                             seed=seed)


# ---- 1. reprs ------------------------------------------------------------------------------------

def test_no_repr_shows_the_api_key_the_salt_or_the_url_credentials() -> None:
    envelope = Envelope.build(KEY_MARKER, {"min_id_length": 5})
    client = AmplitudeClient(f"https://user:{SECRET_ACCESS_KEY_MARKER}@api2.amplitude.com/batch",
                             KEY_MARKER)
    privacy = PrivacyClient(f"https://user:{SECRET_ACCESS_KEY_MARKER}@amplitude.com"
                            "/api/2/deletions/users", KEY_MARKER, SALT_MARKER)
    try:
        options = MappingOptions(pii={"external_user_id": "hash"},
                                 pii_salt=SALT_MARKER.encode())
        settings = Settings(place="lambda", api_key=KEY_MARKER, state="dynamodb://t",
                            dead_letter="s3://b/p", mapping=options,
                            dead_letter_kms_key="alias/dead-letter")
        env = {"AMPLITUDE_API_KEY": KEY_MARKER}
        provider = ApiKeyProvider(ApiKeySource.from_env(env), env)
        assert provider.get() == KEY_MARKER  # cached in the object now
        shown = [repr(envelope), str(envelope), repr(client), str(client), repr(client.envelope),
                 repr(options), str(options), repr(settings), str(settings), repr(provider),
                 repr(provider.source), repr(open_dead_letter("s3://b/p", s3_client=object(),
                                                              kms_key="alias/k")),
                 repr(privacy), str(privacy)]
        for text in shown:
            for marker in (KEY_MARKER, SALT_MARKER, SECRET_ACCESS_KEY_MARKER):
                assert marker not in text, text
        assert "api2.amplitude.com" in repr(client) and "overhead=" in repr(envelope)
        assert repr(privacy) == "PrivacyClient('https://amplitude.com/api/2/deletions/users')"
        assert KEY_MARKER.encode() in envelope.head  # still sent, only not shown
    finally:
        client.close()
        privacy.close()


def test_the_lambda_runtime_repr_names_where_things_are_not_what_they_hold(
    aws: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from currents_export.aws_lambda import Runtime

    config = tmp_path / "currents-export.toml"
    config.write_text('[mapping.pii]\nexternal_user_id = "hash"\n')
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    env = {"AMPLITUDE_API_KEY": KEY_MARKER, "CURRENTS_EXPORT_STATE": "dynamodb://t",
           "CURRENTS_EXPORT_DEAD_LETTER": "s3://b/p", "CURRENTS_EXPORT_CONFIG": str(config),
           "CURRENTS_EXPORT_PII_SALT": SALT_MARKER}
    runtime = Runtime(env)
    stack = ExitStack()
    client = build_client(runtime.settings, runtime.api_key.get(), Stop(), stack)
    try:
        for text in (repr(runtime), str(runtime), repr(runtime.settings), repr(client),
                     repr(runtime.api_key)):
            assert KEY_MARKER not in text and SALT_MARKER not in text, text
        assert "dynamodb://t" in repr(runtime)
    finally:
        stack.close()


# ---- 2. no wire logs at -vv / DEBUG --------------------------------------------------------------

def bucket_with_refused_events(
    aws: str, emulator: Emulator, tmp_path: Path
) -> tuple[Any, list[FixtureFile]]:
    """Small Currents files in the bucket, three of their devices silenced in the emulator
    (so a backfill dead-letters some events)."""
    s3 = boto3.client("s3", endpoint_url=aws)
    s3.create_bucket(Bucket=BUCKET)
    files = small_fixtures(tmp_path / "fixtures")
    for fixture in files:
        s3.put_object(Bucket=BUCKET, Key=fixture.key, Body=fixture.path.read_bytes())
    devices = [r["device_id"] for _, r in read_all(files) if r.get("device_id")]
    httpx.patch(f"{emulator.url}/_emulator/config", json={"silenced_device_ids": devices[:3]})
    return s3, files


def test_backfill_at_vv_prints_no_aws_token_secret_key_api_key_or_salt(
    aws: str, emulator: Emulator, tmp_path: Path
) -> None:
    s3, _ = bucket_with_refused_events(aws, emulator, tmp_path)
    config = tmp_path / "currents-export.toml"
    config.write_text('[mapping.pii]\nexternal_user_id = "hash"\n')
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY_MARKER,
           "AWS_SESSION_TOKEN": SESSION_TOKEN_MARKER, "AWS_DEFAULT_REGION": "us-east-1",
           "AMPLITUDE_API_KEY": KEY_MARKER, "CURRENTS_EXPORT_PII_SALT": SALT_MARKER}
    done = subprocess.run(
        [sys.executable, "-m", "currents_export", "backfill", f"s3://{BUCKET}/currents", "-vv",
         "--s3-endpoint-url", aws, "--amplitude-url", emulator.url, "--config", str(config),
         "--state", str(tmp_path / "state.sqlite"), "--dead-letter",
         f"s3://{BUCKET}/dead-letter", "--summary-json", str(tmp_path / "summary.json"),
         "--retry-horizon", "0", "--no-progress"],
        capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["delivered"] > 0 and sum(summary["dead_lettered"].values()) > 0
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="dead-letter/")["KeyCount"] > 0
    output = done.stdout + done.stderr
    for marker in MARKERS:
        assert marker not in output, marker
    assert "--api-key on the command line" not in output  # it came from the environment


def test_the_cli_keeps_wire_loggers_at_warning_at_vv() -> None:
    import logging

    from currents_export.support.logs import setup_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    try:
        setup_logging(2)
        for name in (*WIRE_LOGGERS, "botocore.endpoint", "botocore.auth",
                     "urllib3.connectionpool"):
            assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


# ---- 3. a key on the command line ----------------------------------------------------------------

def replay_args(emulator: Emulator, work: Path, files: list[FixtureFile]) -> list[str]:
    return ["replay", *(str(f.path) for f in files), "--amplitude-url", emulator.url,
            "--state", str(work / "state.sqlite"), "--dead-letter", str(work / "dl"),
            "--retry-horizon", "0"]


def run(args: list[str], env: dict[str, str] | None = None) -> Result:
    clean = {"AMPLITUDE_API_KEY": None, "CURRENTS_EXPORT_API_KEY": None,
             "CURRENTS_EXPORT_API_KEY_FILE": None}
    return CliRunner().invoke(main, args, env={**clean, **(env or {})}, catch_exceptions=False)


def accept_only(emulator: Emulator, key: str) -> None:
    httpx.patch(f"{emulator.url}/_emulator/config", json={"valid_api_keys": [key]})


def test_a_key_on_the_command_line_is_warned_about_and_one_from_elsewhere_is_not(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = small_fixtures(tmp_path / "fixtures")
    accept_only(emulator, API_KEY)
    typed = run([*replay_args(emulator, tmp_path / "a", files), "--api-key", API_KEY])
    assert typed.exit_code == 0, typed.output
    assert "--api-key on the command line is visible to every user" in typed.stderr
    assert "AMPLITUDE_API_KEY" in typed.stderr and "--api-key-file" in typed.stderr
    assert API_KEY not in typed.output

    for env in ({"AMPLITUDE_API_KEY": API_KEY}, {"CURRENTS_EXPORT_API_KEY": API_KEY}):
        quiet = run([*replay_args(emulator, tmp_path / "b", files), "--force"], env=env)
        assert quiet.exit_code == 0, quiet.output
        assert "Warning" not in quiet.stderr
    config = tmp_path / "options.toml"
    config.write_text(f'api_key = "{API_KEY}"\n')
    os.chmod(config, 0o600)
    from_file = run([*replay_args(emulator, tmp_path / "c", files), "--config", str(config)])
    assert from_file.exit_code == 0, from_file.output
    assert "Warning" not in from_file.stderr


def test_api_key_file_is_read_stripped_and_checked(emulator: Emulator, tmp_path: Path) -> None:
    files = small_fixtures(tmp_path / "fixtures")
    accept_only(emulator, API_KEY)
    key_file = tmp_path / "amplitude.key"
    key_file.write_text(f"  {API_KEY}\n")
    os.chmod(key_file, 0o600)
    ok = run([*replay_args(emulator, tmp_path / "a", files), "--api-key-file", str(key_file)],
             env={"AMPLITUDE_API_KEY": "a-stale-key-from-the-shell"})  # the option wins
    assert ok.exit_code == 0, ok.output
    assert "Warning" not in ok.stderr
    assert len(stored_events(emulator)) > 0

    os.chmod(key_file, 0o644)
    shared = run([*replay_args(emulator, tmp_path / "b", files), "--force"],
                 env={"CURRENTS_EXPORT_API_KEY_FILE": str(key_file)})
    assert shared.exit_code == 0, shared.output
    assert f"--api-key-file {key_file} can be read by other users" in shared.stderr
    assert "chmod 600" in shared.stderr

    missing = run([*replay_args(emulator, tmp_path / "c", files), "--api-key-file",
                   str(tmp_path / "nope.key")])
    assert missing.exit_code == 2
    assert "--api-key-file" in missing.stderr and "no such file" in missing.stderr
    empty = tmp_path / "empty.key"
    empty.write_text(" \n")
    os.chmod(empty, 0o600)
    blank = run([*replay_args(emulator, tmp_path / "d", files), "--api-key-file", str(empty)])
    assert blank.exit_code == 2
    assert "--api-key-file" in blank.stderr and "empty" in blank.stderr
    both = run([*replay_args(emulator, tmp_path / "e", files), "--api-key", API_KEY,
                "--api-key-file", str(key_file)])
    assert both.exit_code == 2 and "--api-key or --api-key-file" in both.output


# ---- 4. owner-only local files -------------------------------------------------------------------

def test_the_sqlite_ledger_and_its_folder_are_owner_only(
    tmp_path: Path, umask_zero: None
) -> None:
    path = tmp_path / ".currents-export" / "nested" / "state.sqlite"
    ledger = SqliteLedger(path)
    try:
        ledger.begin("currents:x")
        assert mode(tmp_path / ".currents-export") == 0o700
        assert mode(path.parent) == 0o700
        for name in ("state.sqlite", "state.sqlite-wal", "state.sqlite-shm"):
            assert mode(path.parent / name) == 0o600, name
    finally:
        ledger.close()
    existing = tmp_path / "shared"
    existing.mkdir(mode=0o755)
    SqliteLedger(existing / "state.sqlite").close()
    assert mode(existing) == 0o755  # a folder we did not create keeps its mode
    assert mode(existing / "state.sqlite") == 0o600
    # A ledger an earlier version left readable by others is tightened when opened.
    os.chmod(existing / "state.sqlite", 0o644)
    SqliteLedger(existing / "state.sqlite").close()
    assert mode(existing / "state.sqlite") == 0o600


def test_replay_state_output_and_dead_letter_files_are_owner_only(
    emulator: Emulator, tmp_path: Path, umask_zero: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = small_fixtures(tmp_path / "fixtures")
    devices = [r["device_id"] for _, r in read_all(files) if r.get("device_id")]
    httpx.patch(f"{emulator.url}/_emulator/config", json={"silenced_device_ids": devices[:3]})
    work = tmp_path / "work"
    work.mkdir(mode=0o755)
    monkeypatch.chdir(work)  # the default .currents-export/ folder, made here
    output = work / "mapped.jsonl"
    output.write_bytes(b"an older file, world-readable\n")
    os.chmod(output, 0o644)
    result = run(["replay", *(str(f.path) for f in files), "--amplitude-url", emulator.url,
                  "--retry-horizon", "0", "--output", str(output)],
                 env={"AMPLITUDE_API_KEY": API_KEY})
    assert result.exit_code == 0, result.output
    assert mode(work / ".currents-export") == 0o700
    assert mode(work / ".currents-export" / "state.sqlite") == 0o600
    dead_letter = work / ".currents-export" / "dead-letter"
    assert mode(dead_letter) == 0o700
    written = list(dead_letter.iterdir())
    assert written and all(mode(path) == 0o600 for path in written)
    assert mode(output) == 0o600 and output.read_bytes().count(b"\n") > 0

    nested = tmp_path / "new" / "deeper" / "dl"
    letter = open_dead_letter(str(nested))
    letter.write(reason="r", detail="d", object_name="o", record_index=0, event_type=CUSTOM,
                 record={"id": "1"}, event=None)
    letter.close()
    assert [mode(p) for p in (tmp_path / "new", tmp_path / "new" / "deeper", nested)] == [
        0o700] * 3
    assert all(mode(path) == 0o600 for path in nested.iterdir())
    store = DirectoryStore(nested)
    store.append_log("redrive-1", b"{}\n")
    [name] = store.names()
    store.replace(name, b"{}\n")
    assert mode(nested / "redrive-log") == 0o700
    assert all(mode(p) == 0o600 for p in (nested / "redrive-log").iterdir())
    assert mode(nested / name) == 0o600


# ---- 5. SSE-KMS dead letters ---------------------------------------------------------------------

def kms_key(aws: str) -> str:
    key: str = boto3.client("kms", endpoint_url=aws).create_key()["KeyMetadata"]["Arn"]
    return key


def encryption(s3: Any, key: str) -> tuple[str, str | None]:
    head = s3.head_object(Bucket=BUCKET, Key=key)
    return head["ServerSideEncryption"], head.get("SSEKMSKeyId")


def test_s3_dead_letters_use_sse_s3_or_the_kms_key(aws: str) -> None:
    s3 = boto3.client("s3", endpoint_url=aws)
    s3.create_bucket(Bucket=BUCKET)
    key = kms_key(aws)
    for prefix, letter in (("plain", S3DeadLetter(s3, BUCKET, "plain")),
                           ("kms", S3DeadLetter(s3, BUCKET, "kms", kms_key=key))):
        letter.write(reason="r", detail="d", object_name="o", record_index=0, event_type=CUSTOM,
                     record={"id": "1"}, event=None)
        letter.flush()
        [item] = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")["Contents"]
        expected = ("AES256", None) if prefix == "plain" else ("aws:kms", key)
        assert encryption(s3, item["Key"]) == expected

    # A redrive rewrites an object under the key it had, and logs under it too.
    store = S3Store(s3, BUCKET, "kms")
    [name] = store.names()
    store.read(name)
    store.replace(name, b"{}\n")
    store.append_log("redrive-1", b"{}\n")
    assert encryption(s3, f"kms/{name}") == ("aws:kms", key)
    [log] = s3.list_objects_v2(Bucket=BUCKET, Prefix="kms/redrive-log/")["Contents"]
    assert encryption(s3, log["Key"]) == ("aws:kms", key)

    with pytest.raises(DeadLetterConfigError, match="--dead-letter-kms-key"):
        open_dead_letter("local-dir", kms_key=key)


def test_backfill_writes_its_dead_letter_under_the_kms_key(
    aws: str, emulator: Emulator, tmp_path: Path
) -> None:
    s3, files = bucket_with_refused_events(aws, emulator, tmp_path)
    key = kms_key(aws)
    common = ["backfill", f"s3://{BUCKET}/currents", "--s3-endpoint-url", aws,
              "--amplitude-url", emulator.url, "--state", str(tmp_path / "state.sqlite"),
              "--dead-letter", f"s3://{BUCKET}/dead-letter", "--retry-horizon", "0",
              "--no-progress"]
    by_option = run([*common, "--dead-letter-kms-key", key], env={"AMPLITUDE_API_KEY": API_KEY})
    assert by_option.exit_code == 0, by_option.output
    by_variable = run([*common, "--force"], env={"AMPLITUDE_API_KEY": API_KEY,
                                                 "CURRENTS_EXPORT_DEAD_LETTER_KMS_KEY": key})
    assert by_variable.exit_code == 0, by_variable.output
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="dead-letter/")["Contents"]
    assert len(listed) >= 2
    assert {encryption(s3, item["Key"]) for item in listed} == {("aws:kms", key)}

    local = run(["replay", str(files[0].path), "--amplitude-url", emulator.url,
                 "--state", str(tmp_path / "local.sqlite"), "--dead-letter",
                 str(tmp_path / "dl"), "--dead-letter-kms-key", key],
                env={"AMPLITUDE_API_KEY": API_KEY})
    assert local.exit_code == 2 and "--dead-letter-kms-key" in local.output
