"""Streaming tar: OMMX 3's ustar writer and a reader that never trusts its input.

Writer: :func:`ustar_header` reproduces the headers OMMX 3 (tar-rs) writes for a
``.ommx`` archive (§4.9): mode ``0000644``, NUL uid/gid/uname/gname, mtime 0,
GNU base-256 sizes from 8 GiB on. :func:`write_entry` writes a small in-memory
member, :func:`padding` and :data:`END_OF_ARCHIVE` finish members and archives.

Reader: :class:`TarReader` parses ustar/pax/GNU headers one by one from any
binary stream (a pipe is fine), checks checksums and numeric fields, bounds pax
and GNU long-name entries, and yields :class:`TarEntry` values. It never
extracts anything and never reads more than 1 MiB at a time; every defect is an
:class:`~ommx_experiment.errors.ArchiveError` naming the source and byte offset.
What names and kinds are acceptable is the caller's policy (:mod:`archive`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..errors import ArchiveError, InvalidInputError

BLOCK = 512
CHUNK = 1 << 20
MAX_EXTENDED_HEADER = 1 << 20
"""Limit for a pax extended header or a GNU long-name entry."""
END_OF_ARCHIVE = bytes(2 * BLOCK)
"""Two zero blocks; OMMX 3 writes no record padding after them."""


# --- writer ---------------------------------------------------------------------------------------


def _octal_field(value: int, width: int) -> bytes:
    """``width - 1`` zero-padded octal digits and a NUL (tar-rs ``octal_into``)."""
    return b"%0*o\0" % (width - 1, value)


def _size_field(size: int) -> bytes:
    # tar-rs switches to GNU base-256 at 8 GiB: 0x80 marker, 8 big-endian bytes at the end.
    if size < 8**11:
        return _octal_field(size, 12)
    field = bytearray(4) + size.to_bytes(8, "big")
    field[0] |= 0x80
    return bytes(field)


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte header OMMX 3 writes for a regular file ``name`` of ``size`` bytes."""
    encoded = name.encode("utf-8")
    if len(encoded) > 100:
        raise InvalidInputError(f"Archive entry name {name!r} is longer than 100 bytes")
    header = bytearray(BLOCK)
    header[0 : len(encoded)] = encoded
    header[100:108] = b"0000644\0"
    header[124:136] = _size_field(size)
    header[136:148] = _octal_field(0, 12)
    header[148:156] = b" " * 8
    header[156:157] = b"0"
    header[257:263] = b"ustar\0"
    header[263:265] = b"00"
    header[148:156] = _octal_field(sum(header), 8)
    return bytes(header)


def padding(size: int) -> bytes:
    """The zero bytes that fill a member of ``size`` bytes up to a whole block."""
    return b"\0" * (-size % BLOCK)


def write_entry(out: BinaryIO, name: str, data: bytes) -> None:
    """Write one complete regular-file member (header, data, padding)."""
    out.write(ustar_header(name, len(data)))
    out.write(data)
    out.write(padding(len(data)))


# --- reader ---------------------------------------------------------------------------------------

_KINDS = {
    b"0": "file", b"\0": "file", b"7": "file", b"5": "directory", b"1": "hard link", b"2": "symlink",
    b"3": "character device", b"4": "block device", b"6": "fifo", b"K": "GNU long link name",
}


@dataclass(frozen=True, slots=True)
class TarEntry:
    """One member header: ``kind`` is ``file``, ``directory``, ``symlink``, ... (see ``_KINDS``)."""

    name: str
    kind: str
    size: int
    offset: int


class TarReader:
    """Parse a ustar/pax/GNU tar stream header by header, never trusting a declared size.

    Iterate :meth:`entries`; for each entry either read its data with
    :meth:`chunks` or leave it (the reader skips it). Every defect, including a
    stream that ends before the two terminating zero blocks, is an
    :class:`ArchiveError` naming ``source`` and the byte offset.
    """

    def __init__(self, fh: BinaryIO, source: str, total_size: int | None = None) -> None:
        self._fh = fh
        self._source = source
        self._total = total_size
        self._pos = 0
        self._unread = 0  # data + padding bytes of the current entry not consumed yet

    def _fail(self, message: str) -> ArchiveError:
        return ArchiveError(f"Invalid archive {self._source}: {message}")

    def _read(self, n: int) -> bytes:
        try:
            data = self._fh.read(n)
        except OSError as exc:
            raise self._fail(f"read failed at byte {self._pos}: {exc}") from exc
        self._pos += len(data)
        if len(data) != n:
            raise self._fail(f"truncated at byte {self._pos} (expected {n - len(data)} more bytes)")
        return data

    def _skip(self, n: int) -> None:
        while n > 0:
            step = min(n, CHUNK)
            self._read(step)
            n -= step

    def chunks(self, entry: TarEntry) -> Iterator[bytes]:
        """The data of ``entry`` (the entry just yielded), in chunks of at most 1 MiB."""
        remaining = entry.size
        while remaining > 0:
            chunk = self._read(min(remaining, CHUNK))
            remaining -= len(chunk)
            self._unread -= len(chunk)
            yield chunk

    def read_all(self, entry: TarEntry, limit: int) -> bytes:
        """The whole data of ``entry``; refused before reading if it is larger than ``limit``."""
        if entry.size > limit:
            raise self._fail(f"entry {entry.name!r} is {entry.size} bytes, larger than the limit of {limit} bytes")
        return b"".join(self.chunks(entry))

    def entries(self) -> Iterator[TarEntry]:
        """Yield member headers until the end-of-archive marker."""
        overrides: dict[str, Any] = {}
        while True:
            self._skip(self._unread)
            self._unread = 0
            offset = self._pos
            block = self._read(BLOCK)
            if block == bytes(BLOCK):
                if self._read(BLOCK) != bytes(BLOCK):
                    raise self._fail(f"a lone zero block at byte {offset} is followed by data")
                return
            entry, flag = self._parse_header(block, offset, overrides)
            self._check_size(entry)
            self._unread = entry.size + len(padding(entry.size))
            if flag in (b"x", b"g", b"L"):
                data = self.read_all(entry, MAX_EXTENDED_HEADER)
                if flag == b"x":
                    overrides = _parse_pax(data, self._fail)
                elif flag == b"L":
                    overrides = {"path": _decode_name(data.split(b"\0", 1)[0], self._fail)}
                continue
            overrides = {}
            yield entry

    def _check_size(self, entry: TarEntry) -> None:
        if self._total is not None and entry.size > self._total - self._pos:
            raise self._fail(
                f"entry {entry.name!r} declares {entry.size} bytes but only {self._total - self._pos} remain: truncated"
            )

    def _parse_header(self, block: bytes, offset: int, overrides: dict[str, Any]) -> tuple[TarEntry, bytes]:
        stored = _parse_number(block[148:156], "checksum", offset, self._fail)
        unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
        signed = sum(b - 256 if b > 127 else b for b in block[:148] + b" " * 8 + block[156:])
        if stored not in (unsigned, signed):
            raise self._fail(f"bad header checksum at byte {offset}")
        if block[257:263] not in (b"ustar\0", b"ustar "):
            raise self._fail(f"header at byte {offset} is not a ustar/GNU header")
        name = _decode_name(block[0:100].split(b"\0", 1)[0], self._fail)
        prefix = block[345:500].split(b"\0", 1)[0]
        if block[257:265] == b"ustar\x0000" and prefix:
            name = _decode_name(prefix, self._fail) + "/" + name
        name = overrides.get("path", name)
        size = overrides.get("size", _parse_number(block[124:136], f"size of {name!r}", offset, self._fail))
        flag = block[156:157]
        kind = _KINDS.get(flag, f"unsupported type {flag!r}")
        return TarEntry(name, kind, size, offset), flag


def _decode_name(raw: bytes, fail: Callable[[str], ArchiveError]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"entry name {raw!r} is not valid UTF-8") from exc


def _parse_number(field: bytes, what: str, offset: int, fail: Callable[[str], ArchiveError]) -> int:
    if field and field[0] & 0x80:
        if field[0] != 0x80:
            raise fail(f"negative or oversized {what} in the header at byte {offset}")
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        if not all(48 <= c <= 55 for c in text):
            raise ValueError
        return int(text, 8)
    except ValueError:
        raise fail(f"invalid {what} {field!r} in the header at byte {offset}") from None


def _parse_pax(data: bytes, fail: Callable[[str], ArchiveError]) -> dict[str, Any]:
    """``path`` and ``size`` from pax records ``"<len> key=value\\n"``; other keys are ignored."""
    out: dict[str, Any] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space]) if space > pos else -1
        except ValueError:
            length = -1
        record = data[pos : pos + length]
        if length <= 0 or len(record) != length or not record.endswith(b"\n") or b"=" not in record:
            raise fail("malformed pax extended header")
        key, _, value = record[space - pos + 1 : -1].partition(b"=")
        if key == b"path":
            out["path"] = _decode_name(value, fail)
        elif key == b"size":
            if not value.isdigit():
                raise fail(f"invalid pax size {value!r}")
            out["size"] = int(value)
        pos += length
    return out
