"""The open-run log of one writer: what its open Runs logged, surviving SIGKILL of the process.

One file per writer (``<root>/.oxe-writers/<writer id>.log``, beside the lock of
:mod:`ommx_experiment.engine.writers`), memory-mapped and appended to without a
system call: a record is in the page cache as soon as the copy into the mapping
returns, so it survives the death of the process (not a power loss; closed runs
are made durable by the journal, not by this log). The per-log cost is a
``marshal`` encoding, a CRC and one copy (about a microsecond).

Layout: a 16-byte header (``b"OXERLOG1"`` + 8 reserved bytes), then records
``[u32 length][u32 crc32(payload)][payload]`` where the payload is
``marshal.dumps((kind, run_id, *fields))``. A record is followed by at least four
zero bytes (the file grows zero-filled), so a reader stops at the first zero
length, a length past the end, or a CRC mismatch (a record torn by the kill).
When none of the writer's runs is open the log is *reset*: the used bytes are
zeroed and appends restart after the header, so the file stays as small as the
largest set of simultaneously open runs.

Record kinds (``run_id`` first):

====== ==========================================================================
``o``  run opened: ``(started_ns,)``
``p``  parameter: ``(name, value)`` (bool/int/float/str; the last one wins)
``a``  attachment: ``(name, descriptor dict, filename or None)``
``s``  solve record (journal object), ``m`` sampling record, ``t`` trace descriptor
``c``  run closed and journaled (recovery skips it)
``d``  run abandoned without a record (its handle was dropped unclosed)
====== ==========================================================================
"""

from __future__ import annotations

import marshal
import mmap
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

from ..errors import RegistryError

MAGIC = b"OXERLOG1"
HEADER = 16
_RECORD = struct.Struct("<II")
_pack = _RECORD.pack
_dumps = marshal.dumps
_crc32 = zlib.crc32
_INITIAL_SIZE = 1 << 20

OPEN, PARAM, ATTACHMENT, SOLVE, SAMPLING, TRACE, CLOSED, DROPPED = "o", "p", "a", "s", "m", "t", "c", "d"


class RunLog:
    """The append side, owned by one writer; safe to call from several threads."""

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = os.fspath(path)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            _allocate(self._fd, 0, _INITIAL_SIZE)
            self._mm = mmap.mmap(self._fd, _INITIAL_SIZE)
        except OSError as exc:
            raise RegistryError(f"Failed to create the open-run log {self.path}: {exc}") from exc
        self._size = _INITIAL_SIZE
        self._mm[0:HEADER] = MAGIC + bytes(HEADER - len(MAGIC))
        self._pos = HEADER
        self._lock = threading.Lock()

    def append(self, record: tuple[Any, ...]) -> None:
        """Append one record; it survives the process from the moment this returns (a no-op once closed)."""
        data = _dumps(record)
        framed = _pack(len(data), _crc32(data)) + data
        with self._lock:
            pos = self._pos
            end = pos + len(framed)
            if end + 8 > self._size:
                if self._fd < 0:
                    return
                self._grow(end + 8)
            self._mm[pos:end] = framed
            self._pos = end

    def reset(self) -> None:
        """Forget every record (no run of this writer is open any more)."""
        with self._lock:
            if self._fd < 0:
                return
            self._mm[HEADER : self._pos] = bytes(self._pos - HEADER)
            self._pos = HEADER

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                self._mm.close()
                os.close(self._fd)
                self._fd = -1
                self._size = 0  # every later append takes the (no-op) slow path

    def _grow(self, needed: int) -> None:
        size = self._size
        while size < needed:
            size *= 2
        try:
            _allocate(self._fd, self._size, size - self._size)
            self._mm.resize(size)
        except OSError as exc:
            raise RegistryError(f"Failed to grow the open-run log {self.path} to {size} bytes: {exc}") from exc
        self._size = size


def _allocate(fd: int, offset: int, length: int) -> None:
    """Reserve the blocks now: a store into a mapped page the file system cannot back is SIGBUS.

    ``posix_fallocate`` fails with ENOSPC at once on a full disk, where a sparse
    ``ftruncate`` would let a later append kill the process.
    """
    os.posix_fallocate(fd, offset, length)


def read_records(data: bytes) -> list[tuple[Any, ...]]:
    """Every intact record of a log file's bytes, in order (stops at the first zero, torn or bad one)."""
    if data[: len(MAGIC)] != MAGIC:
        return []
    out: list[tuple[Any, ...]] = []
    pos = HEADER
    limit = len(data) - _RECORD.size
    while pos <= limit:
        length, crc = _RECORD.unpack_from(data, pos)
        start = pos + _RECORD.size
        if length == 0 or start + length > len(data):
            break
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            break
        try:
            record = marshal.loads(payload)
        except (ValueError, EOFError, TypeError):
            break
        if not isinstance(record, tuple) or len(record) < 2 or not isinstance(record[1], int):
            break
        out.append(record)
        pos = start + length
    return out


@dataclass
class OpenRun:
    """What a log says about one run that was opened and never closed."""

    run_id: int
    started_ns: int
    params: dict[str, Any] = field(default_factory=dict)
    attachments: dict[str, tuple[dict[str, Any], str | None]] = field(default_factory=dict)
    solves: list[Any] = field(default_factory=list)
    samplings: list[Any] = field(default_factory=list)
    trace: dict[str, Any] | None = None


def open_runs(records: list[tuple[Any, ...]]) -> dict[int, OpenRun]:
    """The runs a log shows as opened and neither closed nor abandoned, by run id."""
    runs: dict[int, OpenRun] = {}
    for record in records:
        kind, run_id = record[0], record[1]
        if kind == OPEN:
            runs[run_id] = OpenRun(run_id, int(record[2]))
            continue
        run = runs.get(run_id)
        if run is None:
            continue
        if kind == PARAM:
            run.params[str(record[2])] = record[3]
        elif kind == ATTACHMENT:
            run.attachments[str(record[2])] = (record[3], record[4])
        elif kind == SOLVE:
            run.solves.append(record[2])
        elif kind == SAMPLING:
            run.samplings.append(record[2])
        elif kind == TRACE:
            run.trace = record[2]
        elif kind in (CLOSED, DROPPED):
            del runs[run_id]
    return runs


def read_log(path: os.PathLike[str] | str) -> dict[int, OpenRun]:
    """The open runs recorded in the log file at ``path`` (missing file: none)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return {}
    return open_runs(read_records(data))
