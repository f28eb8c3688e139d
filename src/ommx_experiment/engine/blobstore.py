"""Content-addressed blob store: ``<root>/blobs/sha256/<64 lowercase hex>``.

The engine is deliberately narrow (put, get, open, exists, size, touch, delete);
refs, manifests and garbage collection are policy and live elsewhere.

Publication follows OMMX 3's protocol so both libraries can share a root
(registry-sharing.md §3, §7.3): write a temp file in ``blobs/sha256/`` while
hashing it, fsync, then under ``flock(blobs/.lock)`` link it into place without
clobbering and touch its mtime; if the blob already exists, re-verify it and
touch it instead (the mtime is what protects it from a concurrent GC).

*Leases* protect in-flight blobs from our own deleting GC even with a zero
grace period: before a blob is linked or touched, its digest is appended to
this process's lease file ``.oxe-leases/<pid>-<token>.lease`` (held with a
shared ``flock`` for the life of the process); once a ref reaches it,
:meth:`BlobStore.release` drops it. Our GC never deletes a digest leased by a
live process other than its own calling thread (spec/registry.md §3).

*Pins* hand a lease to another process: a live process opens a pins folder
``.oxe-leases/<pid>-<token>.pins/`` beside its lease file (:meth:`BlobStore.pins_dir`),
and a writer elsewhere (a sweep worker, on this host or another one that mounts
the root) opens ``BlobStore(root, pin=PinFile(<that folder>/<name>.pin))``: its leases are
appended to that pin file instead of its own lease file. A pin protects its
digests while the folder's owner lives, whatever becomes of the writer; the owner
deletes the pin file once a ref (or journal row) reaches them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar

from ..errors import BlobNotFoundError, DigestMismatchError, RegistryError
from . import atomic
from .digest import (
    SHA256_PREFIX,
    StreamingDigest,
    is_valid_digest,
    is_valid_hex,
    sha256_digest,
    sha256_digest_chunks,
)
from .locks import BLOB_LOCK, GC_EXCLUSION_LOCK, flock_exclusive

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

CHUNK = 1 << 20  # 1 MiB: bounded memory (a few chunks in flight) whatever the blob size
LEASE_DIR = ".oxe-leases"
LEASE_SUFFIX = ".lease"
PINS_SUFFIX = ".pins"
PIN_SUFFIX = ".pin"
FRESH_MTIME_SECONDS = 1.0
"""``touch_verified`` does not touch a blob whose mtime is younger than this (it was touched or written just now)."""


class _Leases:
    """This process's lease file for one root.

    Lines: ``+<thread id> <digest>`` (appended *before* the blob is linked or
    touched) and ``-<monotonic ns> <digest>`` (appended *after* a ref that reaches
    it was committed). A GC ignores releases stamped after it began reading
    ``refs``, so a blob released too late for its ref snapshot stays protected.
    The file is created under a temp name, locked ``LOCK_SH`` and only then
    renamed into place: a GC that can take ``LOCK_EX`` on a lease file knows its
    owner is gone.

    Compaction keeps the file small whatever the number of closes: once it holds
    more than :attr:`COMPACT_BYTES`, a new lease file with only the ``+`` lines of
    the digests still held replaces it under the same name (created, locked and
    renamed over it like the first), while this process holds
    ``.gc-exclusion.lock`` (taken without waiting; busy means a GC is running, and
    compaction waits for a later release). A deleting GC holds that lock from the
    moment it reads ``refs`` until its last unlink, so no GC can be between its
    ``refs`` snapshot and its lease read while history is dropped.
    """

    COMPACT_BYTES = 64 * 1024

    def __init__(self, root: Path) -> None:
        self.dir = root / LEASE_DIR
        self._gc_lock = root / GC_EXCLUSION_LOCK
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._name = ""
        self._fd = -1
        self._held: dict[str, int] = {}  # digest -> id of the thread that leased it
        self._size = 0

    def _ensure_open(self) -> None:
        if self._pid == os.getpid():
            return
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        self._fd = self._new_file(name, "")
        self._pid, self._name, self._held, self._size = os.getpid(), name, {}, 0

    def _new_file(self, name: str, content: str) -> int:
        """The lease file ``name`` holding ``content``: written and locked ``LOCK_SH`` under a temp
        name, then renamed into place (over the previous file of that name, if any)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / atomic.temp_name("lease-")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if content:
                os.write(fd, content.encode())
            os.rename(tmp, self.dir / f"{name}{LEASE_SUFFIX}")
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return fd

    def _append(self, text: str) -> None:
        data = text.encode()
        os.write(self._fd, data)
        self._size += len(data)

    def pins_dir(self) -> Path:
        """This process's pins folder, created beside its lease file (opened now if needed)."""
        with self._lock:
            try:
                self._ensure_open()
                path = self.dir / f"{self._name}{PINS_SUFFIX}"
                path.mkdir(exist_ok=True)
            except OSError as exc:
                raise RegistryError(f"Failed to create a pins folder in {self.dir}: {exc}") from exc
            return path

    def owner_token(self) -> str:
        """This process's lease token (creating the lease file once): temp files named with it
        are known dead as soon as the lease is (:func:`lease_is_live`), whatever their age."""
        with self._lock:
            try:
                self._ensure_open()
            except OSError as exc:
                raise RegistryError(f"Failed to create the lease file in {self.dir}: {exc}") from exc
            return self._name.split("-", 1)[1]

    def acquire(self, digest: str) -> None:
        with self._lock:
            try:
                self._ensure_open()  # a forked child gets its own file and an empty held set
                if digest in self._held:
                    return
                tid = threading.get_ident()
                self._append(f"+{tid} {digest}\n")
            except OSError as exc:
                raise RegistryError(f"Failed to lease blob {digest} in {self.dir}: {exc}") from exc
            self._held[digest] = tid

    def release(self, digests: Iterable[str]) -> None:
        with self._lock:
            if self._pid != os.getpid():
                return
            gone = [d for d in dict.fromkeys(digests) if d in self._held]
            if not gone:
                return
            stamp = time.monotonic_ns()
            try:
                self._append("".join(f"-{stamp} {d}\n" for d in gone))
            except OSError:
                return  # still leased: over-protects until this process exits, never under-protects
            for digest in gone:
                del self._held[digest]
            if self._size > self.COMPACT_BYTES:
                self._compact()

    def compact_if_due(self) -> None:
        """Compact now if a release found it due while a GC lock was held (this process's own
        publish window, in which every ref write releases): called when a window closes."""
        with self._lock:
            if self._pid == os.getpid() and self._size > self.COMPACT_BYTES:
                self._compact()

    def _compact(self) -> None:
        """Swap in a new lease file holding only the ``+`` lines still held (see the class doc).

        The new file is complete and locked before the old one goes; any failure
        keeps the old file, which over-protects and never under-protects.
        """
        try:
            lock_fd = os.open(self._gc_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError:
            return
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # a GC is running (or this process holds the lock elsewhere): later
            try:
                held = "".join(f"+{tid} {d}\n" for d, tid in self._held.items())
                fd = self._new_file(self._name, held)  # same name: the pins folder stays this file's
            except OSError:
                return
            old_fd, self._fd, self._size = self._fd, fd, len(held.encode())
            os.close(old_fd)
        finally:
            os.close(lock_fd)  # closing the descriptor releases the lock


class PinFile:
    """Leases written into a pin file of another process's pins folder (see the module doc).

    One writer per file: each line is appended before the blob is linked or
    touched. On the folder owner's host the page cache makes it visible to every
    process at once (as for lease files); a writer on another host passes
    ``sync=True`` so each line is fsynced, which a shared filesystem needs before
    a GC elsewhere can read it. The folder must exist (its owner created it);
    once its owner is gone, a GC removes it and a later lease fails with
    :class:`RegistryError`. :meth:`release` keeps the lines: the folder's owner
    deletes the whole file when a ref reaches the blobs.
    """

    def __init__(self, path: Path, *, sync: bool = False) -> None:
        self.path = path
        self.sync = sync
        self._lock = threading.Lock()
        self._fd = -1
        self.digests: set[str] = set()

    def acquire(self, digest: str) -> None:
        with self._lock:
            if digest in self.digests:
                return
            try:
                if self._fd < 0:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
                os.write(self._fd, f"+0 {digest}\n".encode())
                if self.sync:
                    os.fsync(self._fd)
            except OSError as exc:
                raise RegistryError(f"Failed to pin blob {digest} in {self.path}: {exc}") from exc
            self.digests.add(digest)

    def release(self, digests: Iterable[str]) -> None:
        return None

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


_LEASES: dict[Path, _Leases] = {}
_LEASES_GUARD = threading.Lock()


def _leases_for(root: Path) -> _Leases:
    with _LEASES_GUARD:
        leases = _LEASES.get(root)
        if leases is None:
            leases = _LEASES[root] = _Leases(root)
        return leases


def read_live_leases(root: Path, refs_read_at_ns: int, *, remove_dead: bool = False) -> set[str]:
    """Digests that live writers still lease, as seen by a GC that began reading ``refs`` at
    ``refs_read_at_ns`` (``time.monotonic_ns()``); the calling thread's own leases excluded.

    A lease file whose ``LOCK_EX`` can be taken belongs to a dead process: it
    protects nothing and, with ``remove_dead``, is deleted.
    """
    folder = root / LEASE_DIR
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(LEASE_SUFFIX)]
    except FileNotFoundError:
        return set()
    me = (os.getpid(), threading.get_ident())
    leased: set[str] = set()
    for entry in entries:
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            pins = entry.path[: -len(LEASE_SUFFIX)] + PINS_SUFFIX
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                data = b"".join(fd_chunks(fd))
                leased |= _parse_lease(data, _lease_pid(entry.name), me, refs_read_at_ns)
                leased |= _read_pins(pins)
                continue
            if remove_dead:
                shutil.rmtree(pins, ignore_errors=True)
                if not os.path.lexists(pins):  # else a later GC tries again
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        finally:
            os.close(fd)
    return leased


def lease_is_live(root: Path, pid: int, token: str) -> bool:
    """Whether the process that owns lease ``<pid>-<token>`` is alive (it holds its lease file's lock)."""
    try:
        fd = os.open(root / LEASE_DIR / f"{pid}-{token}{LEASE_SUFFIX}", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_dead_temp_files(root: Path, folder: Path) -> int:
    """Remove the lease-owned temp files in ``folder`` whose writer is dead; returns the count.

    A writer killed with SIGKILL leaves its temp files (blob writes, import
    staging); its lease tells at once that it is gone. Temp files without an
    owner token are left to :meth:`BlobStore.clean_stale_temp_files` (age-based).
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    verdicts: dict[tuple[int, str], bool] = {}
    for entry in entries:
        if not entry.name.startswith(atomic.TEMP_PREFIX):
            continue
        owner = atomic.temp_owner(entry.name)
        if owner is None or owner[1] is None:
            continue
        key = (owner[0], owner[1])
        if key not in verdicts:
            verdicts[key] = lease_is_live(root, *key)
        if not verdicts[key]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


def _read_pins(folder: str) -> set[str]:
    """Every digest named in the ``*.pin`` files of a live process's pins folder."""
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(PIN_SUFFIX)]
    except (FileNotFoundError, NotADirectoryError):
        return set()
    pinned: set[str] = set()
    for entry in entries:
        try:
            with open(entry.path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            continue
        pinned |= _parse_lease(data, None, (-1, -1), 0)
    return pinned


def _lease_pid(name: str) -> int | None:
    head = name.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _parse_lease(data: bytes, pid: int | None, me: tuple[int, int], refs_read_at_ns: int) -> set[str]:
    net: dict[str, int] = {}
    for line in data.decode("ascii", "replace").split("\n")[:-1]:  # a torn last line has no newline
        head, _, digest = line[1:].partition(" ")
        if not head.isdigit() or not is_valid_digest(digest):
            continue
        if line.startswith("+"):
            net[digest] = int(head)
        elif line.startswith("-") and int(head) < refs_read_at_ns:
            net.pop(digest, None)  # released before the GC read refs: that ref snapshot covers it
    return {d for d, tid in net.items() if (pid, tid) != me}


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob known to be present in the store."""

    digest: str
    size: int


class _LeaseSink(Protocol):
    def acquire(self, digest: str) -> None: ...

    def release(self, digests: Iterable[str]) -> None: ...


class BlobStore:
    """The CAS of one registry root. Thread- and process-safe.

    ``pin``: lease into that pin file rather than this process's lease file.
    """

    def __init__(self, root: Path, *, pin: PinFile | None = None) -> None:
        self.root = root
        self.dir = root / "blobs" / "sha256"
        self._prefix = os.path.join(os.fspath(self.dir), "")  # hot reads build str paths, not Paths
        self._lock_path = root / BLOB_LOCK
        self._leases: _LeaseSink = _leases_for(Path(root).absolute()) if pin is None else pin
        # Temp files carry this process's lease token (dead with it); a pin-mode writer holds no
        # lease of its own, so its temps carry only the pid (age-based cleanup).
        self._own = _leases_for(Path(root).absolute()) if pin is None else None
        self._next_cleanup = 0.0  # time.monotonic() of the next dead-temp sweep of blobs/sha256
        self._unsynced = 0  # blobs linked or reused since the last folder fsync (see sync_links)
        self._sync_guard = threading.Lock()
        self._batches = threading.local()  # .pending: this thread's open batch (see batch()), or absent
        self._batched = 0  # how many threads have a batch open (reads skip the lookup when 0)

    # --- paths ---------------------------------------------------------------

    def ensure_dirs(self) -> None:
        """Create ``blobs/sha256`` if missing (one ``stat`` when present: every new blob asks)."""
        if not os.path.isdir(self._prefix):
            self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Where the blob named ``digest`` lives (it may not exist; a blob of this thread's
        open batch is published first, so that the path can be read)."""
        if self._batched:
            self._flush_if_pending(digest)
        return Path(self._fspath(digest))

    # --- reads ---------------------------------------------------------------

    def _fspath(self, digest: str) -> str:
        """:meth:`path` as a ``str`` (the read paths' hot loop: a ``Path`` costs more than the stat)."""
        if not is_valid_digest(digest):
            raise DigestMismatchError(f"Invalid blob digest {digest!r}: expected sha256:<64 lowercase hex>")
        return self._prefix + digest[len(SHA256_PREFIX) :]

    def exists(self, digest: str) -> bool:
        if self._batched and digest in self._pending():
            return True  # written and complete; linked by the batch's flush, before any ref
        return os.path.isfile(self._fspath(digest))

    def size(self, digest: str) -> int:
        if self._batched and digest in (pending := self._pending()):
            return pending[digest].size
        try:
            return os.stat(self._fspath(digest)).st_size
        except FileNotFoundError:
            raise BlobNotFoundError(f"Failed to read blob {digest}: not found in {self.dir}") from None

    def get(self, digest: str) -> bytes:
        """The blob's bytes, verified against ``digest``."""
        if self._batched:
            self._flush_if_pending(digest)
        path = self._fspath(digest)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise BlobNotFoundError(f"Failed to read blob {digest}: not found at {path}") from None
        except OSError as exc:
            raise BlobNotFoundError(f"Failed to read blob {digest} at {path}: {exc}") from exc
        actual = sha256_digest(data)
        if actual != digest:
            raise DigestMismatchError(f"Failed to read blob {digest}: content at {path} hashes to {actual}")
        return data

    def open(self, digest: str) -> BinaryIO:
        """Open the blob for streaming reads (unverified; see :meth:`verify`)."""
        if self._batched:
            self._flush_if_pending(digest)
        path = self._fspath(digest)  # a str: a Path per blob costs as much as the open (save, push)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"Failed to read blob {digest}: not found at {path}") from None

    def iter_chunks(self, digest: str) -> Iterator[bytes]:
        """Stream the blob in chunks; raises DigestMismatchError at the end if it is corrupt."""
        hasher = StreamingDigest()
        with self.open(digest) as fh:
            for chunk in _read_chunks(fh):
                hasher.update(chunk)
                yield chunk
        if hasher.digest() != digest:
            raise DigestMismatchError(f"Blob {digest} at {self.path(digest)} does not match its digest")

    def copy_to(self, digest: str, handle: BinaryIO, path: Path | str) -> None:
        """Copy the blob into ``handle`` (a new file open for writing at ``path``) by the kernel,
        hashing the copied bytes read back from ``path`` (:func:`_copy_file_hashed`); raises
        :class:`DigestMismatchError` if they do not match ``digest`` (the copy is then not to be
        published). The caller syncs and publishes ``path``."""
        hasher = StreamingDigest()
        with self.open(digest) as fh:
            _copy_file_hashed(fh.fileno(), handle, path, hasher)
        if hasher.digest() != digest:
            raise DigestMismatchError(f"Blob {digest} at {self.path(digest)} does not match its digest")

    def verify(self, digest: str, size: int | None = None) -> bool:
        """True if the blob exists, has ``size`` (if given) and hashes to ``digest``."""
        path = self.path(digest)
        try:
            if size is not None and path.stat().st_size != size:
                return False
            return _hash_file(path) == digest
        except FileNotFoundError:
            return False

    def holds(self, digest: str, data: bytes) -> bool:
        """Whether the stored blob ``digest`` is exactly ``data`` (no lock, no touch: for a small
        blob that a ref write in the same publish window checks and touches anyway)."""
        if self._batched and digest in self._pending():
            return True
        return _file_equals(self._fspath(digest), data)

    def iter_digests(self) -> Iterator[str]:
        """Every ``blobs/sha256/<64 lowercase hex>`` regular file, as a digest."""
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if is_valid_hex(entry.name) and entry.is_file(follow_symlinks=False):
                yield SHA256_PREFIX + entry.name

    # --- writes --------------------------------------------------------------

    def put_bytes(self, data: bytes, *, expected_digest: str | None = None) -> StoredBlob:
        """Store ``data``; idempotent. ``DigestMismatchError`` if ``expected_digest`` differs.

        An existing blob is compared byte for byte with ``data`` and touched under
        ``blobs/.lock`` (no temp file); ``data`` is hashed once.
        """
        digest = sha256_digest(data)
        _check_expected(digest, expected_digest, "bytes")
        pending = getattr(self._batches, "pending", None) if self._batched else None
        if pending is not None:
            if digest in pending:
                return StoredBlob(digest, len(data))
            # The helper looks for a stored copy too: a lookup in the folder here would wait for the
            # batch's own file creations there (the folder's lock, the file system's journal).
            return self._write_deferred(data, digest, pending)
        if self._touch_if_equal(digest, data):
            return StoredBlob(digest, len(data))
        return self._write_new([data], "bytes", known=(digest, len(data)))

    def put_file(self, path: Path, *, expected_digest: str | None = None) -> StoredBlob:
        """Stream the file at ``path`` into the store (memory bounded by a few chunks).

        One pass: the bytes are hashed while they are copied; a blob that turns out
        to be stored already is verified and touched, and the copy is dropped (unsynced
        below ``_EARLY_SYNC_BYTES``; a bigger copy is written back while it runs).
        """
        with open(path, "rb") as fh:
            if not hasattr(os, "copy_file_range"):
                return self.put_stream(fh, expected_digest=expected_digest, source=str(path))
            return self._write_new((), str(path), expected_digest=expected_digest, copy_from=fh.fileno())

    def put_stream(
        self, fh: BinaryIO, *, expected_digest: str | None = None, source: str = "stream"
    ) -> StoredBlob:
        """Store everything readable from ``fh``, in one pass (see :meth:`put_chunks`)."""
        return self.put_chunks(_read_chunks(fh), expected_digest=expected_digest, source=source)

    def put_chunks(
        self, chunks: Iterable[bytes], *, expected_digest: str | None = None, source: str = "stream"
    ) -> StoredBlob:
        """Store the concatenation of ``chunks``, hashing while writing (a helper thread writes
        one chunk while the next is hashed).

        The digest is known once the last chunk is written: if that blob is already
        stored (and verifies), it is touched and the temp copy removed without an
        fsync; else the copy is fsynced and published. The digest returned is that
        of the bytes actually stored, whatever the source did meanwhile.

        An I/O failure (full disk, file size limit, read-only root) is a
        :class:`RegistryError` naming the temp path; the temp file is removed and
        nothing appears under a digest name.
        """
        return self._write_new(chunks, source, expected_digest=expected_digest)

    def _write_new(
        self,
        chunks: Iterable[bytes],
        source: str,
        *,
        expected_digest: str | None = None,
        known: tuple[str, int] | None = None,
        copy_from: int | None = None,
    ) -> StoredBlob:
        """Write ``chunks`` (or, with ``copy_from``, everything readable from that file
        descriptor, see :func:`_copy_file_hashed`) to a temp file and publish it; ``known`` is
        ``(digest, size)`` of bytes the caller already hashed and found absent (then they are
        not hashed again)."""
        tmp: Path | str = self.dir
        owner = None if self._own is None else self._own.owner_token()
        self.remove_dead_temp_files(throttled=True)
        try:
            self.ensure_dirs()
            with atomic.temp_file(self.dir, stem="blob-", owner=owner) as (tmp, handle):
                if known is None:
                    hasher = StreamingDigest()
                    if copy_from is not None:
                        _copy_file_hashed(copy_from, handle, tmp, hasher)
                    else:
                        _copy_chunks(chunks, handle, hasher, source=source, sync=False)
                    digest, size = hasher.digest(), hasher.size
                    _check_expected(digest, expected_digest, source)
                    if self._touch_if_valid(digest, size):
                        return StoredBlob(digest, size)  # the unsynced copy goes with the temp name
                    atomic.sync_file(handle)
                else:
                    _copy_chunks(chunks, handle, source=source)
                    digest, size = known
                    _check_expected(digest, expected_digest, source)
                handle.close()
                self._publish(tmp, digest, size)
        except OSError as exc:
            raise RegistryError(f"Failed to write blob from {source} to {tmp}: {exc}") from exc
        return StoredBlob(digest, size)

    # --- batches: many small blobs, their fsyncs together -----------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Inside (this thread, re-entrant): :meth:`put_bytes` hands the blob to a helper thread
        that looks for a stored copy (no lookup in the folder by the caller, where it would wait
        for the batch's own file creations) and otherwise creates, writes and fsyncs its temp
        file, and returns at once; :meth:`flush` (run by :meth:`sync_links`, so before any ref or
        journal write, and on leaving the block) waits for them, links each new one under
        ``blobs/.lock`` exactly as a single put does and touches each stored one there. The
        blobs' file creations and fsyncs overlap (the file system commits them together) and
        overlap the caller's work.

        Until then the blob is not in the store for anyone else: :meth:`exists` and
        :meth:`size` answer from the batch, :meth:`get` and :meth:`path` publish it first.
        Leaving the block by an exception removes the temp files: nothing is published.
        The publish window (``LocalRegistry.publish_window``) opens one.
        """
        if getattr(self._batches, "pending", None) is not None:
            yield
            return
        pending: dict[str, _Deferred] = {}
        self._batches.pending = pending
        with self._sync_guard:
            self._batched += 1
        ok = False
        try:
            yield
            self.flush()
            ok = True
        finally:
            self._batches.pending = None
            with self._sync_guard:
                self._batched -= 1
            if not ok:
                _discard(pending)

    def flush(self) -> None:
        """Publish this thread's batched blobs now: wait until each is written and fsynced, then
        link them all under one ``blobs/.lock``."""
        pending = getattr(self._batches, "pending", None)
        if not pending:
            return
        items = list(pending.values())
        try:
            failed = _wait_all(items)
            if failed is not None:
                item, exc = failed
                raise RegistryError(f"Failed to write blob from bytes to {item.tmp}: {exc}") from exc
            written = {item.digest: item.done.result() for item in items}  # False: the store held it already
            stored = [item for item in items if not written[item.digest]]
            self._publish_many([(item.tmp, item.digest, item.size) for item in items if written[item.digest]])
            for item in stored:  # found stored by the helper: touched here, or written now if it changed since
                if not self._touch_if_equal(item.digest, item.data):
                    self._write_new([item.data], "bytes", known=(item.digest, item.size))
        finally:
            _discard(pending)  # linked names live on; the temp names go

    def _pending(self) -> dict[str, _Deferred]:
        pending = getattr(self._batches, "pending", None)
        return _NO_BATCH if pending is None else pending

    def _flush_if_pending(self, digest: str) -> None:
        if digest in self._pending():
            self.flush()

    def _write_deferred(self, data: bytes, digest: str, pending: dict[str, _Deferred]) -> StoredBlob:
        """Hand ``data`` to a helper thread that creates, writes and fsyncs its temp file.

        Creating a file waits for the file system's journal as an fsync does, so the
        blobs of a batch are created and synced side by side, while the caller goes on
        (encoding the next layer); :meth:`flush` waits for them.
        """
        owner = None if self._own is None else self._own.owner_token()
        self.remove_dead_temp_files(throttled=True)
        tmp = self._prefix + atomic.temp_name("blob-", owner=owner)  # the helper creates the folder if missing
        data = bytes(data)
        fut = _on_helper(_write_synced_unless_stored, tmp, self._prefix + digest[len(SHA256_PREFIX) :], data)
        pending[digest] = _Deferred(tmp, digest, len(data), fut, data)
        return StoredBlob(digest, len(data))

    def sync_links(self) -> None:
        """``fsync`` ``blobs/sha256`` if a blob was linked (or reused) since the last call.

        A put returns once the blob's bytes are fsynced and its name is linked; the
        *name* becomes power-loss durable here. Every ref write calls this before its
        transaction, so a durable ref never reaches a blob whose name is not. A reused
        blob counts too: another process may have linked it without syncing yet.
        This thread's open batch (:meth:`batch`) is published first.
        """
        if self._batched:
            self.flush()
        with self._sync_guard:
            pending = self._unsynced
        if not pending:
            return
        try:
            atomic.fsync_dir(self.dir)
        except OSError as exc:
            raise RegistryError(f"Failed to sync blob folder {self.dir}: {exc}") from exc
        with self._sync_guard:
            self._unsynced -= pending

    def _mark_unsynced(self) -> None:
        with self._sync_guard:
            self._unsynced += 1

    def staging(self) -> Staging:
        """A :class:`Staging` area for all-or-nothing multi-blob imports."""
        return Staging(self)

    def touch(self, digests: Iterable[str]) -> None:
        """Refresh the mtime of existing blobs under the blob lock (GC grace protection)."""
        with flock_exclusive(self._lock_path):
            for digest in digests:
                path = self.path(digest)
                try:
                    os.utime(path)
                except FileNotFoundError:
                    raise BlobNotFoundError(f"Failed to read blob {digest}: not found at {path}") from None
                self._mark_unsynced()

    def touch_verified(self, blobs: Iterable[tuple[str, int | None, str]]) -> None:
        """Check that every ``(digest, size or None, role)`` blob exists with that size, and touch it.

        One pass under ``blobs/.lock``. Every blob that is missing or has another
        size is named (with its role, e.g. ``layer 3 of manifest sha256:…``) in one
        :class:`BlobNotFoundError`; nothing is touched then. Used inside the
        publish window (``locks.gc_exclusion``), where no deleting GC can run.
        A blob whose mtime is already less than :data:`FRESH_MTIME_SECONDS` old by this
        clock is not touched again (a commit right after its draft: the draft's ref write
        touched every layer a moment ago); its mtime then starts a GC grace period at most
        that much earlier than a touch would.
        """
        wanted = list(blobs)
        problems: list[str] = []
        if self._batched:
            self.flush()
        with flock_exclusive(self._lock_path):
            paths = []
            now = time.time()
            for digest, size, role in wanted:
                path = self._fspath(digest)  # a str: a Path per blob costs more than its stat
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    problems.append(f"{digest} ({role}): not found")
                    continue
                if size is not None and st.st_size != size:
                    problems.append(f"{digest} ({role}): {st.st_size} bytes, expected {size}")
                if not 0 <= now - st.st_mtime < FRESH_MTIME_SECONDS:
                    paths.append(path)
            if not problems:
                for path in paths:
                    os.utime(path)
        if problems:
            shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
            raise BlobNotFoundError(f"Failed to read blob {shown} in {self.dir}")

    def remove_dead_temp_files(self, *, throttled: bool = False) -> int:
        """Remove temp files in ``blobs/sha256`` left by killed writers of ours (see
        :func:`remove_dead_temp_files`); ``throttled``: at most once a minute per process."""
        now = time.monotonic()
        if throttled and now < self._next_cleanup:
            return 0
        self._next_cleanup = now + 60.0
        return remove_dead_temp_files(self.root, self.dir)

    def release(self, digests: Iterable[str]) -> None:
        """Drop this process's leases on ``digests`` (a ref now reaches them)."""
        self._leases.release(digests)

    def compact_leases(self) -> None:
        """Shrink this process's lease file if releases made it due (outside any publish window)."""
        leases = self._leases
        if isinstance(leases, _Leases):
            leases.compact_if_due()

    def pins_dir(self) -> Path:
        """This process's pins folder for this root: pin files written there protect their
        digests from our GC while this process lives (see the module doc)."""
        return _leases_for(Path(self.root).absolute()).pins_dir()

    def adopt(self, digest: str, size: int) -> None:
        """Lease a blob that another process stored (e.g. under a pin), then check it is there.

        Raises :class:`BlobNotFoundError` when it is missing or has another size.
        """
        self._leases.acquire(digest)
        actual = self.size(digest)
        if actual != size:
            raise BlobNotFoundError(f"Failed to read blob {digest}: {actual} bytes in {self.dir}, expected {size}")
        self._mark_unsynced()  # linked by another process, maybe not synced: the next ref or journal write syncs

    def delete_unleased_if_older(self, digests: Iterable[str], cutoff: float, refs_read_at_ns: int) -> list[str]:
        """GC sweep: under one ``blobs/.lock``, unlink each blob that no live writer leases
        and whose mtime is still older than ``cutoff``; returns the deleted digests.

        ``refs_read_at_ns`` is ``time.monotonic_ns()`` taken just before the GC read
        ``refs`` (see :func:`read_live_leases`).

        Leases are read *under* the blob lock: a writer leases before it takes that
        lock to link or touch, so every blob a writer is about to reuse is seen here.
        """
        deleted = []
        with flock_exclusive(self._lock_path):
            leased = read_live_leases(self.root, refs_read_at_ns, remove_dead=True)
            for digest in digests:
                if digest in leased:
                    continue
                path = self.path(digest)
                try:
                    if path.stat().st_mtime >= cutoff:
                        continue
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                deleted.append(digest)
        return deleted

    def delete_if_older(self, digest: str, cutoff: float) -> bool:
        """Unlink the blob if its mtime is still older than ``cutoff`` (checked under the lock)."""
        path = self.path(digest)
        with flock_exclusive(self._lock_path):
            try:
                if path.stat().st_mtime >= cutoff:
                    return False
                os.unlink(path)
            except FileNotFoundError:
                return False
        return True

    def clean_stale_temp_files(self, *, older_than: float = 3600.0) -> int:
        """Remove our own temp files whose writer process is gone; returns the count.

        Looks in ``blobs/sha256/`` (blob and staging temps) and in the root (temps of
        ``index.json`` / ``oci-layout`` rewrites). Only names made by
        :func:`atomic.temp_name` are candidates, never OMMX's ``.blob-*`` temps.
        """
        removed = 0
        now = time.time()
        entries: list[os.DirEntry[str]] = []
        for folder in (self.dir, self.root, self.root / LEASE_DIR):
            try:
                entries.extend(os.scandir(folder))
            except FileNotFoundError:
                continue
        for entry in entries:
            owner = atomic.temp_owner(entry.name)
            if owner is None:
                continue
            pid, token = owner
            if token is not None:  # lease-owned: dead as soon as its lease is, whatever its age
                if not lease_is_live(self.root, pid, token):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
                continue
            if _pid_alive(pid):
                continue
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime >= older_than:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    # --- internals -----------------------------------------------------------

    def _touch_if_equal(self, digest: str, data: bytes) -> bool:
        """If the stored blob equals ``data`` (size, then bytes), touch it under the lock: True.

        Comparing with the bytes in hand verifies the stored copy without hashing it.
        """
        path = os.path.join(self.dir, digest[7:])  # digest computed by us: always well formed
        try:
            if os.stat(path).st_size != len(data):
                return False  # missing or a corrupt squatter: the publish path handles it
        except FileNotFoundError:
            return False
        self._leases.acquire(digest)
        with flock_exclusive(self._lock_path):
            if _file_equals(path, data):
                os.utime(path)
                self._mark_unsynced()
                return True
        return False

    def _touch_if_valid(self, digest: str, size: int) -> bool:
        """If a valid copy exists, touch it under the lock and return True."""
        path = self.path(digest)
        if not path.exists():
            return False
        self._leases.acquire(digest)
        with flock_exclusive(self._lock_path):
            if _valid_file(path, digest, size):
                os.utime(path)
                self._mark_unsynced()
                return True
        return False

    def _publish(self, tmp: Path, digest: str, size: int) -> None:
        self._publish_many([(tmp, digest, size)])

    def _publish_many(self, blobs: list[tuple[Path | str, str, int]]) -> None:
        """Link each fsynced temp file to its digest name, all under one ``blobs/.lock``."""
        for _, digest, _ in blobs:
            self._leases.acquire(digest)
        final = ""
        try:
            with flock_exclusive(self._lock_path):
                for tmp, digest, size in blobs:
                    final = self._prefix + digest[len(SHA256_PREFIX) :]
                    if atomic.publish_noclobber(tmp, final, sync_dir=False):
                        os.utime(final)
                    elif not _valid_file(Path(final), digest, size):
                        # A corrupt file squats on the digest name: our verified copy replaces it.
                        atomic.publish_replace(Path(tmp), Path(final))
                        continue
                    else:
                        os.utime(final)
                    self._mark_unsynced()
        except OSError as exc:
            raise RegistryError(f"Failed to publish blob at {final}: {exc}") from exc


class InlineBlobs:
    """Reads of a :class:`BlobStore` that also see bytes not stored yet (``digest -> bytes``).

    A deferred Run close carries its small attachments inline (spec/experiment.md,
    "Inline attachments") until its batch stores them; a view of such a run reads
    through this. Everything but :meth:`get`, :meth:`open` and :meth:`iter_chunks`
    is the store's own.
    """

    __slots__ = ("inline", "store")

    def __init__(self, store: BlobStore, inline: Mapping[str, bytes]) -> None:
        self.store = store
        self.inline = inline

    def get(self, digest: str) -> bytes:
        data = self.inline.get(digest)
        return self.store.get(digest) if data is None else data

    def open(self, digest: str) -> BinaryIO:
        data = self.inline.get(digest)
        return self.store.open(digest) if data is None else io.BytesIO(data)

    def iter_chunks(self, digest: str) -> Iterator[bytes]:
        data = self.inline.get(digest)
        if data is None:
            yield from self.store.iter_chunks(digest)
        else:
            yield data

    def copy_to(self, digest: str, handle: BinaryIO, path: Path | str) -> None:
        data = self.inline.get(digest)
        if data is None:
            self.store.copy_to(digest, handle, path)
            return
        if sha256_digest(data) != digest:  # as the store's copy: never publish other bytes
            raise DigestMismatchError(f"Inline bytes of {digest} do not match their digest")
        handle.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


@dataclass(frozen=True, slots=True)
class _Deferred:
    """A batched blob: a helper thread creates, writes and fsyncs its temp file (``done``)."""

    tmp: str
    digest: str
    size: int
    done: Future[bool]  # True: written to ``tmp`` and fsynced; False: the store held these bytes already
    data: bytes


_T = TypeVar("_T")
_NO_BATCH: dict[str, _Deferred] = {}  # what a thread without a batch sees (never written)


_SYNC_THREADS = 8  # helpers of the batches: a commit's layers, config and manifest written side by side
_pool: ThreadPoolExecutor | None = None
_pool_guard = threading.Lock()


def _forget_sync_pool() -> None:
    global _pool
    _pool = None  # a forked child has none of its parent's threads


os.register_at_fork(after_in_child=_forget_sync_pool)


def _sync_pool() -> ThreadPoolExecutor:
    """Long-lived helper threads (a thread started per blob waits to be scheduled on a busy machine)."""
    global _pool
    with _pool_guard:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor  # only writers need it

            _pool = ThreadPoolExecutor(_SYNC_THREADS, thread_name_prefix="oxe-blob-write")
        return _pool


def _on_helper(fn: Callable[..., _T], *args: Any) -> Future[_T]:
    """``fn(*args)`` on a helper thread; in this thread once the interpreter has shut its
    thread pools down (our exit hooks run after that: the last flush of deferred closes)."""
    try:
        return _sync_pool().submit(fn, *args)
    except RuntimeError:  # "cannot schedule new futures after (interpreter) shutdown"
        from concurrent.futures import Future

        done: Future[_T] = Future()
        try:
            done.set_result(fn(*args))
        except Exception as exc:  # the caller's wait raises it, as from a helper
            done.set_exception(exc)
        return done


def _write_synced_unless_stored(tmp: str, final: str, data: bytes) -> bool:
    """In a helper thread: False if ``final`` holds exactly ``data`` already (nothing written; the
    flush touches it under the blob lock), else :func:`_write_synced` to ``tmp`` and True."""
    try:
        if os.stat(final).st_size == len(data) and _file_equals(final, data):
            return False
    except FileNotFoundError:
        pass
    _write_synced(tmp, data)
    return True


def _write_synced(tmp: str, data: bytes) -> None:
    """Create ``tmp`` (0600, exclusive; its folder too if missing), write ``data``, fsync, close
    (in a helper thread)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        fd = os.open(tmp, flags, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_path(path: str) -> None:
    """``fsync`` the file at ``path`` (in a helper thread: a staged blob written by another)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _wait_all(items: list[_Deferred]) -> tuple[_Deferred, BaseException] | None:
    """Wait for every helper of ``items``; the first one that failed, with its error."""
    failed = None
    for item in items:
        exc = item.done.exception()
        if exc is not None and failed is None:
            failed = (item, exc)
    return failed


def _discard(pending: dict[str, _Deferred]) -> None:
    """Remove the temp files of a batch once their helpers are done (linked names stay)."""
    for item in pending.values():
        with contextlib.suppress(BaseException):
            item.done.exception()  # wait: the helper may still be creating the file
        with contextlib.suppress(FileNotFoundError):
            os.unlink(item.tmp)
    pending.clear()


@dataclass(frozen=True, slots=True)
class StagedBlob:
    """A verified blob waiting in the store's temp area for :meth:`Staging.publish`."""

    path: Path
    digest: str
    size: int


class Staging:
    """Stage many blobs, validate, then publish them all, or none.

    Staged blobs are temp files in ``blobs/sha256/`` (the registry's temp area,
    invisible to OMMX's GC and to digest lookups). Each is written and verified by
    the caller's thread; its ``fsync`` then runs on the store's helper threads, side by
    side with the next downloads and with the other blobs' fsyncs (the file system
    commits them together), and :meth:`publish_all` waits for every one before it links
    anything: a blob is durable before its digest name appears. Leaving the ``with``
    block removes every temp file, published or not: a published blob lives on under
    its digest name through the hard link.
    """

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._paths: list[Path] = []
        self._syncs: list[tuple[Path, Future[None]]] = []
        self._guard = threading.Lock()
        self._owner: str | None = None

    def __enter__(self) -> Staging:
        self.store.ensure_dirs()
        self._owner = None if self.store._own is None else self.store._own.owner_token()
        self.store.remove_dead_temp_files()  # staging temps of killed imports and pulls
        return self

    def __exit__(self, *exc: object) -> None:
        with self._guard:
            syncs, self._syncs = self._syncs, []
            paths, self._paths = self._paths, []
        for _, fut in syncs:
            fut.cancel()
            with contextlib.suppress(BaseException):
                fut.exception()  # wait: a helper may still hold the file open
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def add_chunks(
        self,
        chunks: Iterable[bytes],
        *,
        expected_digest: str | None = None,
        max_size: int | None = None,
        source: str = "stream",
    ) -> StagedBlob:
        """Write ``chunks`` to a temp file, hashing; verify ``expected_digest`` and ``max_size``.

        Thread-safe (parallel pulls stage from several threads). The fsync is queued on
        the helper threads; :meth:`publish_all` waits for it.
        """
        path = self.store.dir / atomic.temp_name("stage-", owner=self._owner)
        hasher = StreamingDigest()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with self._guard:
                self._paths.append(path)
            with os.fdopen(fd, "wb") as handle:
                _copy_chunks(chunks, handle, hasher, max_size=max_size, source=source, sync=False)
        except OSError as exc:
            raise RegistryError(f"Failed to stage blob from {source} at {path}: {exc}") from exc
        digest = hasher.digest()
        _check_expected(digest, expected_digest, source)
        fut = _on_helper(_fsync_path, os.fspath(path))
        with self._guard:
            self._syncs.append((path, fut))
        return StagedBlob(path, digest, hasher.size)

    def add_bytes(self, data: bytes, *, expected_digest: str | None = None, source: str = "bytes") -> StagedBlob:
        return self.add_chunks([data], expected_digest=expected_digest, source=source)

    def wait_synced(self) -> None:
        """Wait until every staged blob is fsynced; the first failure is a :class:`RegistryError`."""
        with self._guard:
            syncs = list(self._syncs)
        for path, fut in syncs:
            exc = fut.exception()
            if exc is not None:
                raise RegistryError(f"Failed to sync staged blob {path}: {exc}") from exc

    def publish(self, staged: StagedBlob) -> StoredBlob:
        """Make a staged blob visible under its digest (idempotent), once every staged blob is synced."""
        self.publish_all([staged])
        return StoredBlob(staged.digest, staged.size)

    def publish_all(self, staged: Sequence[StagedBlob]) -> None:
        """Wait for the fsyncs, then link every blob in order, all under one ``blobs/.lock``."""
        self.wait_synced()
        self.store._publish_many([(blob.path, blob.digest, blob.size) for blob in staged])


def fd_chunks(fd: int) -> Iterator[bytes]:
    """Read the open file descriptor ``fd`` to its end, one chunk (at most :data:`CHUNK`) at a time."""
    while chunk := os.read(fd, CHUNK):
        yield chunk


def _copy_chunks(
    chunks: Iterable[bytes],
    handle: BinaryIO,
    hasher: StreamingDigest | None = None,
    *,
    max_size: int | None = None,
    source: str,
    sync: bool = True,
) -> None:
    """Write ``chunks`` to ``handle`` (feeding ``hasher`` if given, which enforces ``max_size``),
    then fsync unless ``sync`` is false.

    From the second chunk on, a helper thread writes each chunk while this thread hashes it
    (both release the GIL), so a large copy costs about max(hash, write), not their sum.
    """
    handle.flush()
    fd = handle.fileno()
    writer: _ChunkWriter | None = None
    try:
        for i, chunk in enumerate(chunks):
            if writer is None and i == 0:
                _write_all(fd, chunk)
            else:
                if writer is None:
                    writer = _ChunkWriter(fd)
                writer.put(chunk)
            if hasher is not None:
                hasher.update(chunk)
                if max_size is not None and hasher.size > max_size:
                    raise DigestMismatchError(f"Blob from {source} is larger than the declared {max_size} bytes")
    finally:
        if writer is not None:
            writer.close()
    if sync:
        os.fsync(fd)


_COPY_STEP = 8 << 20  # bytes per copy_file_range call: the hasher follows at most this far behind
_EARLY_SYNC_BYTES = 16 << 20
"""A copy at least this big is synced by its copy thread as soon as it is copied, while the
hash catches up: the disk write then overlaps the hash instead of following it (a copy
that turns out to be a stored blob already has then been synced for nothing)."""


def _copy_file_hashed(src: int, handle: BinaryIO, tmp: Path | str, hasher: StreamingDigest) -> None:
    """Copy ``src`` (from its position to its end) into ``handle``'s file by ``copy_file_range``
    on a helper thread (the kernel moves the bytes, no user-space copy) while this thread
    hashes what has been copied, read back from the temp file ``tmp``: the digest is that
    of the bytes stored, whatever the source does meanwhile, and the time about
    max(copy, hash). Where the kernel refuses (another file system, an old kernel) the
    helper copies with ``read``/``write``. A copy of :data:`_EARLY_SYNC_BYTES` or more is
    then ``fdatasync``-ed by the helper, overlapping the hash (the caller's own sync that
    follows finds nothing left to write).
    """
    handle.flush()
    dst = handle.fileno()
    cond = threading.Condition()
    state: dict[str, Any] = {"done": 0, "end": False, "error": None}

    def copy() -> None:
        kernel = True
        try:
            while True:
                n = 0
                if kernel:
                    try:
                        n = os.copy_file_range(src, dst, _COPY_STEP)
                    except OSError as exc:
                        if state["done"] or exc.errno not in _NO_COPY_RANGE:
                            raise
                        kernel = False
                if not kernel:
                    chunk = os.read(src, CHUNK)
                    _write_all(dst, chunk)
                    n = len(chunk)
                with cond:
                    start = state["done"]
                    state["done"] += n
                    state["end"] = n == 0
                    cond.notify()
                if n == 0:
                    break
                if start + n >= _EARLY_SYNC_BYTES:  # a big copy: its pages go to disk while it runs
                    begin = start if start >= _EARLY_SYNC_BYTES else 0
                    _start_writeback(dst, begin, start + n - begin)
            if state["done"] >= _EARLY_SYNC_BYTES:
                os.fdatasync(dst)
        except BaseException as exc:  # noqa: BLE001 -- handed to the hashing thread, raised there
            with cond:
                state["error"], state["end"] = exc, True
                cond.notify()

    worker = threading.Thread(target=copy, name="oxe-blob-copy", daemon=True)
    reader = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
    worker.start()
    try:
        buf = memoryview(bytearray(CHUNK))
        pos = 0
        while True:
            with cond:
                while state["done"] <= pos and not state["end"]:
                    cond.wait()
                limit, end, error = state["done"], state["end"], state["error"]
            if error is not None:
                raise error
            while pos < limit:
                n = os.preadv(reader, [buf[: min(CHUNK, limit - pos)]], pos)
                if n == 0:
                    raise OSError(f"{tmp} is shorter than the {limit} bytes copied into it")
                hasher.update(buf[:n])
                pos += n
            if end:
                break
    finally:
        worker.join()
        os.close(reader)
    if state["error"] is not None:  # the early sync failed after the last bytes were copied
        raise state["error"]


_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the range's dirty pages, do not wait
_sync_file_range: list[Any] = []  # [libc function or None], looked up on first use


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` of ``fd`` back now
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, Linux), so that the ``fdatasync`` after a
    big copy waits for a write already under way; a no-op where the call is missing. Only
    a hint: durability still comes from that ``fdatasync``."""
    if not _sync_file_range:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        function = getattr(libc, "sync_file_range", None)
        if function is not None:
            function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        _sync_file_range.append(function)
    function = _sync_file_range[0]
    if function is not None:
        function(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM})


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _ChunkWriter:
    """Writes chunks to ``fd`` on a helper thread, at most two chunks queued (bounded memory)."""

    def __init__(self, fd: int) -> None:
        import queue

        self._fd = fd
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="oxe-blob-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    _write_all(self._fd, chunk)
                except OSError as exc:
                    self._error = exc

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> None:
        """Wait until every queued chunk is written; re-raise the first write error."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _read_chunks(fh: BinaryIO) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK):
        yield chunk


def _check_expected(actual: str, expected: str | None, source: str) -> None:
    if expected is not None and actual != expected:
        raise DigestMismatchError(f"Blob from {source} hashes to {actual}, expected {expected}")


def _hash_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return sha256_digest_chunks(_read_chunks(fh))[0]


def _file_equals(path: str, data: bytes) -> bool:
    """True if the file at ``path`` holds exactly ``data`` (compared chunk by chunk)."""
    view = memoryview(data)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        pos = 0
        for chunk in fd_chunks(fd):
            end = pos + len(chunk)
            if end > len(view) or view[pos:end] != chunk:
                return False
            pos = end
        return pos == len(view)
    finally:
        os.close(fd)


def _valid_file(path: Path, digest: str, size: int) -> bool:
    try:
        return path.stat().st_size == size and _hash_file(path) == digest
    except FileNotFoundError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
