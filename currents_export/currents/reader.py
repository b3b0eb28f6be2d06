"""Stream Braze records out of an Avro container file with its own writer schema.

A file that *ends early* (empty, or cut in its header, in a block or before a sync marker)
is an :class:`IncompleteObject`: retryable, a complete copy may replace it. A complete but
wrong one is an :class:`UnreadableObject`: permanent. A file cut exactly at a block boundary
reads as a complete one with fewer blocks (Avro has no trailer).

Hostile files are refused before they cost memory or the process: a header over
:data:`MAX_HEADER_BYTES` or with more than :data:`MAX_HEADER_ENTRIES` metadata entries; a
writer schema with a recursive named type (data nested deep enough overflows the C stack
of fastavro's decoder and kills the process: Braze never writes one) or nested deeper than
:data:`MAX_SCHEMA_DEPTH`; codecs other than ``null`` and ``deflate`` (their decompressors
cannot be capped here); a block over :data:`MAX_BLOCK_BYTES` once decompressed (deflate is
inflated a few MiB at a time, so a bomb stops at the cap); a block claiming more records
than its bytes can hold.

How, without fastavro internals: the header is read and checked here, and fastavro's
``reader`` gets the same header with codec ``null`` followed by blocks checked and
decompressed here (patching fastavro's ``BLOCK_READERS`` would change every read in the
process).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, cast

import fastavro
import orjson

from currents_export.currents.schemas import event_type_from_schema_name
from currents_export.errors import IncompleteObject, UnreadableObject

__all__ = [
    "MAX_BLOCK_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_ENTRIES",
    "MAX_SCHEMA_DEPTH",
    "SUPPORTED_CODECS",
    "RecordStream",
    "float_fields",
    "open_records",
]

log = logging.getLogger(__name__)

SUPPORTED_CODECS = ("null", "deflate")
MAX_BLOCK_BYTES = 16 * 2**20  # decompressed bytes one block may hold (Braze: ~64 KiB + a record)
MAX_HEADER_BYTES = 16 * 2**20  # a Currents header (mostly its schema) is tens of KiB
MAX_HEADER_ENTRIES = 1_000  # Braze writes two (avro.schema, avro.codec)
MAX_SCHEMA_DEPTH = 32  # records, arrays, maps and unions inside each other (Braze: < 5)

_MAGIC = b"Obj\x01"
_SYNC_SIZE = 16
_INFLATE_STEP = 4 * 2**20  # decompressed bytes produced per zlib call
_READ_STEP = 2**20  # compressed bytes fed to zlib at a time
_RERUN_HINT = "if it is still being copied, run again once it is complete"

# The smallest encoding of each primitive type (a long/int/length/union index is >= 1 byte).
_MIN_PRIMITIVE_BYTES = {
    "null": 0, "boolean": 1, "int": 1, "long": 1, "float": 4, "double": 8,
    "bytes": 1, "string": 1, "enum": 1, "array": 1, "map": 1,
}


@dataclass(slots=True)
class RecordStream:
    """The records of one file, read lazily, and what its header says."""

    event_type: str
    writer_schema: dict[str, Any]
    codec: str
    float_fields: frozenset[str]
    records: Iterator[dict[str, Any]]
    schema_event_type: str | None
    key_event_type: str | None

    @property
    def type_mismatch(self) -> bool:
        return bool(
            self.schema_event_type
            and self.key_event_type
            and self.schema_event_type != self.key_event_type
        )


def _is_float(avro_type: Any) -> bool:
    if avro_type == "float":
        return True
    if isinstance(avro_type, list):
        return any(_is_float(branch) for branch in avro_type)
    return isinstance(avro_type, dict) and avro_type.get("type") == "float"


def float_fields(schema: dict[str, Any]) -> frozenset[str]:
    """Fields stored as single-precision floats (they decode as 3.140000104904175)."""
    return frozenset(f["name"] for f in schema.get("fields", []) if _is_float(f["type"]))


def open_records(
    fileobj: IO[bytes],
    name: str,
    key_event_type: str | None = None,
    max_block_bytes: int = MAX_BLOCK_BYTES,
) -> RecordStream:
    """Read the header of ``fileobj`` and return a lazy stream of its records.

    Reads forward only, so ``fileobj`` may be a network stream. The event type comes from the
    schema's record name; on a mismatch with ``key_event_type`` (from the key) the schema
    wins, with a warning. Refusals (here or while reading) are :class:`UnreadableObject` or
    :class:`IncompleteObject` naming ``name``; an ``OSError`` of the stream passes through.
    """
    source = _Source(fileobj, header_limit=MAX_HEADER_BYTES)
    magic = b""
    try:
        magic = source.read(len(_MAGIC))
        if magic != _MAGIC:
            if _MAGIC.startswith(magic):  # empty, or cut inside the magic
                raise _CutShort("the file is empty" if not magic else
                                f"it holds only {len(magic)} of the {len(_MAGIC)} magic bytes")
            raise ValueError(f"it starts with {magic!r}, not the Avro magic {_MAGIC!r}")
        header = _read_header_rest(source)
        if "avro.schema" not in header["meta"]:
            raise ValueError("its header has no avro.schema")
        _check_schema_text(header["meta"]["avro.schema"])
    except OSError:
        raise
    except _CutShort as exc:
        raise _incomplete(name, str(exc)) from None
    except _Refusal as exc:
        raise UnreadableObject(f"{name}: {exc}") from None
    except Exception as exc:  # ValueError, EOFError, … for bad headers
        if (magic == _MAGIC and source.ended_early
                and _header_prefix_plausible(source.header_bytes)):
            detail = f"inside its header, at byte {source.offset}"
            raise _incomplete(name, f"{detail} ({exc})" if str(exc) else detail) from None
        raise UnreadableObject(f"{name}: not an Avro container file ({exc})") from exc
    source.header_limit = None
    source.header_bytes = bytearray()

    meta: dict[str, bytes] = dict(header["meta"])
    codec = meta.get("avro.codec", b"null").decode("utf-8", "replace")
    if codec not in SUPPORTED_CODECS:
        shown = codec if len(codec) <= 40 else codec[:40] + "…"
        raise UnreadableObject(
            f"{name}: codec {shown!r} is refused: only "
            f"{' and '.join(repr(c) for c in SUPPORTED_CODECS)} are read "
            "(Braze Currents writes 'null')"
        )
    meta["avro.codec"] = b"null"
    transcoded = _NullCodecFile(_header_bytes(meta, header["sync"]))
    try:
        avro_reader = fastavro.reader(cast(IO[bytes], transcoded))
        schema = avro_reader.writer_schema
        if not isinstance(schema, dict) or schema.get("type") != "record":
            raise UnreadableObject(f"{name}: writer schema is not an Avro record")
        min_record_bytes = max(1, _min_bytes(schema))
    except UnreadableObject:
        raise
    except Exception as exc:  # a schema fastavro cannot parse
        raise UnreadableObject(f"{name}: not an Avro container file ({exc})") from exc
    transcoded.continue_with(
        _blocks(source, codec, header["sync"], max_block_bytes, min_record_bytes)
    )

    schema_event_type = event_type_from_schema_name(str(schema.get("name", "")))
    event_type = schema_event_type or key_event_type
    if event_type is None:
        raise UnreadableObject(
            f"{name}: cannot tell the event type: schema name {schema.get('name')!r} is not "
            "dataexport.<connection>.inner.<type> and the key has no event_type= segment"
        )
    stream = RecordStream(
        event_type=event_type,
        writer_schema=schema,
        codec=codec,
        float_fields=float_fields(schema),
        records=_guarded(avro_reader, name),
        schema_event_type=schema_event_type,
        key_event_type=key_event_type,
    )
    if stream.type_mismatch:
        log.warning(
            "%s: key says event_type=%s but the schema says %s; using the schema's",
            name, key_event_type, schema_event_type,
        )
    return stream


def _read_header_rest(source: _Source) -> dict[str, Any]:
    """The metadata map and sync marker after the magic; more than
    :data:`MAX_HEADER_ENTRIES` entries are refused as they are counted (a million tiny ones
    would cost gigabytes as a dict). A short read is a ``ValueError``: the caller tells a
    header cut short from garbage."""

    def exactly(size: int) -> bytes:
        data = source.read(size)
        if len(data) < size:
            raise ValueError(f"the header ends at byte {source.offset}")
        return data

    def long() -> int:
        value = shift = 0
        while True:
            byte = exactly(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return (value >> 1) ^ -(value & 1)
            shift += 7
            if shift > 63:
                raise ValueError(f"corrupt length at byte {source.offset}")

    meta: dict[str, bytes] = {}
    while (count := long()) != 0:
        if count < 0:  # a block that also gives its size in bytes
            count = -count
            long()
        if len(meta) + count > MAX_HEADER_ENTRIES:
            raise _Refusal(f"its header holds more than {MAX_HEADER_ENTRIES:,} metadata "
                           "entries (Braze writes two)")
        for _ in range(count):
            key_length = long()
            if key_length < 0:
                raise ValueError(f"negative length at byte {source.offset}")
            key = exactly(key_length).decode("utf-8")
            value_length = long()
            if value_length < 0:
                raise ValueError(f"negative length at byte {source.offset}")
            meta[key] = exactly(value_length)
    return {"meta": meta, "sync": exactly(_SYNC_SIZE)}


def _check_schema_text(text: bytes) -> None:
    """Refuse a writer schema fastavro's decoder could not survive: a recursive named type,
    or types nested deeper than :data:`MAX_SCHEMA_DEPTH` (orjson refuses JSON nested past
    its own limit without recursing in Python)."""
    try:
        schema = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _Refusal(f"its writer schema is not JSON ({exc})") from None
    _walk_schema(schema, frozenset(), 0)


def _walk_schema(avro_type: Any, enclosing: frozenset[str], depth: int) -> None:
    """``enclosing``: the names of the named types being defined around ``avro_type``."""
    if depth > MAX_SCHEMA_DEPTH:
        raise _Refusal(f"its writer schema is nested deeper than {MAX_SCHEMA_DEPTH} types")
    if isinstance(avro_type, str):
        short = avro_type.rsplit(".", 1)[-1]
        if avro_type in enclosing or short in enclosing:
            raise _Refusal(f"its writer schema has a recursive type ({avro_type!r} inside "
                           "itself): Braze never writes one, and deep data would crash the "
                           "decoder")
        return
    if isinstance(avro_type, list):
        for branch in avro_type:
            _walk_schema(branch, enclosing, depth + 1)
        return
    if not isinstance(avro_type, dict):
        return
    kind = avro_type.get("type")
    name = avro_type.get("name")
    if kind in ("record", "error", "enum", "fixed") and isinstance(name, str):
        namespace = avro_type.get("namespace")
        full = f"{namespace}.{name}" if isinstance(namespace, str) and "." not in name else name
        enclosing = enclosing | {name, full, name.rsplit(".", 1)[-1]}
    if kind in ("record", "error"):
        for field in avro_type.get("fields") or ():
            if isinstance(field, dict):
                _walk_schema(field.get("type"), enclosing, depth + 1)
    elif kind == "array":
        _walk_schema(avro_type.get("items"), enclosing, depth + 1)
    elif kind == "map":
        _walk_schema(avro_type.get("values"), enclosing, depth + 1)
    elif isinstance(kind, (dict, list)):
        _walk_schema(kind, enclosing, depth + 1)


def _guarded(avro_reader: Iterator[Any], name: str) -> Iterator[dict[str, Any]]:
    index = 0
    try:
        for record in avro_reader:
            yield record
            index += 1
    except OSError:
        raise  # the source broke (a network stream): worth retrying, not a bad file
    except _CutShort as exc:
        raise _incomplete(name, f"after record {index}, {exc}") from None
    except _Refusal as exc:
        raise UnreadableObject(f"{name}: unreadable after record {index}: {exc}") from None
    except Exception as exc:
        raise UnreadableObject(
            f"{name}: unreadable after record {index} ({type(exc).__name__}: {exc})"
        ) from exc


class _Refusal(Exception):
    """A block (or header) this reader refuses; the message says why, without the name.

    Never an ``EOFError``: fastavro takes an EOFError at a block boundary for the clean end
    of the file, which would silently drop the rest.
    """


class _CutShort(_Refusal):
    """The file ends early (a short read where more bytes must follow): incomplete, not
    corrupt."""


def _incomplete(name: str, detail: str) -> IncompleteObject:
    return IncompleteObject(f"{name}: ends early: {detail}; {_RERUN_HINT}")


def _header_prefix_plausible(data: bytes | bytearray) -> bool:
    """Whether ``data``, a header (after its magic) cut short, could be the start of a
    Currents header: metadata entries named in Avro's reserved ``avro.`` namespace (Braze
    writes ``avro.schema`` and ``avro.codec``), an ``avro.schema`` that starts as JSON.

    Garbage after a valid magic that happens to run off the end of a short file is not.
    """
    pos = 0

    def number() -> int | None:  # a zig-zag varint; None when the data ends inside it
        nonlocal pos
        value = shift = 0
        while pos < len(data):
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return (value >> 1) ^ -(value & 1)
            shift += 7
            if shift > 63:
                raise ValueError("corrupt length")
        return None

    try:
        while True:
            count = number()
            if count is None:
                return True
            if count == 0:
                return len(data) - pos < _SYNC_SIZE  # cut inside the sync marker
            if count < 0:  # a block with its byte size
                count = -count
                if number() is None:
                    return True
            for _ in range(count):
                key_length = number()
                if key_length is None:
                    return True
                if key_length <= 0:
                    return False
                key = data[pos:pos + key_length]
                pos += len(key)
                if len(key) < key_length:  # cut inside the name
                    return b"avro.".startswith(key) or key.startswith(b"avro.")
                if not key.startswith(b"avro."):
                    return False
                value_length = number()
                if value_length is None:
                    return True
                if value_length < 0:
                    return False
                value = data[pos:pos + value_length]
                pos += len(value)
                if key == b"avro.schema" and value.strip()[:1] not in (b"", b"{", b"[", b'"'):
                    return False
                if len(value) < value_length:
                    return True
    except ValueError:
        return False


def _mib(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit} bytes"


class _Source:
    """``fileobj`` read forward with exact-size reads, counting the bytes read so far."""

    __slots__ = ("_fileobj", "ended_early", "header_bytes", "header_limit", "offset")

    def __init__(self, fileobj: IO[bytes], header_limit: int | None) -> None:
        self._fileobj = fileobj
        self.header_limit = header_limit
        self.offset = 0
        self.ended_early = False  # a read got fewer bytes than asked for: the stream ended
        # What was read of the header after its magic (at most the header cap; a bytearray:
        # fastavro reads lengths a byte at a time).
        self.header_bytes = bytearray()

    def read(self, size: int) -> bytes:
        """``size`` bytes, fewer only at the end of the stream."""
        if size < 0:
            raise ValueError(f"negative length {size}")  # would read the whole stream
        if self.header_limit is not None and self.offset + size > self.header_limit:
            raise _Refusal(f"header over {_mib(self.header_limit)}")
        try:
            data = self._fileobj.read(size)
            if data and len(data) < size:  # a raw stream may return less: read on
                parts = [data]
                got = len(data)
                while got < size:
                    more = self._fileobj.read(size - got)
                    if not more:
                        break
                    parts.append(more)
                    got += len(more)
                data = b"".join(parts)
        except EOFError as exc:
            self.ended_early = True
            raise _CutShort(f"the stream ended early ({exc})") from exc
        if type(data) is not bytes:
            data = bytes(data or b"")
        if len(data) < size:
            self.ended_early = True
        if self.header_limit is not None and self.offset >= len(_MAGIC):
            self.header_bytes += data
        self.offset += len(data)
        return data


def _read_long(source: _Source) -> int | None:
    """A zig-zag varint, or None at the very end of the stream."""
    first = source.read(1)
    if not first:
        return None
    byte = first[0]
    value = byte & 0x7F
    shift = 7
    while byte & 0x80:
        more = source.read(1)
        if not more:
            raise _CutShort(f"the file is cut short at byte {source.offset}")
        if shift > 63:
            raise _Refusal(f"corrupt length at byte {source.offset}")
        byte = more[0]
        value |= (byte & 0x7F) << shift
        shift += 7
    return (value >> 1) ^ -(value & 1)


def _encode_long(value: int) -> bytes:
    """Avro's zig-zag varint of ``value`` (>= 0 here)."""
    number = value << 1
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _header_bytes(meta: dict[str, bytes], sync: bytes) -> bytes:
    """A container header: magic, metadata map (one block), sync marker."""
    parts = [_MAGIC, _encode_long(len(meta))]
    for key, value in meta.items():
        encoded = key.encode()
        parts += [_encode_long(len(encoded)), encoded, _encode_long(len(value)), value]
    parts += [_encode_long(0), sync]
    return b"".join(parts)


def _min_bytes(avro_type: Any) -> int:
    """A lower bound of the encoded size of a value of ``avro_type`` (0 when unknown)."""
    if isinstance(avro_type, str):
        return _MIN_PRIMITIVE_BYTES.get(avro_type, 0)  # a named type's name: 0, to be safe
    if isinstance(avro_type, list):  # a union: the branch index, then the smallest branch
        return 1 + min((_min_bytes(branch) for branch in avro_type), default=0)
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind in ("record", "error"):
            return sum(_min_bytes(field.get("type")) for field in avro_type.get("fields", []))
        if kind == "fixed":
            size = avro_type.get("size")
            return size if isinstance(size, int) and size > 0 else 0
        return _min_bytes(kind)
    return 0


def _inflate(source: _Source, size: int, limit: int, where: str) -> bytes:
    """The raw-deflate block of ``size`` stored bytes, refused once it passes ``limit``.

    At most about ``limit`` + a few MiB is ever held: compressed bytes are fed a MiB at a
    time and each zlib call produces at most ``_INFLATE_STEP`` bytes.
    """
    inflater = zlib.decompressobj(-15)
    pieces: list[bytes] = []
    produced = 0
    remaining = size
    while remaining > 0:
        chunk = source.read(min(remaining, _READ_STEP))
        if not chunk:
            raise _CutShort(f"{where} is cut short: the file ends inside it")
        remaining -= len(chunk)
        while not inflater.eof:  # bytes after the end of the deflate stream are ignored
            piece = inflater.decompress(chunk, min(_INFLATE_STEP, limit + 1 - produced))
            produced += len(piece)
            if produced > limit:
                raise _Refusal(
                    f"{where}: decompressed block over {_mib(limit)} (from {size} compressed "
                    "bytes): refused as a likely decompression bomb"
                )
            pieces.append(piece)
            chunk = inflater.unconsumed_tail
            if not chunk and len(piece) < _INFLATE_STEP:
                break  # this input is used up and no output is pending
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _blocks(
    source: _Source, codec: str, sync: bytes, limit: int, min_record_bytes: int
) -> Iterator[bytes]:
    """The file's blocks as uncompressed ``null``-codec blocks, checked one at a time.

    Yields, per block: the record count and data length, the data, the sync marker.
    """
    block = 0
    while True:
        start = source.offset
        count = _read_long(source)
        if count is None:
            return  # the clean end of the file
        size = _read_long(source)
        where = f"block {block} (byte {start})"
        if size is None:
            raise _CutShort(f"{where} is cut short: the file ends inside it")
        if count < 0 or size < 0:
            raise _Refusal(f"{where} is corrupt: negative record count or size")
        if size > limit:
            raise _Refusal(f"{where}: stored block of {size} bytes is over {_mib(limit)}")
        if count > limit // min_record_bytes:
            raise _Refusal(
                f"{where} is corrupt: it claims {count} records, more than a block of at "
                f"most {_mib(limit)} can hold"
            )
        if codec == "deflate":
            data = _inflate(source, size, limit, where)
        else:
            data = source.read(size)
            if len(data) < size:
                raise _CutShort(f"{where} is cut short: {len(data)} of its {size} bytes")
        if count * min_record_bytes > len(data):
            raise _Refusal(
                f"{where} is corrupt: it claims {count} records in {len(data)} bytes (a "
                f"record takes at least {min_record_bytes})"
            )
        marker = source.read(_SYNC_SIZE)
        if len(marker) < _SYNC_SIZE:
            raise _CutShort(f"{where} is cut short: the file ends before its sync marker")
        if marker != sync:
            raise _Refusal(f"{where} is corrupt: its sync marker does not match the header's")
        yield _encode_long(count) + _encode_long(len(data))
        yield data
        yield marker
        block += 1


class _NullCodecFile:
    """The read-only file fastavro's reader decodes: pieces of bytes served in order.

    The first piece is the header (codec ``null``); then :func:`_blocks` is pulled one piece
    at a time as fastavro reads. fastavro reads the count and length a byte at a time, a
    block's data in one read and the sync marker in one read, so reads almost never span
    pieces and a data piece is handed over without a copy.
    """

    __slots__ = ("_piece", "_pieces", "_pos")

    def __init__(self, header: bytes) -> None:
        self._piece = header
        self._pos = 0
        self._pieces: Iterator[bytes] = iter(())

    def continue_with(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces

    def read(self, size: int = -1) -> bytes:
        pos = self._pos
        end = pos + size
        if size >= 0 and end <= len(self._piece):
            self._pos = end
            return self._piece[pos:end]
        return self._read_across(size)

    def _read_across(self, size: int) -> bytes:
        parts: list[bytes] = []
        wanted = size if size >= 0 else 2**62
        while wanted > 0:
            piece, pos = self._piece, self._pos
            if pos >= len(piece):
                following = next(self._pieces, None)
                if following is None:
                    self._piece, self._pos = b"", 0
                    break
                self._piece, self._pos = following, 0
                continue
            taken = piece[pos:pos + wanted]
            self._pos = pos + len(taken)
            parts.append(taken)
            wanted -= len(taken)
        return parts[0] if len(parts) == 1 else b"".join(parts)
