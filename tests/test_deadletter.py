"""The dead-letter writers: closed files only after a flush, owner-only files, encrypted
objects; and the read side (stores) redrive uses."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from currents_export.deadletter import (
    DeadLetterDirectory,
    DirectoryStore,
    S3DeadLetter,
    S3Store,
    open_dead_letter,
    open_dead_letter_store,
)
from currents_export.errors import DeadLetterConfigError, DeadLetterStoreError
from currents_export.sources.s3 import s3_client

BUCKET = "dead-letters"


def write_line(dead_letter: DeadLetterDirectory | S3DeadLetter, n: int,
               device_id: str = "device-0001") -> None:
    event = {"event_type": "e", "user_id": f"user-{n:06d}", "device_id": device_id,
             "insert_id": f"dl-{n:06d}", "time": 1_700_000_000_000 + n}
    dead_letter.write(reason="amplitude_silenced_device", detail="", object_name="o",
                      record_index=n, event_type="t", record={"id": f"dl-{n:06d}"}, event=event)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0: any mode narrower than 0o666 comes from the code, not from the umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def s3(aws: str) -> Any:
    client = s3_client(aws)
    client.create_bucket(Bucket=BUCKET)
    return client


def test_lines_are_in_a_part_file_until_flush_then_in_a_closed_file(tmp_path: Path) -> None:
    directory = tmp_path / "dl"
    writer = DeadLetterDirectory(directory)
    writer.flush()  # nothing written: nothing created
    assert not directory.exists() and writer.files == []

    write_line(writer, 1)
    write_line(writer, 2)
    assert [p.name.endswith(".jsonl.part") for p in directory.iterdir()] == [True]
    assert list(directory.glob("*.jsonl")) == []
    writer.flush()
    [first] = directory.iterdir()
    assert first.suffix == ".jsonl"
    assert [orjson.loads(x)["record_index"] for x in first.read_bytes().splitlines()] == [1, 2]

    writer.flush()  # no new line since: no new file
    assert list(directory.iterdir()) == [first]

    write_line(writer, 3)
    assert len(list(directory.glob("*.jsonl.part"))) == 1
    writer.close()  # close flushes
    files = sorted(directory.iterdir())
    assert len(files) == 2 and files[0] == first and all(p.suffix == ".jsonl" for p in files)
    assert files[1].read_bytes().count(b"\n") == 1
    assert writer.written == 3
    # ``files`` names every file of the run, in writing order, and only them.
    assert [Path(p) for p in writer.files] == files


def test_file_names_are_unique_and_sort_in_writing_order(tmp_path: Path) -> None:
    writers = [DeadLetterDirectory(tmp_path), DeadLetterDirectory(tmp_path)]
    for n in range(12):
        writer = writers[n % 2]
        write_line(writer, n)
        writer.flush()
    names = [p.name for p in tmp_path.glob("*.jsonl")]
    assert len(set(names)) == 12
    for writer in writers:  # within one writer, name order is writing order
        mine = sorted(Path(p).name for p in writer.files)
        assert mine == [Path(p).name for p in writer.files]
        indexes = [orjson.loads((tmp_path / name).read_bytes())["record_index"] for name in mine]
        assert indexes == sorted(indexes)


def test_dead_letter_files_are_owner_only(tmp_path: Path, open_umask: None) -> None:
    writer = DeadLetterDirectory(tmp_path / "dl")
    write_line(writer, 1)
    [part] = (tmp_path / "dl").glob("*.part")
    assert mode(part) == 0o600
    writer.close()
    [closed] = (tmp_path / "dl").glob("*.jsonl")
    assert mode(closed) == 0o600
    assert mode(tmp_path / "dl") == 0o700

    store = DirectoryStore(tmp_path / "dl")
    store.replace(closed.name, b'{"x": 1}\n')
    assert mode(closed) == 0o600 and closed.read_bytes() == b'{"x": 1}\n'
    assert [p.name for p in (tmp_path / "dl").iterdir()] == [closed.name]  # no temporary left
    store.append_log("redrive-x", b"{}\n")
    store.append_log("redrive-x", b"{}\n")
    log = Path(store.log_location("redrive-x"))
    assert log.read_bytes() == b"{}\n{}\n" and mode(log) == 0o600
    assert store.names() == [closed.name]  # the log folder is not an entry


def test_s3_dead_letter_objects_are_encrypted_and_typed(s3: Any) -> None:
    writer = S3DeadLetter(s3, BUCKET, "dead-letter/")
    writer.flush()  # nothing written: no object
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    write_line(writer, 1)
    writer.flush()
    write_line(writer, 2)
    writer.close()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert len(keys) == 2 and keys == sorted(keys)
    for key in keys:
        assert key.startswith("dead-letter/dead-letter-") and key.endswith(".jsonl")
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "AES256"
        assert head["ContentType"] == "application/x-ndjson"


def test_s3_store_lists_every_page_and_only_direct_entries(s3: Any) -> None:
    for n in range(7):
        s3.put_object(Bucket=BUCKET, Key=f"dl/dead-letter-{n}.jsonl", Body=b"{}\n")
    s3.put_object(Bucket=BUCKET, Key="dl/redrive-log/redrive-1.jsonl", Body=b"{}\n")
    s3.put_object(Bucket=BUCKET, Key="dl/nested/dead-letter-9.jsonl", Body=b"{}\n")
    s3.put_object(Bucket=BUCKET, Key="dl-other/dead-letter-8.jsonl", Body=b"{}\n")
    store = S3Store(s3, BUCKET, "dl", page_size=2)
    assert store.names() == [f"dead-letter-{n}.jsonl" for n in range(7)]

    store.replace("dead-letter-0.jsonl", b'{"kept": 1}\n')
    assert store.read("dead-letter-0.jsonl") == b'{"kept": 1}\n'
    head = s3.head_object(Bucket=BUCKET, Key="dl/dead-letter-0.jsonl")
    assert head["ServerSideEncryption"] == "AES256"
    store.delete("dead-letter-1.jsonl")
    with pytest.raises(FileNotFoundError):
        store.read("dead-letter-1.jsonl")
    store.append_log("redrive-x", b"{}\n")
    store.append_log("redrive-x", b"{}\n")
    logs = s3.list_objects_v2(Bucket=BUCKET, Prefix="dl/redrive-log/redrive-x-")["Contents"]
    assert len(logs) == 2
    assert store.log_location("redrive-x") == f"s3://{BUCKET}/dl/redrive-log/redrive-x-*.jsonl"


def test_opening_a_store_checks_the_location(tmp_path: Path) -> None:
    with pytest.raises(DeadLetterConfigError, match="no such directory"):
        open_dead_letter_store(str(tmp_path / "missing"))
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(DeadLetterConfigError, match="not a directory"):
        open_dead_letter_store(str(tmp_path / "file"))
    with pytest.raises(DeadLetterConfigError, match="s3://BUCKET/PREFIX"):
        open_dead_letter_store("gs://bucket/x")
    with pytest.raises(DeadLetterConfigError, match="no S3 client"):
        open_dead_letter_store("s3://bucket/x")
    assert isinstance(open_dead_letter_store(str(tmp_path)), DirectoryStore)


# ---- folders and files only the owner can touch ----------------------------------------------

def opened_both_ways(folder: Path) -> list[str]:
    """The refusals of the writer (``--dead-letter``) and of redrive's store for ``folder``."""
    refusals = []
    for opener in (open_dead_letter, open_dead_letter_store):
        with pytest.raises(DeadLetterConfigError) as info:
            opener(str(folder))
        refusals.append(str(info.value))
    return refusals


@pytest.mark.parametrize("folder_mode", [0o777, 0o757, 0o703])
def test_a_folder_others_can_write_is_refused_before_anything_is_written(
    tmp_path: Path, folder_mode: int
) -> None:
    folder = tmp_path / "shared-dl"
    folder.mkdir()
    (folder / "dead-letter-1.jsonl").write_bytes(b"{}\n")
    os.chmod(folder, folder_mode)
    for message in opened_both_ways(folder):
        assert f"dead-letter folder {folder} can be written by other users" in message
        assert f"(mode {folder_mode:04o})" in message and f"chmod 700 {folder}" in message
    assert [p.name for p in folder.iterdir()] == ["dead-letter-1.jsonl"]

    os.chmod(folder, 0o1777)  # sticky: others cannot rename or remove what is ours
    writer = open_dead_letter(str(folder))
    assert isinstance(writer, DeadLetterDirectory)
    assert isinstance(open_dead_letter_store(str(folder)), DirectoryStore)


def test_a_folder_made_shared_after_the_run_was_set_up_gets_no_line(tmp_path: Path) -> None:
    folder = tmp_path / "dl"
    writer = open_dead_letter(str(folder))  # not there yet: made on the first line
    assert isinstance(writer, DeadLetterDirectory)
    folder.mkdir()
    os.chmod(folder, 0o777)  # someone else got there first
    with pytest.raises(DeadLetterConfigError, match="can be written by other users"):
        write_line(writer, 1)
    assert list(folder.iterdir()) == []
    assert writer.written == 0


def test_another_users_folder_is_refused(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "dl"
    folder.mkdir(mode=0o700)
    owner = folder.stat().st_uid
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)  # we are someone else now
    for message in opened_both_ways(folder):
        assert f"dead-letter folder {folder} belongs to another user (uid {owner})" in message


def test_a_folder_only_the_users_own_group_can_write_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "dl"
    folder.mkdir()
    os.chmod(folder, 0o770)  # what mkdir gives under umask 002
    assert folder.stat().st_gid == os.getgid()
    with caplog.at_level("WARNING", logger="currents_export.deadletter"):
        writer = open_dead_letter(str(folder))
        assert isinstance(writer, DeadLetterDirectory)
        for n in range(3):  # three parts: the folder is checked again, not warned about
            write_line(writer, n)
            writer.flush()
    assert len(list(folder.glob("*.jsonl"))) == 3
    [warning] = caplog.records
    assert "can be written by the members of your primary group" in warning.getMessage()
    assert f"chmod 700 {folder}" in warning.getMessage()

    group = folder.stat().st_gid
    monkeypatch.setattr(os, "getgid", lambda: group + 1)  # a group that is not ours
    for message in opened_both_ways(folder):
        assert "can be written by other users (mode 0770)" in message


def test_the_store_reads_no_link_and_deletes_none(tmp_path: Path) -> None:
    folder = tmp_path / "dl"
    folder.mkdir()
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_bytes(b'{"secret": "not a dead letter"}\n')
    (folder / "link.jsonl").symlink_to(outside)
    (folder / "dangling.jsonl").symlink_to(tmp_path / "nothing-here")
    (folder / "plain.jsonl").write_bytes(b"{}\n")
    store = DirectoryStore(folder)
    assert store.names() == ["dangling.jsonl", "link.jsonl", "plain.jsonl"]  # listed: reported
    for name in ("link.jsonl", "dangling.jsonl"):
        with pytest.raises(DeadLetterStoreError) as info:
            store.read(name)
        assert f"{folder / name}: a symbolic link to " in str(info.value)
        assert "move the file itself into the folder, or remove the link" in str(info.value)
        with pytest.raises(DeadLetterStoreError, match="a symbolic link"):
            store.delete(name)
        assert (folder / name).is_symlink()
    assert store.read("plain.jsonl") == b"{}\n"
    assert outside.read_bytes() == b'{"secret": "not a dead letter"}\n'


def test_the_store_reads_no_file_of_another_user(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "dl"
    folder.mkdir()
    os.chmod(folder, 0o1777)  # sticky: others may add files of their own
    planted = folder / "dead-letter-planted.jsonl"
    planted.write_bytes(b'{"event": {"insert_id": "theirs"}}\n')
    store = DirectoryStore(folder)
    owner = planted.stat().st_uid
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)  # the file is someone else's now
    with pytest.raises(DeadLetterStoreError) as info:
        store.read(planted.name)
    assert f"belongs to another user (uid {owner}), not read" in str(info.value)
    assert planted.read_bytes() == b'{"event": {"insert_id": "theirs"}}\n'


def test_a_rewrite_never_follows_a_link_planted_at_a_temporary_name(
    tmp_path: Path, open_umask: None
) -> None:
    folder = tmp_path / "dl"
    folder.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    (folder / "dead-letter-1.jsonl").write_bytes(b'{"a": 1}\n{"b": 2}\n')
    # The name the temporary file used to have (``.<name>.<pid>.tmp``), and a few more.
    planted = [folder / f".dead-letter-1.jsonl.{os.getpid()}.tmp",
               *(folder / f".dead-letter-1.jsonl.{n}.tmp" for n in range(3))]
    for link in planted:
        link.symlink_to(victim)
    store = DirectoryStore(folder)
    store.replace("dead-letter-1.jsonl", b'{"b": 2}\n')
    assert victim.read_bytes() == b"precious\n"
    rewritten = folder / "dead-letter-1.jsonl"
    assert not rewritten.is_symlink() and rewritten.read_bytes() == b'{"b": 2}\n'
    assert mode(rewritten) == 0o600  # umask 0: the mode is the code's
    assert all(link.is_symlink() for link in planted)  # left as they were
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["dead-letter-1.jsonl", *(link.name for link in planted)])  # no temporary left
