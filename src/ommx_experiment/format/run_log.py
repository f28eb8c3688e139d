"""The open-run log of one writer: what its open Runs logged, surviving SIGKILL of the process.

One file per writer (``<root>/.oxe-writers/<writer id>.log``, beside the lock of
:mod:`ommx_experiment.engine.writers`), memory-mapped and appended to without a
system call: a record is in the page cache as soon as the copy into the mapping
returns, so it survives the death of the process (not a power loss; closed runs
are made durable by the journal, not by this log). The per-log cost is a
``marshal`` encoding, a CRC and one copy (about a microsecond).

Layout: a 16-byte header (``b"OXERLOG1"``, a *seal flag* byte, 7 reserved bytes), then records
``[u32 length][u32 crc32(payload)][payload]`` where the payload is
``marshal.dumps((kind, run_id, *fields))``. A record is followed by zero bytes
or the end of the file (the file grows zero-filled), so a reader stops at the first zero
length, a length past the end, or a CRC mismatch (a record torn by the kill, or the
tail of an older record after a reset).
When none of the writer's runs is open the log is *reset*: the used bytes are
zeroed and appends restart after the header, so the file stays as small as the
largest set of simultaneously open runs.

Record kinds (``run_id`` first):

====== ==========================================================================
``o``  run opened: ``(started_ns,)``
``p``  parameter: ``(name, value)`` (bool/int/float/str; the last one wins)
``a``  attachment: ``(name, descriptor dict, filename or None[, bytes])``; the bytes of a
       small attachment not in the blob store yet (*inline*: stored with the batch
       that writes the run's row, spec/experiment.md "Inline attachments")
``s``  solve record (journal object), ``m`` sampling record, ``t`` trace descriptor
``f``  run closed, not yet in the journal: ``(status, reason, finished_ns)``
       (group commit: its row is written with the next batch; until then this
       log is where other processes and recovery find it, as a *closed* run)
``c``  run closed and journaled (recovery skips it)
``d``  run abandoned without a record (its handle was dropped unclosed)
====== ==========================================================================

Group commit handshake (spec/experiment.md, "Group commit"): a writer appends
``f`` records only while holding ``flock`` on its log file and only when the
seal flag (header byte 8) is clear. A committer sets the flag of every live
writer (:func:`quiesce`), then takes and drops each one's ``flock``: from then on
no ``f`` record can appear, and the ones present are part of the commit.
"""

from __future__ import annotations

import fcntl
import marshal
import mmap
import os
import struct
import sys
import threading
import time
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
# ``mmap.write`` copies and advances the position in one C call that holds the GIL, so
# threads appending at once never interleave; a free-threaded build takes the lock.
_WRITE_IS_ATOMIC = getattr(sys, "_is_gil_enabled", lambda: True)()

OPEN, PARAM, ATTACHMENT, SOLVE, SAMPLING, TRACE, CLOSED, DROPPED = "o", "p", "a", "s", "m", "t", "c", "d"
PENDING = "f"
FLAG_OFFSET = len(MAGIC)


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
        self._mm.seek(HEADER)  # the append position is the mapping's own (``mmap.write``)
        self._lock = threading.Lock()

    def append(self, record: tuple[Any, ...]) -> None:
        """Append one record; it survives the process from the moment this returns (a no-op once closed)."""
        data = _dumps(record)
        framed = _pack(len(data), _crc32(data)) + data
        if _WRITE_IS_ATOMIC:
            try:
                self._mm.write(framed)  # one C call under the GIL: position and copy move together
                return
            except ValueError:  # past the end of the mapping, or the log was closed
                pass
        with self._lock:
            while self._fd >= 0:
                mm = self._mm
                needed = mm.tell() + len(framed)
                if needed > self._size:
                    self._grow(needed)
                try:
                    mm.write(framed)
                    return
                except ValueError:  # a lock-free append (another thread) took the room meanwhile: grow again
                    continue

    def sealing(self) -> bool:
        """The seal flag a committer sets (:func:`quiesce`): closes must then go to the journal directly."""
        return self._fd >= 0 and self._mm[FLAG_OFFSET] != 0

    def clear_flag(self) -> None:
        """Clear a stale seal flag (call under :meth:`close_lock`, after the journal said it is not sealing)."""
        if self._fd >= 0:
            self._mm[FLAG_OFFSET] = 0

    def close_lock(self) -> None:
        """Take the close lock (``flock`` on the log file); a committer waits for it in :func:`quiesce`."""
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def close_unlock(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def reset(self) -> None:
        """Forget every record (no run of this writer is open any more)."""
        with self._lock:
            if self._fd < 0:
                return
            mm = self._mm
            used = mm.tell()
            mm[HEADER:used] = bytes(used - HEADER)
            mm.seek(HEADER)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                self._mm.close()
                os.close(self._fd)
                self._fd = -1
                self._size = 0

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


def quiesce(path: os.PathLike[str] | str, timeout: float) -> bool:
    """Wait for the close a live writer may be in (its ``flock``) and set its seal flag under that lock.

    Afterwards the writer appends no ``f`` record until the flag is cleared, so the
    ``f`` records in the log are final. False when there is no such log (the
    writer is gone); ``TimeoutError`` when the writer held its close lock for ``timeout`` seconds.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the writer of {os.fspath(path)} held its close lock for {timeout} s") from None
                time.sleep(0.001)
        os.pwrite(fd, b"\x01", FLAG_OFFSET)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return True


def read_records(data: bytes) -> list[tuple[Any, ...]]:
    """Every intact record of a log file's bytes, in order (stops at the first zero, torn or bad one)."""
    if data[: len(MAGIC)] != MAGIC:
        return []
    return records_from(data, HEADER)[0]


def records_from(data: Any, pos: int) -> tuple[list[tuple[Any, ...]], int]:
    """The intact records of ``data`` (bytes or a mapping) from offset ``pos``, and where they end."""
    out: list[tuple[Any, ...]] = []
    size = len(data)
    limit = size - _RECORD.size
    while pos <= limit:
        length, crc = _RECORD.unpack_from(data, pos)
        start = pos + _RECORD.size
        if length == 0 or start + length > size:
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
    return out, pos


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
    inline: dict[str, bytes] = field(default_factory=dict)
    """Bytes of inline attachments (digest -> bytes), not in the blob store before the run's batch."""
    closed: tuple[str, str | None, int] | None = None
    """``(status, reason, finished_ns)`` of a run closed but not yet journaled (an ``f`` record)."""


def open_runs(records: list[tuple[Any, ...]]) -> dict[int, OpenRun]:
    """The runs a log shows as opened and neither closed nor abandoned, by run id."""
    return scan(records)[0]


def scan(records: list[tuple[Any, ...]]) -> tuple[dict[int, OpenRun], dict[int, OpenRun]]:
    """``(open, pending)``: runs still open, and runs closed but not yet journaled (``f`` records), by run id."""
    state = LogScan()
    state.feed(records)
    return state.open, state.pending


class LogScan:
    """The state :func:`scan` builds, fed record by record (:class:`LogTail` feeds it incrementally).

    ``changes`` counts every change of :attr:`pending` (an entry, once added, never changes).
    """

    __slots__ = ("changes", "open", "pending")

    def __init__(self) -> None:
        self.open: dict[int, OpenRun] = {}
        self.pending: dict[int, OpenRun] = {}
        self.changes = 0

    def feed(self, records: list[tuple[Any, ...]]) -> None:
        runs, pending = self.open, self.pending
        for record in records:
            kind, run_id = record[0], record[1]
            if kind == OPEN:
                runs[run_id] = OpenRun(run_id, int(record[2]))
                continue
            run = runs.get(run_id)
            if run is None:
                if kind == CLOSED and pending.pop(run_id, None) is not None:  # a pending run journaled later
                    self.changes += 1
                continue
            if kind == PARAM:
                run.params[str(record[2])] = record[3]
            elif kind == ATTACHMENT:
                run.attachments[str(record[2])] = (record[3], record[4])
                if len(record) > 5 and type(record[5]) is bytes and isinstance(record[3], dict):
                    run.inline[str(record[3].get("digest"))] = record[5]
            elif kind == SOLVE:
                run.solves.append(record[2])
            elif kind == SAMPLING:
                run.samplings.append(record[2])
            elif kind == TRACE:
                run.trace = record[2]
            elif kind == PENDING:
                if len(record) >= 5 and isinstance(record[4], int):
                    run.closed = (str(record[2]), None if record[3] is None else str(record[3]), record[4])
                    pending[run_id] = run
                    self.changes += 1
                del runs[run_id]
            elif kind in (CLOSED, DROPPED):
                del runs[run_id]


class LogTail:
    """Another writer's log, read again only where it changed (``Journal.snapshot``'s cached view).

    The file is mapped read-only. A read compares the bytes parsed last time (a
    reset or a rewrite shows there: everything is parsed again) and parses only
    the records appended after them, so an unchanged log costs one ``fstat`` and
    one comparison of its used bytes. A missing file has no records.
    """

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = os.fspath(path)
        self.state = LogScan()
        self.generation = 0  # bumped when the state is rebuilt from scratch
        self._fd = -1
        self._mm: mmap.mmap | None = None
        self._end = HEADER
        self._parsed = b""
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return

    def version(self) -> tuple[int, int]:
        """Changes whenever the pending runs may have changed."""
        return self.generation, self.state.changes

    def refresh(self) -> None:
        """Bring :attr:`state` up to the file's current records."""
        if self._fd < 0:
            return
        size = os.fstat(self._fd).st_size
        if self._mm is None or len(self._mm) < size:
            if size < HEADER:
                return
            if self._mm is not None:
                self._mm.close()
            self._mm = mmap.mmap(self._fd, size, prot=mmap.PROT_READ)
        mm = self._mm
        if mm[: len(MAGIC)] != MAGIC or mm[HEADER : self._end] != self._parsed:
            self.state = LogScan()
            self.generation += 1
            self._end, self._parsed = HEADER, b""
            if mm[: len(MAGIC)] != MAGIC:
                return
        records, end = records_from(mm, self._end)
        if records:
            self.state.feed(records)
            self._parsed += mm[self._end : end]
            self._end = end

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_log(path: os.PathLike[str] | str) -> dict[int, OpenRun]:
    """The open runs recorded in the log file at ``path`` (missing file: none)."""
    return read_log_state(path)[0]


def read_log_state(path: os.PathLike[str] | str) -> tuple[dict[int, OpenRun], dict[int, OpenRun]]:
    """``(open, pending)`` runs of the log file at ``path`` (see :func:`scan`; missing file: none)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return {}, {}
    return scan(read_records(data))
