"""A small Parquet writer: what our tables need, nothing more, and no pyarrow.

Importing pyarrow (plus numpy) is the largest single cost of a commit in a
fresh process (0.15–0.2 s; ``pa.array`` also imports pandas), so the layers we
write at commit (run parameters, runs, solves) go through this writer instead.
``bench/bench_parquet_writer.py`` measures both ways.

Layout: format-1 metadata (Thrift compact protocol), one row group (none for
zero rows), one PLAIN v1 data page per column compressed with zstd (level 3),
RLE/bit-packed definition levels for OPTIONAL columns, no dictionary. Column
chunks carry statistics (``null_count``, and ``min_value``/``max_value`` with
``TypeDefinedOrder`` column orders, so DuckDB and pyarrow can skip by range);
the footer carries string key-value metadata. Physical and logical types:

========== ============================== =====================================
kind       Parquet                        Arrow / pandas reads it as
========== ============================== =====================================
bool       BOOLEAN                        bool
int64      INT64                          int64
float64    DOUBLE                         double
string     BYTE_ARRAY, STRING (UTF8)      string
timestamp  INT64, TIMESTAMP(UTC, MICROS)  timestamp[us, tz=UTC]
========== ============================== =====================================

Bytes are deterministic for equal input and the same libzstd.
"""

from __future__ import annotations

import functools
import math
import struct
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BOOL = "bool"
INT64 = "int64"
FLOAT64 = "float64"
STRING = "string"
TIMESTAMP = "timestamp"
KINDS = (BOOL, INT64, FLOAT64, STRING, TIMESTAMP)

MAX_STAT_BYTES = 256
"""String statistics longer than this are left out (a reader then cannot skip by that column)."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column: ``values`` has one entry per row, None for a null (only in OPTIONAL columns)."""

    name: str
    kind: str
    values: Sequence[Any]
    required: bool = False


# Thrift compact protocol types and Parquet enums (parquet.thrift).
_T_TRUE, _T_FALSE, _T_I32, _T_I64, _T_BINARY, _T_LIST, _T_STRUCT = 1, 2, 5, 6, 8, 9, 12
_PHYSICAL = {BOOL: 0, INT64: 2, FLOAT64: 5, STRING: 6, TIMESTAMP: 2}  # BOOLEAN, INT64, DOUBLE, BYTE_ARRAY
_REQUIRED, _OPTIONAL = 0, 1
_PLAIN, _RLE = 0, 3
_ZSTD = 6
_DATA_PAGE = 0
_CONVERTED = {STRING: 0, TIMESTAMP: 10}  # UTF8, TIMESTAMP_MICROS


_BYTES = tuple(bytes([i]) for i in range(256))


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _BYTES[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _zigzag(n: int) -> bytes:
    """A compact-protocol i32/i64 value (zigzag varint)."""
    return _varint((n << 1) ^ (n >> 63))


def _thrift_value(kind: int, value: Any) -> bytes:
    if kind in (_T_I32, _T_I64):
        return _zigzag(value)
    if kind == _T_BINARY:
        raw = value.encode("utf-8") if isinstance(value, str) else value
        return _varint(len(raw)) + raw
    if kind == _T_STRUCT:
        return bytes(value)  # already encoded by _struct
    elem, items = value  # _T_LIST
    head = bytes([len(items) << 4 | elem]) if len(items) < 15 else bytes([0xF0 | elem]) + _varint(len(items))
    return head + b"".join(_thrift_value(elem, item) for item in items)


def _struct(*fields: tuple[int, int, Any]) -> bytes:
    """Compact-protocol struct of ``(field id, type, value)``, ascending ids < last + 16; None skipped.

    A bool field is given with type ``_T_TRUE`` and its Python value; the value lives in the header.
    """
    out, last = bytearray(), 0
    for field_id, kind, value in fields:
        if value is None:
            continue
        if kind == _T_TRUE:
            out.append((field_id - last) << 4 | (_T_TRUE if value else _T_FALSE))
        else:
            out.append((field_id - last) << 4 | kind)
            out += _thrift_value(kind, value)
        last = field_id
    out.append(0)
    return bytes(out)


_EMPTY = _struct()
_STRING_LOGICAL = _struct((1, _T_STRUCT, _EMPTY))  # LogicalType {1: StringType {}}
# LogicalType {8: TimestampType {1: isAdjustedToUTC = true, 2: unit = TimeUnit {2: MICROS {}}}}
_TIMESTAMP_LOGICAL = _struct((8, _T_STRUCT, _struct((1, _T_TRUE, True), (2, _T_STRUCT, _struct((2, _T_STRUCT, _EMPTY))))))
_LOGICAL = {STRING: _STRING_LOGICAL, TIMESTAMP: _TIMESTAMP_LOGICAL}
_TYPE_DEFINED_ORDER = _struct((1, _T_STRUCT, _EMPTY))  # ColumnOrder {1: TypeDefinedOrder {}}


def bitmap(bits: Sequence[bool]) -> bytes:
    """Bits packed LSB first (Parquet PLAIN booleans and bit-packed levels)."""
    if not bits:
        return b""
    as_int = int("".join(["1" if b else "0" for b in reversed(bits)]), 2)
    return as_int.to_bytes((len(bits) + 7) // 8, "little")


def _plain(kind: str, values: list[Any]) -> bytes:
    from array import array

    if kind in (INT64, TIMESTAMP):
        packed = array("q", values)
    elif kind == FLOAT64:
        packed = array("d", values)
    elif kind == BOOL:
        return bitmap(values)
    else:  # length-prefixed UTF-8, each distinct value encoded once (statuses, names repeat)
        cells = {v: len(b).to_bytes(4, "little") + b for v in set(values) for b in (v.encode("utf-8"),)}
        return b"".join(map(cells.__getitem__, values))
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def _definition_levels(present: list[bool]) -> bytes:
    """RLE/bit-packed hybrid levels (bit width 1) with their 4-byte length prefix."""
    if all(present):
        return _all_present_levels(len(present))
    groups = (len(present) + 7) // 8
    body = _varint(groups << 1 | 1) + bitmap(present).ljust(groups, b"\x00")
    return len(body).to_bytes(4, "little") + body


def _all_present_levels(count: int) -> bytes:
    body = _varint(count << 1) + b"\x01"  # one RLE run of 1s
    return len(body).to_bytes(4, "little") + body


def _stat_bytes(kind: str, values: list[Any]) -> tuple[bytes, bytes] | None:
    """``(min, max)`` as PLAIN-encoded statistics bytes, or None when none may be written.

    Doubles skip NaN (the spec forbids it in statistics) and widen a zero bound to
    ``-0.0``/``+0.0``; strings compare as unsigned bytes and are left out when long.
    """
    if kind == FLOAT64 and any(map(math.isnan, values)):
        values = [v for v in values if not math.isnan(v)]
    if not values:
        return None
    if kind == STRING:
        encoded = [v.encode("utf-8") for v in set(values)]
        low, high = min(encoded), max(encoded)
        if max(len(low), len(high)) > MAX_STAT_BYTES:
            return None
        return low, high
    low, high = min(values), max(values)
    if kind == BOOL:
        return bytes([low]), bytes([high])
    if kind == FLOAT64:
        low = -0.0 if low == 0 else low
        high = 0.0 if high == 0 else high
        return struct.pack("<d", low), struct.pack("<d", high)
    return struct.pack("<q", low), struct.pack("<q", high)


def _statistics(kind: str, values: list[Any], nulls: int) -> bytes:
    bounds = _stat_bytes(kind, values)
    low, high = bounds if bounds is not None else (None, None)
    return _struct((3, _T_I64, nulls), (5, _T_BINARY, high), (6, _T_BINARY, low))


def _data_page_header(num_values: int) -> bytes:
    """DataPageHeader: all values (nulls included), PLAIN values, RLE levels."""
    return _struct((1, _T_I32, num_values), (2, _T_I32, _PLAIN), (3, _T_I32, _RLE), (4, _T_I32, _RLE))


@dataclass(frozen=True, slots=True)
class EncodedColumn:
    """A column chunk ready to be laid out: its compressed page and statistics.

    Encoding is most of a write; a column shared by two files (a parameter in
    ``run_parameters.parquet`` and ``runs.parquet``) is encoded once and laid out twice.
    """

    name: str
    kind: str
    required: bool
    num_rows: int
    raw_size: int
    page: bytes
    statistics: bytes


def encode_column(column: Column, compressor: Any = None) -> EncodedColumn:
    """Encode one column (PLAIN values, RLE levels, zstd level 3); ``ValueError`` for an unknown kind
    or a null in a REQUIRED column. ``compressor``: a level-3 ``zstandard.ZstdCompressor`` (default:
    this thread's); short columns are memoised (:data:`_ENCODED`)."""
    if column.kind not in KINDS:
        raise ValueError(f"unknown Parquet column kind {column.kind!r}")
    memo = _memo_key(column)
    if memo is not None and (hit := _ENCODED.get(memo)) is not None:
        return hit
    if compressor is None:
        compressor = _compressor()
    num_rows = len(column.values)
    if None in column.values:
        present = [v is not None for v in column.values]
        values = [v for v in column.values if v is not None]
        if column.required:
            raise ValueError(f"REQUIRED column {column.name!r} has nulls")
        levels = _definition_levels(present)
    else:
        values = column.values if isinstance(column.values, list) else list(column.values)  # read only below
        levels = b"" if column.required else _all_present_levels(num_rows)
    raw = levels + _plain(column.kind, values)
    encoded = EncodedColumn(
        column.name,
        column.kind,
        column.required,
        num_rows,
        len(raw),
        compressor.compress(raw),
        _statistics(column.kind, values, num_rows - len(values)),
    )
    if memo is not None:
        if len(_ENCODED) >= _MEMO_SIZE:
            _ENCODED.clear()
        _ENCODED[memo] = encoded
    return encoded


_MEMO_ROWS = 4
_MEMO_SIZE = 1024
_ENCODED: dict[tuple[Any, ...], EncodedColumn] = {}
"""Encoded short columns by name, kind and values: a small commit's columns repeat from one commit
to the next (an empty ``solves.parquet``, a run's ``status``). Equal keys encode to equal bytes."""

_compressors = threading.local()


def _memo_key(column: Column) -> tuple[Any, ...] | None:
    """The memo key of a short column, or None (not memoised). Doubles never are: ``0.0 == -0.0``
    as keys but not as bytes; for the other kinds equal values (``1 == True`` included) encode alike."""
    values = column.values
    if len(values) > _MEMO_ROWS or column.kind == FLOAT64:
        return None
    return (column.name, column.kind, column.required, *values)


def _compressor() -> Any:
    """This thread's zstd compressor (level 3; one instance is not to be shared between threads)."""
    found = getattr(_compressors, "zstd", None)
    if found is None:
        import zstandard

        found = _compressors.zstd = zstandard.ZstdCompressor(level=3)
    return found


@functools.lru_cache(maxsize=4096)
def _schema_element(kind: str, required: bool, name: str) -> bytes:
    return _struct(
        (1, _T_I32, _PHYSICAL[kind]),
        (3, _T_I32, _REQUIRED if required else _OPTIONAL),
        (4, _T_BINARY, name),
        (6, _T_I32, _CONVERTED.get(kind)),
        (10, _T_STRUCT, _LOGICAL.get(kind)),
    )


@functools.lru_cache(maxsize=4096)
def _meta_head(kind: str, name: str) -> bytes:
    """ColumnMetaData fields 1-4 (type, encodings, path, codec), without the struct's stop byte."""
    return _struct(
        (1, _T_I32, _PHYSICAL[kind]),
        (2, _T_LIST, (_T_I32, [_PLAIN, _RLE])),
        (3, _T_LIST, (_T_BINARY, [name])),
        (4, _T_I32, _ZSTD),
    )[:-1]


@functools.lru_cache(maxsize=256)
def _page_header_tail(num_values: int) -> bytes:
    """PageHeader field 5 (the DataPageHeader, after field 3) and the stop byte."""
    return b"\x2c" + _data_page_header(num_values) + b"\x00"


def write_parquet(
    columns: Sequence[Column | EncodedColumn], num_rows: int, metadata: Mapping[str, str] | None = None
) -> bytes:
    """Parquet bytes for ``columns`` (each with ``num_rows`` values) and footer key-value ``metadata``."""
    compressor = _compressor()
    out = bytearray(b"PAR1")
    chunks: list[bytes] = []
    schema = [_struct((4, _T_BINARY, "schema"), (5, _T_I32, len(columns)))]
    total_uncompressed = 0
    for given in columns:
        column = given if isinstance(given, EncodedColumn) else encode_column(given, compressor)
        if column.num_rows != num_rows:
            raise ValueError(f"column {column.name!r} has {column.num_rows} values, expected {num_rows}")
        # The structs below are what _struct gives for these fields, laid out by hand (the hot path of
        # a small commit): PageHeader {1: DATA_PAGE, 2: raw size, 3: page size, 5: DataPageHeader},
        # ColumnChunk {2: offset, 3: ColumnMetaData {1-4: _meta_head, 5: rows, 6, 7: sizes,
        # 9: data page offset, 12: statistics}}; each header byte is (field id delta) << 4 | type.
        header = b"\x15\x00\x15" + _zigzag(column.raw_size) + b"\x15" + _zigzag(len(column.page)) + _page_header_tail(num_rows)
        offset = len(out)
        out += header
        out += column.page
        total_uncompressed += len(header) + column.raw_size
        at = _zigzag(offset)
        meta = b"".join((
            _meta_head(column.kind, column.name),
            b"\x16", _zigzag(num_rows),
            b"\x16", _zigzag(len(header) + column.raw_size),
            b"\x16", _zigzag(len(header) + len(column.page)),
            b"\x26", at,
            b"\x3c", column.statistics,
            b"\x00",
        ))
        chunks.append(b"\x26" + at + b"\x1c" + meta + b"\x00")
        schema.append(_schema_element(column.kind, column.required, column.name))
    row_group = _struct((1, _T_LIST, (_T_STRUCT, chunks)), (2, _T_I64, total_uncompressed), (3, _T_I64, num_rows))
    pairs = sorted((metadata or {}).items())
    footer = _struct(
        (1, _T_I32, 1),
        (2, _T_LIST, (_T_STRUCT, schema)),
        (3, _T_I64, num_rows),
        (4, _T_LIST, (_T_STRUCT, [row_group] if num_rows else [])),
        (5, _T_LIST, (_T_STRUCT, [_struct((1, _T_BINARY, k), (2, _T_BINARY, v)) for k, v in pairs]) if pairs else None),
        (6, _T_BINARY, "ommx-experiment"),
        (7, _T_LIST, (_T_STRUCT, [_TYPE_DEFINED_ORDER] * len(columns))),
    )
    out += footer + len(footer).to_bytes(4, "little") + b"PAR1"
    return bytes(out)


def read_metadata(source: Any) -> dict[str, str]:
    """The footer key-value metadata of a Parquet file (bytes or path), decoded as UTF-8 (pyarrow)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(source, (bytes, bytearray, memoryview)):
        source = pa.BufferReader(bytes(source))
    raw = pq.ParquetFile(source).metadata.metadata or {}
    return {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in raw.items()}
