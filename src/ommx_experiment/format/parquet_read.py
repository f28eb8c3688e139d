"""Read columns back from Parquet files that our writer (:mod:`.parquet`) produced, without pyarrow.

A fork carries each run's start and finish time from the parent's ``runs.parquet``;
reading three columns through pyarrow costs its import (and ``pq.read_table`` pandas'
too), ten times the rest of a fork. This reader understands exactly the layout
:func:`.parquet.write_parquet` writes: format-1 metadata, at most one row group, one
PLAIN v1 data page per column (zstd or uncompressed), RLE/bit-packed definition levels
of bit width 1 for OPTIONAL columns. Anything else raises :class:`UnsupportedParquetError`
(a ``ValueError``), and callers fall back to pyarrow, so a file of another producer is
still read correctly, only slower.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

_BOOLEAN, _INT64, _DOUBLE, _BYTE_ARRAY = 0, 2, 5, 6
_UNCOMPRESSED, _ZSTD = 0, 6
_PLAIN, _RLE = 0, 3


class UnsupportedParquetError(ValueError):
    """The bytes are not a Parquet file of the shape our writer produces."""


class _Reader:
    """Thrift compact protocol: structs as ``{field id: value}``, lists as lists, binary as bytes."""

    def __init__(self, data: bytes | memoryview, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise UnsupportedParquetError("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, kind: int) -> Any:
        if kind in (1, 2):  # a bool inside a list (struct fields carry it in the header)
            return self.byte() == 1
        if kind == 3:
            return self.byte()
        if kind in (4, 5, 6):
            return self.zigzag()
        if kind == 7:
            out = struct.unpack_from("<d", self.data, self.pos)[0]
            self.pos += 8
            return out
        if kind == 8:
            size = self.varint()
            out = bytes(self.data[self.pos:self.pos + size])
            if len(out) != size:
                raise UnsupportedParquetError("binary runs past the end")
            self.pos += size
            return out
        if kind in (9, 10):
            header = self.byte()
            size = header >> 4
            if size == 15:
                size = self.varint()
            return [self.value(header & 0x0F) for _ in range(size)]
        if kind == 12:
            return self.struct()
        raise UnsupportedParquetError(f"Thrift type {kind} is not supported")

    def struct(self) -> dict[int, Any]:
        fields: dict[int, Any] = {}
        last = 0
        while True:
            header = self.byte()
            if header == 0:
                return fields
            kind = header & 0x0F
            delta = header >> 4
            field = last + delta if delta else self.zigzag()
            fields[field] = (kind == 1) if kind in (1, 2) else self.value(kind)
            last = field


_MALFORMED = (IndexError, KeyError, TypeError, struct.error, UnicodeDecodeError)


def column_names(data: bytes) -> list[str]:
    """The column names, in schema order."""
    try:
        return [bytes(s[4]).decode("utf-8") for s in _footer(memoryview(data))[2][1:]]
    except _MALFORMED as exc:
        raise UnsupportedParquetError(f"not a Parquet file of our writer: {exc!r}") from exc


def read_columns(data: bytes, names: Sequence[str]) -> dict[str, list[Any]]:
    """The values of the columns ``names`` (None for nulls): INT64 as int, DOUBLE as float,
    BYTE_ARRAY as str, BOOLEAN as bool. ``UnsupportedParquetError`` for any other shape."""
    try:
        return _read(memoryview(data), names)
    except _MALFORMED as exc:
        raise UnsupportedParquetError(f"not a Parquet file of our writer: {exc!r}") from exc


INT64, DOUBLE, BYTE_ARRAY, BOOLEAN = _INT64, _DOUBLE, _BYTE_ARRAY, _BOOLEAN  # physical types, for callers


def read_table(data: bytes) -> list[tuple[str, int, list[Any]]]:
    """Every column, in schema order: ``(name, physical type, values with None for nulls)``.
    ``UnsupportedParquetError`` for any shape our writer does not produce."""
    try:
        view = memoryview(data)
        schema = _footer(view)[2][1:]
        names = [bytes(s[4]).decode("utf-8") for s in schema]
        for element in schema:  # flat columns; strings are UTF8, nothing else has a converted type
            if 5 in element or element.get(6) != (0 if element[1] == _BYTE_ARRAY else None):
                raise UnsupportedParquetError(f"column {bytes(element[4])!r} is not of a type our writer writes")
        values = _read(view, names)
        return [(name, s[1], values[name]) for name, s in zip(names, schema, strict=True)]
    except _MALFORMED as exc:
        raise UnsupportedParquetError(f"not a Parquet file of our writer: {exc!r}") from exc


def _footer(data: memoryview) -> dict[int, Any]:
    """The FileMetaData struct (after the PAR1 magic checks)."""
    if len(data) < 12 or bytes(data[:4]) != b"PAR1" or bytes(data[-4:]) != b"PAR1":
        raise UnsupportedParquetError("no PAR1 magic")
    return _Reader(data, len(data) - 8 - int.from_bytes(data[-8:-4], "little")).struct()


def _read(data: memoryview, names: Sequence[str]) -> dict[str, list[Any]]:
    meta = _footer(data)
    schema = meta[2][1:]  # the root element first
    num_rows = meta[3]
    required = {s[4].decode("utf-8"): s.get(3, 0) == 0 for s in schema}
    groups = meta.get(4, [])
    if len(groups) > 1:
        raise UnsupportedParquetError("more than one row group")
    chunks = {bytes(c[3][3][0]).decode("utf-8"): c[3] for c in (groups[0][1] if groups else [])}
    out: dict[str, list[Any]] = {}
    for name in names:
        if name not in required:
            raise KeyError(name)
        out[name] = [] if num_rows == 0 else _column(data, chunks[name], num_rows, required[name])
    return out


def _column(data: memoryview, chunk: dict[int, Any], num_rows: int, required: bool) -> list[Any]:
    physical, codec, offset = chunk[1], chunk[4], chunk[9]
    reader = _Reader(data, offset)
    page = reader.struct()
    if page[1] != 0 or page[5][1] != num_rows or page[5][2] != _PLAIN:
        raise UnsupportedParquetError("not one PLAIN v1 data page per column")
    body = bytes(data[reader.pos:reader.pos + page[3]])
    if codec == _ZSTD:
        import zstandard

        body = zstandard.ZstdDecompressor().decompress(body, max_output_size=page[2])
    elif codec != _UNCOMPRESSED:
        raise UnsupportedParquetError(f"compression codec {codec}")
    pos = 0
    present = [True] * num_rows
    if not required:
        size = int.from_bytes(body[:4], "little")
        present = _levels(body[4:4 + size], num_rows)
        pos = 4 + size
    values = _plain(physical, body[pos:], sum(present))
    it = iter(values)
    return [next(it) if p else None for p in present]


def _levels(raw: bytes, count: int) -> list[bool]:
    """RLE/bit-packed hybrid, bit width 1."""
    out: list[bool] = []
    reader = _Reader(raw)
    while len(out) < count:
        header = reader.varint()
        if header & 1:
            groups = header >> 1
            chunk = raw[reader.pos:reader.pos + groups]
            reader.pos += groups
            out += [bool(byte >> bit & 1) for byte in chunk for bit in range(8)]
        else:
            out += [reader.byte() == 1] * (header >> 1)
    return out[:count]


def _plain(physical: int, raw: bytes, count: int) -> list[Any]:
    if physical == _INT64:
        return list(struct.unpack_from(f"<{count}q", raw))
    if physical == _DOUBLE:
        return list(struct.unpack_from(f"<{count}d", raw))
    if physical == _BOOLEAN:
        return [bool(raw[i >> 3] >> (i & 7) & 1) for i in range(count)]
    if physical == _BYTE_ARRAY:
        out, pos = [], 0
        for _ in range(count):
            size = int.from_bytes(raw[pos:pos + 4], "little")
            out.append(raw[pos + 4:pos + 4 + size].decode("utf-8"))
            pos += 4 + size
        return out
    raise UnsupportedParquetError(f"physical type {physical}")
