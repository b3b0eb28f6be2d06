"""Hostile Avro files are refused cleanly: refused codecs, decompression bombs, lying blocks.

Every hostile file is built here, in memory or under tmp_path (never committed): either with
fastavro's writer or by assembling container bytes by hand (header, then blocks of
count / size / data / sync marker, as the Avro specification lays them out).
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import os
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import fastavro
import orjson
import pytest
from click.testing import CliRunner

from currents_export.cli import main
from currents_export.currents.reader import (
    MAX_BLOCK_BYTES,
    MAX_HEADER_ENTRIES,
    MAX_SCHEMA_DEPTH,
    RecordStream,
    open_records,
)
from currents_export.currents.schemas import writer_schema
from currents_export.errors import (
    IncompleteObject,
    RetryableObjectError,
    UnreadableObject,
    is_retryable,
)
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import generate_fixtures
from tests.support.emulator import stored_events
from tests.support.records import minimal_record

EVENT_TYPE = "users.messages.email.Open"
SYNC = bytes(range(16))
MIB = 2**20
API_KEY = "test-key-0123456789"


# ---- building files ------------------------------------------------------------------------

def varint(value: int) -> bytes:
    """Avro's zig-zag varint."""
    number = (value << 1) ^ (value >> 63)
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def header(codec: str | None, schema: dict[str, Any] | None = None) -> bytes:
    meta = {"avro.schema": json.dumps(schema or writer_schema(EVENT_TYPE)).encode()}
    if codec is not None:
        meta["avro.codec"] = codec.encode()
    parts = [b"Obj\x01", varint(len(meta))]
    for key, value in meta.items():
        parts += [varint(len(key)), key.encode(), varint(len(value)), value]
    return b"".join([*parts, varint(0), SYNC])


def block(count: int, data: bytes, sync: bytes = SYNC) -> bytes:
    return varint(count) + varint(len(data)) + data + sync


def container(codec: str | None, *blocks: bytes) -> bytes:
    return header(codec) + b"".join(blocks)


def records(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [minimal_record(EVENT_TYPE, id=f"id-{i}") for i in range(start, start + count)]


def encoded(rows: list[dict[str, Any]]) -> bytes:
    """The records' Avro binary encoding, back to back (a block's uncompressed data)."""
    schema = fastavro.parse_schema(writer_schema(EVENT_TYPE))
    out = io.BytesIO()
    for row in rows:
        fastavro.schemaless_writer(out, schema, row)
    return out.getvalue()


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def zeros_deflate(total: int) -> bytes:
    """Raw deflate of ``total`` zero bytes (a multiple of 16 MiB), built in milliseconds.

    16 MiB of zeros compressed and fully flushed is a self-contained, byte-aligned run of
    deflate blocks; repeating it and closing with a final empty block is a valid stream.
    """
    step = 16 * MIB
    assert total % step == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(bytes(step)) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert len(zlib.decompressobj(-15).decompress(piece)) == step
    return piece * (total // step) + compressor.flush()


def deflate_bomb(decompressed: int = 2 * 2**30) -> bytes:
    """A deflate container whose one block of ~2 MB inflates to 2 GiB of zeros."""
    return container("deflate", block(1_000, zeros_deflate(decompressed)))


def fastavro_file(codec: str, count: int, sync_interval: int = 16_000) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(writer_schema(EVENT_TYPE)), records(count),
                    codec=codec, sync_interval=sync_interval)
    return out.getvalue()


class Trickle(io.RawIOBase):
    """A non-seekable stream that hands out at most 7 bytes per read, like a slow socket."""

    @classmethod
    def of(cls, data: bytes, fail_after: int | None = None) -> IO[bytes]:
        return cast(IO[bytes], cls(data, fail_after))

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        self._inner = io.BytesIO(data)
        self._fail_after = fail_after

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        if self._fail_after is not None and self._inner.tell() >= self._fail_after:
            raise ConnectionResetError("connection reset by peer")
        chunk = self._inner.read(min(len(buffer), 7))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def read_all(stream: RecordStream) -> list[dict[str, Any]]:
    return list(stream.records)


# ---- codecs ----------------------------------------------------------------------------------

REFUSED_PAYLOADS = {
    "bzip2": lambda: bz2.compress(bytes(32 * MIB)),  # ~100 bytes that inflate to 32 MiB
    "xz": lambda: lzma.compress(bytes(32 * MIB), preset=0),
    "snappy": lambda: b"\x80\x80\x80\x10\x00" + b"\xfe\x00\x00" * 1000 + b"\0\0\0\0",
    "zstandard": lambda: b"\x28\xb5\x2f\xfd" + bytes(64),
    "lz4": lambda: bytes(64),
    "brotli": lambda: bytes(64),
    "": lambda: bytes(64),
}


@pytest.fixture
def no_decompression(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any bzip2 or xz decompression (ours or fastavro's) fails the test."""

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a refused codec was decompressed")

    for module, names in ((bz2, ("decompress", "BZ2Decompressor")),
                          (lzma, ("decompress", "LZMADecompressor"))):
        for attribute in names:
            monkeypatch.setattr(module, attribute, forbidden)


@pytest.mark.parametrize("codec", list(REFUSED_PAYLOADS))
def test_a_refused_codec_is_named_at_header_time(codec: str, no_decompression: None) -> None:
    data = container(codec, block(1_000, REFUSED_PAYLOADS[codec]()))
    with pytest.raises(UnreadableObject) as info:
        open_records(io.BytesIO(data), "hostile.avro", EVENT_TYPE)
    message = str(info.value)
    assert message.startswith("hostile.avro: ")
    assert f"codec {codec!r} is refused" in message
    assert "'null' and 'deflate'" in message


@pytest.mark.parametrize("codec", ["bzip2", "xz"])
def test_fastavro_written_files_with_other_codecs_are_refused(codec: str) -> None:
    data = fastavro_file(codec, 20)
    with pytest.raises(UnreadableObject, match=rf"^other\.avro: codec '{codec}' is refused"):
        open_records(io.BytesIO(data), "other.avro")


def test_a_very_long_codec_name_is_shortened_in_the_message() -> None:
    data = container("x" * 10_000, block(1, b"\0"))
    with pytest.raises(UnreadableObject) as info:
        open_records(io.BytesIO(data), "long.avro")
    assert len(str(info.value)) < 300


# ---- round trips -----------------------------------------------------------------------------

@pytest.mark.parametrize("codec", ["null", "deflate", None])
def test_supported_codecs_still_read_every_record_through_a_trickling_stream(
    codec: str | None,
) -> None:
    rows = records(3_000)
    if codec is None:  # no avro.codec entry at all means null
        data = container(None, block(1_000, encoded(rows[:1_000])),
                         block(2_000, encoded(rows[1_000:])))
    else:
        data = fastavro_file(codec, 3_000, sync_interval=4_000)  # many blocks
    stream = open_records(Trickle.of(data), "mem", EVENT_TYPE)  # unbuffered: short reads
    assert stream.codec == (codec or "null")
    assert stream.event_type == EVENT_TYPE
    assert [r["id"] for r in read_all(stream)] == [f"id-{i}" for i in range(3_000)]


def test_deflate_with_trailing_bytes_after_the_stream_is_read() -> None:
    """fastavro's own writer leaves 3 bytes of the zlib checksum after each deflate stream."""
    rows = records(50)
    data = container("deflate", block(50, raw_deflate(encoded(rows)) + b"\x01\x02\x03"))
    assert len(read_all(open_records(io.BytesIO(data), "mem"))) == 50


def test_a_block_of_exactly_the_cap_is_read_and_one_byte_more_is_refused() -> None:
    payload = encoded(records(40))
    for codec, stored in (("null", payload), ("deflate", raw_deflate(payload))):
        data = container(codec, block(40, stored))
        stream = open_records(io.BytesIO(data), "edge.avro", max_block_bytes=len(payload))
        assert len(read_all(stream)) == 40
        stream = open_records(io.BytesIO(data), "edge.avro", max_block_bytes=len(payload) - 1)
        with pytest.raises(UnreadableObject, match=r"^edge\.avro: unreadable after record 0"):
            read_all(stream)


def test_the_other_readers_of_the_process_are_untouched() -> None:
    """No global fastavro state is changed: a plain fastavro read is not capped."""
    data = container("deflate", block(2_000, raw_deflate(encoded(records(2_000)))))
    stream = open_records(io.BytesIO(data), "capped.avro", max_block_bytes=100_000)
    with pytest.raises(UnreadableObject, match="decompressed block over 100000 bytes"):
        read_all(stream)
    assert len(list(fastavro.reader(io.BytesIO(data)))) == 2_000


# ---- bombs -----------------------------------------------------------------------------------

def test_a_2_kb_deflate_bomb_is_refused_by_a_small_cap() -> None:
    payload = raw_deflate(bytes(2 * MIB))
    assert len(payload) < 2_100  # 2 KB on disk
    data = container("deflate", block(10, payload))
    stream = open_records(io.BytesIO(data), "small-bomb.avro", max_block_bytes=MIB)
    with pytest.raises(UnreadableObject) as info:
        read_all(stream)
    assert str(info.value).startswith("small-bomb.avro: unreadable after record 0: block 0")
    assert "decompressed block over 1 MiB" in str(info.value)


def test_a_2_gib_deflate_bomb_is_refused_after_the_good_blocks_before_it() -> None:
    rows = records(30)
    data = container("deflate", block(30, raw_deflate(encoded(rows))),
                     block(1_000, zeros_deflate(2 * 2**30)))
    assert len(data) < 3 * MIB
    stream = open_records(io.BytesIO(data), "bomb.avro", EVENT_TYPE)
    read: list[dict[str, Any]] = []
    with pytest.raises(UnreadableObject) as info:
        read.extend(stream.records)
    assert len(read) == 30
    message = str(info.value)
    assert message.startswith("bomb.avro: unreadable after record 30: block 1")
    assert f"decompressed block over {MAX_BLOCK_BYTES // MIB} MiB" in message


# Peak RSS of the probe process itself. On Linux ``getrusage().ru_maxrss`` keeps the peak of
# the process it was forked from (pytest, hundreds of MB), which would hide any growth; so the
# probe resets its own high-water mark (``/proc/self/clear_refs``) and reads ``VmHWM``, with
# ``ru_maxrss`` as the fallback where /proc is not there.
RSS_PROBE = """
import json, resource, sys
from currents_export.currents.reader import open_records
from currents_export.errors import UnreadableObject

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current RSS
    peak = lambda: status("VmHWM")
except OSError:
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
before = peak()
outcome = "read"
try:
    with open(sys.argv[1], "rb") as fileobj:
        for _ in open_records(fileobj, "bomb.avro", **json.loads(sys.argv[2])).records:
            pass
except UnreadableObject as exc:
    outcome = str(exc)
print(json.dumps({"outcome": outcome, "before_kib": before, "after_kib": peak()}))
"""


def peak_rss_growth_mib(path: Path, **options: int) -> tuple[str, float]:
    """Read ``path`` in a fresh process: (what happened, growth of its peak RSS in MiB)."""
    probe = subprocess.run([sys.executable, "-c", RSS_PROBE, str(path), json.dumps(options)],
                           capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(probe.stdout)
    return report["outcome"], (report["after_kib"] - report["before_kib"]) / 1024


def test_the_deflate_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A memory assertion (peak RSS of a fresh process), not a timing one."""
    bomb = tmp_path / "bomb.avro"
    bomb.write_bytes(deflate_bomb())
    outcome, growth_mib = peak_rss_growth_mib(bomb)
    print(f"peak RSS growth while refusing a 2 GiB deflate bomb: {growth_mib:.1f} MiB")
    assert f"decompressed block over {MAX_BLOCK_BYTES // MIB} MiB" in outcome
    assert growth_mib < 300
    # the probe does see memory: with a 64 MiB cap the same bomb costs clearly more
    outcome, big_growth_mib = peak_rss_growth_mib(bomb, max_block_bytes=64 * MIB)
    assert "decompressed block over 64 MiB" in outcome
    assert big_growth_mib > growth_mib + 24


def test_refused_codec_bombs_cost_no_memory(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.avro"
    bomb.write_bytes(container("xz", block(1_000, lzma.compress(bytes(64 * MIB), preset=0))))
    outcome, growth_mib = peak_rss_growth_mib(bomb)
    assert "codec 'xz' is refused" in outcome
    assert growth_mib < 16


# ---- lying and broken blocks -----------------------------------------------------------------

def test_a_block_claiming_more_records_than_bytes_is_refused_before_decoding_it() -> None:
    good = block(3, encoded(records(3)))
    liar = block(300_000, b"\0" * 5_000)  # zeros would decode as garbage records
    stream = open_records(io.BytesIO(container("null", good, liar)), "liar.avro")
    read: list[dict[str, Any]] = []
    with pytest.raises(UnreadableObject) as info:
        read.extend(stream.records)
    assert len(read) == 3
    assert str(info.value).startswith("liar.avro: unreadable after record 3: block 1")
    assert "claims 300000 records in 5000 bytes" in str(info.value)


def test_a_deflate_block_claiming_more_records_than_bytes_is_refused() -> None:
    data = container("deflate", block(500_000, raw_deflate(bytes(100_000))))
    with pytest.raises(UnreadableObject, match=r"claims 500000 records in 100000 bytes"):
        read_all(open_records(io.BytesIO(data), "liar.avro"))


def test_an_absurd_record_count_is_refused_without_decompressing() -> None:
    data = container("deflate", block(2**40, zeros_deflate(16 * MIB)))
    with pytest.raises(UnreadableObject, match=r"claims 1099511627776 records, more than"):
        read_all(open_records(io.BytesIO(data), "liar.avro", max_block_bytes=MIB))


@pytest.mark.parametrize(("blocks", "reason"), [
    (block(-5, b"\0"), "negative record count or size"),
    (varint(3) + varint(-7), "negative record count or size"),
    (block(1, b"\0" * 40, sync=b"x" * 16), "sync marker does not match the header's"),
    (block(1, b"\0" * 40, sync=b"x" * 16) + block(1, b"\0" * 40),  # wrong in the middle
     "sync marker does not match the header's"),
    (varint(3) + b"\xff" * 12, "corrupt length"),
    (varint(1) + varint(2 * MIB) + b"\0" * 10, "stored block of 2097152 bytes is over 1 MiB"),
])
def test_broken_blocks_are_refused_with_the_reason(blocks: bytes, reason: str) -> None:
    """Corrupt, not short: permanent (UnreadableObject), never IncompleteObject."""
    stream = open_records(io.BytesIO(container("null", blocks)), "broken.avro",
                          max_block_bytes=MIB)
    with pytest.raises(UnreadableObject, match=r"^broken\.avro: unreadable after record 0") as info:
        read_all(stream)
    assert reason in str(info.value)
    assert not is_retryable(info.value)


@pytest.mark.parametrize(("blocks", "reason"), [
    (varint(3) + varint(10_000) + b"\0" * 30, "is cut short: 30 of its 10000 bytes"),
    (varint(3), "is cut short: the file ends inside it"),
    (varint(3) + b"\xff" * 3, "the file is cut short at byte"),  # inside a length
    (varint(1) + varint(40) + b"\0" * 40, "the file ends before its sync marker"),
    (varint(1) + varint(40) + b"\0" * 40 + SYNC[:7], "the file ends before its sync marker"),
    (block(3, encoded(records(3))) + varint(3), "block 1 (byte"),  # after a good block
])
def test_blocks_cut_short_are_incomplete_and_retryable(blocks: bytes, reason: str) -> None:
    stream = open_records(io.BytesIO(container("null", blocks)), "cut.avro")
    with pytest.raises(IncompleteObject) as info:
        read_all(stream)
    message = str(info.value)
    assert message.startswith("cut.avro: ends early: after record ")
    assert reason in message
    assert message.endswith("if it is still being copied, run again once it is complete")
    assert isinstance(info.value, RetryableObjectError) and is_retryable(info.value)


def test_a_deflate_block_cut_short_is_incomplete() -> None:
    payload = raw_deflate(encoded(records(100)))
    data = container("deflate", varint(100) + varint(len(payload)) + payload[:-50])
    with pytest.raises(IncompleteObject, match="cut short"):
        read_all(open_records(io.BytesIO(data), "cut.avro"))


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_a_copy_cut_anywhere_but_a_block_boundary_is_incomplete(codec: str) -> None:
    """Every prefix of a real file (a copy caught half way) is retryable, never permanent;
    one cut exactly between blocks reads as a complete file with fewer records."""
    data = fastavro_file(codec, 40, sync_interval=600)
    outcomes: Counter[str] = Counter()
    for cut in range(len(data)):
        try:
            read_all(open_records(Trickle.of(data[:cut]), "copy.avro", EVENT_TYPE))
            outcomes["read"] += 1
        except IncompleteObject as exc:
            assert str(exc).startswith("copy.avro: ends early: ")
            outcomes["incomplete"] += 1
    assert outcomes["incomplete"] > len(data) - 20
    assert 0 < outcomes["read"] < 20  # the block boundaries: Avro has no trailer


def test_header_text_that_runs_off_the_end_is_not_avro() -> None:
    """Garbage after the magic is corrupt even when it also runs past the end of the file."""
    for data in (b"Obj\x01 definitely not a real container",
                 header(None)[:4] + varint(1) + varint(20) + b"kafka.offset",
                 header(None)[:4] + varint(1) + varint(11) + b"avro.schema" + varint(90) + b"x"):
        with pytest.raises(UnreadableObject, match=r"^junk\.avro: not an Avro container file"):
            open_records(io.BytesIO(data), "junk.avro")


def test_an_oversized_header_is_refused_before_it_is_read() -> None:
    data = b"Obj\x01" + varint(1) + varint(11) + b"avro.schema" + varint(2**40) + bytes(100)
    with pytest.raises(UnreadableObject, match=r"^big\.avro: header over 16 MiB"):
        open_records(io.BytesIO(data), "big.avro")


def test_a_negative_length_in_the_header_is_refused() -> None:
    data = b"Obj\x01" + varint(1) + varint(-40) + b"avro.schema" + bytes(100)
    with pytest.raises(UnreadableObject, match=r"^neg\.avro: not an Avro container file"):
        open_records(io.BytesIO(data), "neg.avro")


def test_an_empty_file_is_incomplete_not_corrupt() -> None:
    """An empty file is what a copy looks like when it has just started."""
    with pytest.raises(IncompleteObject, match=r"^empty\.avro: ends early: the file is empty; "
                       "if it is still being copied, run again once it is complete$"):
        open_records(io.BytesIO(b""), "empty.avro")


def test_a_header_cut_anywhere_is_incomplete() -> None:
    full = header("deflate")
    for cut in range(1, len(full)):
        with pytest.raises(IncompleteObject, match=r"^head\.avro: ends early: ") as info:
            open_records(io.BytesIO(full[:cut]), "head.avro")
        assert is_retryable(info.value)


def test_a_wrong_magic_is_corrupt_even_when_short() -> None:
    for data in (b"Obj\x02" + header(None)[4:], b"PK", b"\x00"):
        with pytest.raises(UnreadableObject, match="not the Avro magic"):
            open_records(io.BytesIO(data), "zip.avro")


def test_a_broken_source_stream_stays_an_os_error() -> None:
    """The network failing is worth retrying: it must not become UnreadableObject."""
    data = fastavro_file("deflate", 2_000, sync_interval=4_000)
    stream = open_records(Trickle.of(data, fail_after=len(data) // 2), "net.avro")
    with pytest.raises(ConnectionResetError):
        read_all(stream)


# ---- end to end: the replay command ----------------------------------------------------------

def bad_files(kind: str) -> tuple[bytes, str]:
    """A hostile file and the reason the command must print for it."""
    if kind == "deflate-bomb":
        return deflate_bomb(), f"decompressed block over {MAX_BLOCK_BYTES // MIB} MiB"
    return container("bzip2", block(1_000, bz2.compress(bytes(32 * MIB)))), \
        "codec 'bzip2' is refused"


@pytest.fixture
def good_and_bad(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, set[str], str]]:
    """A bucket folder with a good 40-record file and a hostile one next to it."""
    root = tmp_path / "bucket"
    [good] = generate_fixtures(root, events_per_type=40, event_types=[EVENT_TYPE],
                               files_per_type=1, seed=11, codec="deflate")
    with good.path.open("rb") as fileobj:
        good_ids = {record["id"] for record in fastavro.reader(fileobj) if isinstance(record, dict)}
    data, reason = bad_files(request.param)
    bad = good.path.parent / "hostile-object.avro"
    bad.write_bytes(data)
    yield root, good_ids, reason


@pytest.mark.parametrize("good_and_bad", ["deflate-bomb", "bzip2"], indirect=True)
def test_replay_delivers_the_good_file_and_names_the_bad_one(
    emulator: Emulator, good_and_bad: tuple[Path, set[str], str], tmp_path: Path
) -> None:
    root, good_ids, reason = good_and_bad
    result = CliRunner().invoke(main, [
        "replay", str(root),
        "--api-key", API_KEY,
        "--amplitude-url", emulator.url,
        "--state", str(tmp_path / "state.sqlite"),
        "--dead-letter", str(tmp_path / "dead-letter"),
        "--summary-json", str(tmp_path / "summary.json"),
        "--retry-horizon", "0",
    ])
    output = result.output
    assert result.exit_code == 1, output
    assert "hostile-object.avro" in output, output
    assert reason in output, output
    assert "Traceback" not in output, output
    assert not isinstance(result.exception, UnreadableObject)  # contained, not raised out

    # every record of the good file is accounted for (some have no identity and are
    # skipped by the mapping), and what was sent is exactly the good file's events
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["records"] == 40
    assert summary["delivered"] + sum(summary["skipped"].values()) \
        + sum(summary["dead_lettered"].values()) == 40
    delivered = [event["insert_id"] for event in stored_events(emulator)]
    assert len(delivered) == summary["delivered"] > 0
    assert set(delivered) <= good_ids


def test_inspect_names_a_bomb_and_its_reason(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.avro"
    bomb.write_bytes(deflate_bomb())
    result = CliRunner().invoke(main, ["inspect", str(bomb)])
    assert result.exit_code == 1
    assert "bomb.avro" in result.output
    assert f"decompressed block over {MAX_BLOCK_BYTES // MIB} MiB" in result.output
    assert "Traceback" not in result.output



# ---- schemas and headers that would crash the decoder or exhaust memory ---------------------

CUSTOM = "users.behaviors.CustomEvent"


def recursive_file(depth: int = 5_000) -> bytes:
    """A CustomEvent file whose drifted field is a recursive record (``Node`` → ``next``:
    ["null", "Node"]), its one record nested ``depth`` deep: 5 KB that overflowed fastavro's
    C stack (exit 139) before the schema was checked."""
    schema = writer_schema(CUSTOM)
    node = {"type": "record", "name": "Node",
            "fields": [{"name": "next", "type": ["null", "Node"]}]}
    schema = {**schema, "fields": [*schema["fields"], {"name": "tree", "type": node}]}
    base = encoded_with(schema, {**minimal_record(CUSTOM), "tree": {"next": None}})
    # The last field is encoded last: swap its null (index 0) for ``depth`` nodes.
    data = base[:-1] + varint(1) * depth + varint(0)
    return header(None, schema) + block(1, data)


def encoded_with(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def nested_schema(levels: int) -> dict[str, Any]:
    """A non-recursive schema whose last field is ``levels`` records inside each other."""
    inner: dict[str, Any] = {"type": "record", "name": "L0",
                             "fields": [{"name": "v", "type": "string"}]}
    for level in range(1, levels):
        inner = {"type": "record", "name": f"L{level}", "fields": [{"name": "x", "type": inner}]}
    schema = writer_schema(CUSTOM)
    return {**schema, "fields": [*schema["fields"], {"name": "deep", "type": inner}]}


def test_a_recursive_writer_schema_is_refused_before_a_byte_is_decoded() -> None:
    with pytest.raises(UnreadableObject, match="recursive type") as refused:
        open_records(io.BytesIO(recursive_file()), "recursive.avro")
    assert "recursive.avro" in str(refused.value) and not is_retryable(refused.value)


def test_a_schema_nested_past_the_limit_is_refused_and_one_within_it_is_read() -> None:
    with pytest.raises(UnreadableObject, match=f"deeper than {MAX_SCHEMA_DEPTH} types"):
        open_records(io.BytesIO(header(None, nested_schema(MAX_SCHEMA_DEPTH + 1))), "deep")
    shallow = nested_schema(8)  # deeper than Braze writes, well within the limit
    stream = open_records(io.BytesIO(header(None, shallow)), "shallow.avro")
    assert stream.event_type == CUSTOM and list(stream.records) == []


def test_a_header_of_a_million_metadata_entries_is_refused_as_it_is_counted() -> None:
    entries = 1_300_000
    body = b"".join(varint(len(k)) + k + varint(0) for k in (b"k%d" % i for i in range(entries)))
    data = b"Obj\x01" + varint(entries) + body + varint(0) + SYNC
    with pytest.raises(UnreadableObject, match="more than 1,000 metadata entries"):
        open_records(io.BytesIO(data), "meta.avro")
    one_too_many = [(b"m%d" % i, b"") for i in range(MAX_HEADER_ENTRIES)]
    schema_entry = (b"avro.schema", json.dumps(writer_schema(CUSTOM)).encode())
    for extra, refused in ((one_too_many[:-1], False), (one_too_many, True)):
        meta = [schema_entry, *extra]
        parts = [b"Obj\x01", varint(len(meta))]
        for key, value in meta:
            parts += [varint(len(key)), key, varint(len(value)), value]
        data = b"".join([*parts, varint(0), SYNC])
        if refused:
            with pytest.raises(UnreadableObject, match="metadata entries"):
                open_records(io.BytesIO(data), "meta.avro")
        else:
            assert open_records(io.BytesIO(data), "meta.avro").event_type == CUSTOM


def replay_process(emulator: Emulator, root: Path, state: Path, *options: str
                   ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``currents-export replay`` in a process of its own: a crash shows as a signal."""
    summary = state / "summary.json"
    run = subprocess.run(
        [sys.executable, "-m", "currents_export", "replay", str(root),
         "--amplitude-url", emulator.url, "--state", str(state / "state.sqlite"),
         "--dead-letter", str(state / "dead-letter"), "--summary-json", str(summary),
         "--retry-horizon", "5", *options],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "AMPLITUDE_API_KEY": API_KEY})
    return run, orjson.loads(summary.read_bytes())


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_5000_deep_file_among_good_files_kills_nothing(
    emulator: Emulator, tmp_path: Path, workers: str
) -> None:
    root = tmp_path / "bucket"
    good = generate_fixtures(root, events_per_type=30, event_types=[EVENT_TYPE, CUSTOM],
                             files_per_type=2, seed=5)
    bad = good[0].path.parent / "recursive-node.avro"
    bad.write_bytes(recursive_file())
    state = tmp_path / "state"
    state.mkdir()

    first, summary = replay_process(emulator, root, state, "--workers", workers)

    assert first.returncode == 1, first.stderr  # an object failed; no signal (139, -11)
    assert summary["objects_done"] == len(good) and summary["objects_failed"] == 1
    assert summary["objects_failed_permanently"] == 1
    [failure] = summary["failures"]
    assert failure["object"].endswith("recursive-node.avro") and not failure["retryable"]
    assert "recursive type" in failure["error"]
    assert len(stored_events(emulator)) == summary["delivered"] > 0

    again, summary = replay_process(emulator, root, state, "--workers", workers)
    assert again.returncode == 0, again.stderr
    assert summary["objects_skipped_failed"] == 1 and summary["objects_failed"] == 0


def test_inspect_names_a_recursive_schema(tmp_path: Path) -> None:
    path = tmp_path / "recursive.avro"
    path.write_bytes(recursive_file())
    run = subprocess.run([sys.executable, "-m", "currents_export", "inspect", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    said = run.stderr + run.stdout
    assert "recursive.avro" in said and "recursive type" in said


def blob_record_id(n: int) -> str:
    return f"6f1d9c3e-0000-4000-8000-{n:012d}"


def replay_five_with_a_blob(emulator: Emulator, tmp_path: Path, *, at: int, blob_bytes: int,
                            api: str = "batch") -> dict[str, Any]:
    """Replay one file of five custom events, record ``at`` holding a ``blob_bytes``
    string in its properties; the run's summary (it must exit 0)."""
    folder = tmp_path / "bucket" / "currents" / f"event_type={CUSTOM}" / "date=2026-01-15-12"
    folder.mkdir(parents=True)
    rows = [minimal_record(CUSTOM, id=blob_record_id(n), name="ok") for n in range(5)]
    rows[at]["properties"] = json.dumps({"blob": "x" * blob_bytes})
    with (folder / "big+0+0000000001.avro").open("wb") as out:
        fastavro.writer(out, fastavro.parse_schema(writer_schema(CUSTOM)), rows)
    result = CliRunner().invoke(main, [
        "replay", str(tmp_path / "bucket"), "--api-key", API_KEY, "--api", api,
        "--amplitude-url", emulator.url, "--state", str(tmp_path / "state.sqlite"),
        "--dead-letter", str(tmp_path / "dead-letter"),
        "--summary-json", str(tmp_path / "summary.json")])
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = orjson.loads((tmp_path / "summary.json").read_bytes())
    return summary


def test_a_record_over_a_mebibyte_is_dead_lettered_without_its_body(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A 3 MiB string in one record (Braze drops events over 900 KB): that record alone is
    dead-lettered as event_too_large, in a short line, and the others are delivered."""
    summary = replay_five_with_a_blob(emulator, tmp_path, at=2, blob_bytes=3 * MIB)
    assert summary["delivered"] == 4 and summary["dead_lettered"] == {"event_too_large": 1}
    [dead_file] = (tmp_path / "dead-letter").rglob("*.jsonl")
    [line] = dead_file.read_bytes().splitlines()
    assert len(line) < 10_000  # not 3 MiB of it, twice
    entry = orjson.loads(line)
    assert (entry["record_index"], entry["record"], entry["event"]) == (2, None, None)
    assert "bytes once mapped" in entry["detail"]


def test_an_event_over_the_request_limit_but_under_a_mebibyte_is_dead_lettered_as_sent(
    emulator: Emulator, tmp_path: Path
) -> None:
    """An event of about 950 KB: under the reader's own cap, over what one HTTP API request
    holds (900,000 bytes). The lanes hand it back untaken; it is dead-lettered with the
    event as it would have been sent (for a redrive to the batch API), and its neighbours,
    handed over in the same batch, are delivered."""
    summary = replay_five_with_a_blob(emulator, tmp_path, at=3, blob_bytes=950_000,
                                      api="http")
    assert summary["delivered"] == 4 and summary["dead_lettered"] == {"event_too_large": 1}
    assert summary["objects_done"] == 1
    assert len(stored_events(emulator)) == 4
    [dead_file] = (tmp_path / "dead-letter").rglob("*.jsonl")
    [line] = dead_file.read_bytes().splitlines()
    entry = orjson.loads(line)
    assert entry["record_index"] == 3 and entry["reason"] == "event_too_large"
    assert entry["event"]["insert_id"] == blob_record_id(3)
    assert len(entry["event"]["event_properties"]["[Custom event property] blob"]) == 950_000
    assert "over the request limit" in entry["detail"]


# What the schema checks cannot foresee: a file whose decoding kills the process anyway. Here
# a stand-in kills it (SIGKILL) as soon as a file named "poison" starts being decoded.
KILLER = """
import os, signal, sys
import currents_export.currents.reader as reader
original = reader._guarded
def guarded(avro_reader, name):
    if "poison" in name:
        os.kill(os.getpid(), signal.SIGKILL)
    yield from original(avro_reader, name)
reader._guarded = guarded
from currents_export.cli import main
sys.argv[0] = "currents-export"
main()
"""


def test_an_object_that_kills_every_run_is_failed_for_good_after_three(
    emulator: Emulator, tmp_path: Path
) -> None:
    root = tmp_path / "bucket"
    good = generate_fixtures(root, events_per_type=20, event_types=[EVENT_TYPE],
                             files_per_type=1, seed=8)
    poison = good[0].path.parent / "poison+0+0000000009.avro"
    poison.write_bytes(good[0].path.read_bytes())
    command = [sys.executable, "-c", KILLER, "replay", str(root), "--workers", "1",
               "--amplitude-url", emulator.url, "--state", str(tmp_path / "state.sqlite"),
               "--dead-letter", str(tmp_path / "dl"), "--summary-json",
               str(tmp_path / "summary.json")]
    env = {**os.environ, "AMPLITUDE_API_KEY": API_KEY}

    runs = [subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
            for _ in range(4)]

    assert [run.returncode for run in runs[:3]] == [-9] * 3  # killed while decoding it
    assert runs[3].returncode == 1, runs[3].stderr  # the fourth run: it failed for good
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    [failure] = summary["failures"]
    assert failure["object"].endswith("poison+0+0000000009.avro") and not failure["retryable"]
    assert "ended 3 times while decoding it" in failure["error"]
    assert summary["objects_done"] + summary["objects_already_done"] == 1  # the good one
    assert summary["objects_failed_permanently"] == 1
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0, again.stderr  # later runs skip it
