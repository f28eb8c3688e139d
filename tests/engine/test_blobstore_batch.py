"""BlobStore batches: small blobs written side by side, published together (real files, real rlimits)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ommx_experiment.engine import atomic
from ommx_experiment.engine.blobstore import BlobStore, StoredBlob

SRC = Path(__file__).resolve().parents[2] / "src"


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    s = BlobStore(tmp_path / "root")
    s.ensure_dirs()
    return s


def _names(store: BlobStore) -> list[str]:
    return sorted(os.listdir(store.dir))


def test_batch_publishes_every_blob_when_it_ends_and_leaves_no_temp_files(store: BlobStore) -> None:
    blobs = [b"config", b"layer one", b"layer two" * 100, b"manifest"]
    with store.batch():
        stored = [store.put_bytes(data) for data in blobs]
        assert stored == [StoredBlob("sha256:" + _hex(d), len(d)) for d in blobs]
        assert store.put_bytes(blobs[0]) == stored[0]  # the same bytes again: one blob
        for data, blob in zip(blobs, stored, strict=True):
            assert not (store.dir / _hex(data)).exists()  # no digest name before the batch publishes
            assert store.exists(blob.digest) and store.size(blob.digest) == len(data)
    assert _names(store) == sorted(_hex(d) for d in blobs)  # linked, temp names gone
    for data in blobs:
        path = store.dir / _hex(data)
        assert path.read_bytes() == data
        assert path.stat().st_mode & 0o777 == 0o666 & ~atomic.UMASK


def test_a_batch_left_by_an_exception_publishes_nothing(store: BlobStore) -> None:
    kept = store.put_bytes(b"stored before")
    with pytest.raises(KeyboardInterrupt), store.batch():
        store.put_bytes(b"a")
        store.put_bytes(b"b")
        raise KeyboardInterrupt
    assert _names(store) == [kept.digest[7:]]


def test_reading_a_batched_blob_publishes_the_batch_first(store: BlobStore) -> None:
    with store.batch():
        a = store.put_bytes(b"read me")
        b = store.put_bytes(b"and me")
        assert store.get(a.digest) == b"read me"
        assert (store.dir / b.digest[7:]).read_bytes() == b"and me"  # published together
        c = store.put_bytes(b"later")
        assert not (store.dir / c.digest[7:]).exists()
        store.sync_links()  # what every ref and journal write calls first
        assert (store.dir / c.digest[7:]).read_bytes() == b"later"
    assert _names(store) == sorted(x.digest[7:] for x in (a, b, c))


def test_batches_are_per_thread(store: BlobStore) -> None:
    import threading

    seen: list[bool] = []
    with store.batch():
        blob = store.put_bytes(b"mine")
        worker = threading.Thread(target=lambda: seen.append(store.exists(blob.digest)))
        worker.start()
        worker.join()
    assert seen == [False]  # not in the store for another thread until published
    assert store.exists(blob.digest)


def test_a_failed_batched_write_is_a_registry_error_naming_the_temp_file(tmp_path: Path) -> None:
    """A file size limit (EFBIG, as a full disk) hits a helper thread's write: the flush raises
    RegistryError naming the temp path; nothing is published and no temp file is left; the
    same process then stores the blobs once the limit is lifted."""
    root = tmp_path / "root"
    code = textwrap.dedent(
        f"""
        import os, resource, signal, sys
        sys.path.insert(0, {str(SRC)!r})
        from ommx_experiment.engine.blobstore import BlobStore
        from ommx_experiment.errors import RegistryError
        from pathlib import Path
        store = BlobStore(Path({str(root)!r}))
        store.ensure_dirs()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
        try:
            with store.batch():
                store.put_bytes(b"small")
                store.put_bytes(b"x" * 10000)
        except RegistryError as exc:
            print("ERROR", exc)
        print("NAMES", sorted(os.listdir(store.dir)))
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        with store.batch():
            store.put_bytes(b"small")
            store.put_bytes(b"x" * 10000)
        print("AFTER", sorted(os.listdir(store.dir)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert "Failed to write blob" in lines["ERROR"] and str(root / "blobs" / "sha256" / ".oxe-blob-") in lines["ERROR"]
    assert lines["NAMES"] == "[]"
    assert lines["AFTER"] == str(sorted([_hex(b"small"), _hex(b"x" * 10000)]))


def test_a_batched_put_never_looks_in_the_folder_from_the_callers_thread(store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stored-copy lookup runs in the helper: in the caller's thread it waited for the batch's
    own file creations in that folder. A stored blob is touched by the flush, not written again;
    one that changed meanwhile (a corrupt squatter) is replaced by the right bytes."""
    import threading

    stored, squatted = b"stored before", b"squatted"
    store.put_bytes(stored)
    squat = store.dir / _hex(squatted)
    squat.write_bytes(b"not these bytes!")
    old = os.stat(store.dir / _hex(stored))
    os.utime(store.dir / _hex(stored), ns=(old.st_atime_ns, old.st_mtime_ns - 10**10))
    caller, looked = threading.get_ident(), []
    real_stat = os.stat

    def stat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if threading.get_ident() == caller and os.fspath(path).startswith(os.path.join(store.dir, "")):
            looked.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    with store.batch():
        monkeypatch.setattr(os, "stat", stat)
        for data in (stored, squatted, b"new"):
            store.put_bytes(data)
        assert looked == []
        monkeypatch.setattr(os, "stat", real_stat)
    after = os.stat(store.dir / _hex(stored))
    assert after.st_ino == old.st_ino and after.st_mtime_ns > old.st_mtime_ns - 10**10  # touched, not rewritten
    assert squat.read_bytes() == squatted and (store.dir / _hex(b"new")).read_bytes() == b"new"
    assert [n for n in _names(store) if n.startswith(atomic.TEMP_PREFIX)] == []


def test_temp_names_are_unique_without_a_system_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.urandom`` lets go of the GIL: with a batch helper busy, each name cost the caller ~0.1 ms."""

    def no_urandom(n: int) -> bytes:
        raise AssertionError("os.urandom called")

    import random

    monkeypatch.setattr(os, "urandom", no_urandom)
    monkeypatch.setattr(random, "_urandom", no_urandom)  # what secrets / SystemRandom call
    names = {atomic.temp_name("blob-", owner="0" * 12) for _ in range(1000)}
    assert len(names) == 1000 and all(atomic.temp_owner(n) == (os.getpid(), "0" * 12) for n in names)


def test_a_batched_put_creates_a_missing_blob_folder_in_the_helper(store: BlobStore) -> None:
    import shutil

    shutil.rmtree(store.dir)
    with store.batch():
        stored = store.put_bytes(b"folder was gone")
    assert (store.dir / stored.digest[7:]).read_bytes() == b"folder was gone"
