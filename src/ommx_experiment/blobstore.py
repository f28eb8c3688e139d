"""Content-addressed blob store: ``<root>/blobs/sha256/<64 lowercase hex>``.

The engine is deliberately narrow (put, get, open, exists, size, touch, delete);
refs, manifests and garbage collection are policy and live elsewhere.

Publication follows OMMX 3's protocol so both libraries can share a root
(registry-sharing.md §3, §7.3): write a temp file in ``blobs/sha256/`` while
hashing it, fsync, then under ``flock(blobs/.lock)`` link it into place without
clobbering and touch its mtime; if the blob already exists, re-verify it and
touch it instead (the mtime is what protects it from a concurrent GC).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import atomic
from .digest import is_valid_digest, is_valid_hex
from .errors import BlobNotFoundError, DigestMismatchError, RegistryError
from .locks import BLOB_LOCK, flock_exclusive

CHUNK = 1 << 20  # 1 MiB: bounded memory whatever the blob size


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob known to be present in the store."""

    digest: str
    size: int


class BlobStore:
    """The CAS of one registry root. Thread- and process-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "blobs" / "sha256"
        self._lock_path = root / BLOB_LOCK

    # --- paths ---------------------------------------------------------------

    def ensure_dirs(self) -> None:
        """Create ``blobs/sha256`` if missing."""
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Where the blob named ``digest`` lives (it may not exist)."""
        if not is_valid_digest(digest):
            raise DigestMismatchError(f"Invalid blob digest {digest!r}: expected sha256:<64 lowercase hex>")
        return self.dir / digest[len("sha256:") :]

    # --- reads ---------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFoundError(f"Failed to read blob {digest}: not found in {self.dir}") from None

    def get(self, digest: str) -> bytes:
        """The blob's bytes, verified against ``digest``."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(f"Failed to read blob {digest}: not found at {path}") from None
        except OSError as exc:
            raise BlobNotFoundError(f"Failed to read blob {digest} at {path}: {exc}") from exc
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise DigestMismatchError(f"Failed to read blob {digest}: content at {path} hashes to {actual}")
        return data

    def open(self, digest: str) -> BinaryIO:
        """Open the blob for streaming reads (unverified; see :meth:`verify`)."""
        path = self.path(digest)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"Failed to read blob {digest}: not found at {path}") from None

    def iter_chunks(self, digest: str) -> Iterator[bytes]:
        """Stream the blob in chunks; raises DigestMismatchError at the end if it is corrupt."""
        hasher = hashlib.sha256()
        with self.open(digest) as fh:
            while chunk := fh.read(CHUNK):
                hasher.update(chunk)
                yield chunk
        if "sha256:" + hasher.hexdigest() != digest:
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

    def iter_digests(self) -> Iterator[str]:
        """Every ``blobs/sha256/<64 lowercase hex>`` regular file, as a digest."""
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if is_valid_hex(entry.name) and entry.is_file(follow_symlinks=False):
                yield "sha256:" + entry.name

    # --- writes --------------------------------------------------------------

    def put_bytes(self, data: bytes, *, expected_digest: str | None = None) -> StoredBlob:
        """Store ``data``; idempotent. ``DigestMismatchError`` if ``expected_digest`` differs."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        _check_expected(digest, expected_digest, "bytes")
        if self._touch_if_valid(digest, len(data)):
            return StoredBlob(digest, len(data))
        return self.put_chunks([data], expected_digest=digest)

    def put_file(self, path: Path, *, expected_digest: str | None = None) -> StoredBlob:
        """Stream the file at ``path`` into the store (memory bounded by one chunk)."""
        with open(path, "rb") as fh:
            return self.put_stream(fh, expected_digest=expected_digest, source=str(path))

    def put_stream(
        self, fh: BinaryIO, *, expected_digest: str | None = None, source: str = "stream"
    ) -> StoredBlob:
        """Store everything readable from ``fh``."""
        return self.put_chunks(_read_chunks(fh), expected_digest=expected_digest, source=source)

    def put_chunks(
        self, chunks: Iterable[bytes], *, expected_digest: str | None = None, source: str = "stream"
    ) -> StoredBlob:
        """Store the concatenation of ``chunks``, hashing while writing."""
        self.ensure_dirs()
        with atomic.temp_file(self.dir, stem="blob-") as (tmp, handle):
            hasher, size = hashlib.sha256(), 0
            for chunk in chunks:
                hasher.update(chunk)
                handle.write(chunk)
                size += len(chunk)
            atomic.sync_file(handle)
            handle.close()
            digest = "sha256:" + hasher.hexdigest()
            _check_expected(digest, expected_digest, source)
            self._publish(tmp, digest, size)
        return StoredBlob(digest, size)

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
        entries = []
        for folder in (self.dir, self.root):
            try:
                entries.extend(os.scandir(folder))
            except FileNotFoundError:
                continue
        for entry in entries:
            pid = atomic.temp_owner_pid(entry.name)
            if pid is None or _pid_alive(pid):
                continue
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime >= older_than:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    # --- internals -----------------------------------------------------------

    def _touch_if_valid(self, digest: str, size: int) -> bool:
        """If a valid copy exists, touch it under the lock and return True."""
        path = self.path(digest)
        if not path.exists():
            return False
        with flock_exclusive(self._lock_path):
            if _valid_file(path, digest, size):
                os.utime(path)
                return True
        return False

    def _publish(self, tmp: Path, digest: str, size: int) -> None:
        final = self.path(digest)
        try:
            with flock_exclusive(self._lock_path):
                if atomic.publish_noclobber(tmp, final):
                    os.utime(final)
                    return
                if _valid_file(final, digest, size):
                    os.utime(final)
                    return
                # A corrupt file squats on the digest name: our verified copy replaces it.
                atomic.publish_replace(tmp, final)
        except OSError as exc:
            raise RegistryError(f"Failed to publish blob {digest} at {final}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class StagedBlob:
    """A verified blob waiting in the store's temp area for :meth:`Staging.publish`."""

    path: Path
    digest: str
    size: int


class Staging:
    """Stage many blobs, validate, then publish them all, or none.

    Staged blobs are temp files in ``blobs/sha256/`` (the registry's temp area,
    invisible to OMMX's GC and to digest lookups). Leaving the ``with`` block
    removes every temp file, published or not: a published blob lives on under
    its digest name through the hard link.
    """

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._paths: list[Path] = []

    def __enter__(self) -> Staging:
        self.store.ensure_dirs()
        return self

    def __exit__(self, *exc: object) -> None:
        for path in self._paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._paths.clear()

    def add_chunks(
        self,
        chunks: Iterable[bytes],
        *,
        expected_digest: str | None = None,
        max_size: int | None = None,
        source: str = "stream",
    ) -> StagedBlob:
        """Write ``chunks`` to a temp file, hashing; verify ``expected_digest`` and ``max_size``."""
        path = self.store.dir / atomic.temp_name("stage-")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._paths.append(path)
        hasher, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                size += len(chunk)
                if max_size is not None and size > max_size:
                    raise DigestMismatchError(f"Blob from {source} is larger than the declared {max_size} bytes")
                hasher.update(chunk)
                handle.write(chunk)
            atomic.sync_file(handle)
        digest = "sha256:" + hasher.hexdigest()
        _check_expected(digest, expected_digest, source)
        return StagedBlob(path, digest, size)

    def add_bytes(self, data: bytes, *, expected_digest: str | None = None, source: str = "bytes") -> StagedBlob:
        return self.add_chunks([data], expected_digest=expected_digest, source=source)

    def publish(self, staged: StagedBlob) -> StoredBlob:
        """Make a staged blob visible under its digest (idempotent)."""
        self.store._publish(staged.path, staged.digest, staged.size)
        return StoredBlob(staged.digest, staged.size)


def _read_chunks(fh: BinaryIO) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK):
        yield chunk


def _check_expected(actual: str, expected: str | None, source: str) -> None:
    if expected is not None and actual != expected:
        raise DigestMismatchError(f"Blob from {source} hashes to {actual}, expected {expected}")


def _hash_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


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
