"""BlobStore: the CAS under ``blobs/sha256``, real files, real subprocesses."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ommx_experiment.engine import atomic
from ommx_experiment.engine.blobstore import BlobStore, StoredBlob
from ommx_experiment.errors import BlobNotFoundError, DigestMismatchError

SRC = Path(__file__).resolve().parents[2] / "src"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    s = BlobStore(tmp_path / "root")
    s.ensure_dirs()
    return s


def _files(store: BlobStore) -> list[str]:
    return sorted(p.name for p in store.dir.iterdir())


def test_put_bytes_stores_exact_bytes_under_digest(store: BlobStore) -> None:
    data = b"hello blob"
    stored = store.put_bytes(data)
    assert stored == StoredBlob(_digest(data), len(data))
    path = store.path(stored.digest)
    assert path == store.dir / hashlib.sha256(data).hexdigest()
    assert path.read_bytes() == data
    assert path.stat().st_mode & 0o777 == 0o666 & ~atomic.UMASK
    assert store.get(stored.digest) == data
    assert store.exists(stored.digest) and store.size(stored.digest) == len(data)
    assert _files(store) == [hashlib.sha256(data).hexdigest()]


def test_put_file_and_stream_and_chunks_agree(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # spans several 1 MiB chunks
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    a = store.put_file(src)
    b = store.put_stream(io.BytesIO(data))
    c = store.put_chunks([data[:5], data[5:]])
    assert a == b == c == StoredBlob(_digest(data), len(data))
    assert b"".join(store.iter_chunks(a.digest)) == data
    with store.open(a.digest) as fh:
        assert fh.read() == data
    assert _files(store) == [hashlib.sha256(data).hexdigest()]


def test_put_is_idempotent_and_touches_mtime(store: BlobStore) -> None:
    stored = store.put_bytes(b"x" * 100)
    path = store.path(stored.digest)
    os.utime(path, (1_000_000, 1_000_000))
    assert store.put_bytes(b"x" * 100) == stored
    assert path.stat().st_mtime > 1_000_000
    os.utime(path, (1_000_000, 1_000_000))
    assert store.put_chunks([b"x" * 50, b"x" * 50]) == stored  # the streaming path touches too
    assert path.stat().st_mtime > 1_000_000
    assert _files(store) == [path.name]


def test_expected_digest_mismatch_leaves_nothing(store: BlobStore, tmp_path: Path) -> None:
    wrong = _digest(b"something else")
    with pytest.raises(DigestMismatchError, match=wrong):
        store.put_bytes(b"data", expected_digest=wrong)
    src = tmp_path / "f"
    src.write_bytes(b"data")
    with pytest.raises(DigestMismatchError, match=str(src)):
        store.put_file(src, expected_digest=wrong)
    with pytest.raises(DigestMismatchError):
        store.put_stream(io.BytesIO(b"data"), expected_digest=wrong)
    assert _files(store) == []


def test_corrupt_blob_is_detected_and_repaired_by_a_put(store: BlobStore) -> None:
    data = b"the real content"
    digest = _digest(data)
    path = store.path(digest)
    path.write_bytes(b"the fake content")  # same size, wrong bytes
    assert not store.verify(digest, len(data))
    with pytest.raises(DigestMismatchError, match=digest):
        store.get(digest)
    with pytest.raises(DigestMismatchError, match=digest):
        b"".join(store.iter_chunks(digest))
    assert store.put_bytes(data) == StoredBlob(digest, len(data))
    assert path.read_bytes() == data
    assert store.verify(digest, len(data))
    assert _files(store) == [path.name]


def test_truncated_blob_is_repaired_by_put_file(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    digest = _digest(data)
    store.path(digest).write_bytes(data[:10])
    src = tmp_path / "src"
    src.write_bytes(data)
    store.put_file(src)
    assert store.get(digest) == data


def test_missing_blob_errors_name_the_digest(store: BlobStore) -> None:
    digest = _digest(b"absent")
    for call in (store.get, store.size, store.open):
        with pytest.raises(BlobNotFoundError, match=f"Failed to read blob {digest}"):
            call(digest)
    with pytest.raises(BlobNotFoundError, match="Failed to read blob"):
        store.touch([digest])
    assert not store.exists(digest) and not store.verify(digest)


def test_invalid_digest_is_rejected(store: BlobStore) -> None:
    for bad in ("sha256:" + "A" * 64, "sha512:" + "a" * 128, "sha256:abc", "../etc/passwd"):
        with pytest.raises(DigestMismatchError, match="Invalid blob digest"):
            store.path(bad)


def test_iter_digests_ignores_temp_and_foreign_files(store: BlobStore) -> None:
    stored = store.put_bytes(b"a")
    (store.dir / atomic.temp_name("blob-")).write_bytes(b"t")
    (store.dir / ".blob-xyz.tmp").write_bytes(b"t")
    (store.dir / ("A" * 64)).write_bytes(b"t")
    (store.dir / ("a" * 63)).write_bytes(b"t")
    (store.dir / ("b" * 64)).mkdir()
    assert list(store.iter_digests()) == [stored.digest]


def test_delete_if_older_rechecks_mtime(store: BlobStore) -> None:
    stored = store.put_bytes(b"old")
    path = store.path(stored.digest)
    os.utime(path, (100, 100))
    assert store.delete_if_older(stored.digest, cutoff=50) is False
    assert path.exists()
    assert store.delete_if_older(stored.digest, cutoff=200) is True
    assert not path.exists()
    assert store.delete_if_older(stored.digest, cutoff=200) is False


def test_clean_stale_temp_files_only_removes_dead_owners(store: BlobStore) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = store.dir / f".oxe-blob-{dead_pid}-abcdefabcdef.tmp"
    live = store.dir / atomic.temp_name("blob-")
    stale_view = store.root / f".oxe-w{dead_pid}-abcdefabcdef.tmp"  # an index.json rewrite
    foreign = store.dir / ".blob-123456.tmp"  # OMMX's: never ours to delete
    for p in (stale, stale_view, live, foreign):
        p.write_bytes(b"x")
    assert store.clean_stale_temp_files() == 0  # too young for the default age
    assert store.clean_stale_temp_files(older_than=0) == 2
    assert not stale.exists() and not stale_view.exists()
    assert live.exists() and foreign.exists()


def test_staging_publishes_all_and_leaves_no_temp_files(store: BlobStore) -> None:
    with store.staging() as staging:
        a = staging.add_bytes(b"layer-a")
        b = staging.add_chunks([b"layer-", b"b"], expected_digest=_digest(b"layer-b"), max_size=7)
        assert store.exists(a.digest) is False  # staged blobs are invisible
        assert list(store.iter_digests()) == []
        staging.publish(a)
        staging.publish(b)
        staging.publish(b)  # idempotent
    assert store.get(a.digest) == b"layer-a" and store.get(b.digest) == b"layer-b"
    assert sorted(_files(store)) == sorted([a.digest[7:], b.digest[7:]])


def test_staging_failure_publishes_nothing(store: BlobStore) -> None:
    with pytest.raises(DigestMismatchError, match="larger than the declared 3 bytes"), store.staging() as staging:
        staging.add_bytes(b"fine")
        staging.add_chunks([b"too", b"long"], max_size=3, source="remote layer")
    with pytest.raises(DigestMismatchError, match="remote"), store.staging() as staging:
        staging.add_bytes(b"fine")
        staging.add_chunks([b"x"], expected_digest=_digest(b"y"), source="remote")
    assert _files(store) == []


_PUT_256 = """
import sys
from pathlib import Path
sys.path.insert(0, {src!r})
from ommx_experiment.engine.blobstore import BlobStore
stored = BlobStore(Path({root!r})).put_file(Path({path!r}))
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(stored.digest, stored.size, hwm)
"""


def test_put_file_memory_is_bounded(tmp_path: Path) -> None:
    size = 256 << 20
    block = os.urandom(1 << 20)
    src = tmp_path / "big.bin"
    hasher = hashlib.sha256()
    with open(src, "wb") as fh:
        for i in range(size >> 20):
            chunk = block[:-4] + i.to_bytes(4, "big")
            hasher.update(chunk)
            fh.write(chunk)
    root = tmp_path / "root"
    script = textwrap.dedent(_PUT_256.format(src=str(SRC), root=str(root), path=str(src)))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    digest, stored_size, hwm_kib = proc.stdout.split()
    assert digest == "sha256:" + hasher.hexdigest()
    assert int(stored_size) == size
    # VmHWM is this child's own peak RSS (ru_maxrss would include the parent's peak,
    # which Linux carries across fork+exec).
    assert int(hwm_kib) * 1024 < 100 << 20
    src.unlink()
    assert BlobStore(root).verify(digest, size)


# --- the one-pass put_file and same-size repairs ----------------------------------------------------------


def _count_syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record every ``os.fsync`` from now on."""
    synced: list[int] = []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return synced


def test_put_file_of_a_stored_blob_syncs_nothing_keeps_the_file_and_touches(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One pass: the copy is hashed while written; once the digest is found stored, the
    copy is dropped without an fsync and the stored file (same inode) is only touched."""
    data = os.urandom(9 * (1 << 20) + 5)  # several chunks: the helper writer thread runs
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    synced = _count_syncs(monkeypatch)
    first = store.put_file(src)
    assert synced, "a new blob is fsynced"
    path = store.path(first.digest)
    inode = path.stat().st_ino
    os.utime(path, (1_000_000, 1_000_000))
    before = _files(store)
    synced.clear()
    assert store.put_file(src) == first
    assert synced == [] and _files(store) == before
    assert path.stat().st_ino == inode and path.stat().st_mtime > 1_000_000
    assert store.get(first.digest) == data


def test_same_size_corrupt_blob_is_replaced_by_put_bytes_and_put_file(store: BlobStore, tmp_path: Path) -> None:
    data = b"the right content, 33 bytes long!"
    digest = _digest(data)
    src = tmp_path / "right"
    src.write_bytes(data)
    for put in (store.put_bytes, lambda _: store.put_file(src)):
        store.path(digest).write_bytes(bytes(reversed(data)))  # same size, wrong bytes
        with pytest.raises(DigestMismatchError, match=digest):
            store.get(digest)
        assert put(data) == StoredBlob(digest, len(data))
        assert store.get(digest) == data
        assert _files(store) == [digest[len("sha256:") :]]


class _ChangingSource:
    """A file that another writer rewrites (same inode) after put_file read its first chunk."""

    def __init__(self, path: Path, replacement: bytes) -> None:
        self.path = path
        self.replacement = replacement
        self.fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by __exit__
        self.reads = 0

    def __enter__(self) -> _ChangingSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()

    def read(self, n: int = -1) -> bytes:
        chunk = self.fh.read(n)
        self.reads += 1
        if self.reads == 1:
            with open(self.path, "r+b") as writer:
                writer.write(self.replacement)
                writer.truncate()
        return chunk

    def __getattr__(self, name: str) -> object:
        return getattr(self.fh, name)


def test_put_file_stores_the_bytes_it_copied_when_the_file_changes(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest returned names the bytes actually copied, whatever the source did meanwhile."""
    from ommx_experiment.engine import blobstore

    chunk = blobstore.CHUNK
    src = tmp_path / "moving.bin"
    original = b"a" * chunk + b"tail"
    src.write_bytes(original)
    replacement = b"b" * chunk + b"changed tail, longer"
    if hasattr(os, "copy_file_range"):  # the kernel copies: the file changes after its first step
        real = os.copy_file_range
        calls = []

        def copy_file_range(fd_in: int, fd_out: int, count: int) -> int:
            n = real(fd_in, fd_out, count)
            calls.append(n)
            if len(calls) == 1:
                with open(src, "r+b") as writer:
                    writer.write(replacement)
                    writer.truncate()
            return n

        monkeypatch.setattr(blobstore, "_COPY_STEP", chunk)
        monkeypatch.setattr(os, "copy_file_range", copy_file_range)
    else:
        changing = lambda path, mode="rb": _ChangingSource(Path(path), replacement)  # noqa: E731
        monkeypatch.setattr(blobstore, "open", changing, raising=False)
    stored = store.put_file(src)
    copied = original[:chunk] + replacement[chunk:]
    assert stored == StoredBlob(_digest(copied), len(copied))
    assert store.get(stored.digest) == copied
    assert _files(store) == [stored.digest[len("sha256:") :]]


# --- temp files of killed writers (issue 16, fault 9) -----------------------------------------------------------

_KILLED_IMPORT = """
import os, sys
from ommx_experiment.engine import blobstore
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.format.archive import import_path
def publish_all(self, staged):
    os.kill(os.getpid(), 9)  # SIGKILL between staging and publication
blobstore.Staging.publish_all = publish_all
import_path(LocalRegistry.at(sys.argv[1]), sys.argv[2])
"""

_PAUSED_IMPORT = """
import sys
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.format.archive import import_path
def publish_staged(self, *args, **kwargs):  # everything staged; the publish window not yet taken
    print("staged", flush=True)
    sys.stdin.readline()
    raise SystemExit(0)
LocalRegistry.publish_staged = publish_staged
import_path(LocalRegistry.at(sys.argv[1]), sys.argv[2])
"""

_KILLED_BLOB_WRITE = """
import os, sys
from ommx_experiment.engine import blobstore
from ommx_experiment.engine.registry import LocalRegistry
def publish(self, tmp, digest, size):
    os.kill(os.getpid(), 9)  # SIGKILL after the temp file is written, before its link
blobstore.BlobStore._publish = publish
LocalRegistry.at(sys.argv[1]).blobs.put_bytes(os.urandom(4096))
"""


def _stage_temps(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "blobs" / "sha256").iterdir() if atomic.is_temp_name(p.name))


def test_killed_import_staging_is_removed_by_the_next_import(tmp_path: Path) -> None:
    """A SIGKILLed import leaves its staging temps in blobs/sha256; the next import (another
    process) removes them at once, whatever their age, and leaves a *live* importer's alone."""
    from ommx_experiment.engine.registry import LocalRegistry
    from ommx_experiment.format.archive import import_path
    from ommx_experiment.lifecycle.artifact import ArtifactDraft

    source = LocalRegistry.at(tmp_path / "source")
    draft = ArtifactDraft.new("example.com/t/imp:v1", registry=source)
    for i in range(5):
        draft.add_layer("application/octet-stream", os.urandom(1000 + i))
    draft.commit().save(tmp_path / "a.ommx")
    root = tmp_path / "root"
    LocalRegistry.at(root)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    killed = subprocess.run([sys.executable, "-c", _KILLED_IMPORT, str(root), str(tmp_path / "a.ommx")], env=env)
    assert killed.returncode == -9
    left = _stage_temps(root)
    assert len(left) >= 5 and all(".oxe-stage-" in n for n in left)
    paused = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_IMPORT, str(root), str(tmp_path / "a.ommx")],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert paused.stdout is not None and paused.stdout.readline().strip() == "staged"
        live = sorted(set(_stage_temps(root)) - set(left))
        assert live and set(left) <= set(_stage_temps(root)) | set(left)
        import_path(LocalRegistry.at(root), tmp_path / "a.ommx")  # the next import, in this process
        remaining = _stage_temps(root)
        assert not set(left) & set(remaining)  # the dead importer's temps are gone
        assert set(live) <= set(remaining)  # the live importer's are not
    finally:
        paused.communicate("\n", timeout=60)
    assert _stage_temps(root) == []  # the live importer cleaned up after itself


def test_killed_blob_write_temp_is_removed_by_the_next_write(tmp_path: Path) -> None:
    from ommx_experiment.engine.registry import LocalRegistry

    root = tmp_path / "root"
    LocalRegistry.at(root)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    killed = subprocess.run([sys.executable, "-c", _KILLED_BLOB_WRITE, str(root)], env=env)
    assert killed.returncode == -9
    assert [n for n in _stage_temps(root) if n.startswith(".oxe-blob-")]
    writer = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom ommx_experiment.engine.registry import LocalRegistry\n"
         "LocalRegistry.at(sys.argv[1]).blobs.put_bytes(b'next write')", str(root)],
        env=env, capture_output=True, text=True,
    )
    assert writer.returncode == 0, writer.stderr
    assert _stage_temps(root) == []


# --- leases: bounded lease files ------------------------------------------------------------------------


def _lease_files(store: BlobStore) -> list[Path]:
    from ommx_experiment.engine.blobstore import LEASE_DIR, LEASE_SUFFIX

    return sorted((store.root / LEASE_DIR).glob(f"*{LEASE_SUFFIX}"))


def _hold_in_thread(store: BlobStore, data: bytes) -> str:
    """Put ``data`` from another thread, so this thread's GC view counts its lease."""
    import threading

    out: dict[str, str] = {}
    thread = threading.Thread(target=lambda: out.setdefault("d", store.put_bytes(data).digest))
    thread.start()
    thread.join()
    return out["d"]


def test_lease_file_stays_bounded_and_keeps_what_is_held(store: BlobStore) -> None:
    """Thousands of put/release cycles (a Run close each) keep one small lease file; a blob
    still held across every compaction stays leased."""
    import time

    from ommx_experiment.engine.blobstore import _Leases, read_live_leases

    held = _hold_in_thread(store, b"held all along")
    for i in range(1500):  # ~280 KiB of history without compaction
        digest = store.put_bytes(b"closed %d" % i).digest
        store.release([digest])
    (lease,) = _lease_files(store)
    assert lease.stat().st_size < _Leases.COMPACT_BYTES + 4096
    assert read_live_leases(store.root, time.monotonic_ns()) == {held}
    store.release([held])
    assert read_live_leases(store.root, time.monotonic_ns()) == set()


def test_lease_compaction_waits_while_a_gc_holds_the_exclusion_lock(store: BlobStore) -> None:
    """A GC between its refs snapshot and its lease read holds .gc-exclusion.lock: the history
    (releases it may still have to ignore) is kept until the lock is free."""
    from ommx_experiment.engine.blobstore import _Leases
    from ommx_experiment.engine.locks import GC_EXCLUSION_LOCK, flock_exclusive

    with flock_exclusive(store.root / GC_EXCLUSION_LOCK):
        for i in range(1000):
            store.release([store.put_bytes(b"gc running %d" % i).digest])
        (lease,) = _lease_files(store)
        assert lease.stat().st_size > 2 * _Leases.COMPACT_BYTES
    store.release([store.put_bytes(b"gc done").digest])
    (lease,) = _lease_files(store)
    assert lease.stat().st_size < _Leases.COMPACT_BYTES


def test_put_file_copies_with_read_write_where_the_kernel_refuses(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``copy_file_range`` failing with EXDEV (another file system) falls back to read/write."""
    import errno

    from ommx_experiment.engine import blobstore

    def refuse(fd_in: int, fd_out: int, count: int) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    data = os.urandom(3 * blobstore.CHUNK + 17)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    stored = store.put_file(src)
    assert stored == StoredBlob(_digest(data), len(data))
    assert store.get(stored.digest) == data


def test_touch_verified_checks_every_size_and_touches_only_blobs_not_touched_just_now(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit right after its draft: the draft's ref write touched every layer a moment ago,
    so the commit checks their sizes but does not touch them again (FRESH_MTIME_SECONDS)."""
    old, fresh = store.put_bytes(b"old blob"), store.put_bytes(b"fresh blob")
    os.utime(store.path(old.digest), (1_000_000, 1_000_000))
    touched: list[str] = []
    real_utime = os.utime
    monkeypatch.setattr(os, "utime", lambda path, *a, **k: touched.append(os.fspath(path)) or real_utime(path, *a, **k))
    store.touch_verified([(old.digest, old.size, "old"), (fresh.digest, fresh.size, "fresh")])
    assert touched == [os.fspath(store.path(old.digest))]
    assert store.path(old.digest).stat().st_mtime > 1_000_000
    touched.clear()
    store.touch_verified([(old.digest, old.size, "old")])  # touched just now: not again
    assert touched == []
    with pytest.raises(BlobNotFoundError, match=r"\(fresh\): 10 bytes, expected 3"):
        store.touch_verified([(fresh.digest, 3, "fresh")])  # the size is still checked


def test_a_big_put_file_is_written_back_while_it_is_copied(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of ``_EARLY_SYNC_BYTES`` or more asks the kernel to start writing back every
    byte as it is copied (ranges in order, no gap, none past the end) and is stored intact."""
    from ommx_experiment.engine import blobstore

    ranges: list[tuple[int, int]] = []
    monkeypatch.setattr(blobstore, "_start_writeback", lambda fd, offset, length: ranges.append((offset, length)))
    data = os.urandom(blobstore._EARLY_SYNC_BYTES + 3 * blobstore._COPY_STEP + 11)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    stored = store.put_file(src)
    assert store.get(stored.digest) == data
    assert ranges and ranges[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in zip(ranges, ranges[1:], strict=False))
    assert sum(n for _, n in ranges) == len(data)
    small = tmp_path / "small.bin"
    small.write_bytes(data[: blobstore._EARLY_SYNC_BYTES - 1])
    ranges.clear()
    store.put_file(small)
    assert ranges == []


def test_a_failed_early_sync_of_a_big_copy_fails_the_put_and_publishes_nothing(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy thread's ``fdatasync`` fails after the last byte was copied (EIO): Linux may
    clear that error, so a later ``fsync`` of the same file could succeed; the put must
    raise it instead of publishing bytes the disk may not hold."""
    import errno
    import time

    from ommx_experiment.engine import blobstore
    from ommx_experiment.errors import RegistryError

    def broken(fd: int) -> None:
        time.sleep(0.5)  # the hash has caught up by then: the error comes after the last byte
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    data = os.urandom(blobstore._EARLY_SYNC_BYTES + 5)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    with pytest.raises(RegistryError, match="Input/output error"):
        store.put_file(src)
    assert not store.path(_digest(data)).exists()
    assert [p for p in store.dir.iterdir() if p.is_file()] == []
