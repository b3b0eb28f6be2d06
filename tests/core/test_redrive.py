"""Redrive: dead-lettered events re-sent; what is delivered leaves the dead letter."""

from __future__ import annotations

import logging
import os
import random
import stat
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from currents_export.amplitude.api import RequestLimits, RetryPolicy, endpoint_url
from currents_export.amplitude.client import AmplitudeClient
from currents_export.compose import lanes_over
from currents_export.core.redrive import Redrive
from currents_export.deadletter import (
    DeadLetter,
    DeadLetterDirectory,
    DirectoryStore,
    S3DeadLetter,
)
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import generate_fixtures
from currents_export.sources.s3 import s3_client
from tests.support.emulator import stored_events
from tests.support.runs import API_KEY, assert_balanced, read_all, replay, run_cli


def redrive(emulator: Emulator, directory: Path, *extra: str) -> tuple[int, dict]:
    summary_path = directory.parent / "redrive-summary.json"
    result = run_cli("redrive", str(directory), "--api-key", API_KEY, "--amplitude-url",
                     emulator.url, "--summary-json", str(summary_path), "--retry-horizon", "0",
                     *extra)
    return result.exit_code, orjson.loads(summary_path.read_bytes())


def dead_letter_lines(directory: Path) -> list[dict]:
    return [orjson.loads(line) for path in sorted(directory.glob("*.jsonl"))
            for line in path.read_bytes().splitlines()]


def test_redrive_after_fixing_the_cause_delivers_and_empties_the_dead_letter(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = generate_fixtures(tmp_path / "bucket", events_per_type=80, seed=21,
                              event_types=["users.behaviors.app.SessionEnd"])
    devices = Counter(r["device_id"] for _, r in read_all(files) if r.get("device_id"))
    silenced = [device for device, _ in devices.most_common(2)]
    httpx.patch(f"{emulator.url}/_emulator/config", json={"silenced_device_ids": silenced})
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert result.exit_code == 0
    refused = summary["dead_lettered"]["amplitude_silenced_device"]
    dead_letter = tmp_path / "dead-letter"
    assert len(dead_letter_lines(dead_letter)) == refused > 0

    # Still silenced: nothing delivered, the lines stay (and say so).
    code, again = redrive(emulator, dead_letter)
    assert code == 0
    assert again["delivered"] == 0 and again["records"] == refused
    assert again["dead_lettered"] == {"amplitude_silenced_device": refused}
    assert len(dead_letter_lines(dead_letter)) == refused

    httpx.patch(f"{emulator.url}/_emulator/config", json={"silenced_device_ids": []})
    before = len(stored_events(emulator))
    code, fixed = redrive(emulator, dead_letter)
    assert code == 0
    assert fixed["delivered"] == refused and fixed["dead_lettered"] == {}
    assert_balanced(fixed)
    assert len(stored_events(emulator)) == before + refused
    assert {e["device_id"] for e in stored_events(emulator)} >= set(silenced)
    assert dead_letter_lines(dead_letter) == []


def test_redrive_keeps_what_is_still_invalid_and_unreadable_lines(
    emulator: Emulator, tmp_path: Path
) -> None:
    dead_letter = tmp_path / "dl"
    dead_letter.mkdir()
    good = {"event_type": "e", "user_id": "user-0001", "insert_id": "ok-1", "time": 1}
    short = {"event_type": "e", "user_id": "abc", "insert_id": "short-1", "time": 1}
    lines = [
        {"reason": "amplitude_silenced_device", "detail": "", "object": "o", "record_index": 0,
         "event_type": "t", "record": {"id": "ok-1"}, "event": good},
        {"reason": "invalid_id", "detail": "", "object": "o", "record_index": 1,
         "event_type": "t", "record": {"id": "short-1"}, "event": short},
        {"reason": "no_time", "detail": "", "object": "o", "record_index": 2,
         "event_type": "t", "record": {"id": "x"}, "event": None},
        {"reason": "amplitude_silenced_device", "detail": "", "object": "o2", "record_index": 0,
         "event_type": "t", "record": {"id": "ok-1"}, "event": good},  # written twice
    ]
    (dead_letter / "dead-letter-1.jsonl").write_bytes(
        b"".join(orjson.dumps(line) + b"\n" for line in lines) + b'{"torn": '
    )
    code, summary = redrive(emulator, dead_letter)
    assert code == 0
    assert summary["delivered"] == 1 and summary["duplicates"] == 1
    assert summary["dead_lettered"] == {
        "invalid_id": 1, "no_time": 1, "dead_letter_line_not_json": 1
    }
    assert_balanced(summary)
    left = (dead_letter / "dead-letter-1.jsonl").read_bytes().splitlines()
    assert len(left) == 3 and left[-1] == b'{"torn": '
    assert [e["insert_id"] for e in stored_events(emulator)] == ["ok-1"]

    # With a shorter minimum id length the short id goes through too.
    code, summary = redrive(emulator, dead_letter, "--min-id-length", "3",
                            "--reason", "invalid_id")
    assert code == 0 and summary["delivered"] == 1 and summary["records"] == 2
    assert sorted(e["insert_id"] for e in stored_events(emulator)) == ["ok-1", "short-1"]


# ---- safe and complete: live writers, .part files, the redrive log, s3:// ------------------

SILENCED = "device-silenced-01"


def write_event(writer: DeadLetter, n: int, *, silenced: bool = False,
                reason: str = "amplitude_silenced_device") -> str:
    """One dead-letter line with a valid Amplitude event; returns its insert_id."""
    insert_id = f"dl-{n:06d}"
    event = {"event_type": "redriven", "user_id": f"user-{n:06d}",
             "device_id": SILENCED if silenced else f"device-{n % 7:04d}",
             "insert_id": insert_id, "time": 1_700_000_000_000 + n}
    writer.write(reason=reason, detail="", object_name="currents/o.avro", record_index=n,
                 event_type="t", record={"id": insert_id}, event=event)
    return insert_id


def silence(emulator: Emulator) -> None:
    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"silenced_device_ids": [SILENCED]}).raise_for_status()


def stored_ids(emulator: Emulator) -> Counter[str]:
    return Counter(e["insert_id"] for e in stored_events(emulator))


def ids_in(lines: list[dict]) -> Counter[str]:
    return Counter(line["event"]["insert_id"] for line in lines)


def read_log(location: str) -> list[dict]:
    return [orjson.loads(line) for line in Path(location).read_bytes().splitlines()]


def test_redrive_racing_a_live_writer_loses_nothing(emulator: Emulator, tmp_path: Path) -> None:
    silence(emulator)
    directory = tmp_path / "dl"
    directory.mkdir()
    writer = DeadLetterDirectory(directory)
    written: list[str] = []
    first_flush, stop = threading.Event(), threading.Event()
    runs = threading.Condition()
    runs_done = 0
    failure: list[BaseException] = []

    def write_until_stopped() -> None:
        rng = random.Random(5)
        try:
            n = 0
            while not stop.is_set() and n < 20_000:
                # Now and then a part big enough to be partly on disk (a torn last line)
                # stays open across a whole redrive run; otherwise a few lines per flush.
                hold = first_flush.is_set() and rng.random() < 0.3
                for _ in range(80 if hold else rng.randint(1, 25)):
                    written.append(write_event(writer, n, silenced=n % 5 == 4))
                    n += 1
                    time.sleep(0.0002)  # pacing only: keeps the files small
                if hold:
                    with runs:
                        target = runs_done + 2  # a whole run starts after this part was made
                        runs.wait_for(lambda: runs_done >= target or stop.is_set())  # noqa: B023
                writer.flush()
                first_flush.set()
        except BaseException as exc:  # pragma: no cover - reported below
            failure.append(exc)
            first_flush.set()
        finally:
            writer.close()

    thread = threading.Thread(target=write_until_stopped)
    thread.start()
    summaries = []
    try:
        assert first_flush.wait(60)
        for _ in range(10):  # every run overlaps the writer: it stops only after the last
            code, summary = redrive(emulator, directory)
            assert code == 0
            summaries.append(summary)
            with runs:
                runs_done += 1
                runs.notify_all()
    finally:
        stop.set()
        with runs:
            runs.notify_all()
        thread.join()
    assert not failure

    assert list(directory.glob("*.part")) == []
    delivered = stored_ids(emulator)
    left = ids_in(dead_letter_lines(directory))
    assert all(count == 1 for count in delivered.values())  # delivered exactly once
    assert all(count == 1 for count in left.values())  # and no line duplicated
    assert not delivered.keys() & left.keys()  # nothing both delivered and still waiting
    assert delivered.keys() | left.keys() == set(written)  # nothing lost
    assert len(written) == len(set(written))
    assert {i for i in written if int(i[3:]) % 5 == 4} <= left.keys()  # still silenced
    assert delivered  # the first run saw at least the first flushed file
    for summary in summaries:  # no run ever read a half-written line
        assert "dead_letter_line_not_json" not in summary["dead_lettered"]
        assert summary["objects_failed"] == 0
        assert_balanced(summary)
    # The redrive logs say the same as the emulator.
    logged = [line for s in summaries if s["redrive_log"] for line in read_log(s["redrive_log"])]
    assert Counter(x["insert_id"] for x in logged if x["outcome"] == "delivered") == delivered
    assert sum(s["delivered"] for s in summaries) == len(delivered)


def test_part_files_are_never_read_and_are_reported(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "dl"
    writer = DeadLetterDirectory(directory)
    flushed = [write_event(writer, n) for n in range(3)]
    writer.flush()
    unflushed = [write_event(writer, n) for n in range(3, 5)]  # still in a .part
    killed = directory / "dead-letter-20260101T000000Z-1-abcdef-000001.jsonl.part"
    killed.write_bytes(b'{"reason": "amplitude_silenced_device", "event": {"insert_i')
    parts_before = {p: p.read_bytes() for p in directory.glob("*.part")}
    assert len(parts_before) == 2

    with caplog.at_level(logging.WARNING, logger="currents_export.core.redrive"):
        result = run_cli("redrive", str(directory), "--api-key", API_KEY, "--amplitude-url",
                         emulator.url, "--summary-json", str(tmp_path / "s.json"),
                         "--retry-horizon", "0")
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert result.exit_code == 0, result.output
    assert summary["delivered"] == 3 and summary["records"] == 3
    assert summary["unclosed_part_files"] == 2
    assert "not read: 2 .part file(s)" in result.output
    assert any("2 dead-letter .part file(s)" in r.getMessage() for r in caplog.records)
    assert {p: p.read_bytes() for p in directory.glob("*.part")} == parts_before  # untouched
    assert sorted(stored_ids(emulator)) == flushed

    writer.close()  # the live writer finishes: its part becomes a closed file
    code, summary = redrive(emulator, directory)
    assert code == 0 and summary["delivered"] == 2 and summary["unclosed_part_files"] == 1
    assert sorted(stored_ids(emulator)) == flushed + unflushed
    assert [p.name for p in directory.iterdir() if p.is_file()] == [killed.name]


def test_redrive_log_records_every_line_re_sent_and_is_never_redriven(
    emulator: Emulator, tmp_path: Path
) -> None:
    silence(emulator)
    directory = tmp_path / "dl"
    writer = DeadLetterDirectory(directory)
    ok = [write_event(writer, n) for n in range(4)]
    refused = write_event(writer, 4, silenced=True, reason="amplitude_invalid_field:time")
    writer.close()
    [source] = directory.glob("*.jsonl")

    result = run_cli("redrive", str(directory), "--api-key", API_KEY, "--amplitude-url",
                     emulator.url, "--summary-json", str(tmp_path / "s.json"),
                     "--retry-horizon", "0")
    assert result.exit_code == 0, result.output
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    log_path = Path(summary["redrive_log"])
    assert log_path.parent == directory / "redrive-log"
    assert log_path.name.startswith("redrive-") and log_path.suffix == ".jsonl"
    assert f"redrive log: {log_path}" in result.output
    assert summary["resent"] == 5 and summary["delivered"] == 4
    log = {line["insert_id"]: line for line in read_log(str(log_path))}
    assert sorted(log) == [*ok, refused]
    for insert_id in ok:
        assert log[insert_id]["outcome"] == "delivered"
        assert log[insert_id]["reason"] == "amplitude_silenced_device"
        assert log[insert_id]["source"] == str(source)
        assert log[insert_id]["new_reason"] is None
    assert log[refused]["outcome"] == "refused"
    assert log[refused]["reason"] == "amplitude_invalid_field:time"
    assert log[refused]["new_reason"] == "amplitude_silenced_device"
    # What stays carries its latest reason; the file was rewritten owner-only.
    [left] = dead_letter_lines(directory)
    assert left["reason"] == "amplitude_silenced_device"
    assert left["previous_reason"] == "amplitude_invalid_field:time"
    assert source.stat().st_mode & 0o777 == 0o600

    # A second run reads the dead letter, not the log, and writes a log of its own.
    code, again = redrive(emulator, directory)
    assert code == 0 and again["records"] == 1 and again["delivered"] == 0
    assert again["resent"] == 1 and again["redrive_log"] != summary["redrive_log"]
    assert len(read_log(str(log_path))) == 5
    assert_balanced(again)


def test_a_file_that_fails_does_not_poison_the_next_one(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A lane failing while a file's events are still being submitted (its lane queue full)
    fails that file only: the next file is sent, not failed untried with the stale error or
    sent with the first file's packed events."""
    directory = tmp_path / "dl"
    directory.mkdir()
    failing_user = "user-failing-0001"

    def lines(numbers: range, user: str | None = None) -> bytes:
        return b"".join(orjson.dumps({
            "reason": "amplitude_silenced_device", "detail": "", "object": "o",
            "record_index": n, "event_type": "t", "record": {"id": f"dl-{n:06d}"},
            "event": {"event_type": "redriven", "user_id": user or f"user-{n:06d}",
                      "insert_id": f"dl-{n:06d}", "time": 1_700_000_000_000 + n},
        }) + b"\n" for n in numbers)

    first, second = directory / "a-first.jsonl", directory / "b-second.jsonl"
    first.write_bytes(lines(range(100), failing_user))  # 10 requests of 10 events, 1 lane
    second.write_bytes(lines(range(100, 130)))
    original_first = first.read_bytes()
    emulator.set_faults([{"action": "status", "status": 503, "ids": [failing_user]}])

    # The first 503 gives up at once (a zero horizon); the run's circuit (one failure: still
    # closed) lets the second file's requests go, and they succeed.
    client = AmplitudeClient(
        endpoint_url("batch", base_url=emulator.url), API_KEY,
        retry=RetryPolicy(initial_delay_s=10, max_delay_s=10, horizon_s=0),
        jitter=lambda: 0.5,
    )
    try:
        limits = RequestLimits(max_events=10, max_body_bytes=1_000_000)
        summary = Redrive(lanes_over(client, limits, 1, stop_on_failure=True),
                          min_id_length=5).run(DirectoryStore(directory))
    finally:
        client.close()

    assert summary.objects_failed == 1 and summary.objects_done == 1
    [failure] = summary.failures
    assert failure["object"] == str(first) and "pending for the next run" in failure["error"]
    assert sorted(stored_ids(emulator)) == [f"dl-{n:06d}" for n in range(100, 130)]
    assert summary.delivered == 30
    assert first.read_bytes() == original_first  # every line kept, as it was
    assert not second.exists()  # all delivered
    sent = [entry for entry in emulator.requests_log()]
    assert sum(1 for entry in sent if entry["status"] == 503) == 1  # tried once, given up


def test_redrive_of_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dead-letter"
    result = run_cli("redrive", str(missing), "--api-key", API_KEY)
    assert result.exit_code == 2
    assert str(missing) in result.output and "no such directory" in result.output
    result = run_cli("redrive", "s3://", "--api-key", API_KEY)
    assert result.exit_code == 2 and "s3://BUCKET/PREFIX" in result.output


def test_redrive_of_an_s3_dead_letter(emulator: Emulator, aws: str, tmp_path: Path) -> None:
    silence(emulator)
    s3 = s3_client(aws)
    s3.create_bucket(Bucket="dl-bucket")
    writer = S3DeadLetter(s3, "dl-bucket", "dead-letter")
    all_ok = [write_event(writer, n) for n in range(3)]
    writer.flush()  # object 1: everything deliverable
    mixed_ok = write_event(writer, 3)
    mixed_refused = write_event(writer, 4, silenced=True)
    writer.flush()  # object 2: one deliverable, one still silenced
    writer.close()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="dl-bucket")["Contents"])
    assert len(keys) == 2
    untouched = {"dead-letter/nested/dead-letter-x.jsonl": b"not json\n",
                 "dead-letter/dead-letter-y.jsonl.part": b'{"torn'}
    for key, body in untouched.items():
        s3.put_object(Bucket="dl-bucket", Key=key, Body=body)

    summary_path = tmp_path / "s.json"
    result = run_cli("redrive", "s3://dl-bucket/dead-letter", "--s3-endpoint-url", aws,
                     "--api-key", API_KEY, "--amplitude-url", emulator.url,
                     "--summary-json", str(summary_path), "--retry-horizon", "0")
    assert result.exit_code == 0, result.output
    summary = orjson.loads(summary_path.read_bytes())
    assert summary["delivered"] == 4 and summary["dead_lettered"] == {
        "amplitude_silenced_device": 1}
    assert summary["objects_done"] == 2 and summary["unclosed_part_files"] == 1
    assert_balanced(summary)
    assert sorted(stored_ids(emulator)) == [*all_ok, mixed_ok]

    listed = {o["Key"] for o in s3.list_objects_v2(Bucket="dl-bucket")["Contents"]}
    assert keys[0] not in listed  # nothing stayed: deleted
    rewritten = s3.get_object(Bucket="dl-bucket", Key=keys[1])
    assert [orjson.loads(x)["event"]["insert_id"]
            for x in rewritten["Body"].read().splitlines()] == [mixed_refused]
    assert rewritten["ServerSideEncryption"] == "AES256"
    for key, body in untouched.items():
        assert s3.get_object(Bucket="dl-bucket", Key=key)["Body"].read() == body

    assert summary["redrive_log"].startswith("s3://dl-bucket/dead-letter/redrive-log/redrive-")
    log_keys = sorted(k for k in listed if k.startswith("dead-letter/redrive-log/"))
    assert len(log_keys) == 2  # one per dead-letter object, written before its rewrite
    log = [orjson.loads(line) for key in log_keys
           for line in s3.get_object(Bucket="dl-bucket", Key=key)["Body"].read().splitlines()]
    assert {x["insert_id"]: x["outcome"] for x in log} == {
        **dict.fromkeys([*all_ok, mixed_ok], "delivered"), mixed_refused: "refused"}
    assert {x["source"] for x in log} == {f"s3://dl-bucket/{key}" for key in keys}
    assert all(s3.head_object(Bucket="dl-bucket", Key=key)["ServerSideEncryption"] == "AES256"
               for key in log_keys)

    # Run again: the log is not read back as dead letter.
    result = run_cli("redrive", "s3://dl-bucket/dead-letter", "--s3-endpoint-url", aws,
                     "--api-key", API_KEY, "--amplitude-url", emulator.url,
                     "--summary-json", str(summary_path), "--retry-horizon", "0")
    again = orjson.loads(summary_path.read_bytes())
    assert result.exit_code == 0 and again["records"] == 1 and again["delivered"] == 0


def test_redrive_of_a_missing_bucket_is_a_configuration_error(aws: str) -> None:
    result = run_cli("redrive", "s3://no-such-bucket/dl", "--s3-endpoint-url", aws,
                     "--api-key", API_KEY)
    assert result.exit_code == 2
    assert "s3://no-such-bucket/dl" in result.output


# ---- files only the owner can touch ---------------------------------------------------------

def one_line(n: int, device_id: str) -> bytes:
    return orjson.dumps({
        "reason": "amplitude_silenced_device", "detail": "", "object": "o", "record_index": n,
        "event_type": "t", "record": {"id": f"dl-{n:06d}"},
        "event": {"event_type": "redriven", "user_id": f"user-{n:06d}", "device_id": device_id,
                  "insert_id": f"dl-{n:06d}", "time": 1_700_000_000_000 + n},
    }) + b"\n"


def test_a_symlinked_dead_letter_file_is_refused_with_a_reason_and_left_alone(
    emulator: Emulator, tmp_path: Path
) -> None:
    directory = tmp_path / "dl"
    directory.mkdir()
    (directory / "a-good.jsonl").write_bytes(one_line(1, "device-0001"))
    target = tmp_path / "elsewhere" / "not-a-dead-letter.jsonl"
    target.parent.mkdir()
    target.write_bytes(one_line(2, "device-0002"))  # would be sent, then its link deleted
    link = directory / "b-link.jsonl"
    link.symlink_to(target)

    code, summary = redrive(emulator, directory)
    assert summary["delivered"] == 1 and summary["objects_done"] == 1
    assert summary["objects_failed"] == 1
    [failure] = summary["failures"]
    assert failure["object"] == str(link)
    assert f"a symbolic link to {target}, not read" in failure["error"]
    assert code == 1  # a failed file: the run is unfinished, and says so
    assert sorted(stored_ids(emulator)) == ["dl-000001"]  # the target's event was not sent
    assert link.is_symlink() and target.read_bytes() == one_line(2, "device-0002")
    assert not (directory / "a-good.jsonl").exists()


def test_a_link_planted_at_the_temporary_name_does_not_redirect_the_rewrite(
    emulator: Emulator, tmp_path: Path
) -> None:
    silence(emulator)
    directory = tmp_path / "dl"
    directory.mkdir()
    name = "dead-letter-1.jsonl"
    (directory / name).write_bytes(one_line(1, "device-0001") + one_line(2, SILENCED))
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"someone else's file\n")
    # Where the rewrite's temporary file used to go: ``.<name>.<pid>.tmp`` (the CLI runs in
    # this process).
    planted = directory / f".{name}.{os.getpid()}.tmp"
    planted.symlink_to(victim)

    code, summary = redrive(emulator, directory)
    assert code == 0 and summary["delivered"] == 1
    assert victim.read_bytes() == b"someone else's file\n"  # no personal data written there
    rewritten = directory / name
    assert not rewritten.is_symlink()
    assert rewritten.read_bytes() == one_line(2, SILENCED)
    assert planted.is_symlink()


def test_every_file_a_redrive_makes_is_owner_only_under_umask_0(
    emulator: Emulator, tmp_path: Path
) -> None:
    silence(emulator)
    old = os.umask(0)
    try:
        directory = tmp_path / "dl"
        writer = DeadLetterDirectory(directory)
        write_event(writer, 1)
        write_event(writer, 2, silenced=True)  # stays: the file is rewritten
        writer.close()
        code, summary = redrive(emulator, directory)
    finally:
        os.umask(old)
    assert code == 0 and summary["delivered"] == 1 and summary["resent"] == 2
    made = sorted(directory.rglob("*"))
    assert {p.relative_to(directory).parts[0] for p in made} >= {"redrive-log"}
    for path in [directory, *made]:
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_redrive_refuses_a_folder_others_can_write(emulator: Emulator, tmp_path: Path) -> None:
    directory = tmp_path / "dl"
    directory.mkdir()
    (directory / "dead-letter-1.jsonl").write_bytes(one_line(1, "device-0001"))
    os.chmod(directory, 0o777)
    result = run_cli("redrive", str(directory), "--api-key", API_KEY, "--amplitude-url",
                     emulator.url, "--retry-horizon", "0")
    assert result.exit_code == 2
    assert f"dead-letter folder {directory} can be written by other users" in result.output
    assert f"chmod 700 {directory}" in result.output
    assert stored_ids(emulator) == Counter()
    assert [p.name for p in directory.iterdir()] == ["dead-letter-1.jsonl"]
