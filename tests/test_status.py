"""`currents-export status` against a SQLite ledger and against DynamoDB (moto's server)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import boto3
import orjson
import pytest
from click.testing import CliRunner, Result

from currents_export.cli import main
from currents_export.ledger import DynamoDbLedger, Ledger, ObjectState, SqliteLedger
from currents_export.ledger.status import age_text, counts, render_text

HOUR, DAY = 3_600, 86_400
TABLE = "ledger"

DONE = "currents:event_type=users.messages.email.Send/date=2026-01-01-00/1/a/f+0+1.avro"
LEGACY_DONE = "/old/place/event_type=users.messages.email.Send/date=2026-01-01-00/1/a/g.avro"
BROKEN = "sha256:" + "ab" * 32
THROTTLED = "currents:event_type=users.behaviors.CustomEvent/date=2026-01-02-05/1/a/h+0+9.avro"
RUNNING = "currents:event_type=users.behaviors.Purchase/date=2026-01-03-00/1/a/i+0+2.avro"


def fill(ledger: Ledger) -> None:
    """Five objects: two done (one under an old-style path), a permanent failure, a
    retryable one and one in progress."""
    ledger.begin(DONE, location="/data/f+0+1.avro")
    ledger.complete(DONE, {"records": 10})
    ledger.begin(LEGACY_DONE)
    ledger.complete(LEGACY_DONE, {"records": 3})
    ledger.begin(BROKEN, location="s3://bucket/exports/broken.avro")
    ledger.fail(BROKEN, "not an Avro file:\nbad magic", permanent=True)
    ledger.begin(THROTTLED, location="s3://bucket/currents/h+0+9.avro")
    ledger.begin(THROTTLED, location="s3://bucket/currents/h+0+9.avro")
    ledger.fail(THROTTLED, "Amplitude unreachable for 600 s")
    ledger.begin(RUNNING, location="/data/i+0+2.avro")
    ledger.save_progress(RUNNING, 5_000, {"records": 5_000})


def status(*arguments: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["status", *arguments], env=env, catch_exceptions=False)


def table_rows(output: str) -> dict[str, str]:
    """The table's lines, by the object they start with."""
    return {line.split()[0]: line for line in output.splitlines()
            if line.startswith(("currents:", "sha256:", "/"))}


def check_table(output: str) -> None:
    assert "5 objects" in output
    assert "  done                           2" in output
    assert "  in progress or pending         1" in output
    assert "  failed                         2  (1 permanent, 1 retryable)" in output
    rows = table_rows(output)
    assert set(rows) == {BROKEN, THROTTLED, RUNNING}
    broken = rows[BROKEN].split()
    assert broken[1:5] == ["failed", "permanent", "1", "2"] and broken[5:8] == ["d", "ago",
                                                                                 "s3://bucket/exports/broken.avro"]
    assert rows[BROKEN].endswith("not an Avro file: bad magic")
    assert " retryable  2 " in rows[THROTTLED] and "3 h ago" in rows[THROTTLED]
    assert rows[THROTTLED].endswith("Amplitude unreachable for 600 s")
    assert "s3://bucket/currents/h+0+9.avro" in rows[THROTTLED]
    assert " in progress  retryable  1 " in rows[RUNNING] and "5 min ago" in rows[RUNNING]
    assert "/data/i+0+2.avro" in rows[RUNNING]
    lines = output.splitlines()
    order = [line.split()[0] for line in lines if line.split() and line.split()[0] in rows]
    assert order == [BROKEN, THROTTLED, RUNNING]  # permanent first, then retryable, then running
    header = next(line for line in lines if line.startswith("OBJECT"))
    assert header.split() == ["OBJECT", "STATUS", "RETRY", "ATTEMPTS", "CHANGED", "LAST",
                              "READ", "FROM", "REASON"]
    # the columns line up: every row's status starts under STATUS
    column = header.index("STATUS")
    assert all(rows[name][column - 2 : column] == "  " for name in rows)


def check_json(output: str) -> None:
    report = orjson.loads(output)
    assert report["counts"] == {"objects": 5, "done": 2, "in_progress": 1, "failed": 2,
                                "permanent": 1, "retryable": 1}
    objects = {o["object_id"]: o for o in report["objects"]}
    assert set(objects) == {BROKEN, THROTTLED, RUNNING}
    broken = objects[BROKEN]
    assert broken["status"] == "failed" and broken["permanent"] and not broken["retryable"]
    assert broken["error"] == "not an Avro file:\nbad magic"
    assert broken["location"] == "s3://bucket/exports/broken.avro"
    assert broken["age"] == "2 d ago" and 2 * DAY <= broken["age_s"] < 2 * DAY + 600
    assert broken["finished_at"] is not None and broken["attempts"] == 1
    throttled = objects[THROTTLED]
    assert throttled["retryable"] and not throttled["permanent"] and throttled["attempts"] == 2
    assert throttled["age"] == "3 h ago"
    running = objects[RUNNING]
    assert running["status"] == "in_progress" and running["next_index"] == 5_000
    assert running["finished_at"] is None and running["age"] == "5 min ago"


# ---- SQLite -------------------------------------------------------------------------------

@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Path:
    path = tmp_path / "state.sqlite"
    ledger = SqliteLedger(path)
    fill(ledger)
    ledger.close()
    now = time.time()
    with sqlite3.connect(path) as db:  # age the rows as if written a while ago
        for object_id, age in [(BROKEN, 2 * DAY + 60), (THROTTLED, 3 * HOUR + 60),
                               (RUNNING, 5 * 60 + 10), (DONE, 10 * DAY), (LEGACY_DONE, 400)]:
            db.execute("UPDATE objects SET updated_at = ? WHERE object_id = ?",
                       (now - age, object_id))
    return path


def test_status_lists_what_is_not_done_with_reasons_places_and_ages(sqlite_ledger: Path) -> None:
    result = status("--state", str(sqlite_ledger))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Ledger {sqlite_ledger}: 5 objects")
    check_table(result.output)


def test_status_all_lists_the_done_objects_too(sqlite_ledger: Path) -> None:
    result = status("--state", str(sqlite_ledger), "--all")
    rows = table_rows(result.output)
    assert set(rows) == {BROKEN, THROTTLED, RUNNING, DONE, LEGACY_DONE}
    assert rows[DONE].split()[1:3] == ["done", "-"] and "10 d ago" in rows[DONE]
    assert "/data/f+0+1.avro" in rows[DONE]
    assert "6 min ago" in rows[LEGACY_DONE] and rows[LEGACY_DONE].rstrip().endswith("-")
    order = [line.split()[0] for line in result.output.splitlines() if line.split()
             and line.split()[0] in rows]
    assert order[:3] == [BROKEN, THROTTLED, RUNNING] and set(order[3:]) == {DONE, LEGACY_DONE}


def test_status_json(sqlite_ledger: Path) -> None:
    result = status("--state", str(sqlite_ledger), "--json")
    assert result.exit_code == 0
    check_json(result.output)
    assert orjson.loads(result.output)["ledger"] == str(sqlite_ledger)
    every = orjson.loads(status("--state", str(sqlite_ledger), "--json", "--all").output)
    assert len(every["objects"]) == 5
    done = next(o for o in every["objects"] if o["object_id"] == DONE)
    assert done["status"] == "done" and not done["retryable"] and done["age"] == "10 d ago"


def test_the_state_comes_from_the_environment(sqlite_ledger: Path) -> None:
    result = status(env={"CURRENTS_EXPORT_STATE": str(sqlite_ledger)})
    assert result.exit_code == 0 and "5 objects" in result.output


def test_an_old_ledger_file_is_listed(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("""CREATE TABLE objects (
            object_id TEXT PRIMARY KEY,
            status TEXT NOT NULL CHECK (status IN ('in_progress', 'done', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0, next_index INTEGER NOT NULL DEFAULT 0,
            figures TEXT, error TEXT, started_at REAL, updated_at REAL NOT NULL)""")
        db.execute("INSERT INTO objects VALUES ('/a.avro', 'done', 1, 0, NULL, NULL, 1, ?)",
                   (time.time(),))
        db.execute("INSERT INTO objects VALUES ('/b.avro', 'failed', 3, 0, NULL, 'boom', 1, ?)",
                   (time.time() - 90,))
    result = status("--state", str(path))
    assert result.exit_code == 0
    rows = table_rows(result.output)
    assert set(rows) == {"/b.avro"}
    assert rows["/b.avro"].split() == ["/b.avro", "failed", "retryable", "3", "1", "min", "ago",
                                       "-", "boom"]


def test_a_ledger_with_nothing_left_says_so(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    ledger = SqliteLedger(path)
    ledger.begin(DONE)
    ledger.complete(DONE, {})
    ledger.close()
    result = status("--state", str(path))
    assert result.exit_code == 0 and "Every object is done." in result.output
    assert table_rows(result.output) == {}


def test_a_missing_sqlite_ledger_is_reported_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "state.sqlite"
    result = status("--state", str(missing))
    assert result.exit_code == 2
    assert f"there is no ledger at {missing}" in result.stderr
    assert not missing.parent.exists()


# ---- DynamoDB -----------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_status_of_a_dynamodb_ledger(aws: str) -> None:
    DynamoDbLedger.create_table(boto3.client("dynamodb", endpoint_url=aws), TABLE)
    clock = Clock()
    ledger = DynamoDbLedger(TABLE, endpoint_url=aws, owner="worker", clock=clock)
    now = clock.now
    steps = {DONE: 10 * DAY, LEGACY_DONE: 400, BROKEN: 2 * DAY + 60,
             THROTTLED: 3 * HOUR + 60, RUNNING: 5 * 60 + 10}

    class Aged:  # each object's writes happen at its own time in the past
        def __getattr__(self, name: str) -> object:
            method = getattr(ledger, name)

            def call(object_id: str, *args: object, **kwargs: object) -> object:
                clock.now = now - steps[object_id]
                return method(object_id, *args, **kwargs)

            return call

    fill(Aged())  # type: ignore[arg-type]
    env = {"AWS_ENDPOINT_URL": aws}
    result = status("--state", f"dynamodb://{TABLE}", env=env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Ledger dynamodb://{TABLE}: 5 objects")
    check_table(result.output)
    check_json(status("--state", f"dynamodb://{TABLE}", "--json", env=env).output)
    every = orjson.loads(status("--state", f"dynamodb://{TABLE}", "--json", "--all",
                                env=env).output)
    assert {o["object_id"] for o in every["objects"]} == set(steps)


def test_a_missing_dynamodb_table_is_a_configuration_error(aws: str) -> None:
    result = status("--state", "dynamodb://no-such-table", env={"AWS_ENDPOINT_URL": aws})
    assert result.exit_code == 2
    assert "'no-such-table' does not exist" in result.stderr


# ---- rendering ----------------------------------------------------------------------------

@pytest.mark.parametrize(("seconds", "text"), [
    (0.2, "just now"), (59, "59 s ago"), (60, "1 min ago"), (3_599, "59 min ago"),
    (3_600, "1 h ago"), (3 * HOUR + 59 * 60, "3 h ago"), (DAY - 1, "23 h ago"),
    (DAY, "1 d ago"), (2 * DAY + 5, "2 d ago"), (400 * DAY, "400 d ago"),
])
def test_ages_read_in_whole_units(seconds: float, text: str) -> None:
    assert age_text(seconds) == text


def test_rendering_is_a_function_of_the_states_and_the_time() -> None:
    state = ObjectState(object_id="sha256:00", status="failed", permanent=False,
                        error="x" * 500, location=None, attempts=4, next_index=0,
                        started_at=None, updated_at=1_000.0, finished_at=1_000.0)
    text = render_text([state], source="mem", now=1_000.0 + 2 * HOUR)
    assert counts([state])["retryable"] == 1
    line = table_rows(text)["sha256:00"]
    assert "2 h ago" in line and line.endswith("x" * 159 + "…")
    assert render_text([], source="mem", now=0).endswith("The ledger is empty.")
