"""Pins: leases handed to another process (spec/registry.md §3), as a sweep's workers use them.

A live *owner* process opens its pins folder; a *writer* (here, the test process)
stores blobs with ``BlobStore(root, pin=PinFile(...))``. Our zero-grace GC must
keep a pinned blob while the owner lives and the pin file exists, and must stop
protecting it once the pin file is removed or the owner is dead.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ommx_experiment import gc
from ommx_experiment.engine.blobstore import LEASE_DIR, PINS_SUFFIX, BlobStore, PinFile
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.errors import RegistryError

SRC = Path(__file__).resolve().parents[2] / "src"
OWNER = (
    "import sys; from ommx_experiment.engine.registry import LocalRegistry; "
    "print(LocalRegistry.default().blobs.pins_dir(), flush=True); sys.stdin.readline()"
)


def _owner(root: Path) -> subprocess.Popen[str]:
    env = {"OMMX_LOCAL_REGISTRY_ROOT": str(root), "PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    return subprocess.Popen([sys.executable, "-c", OWNER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _kept_and_deleted() -> tuple[set[str], set[str]]:
    report = gc(delete=True, grace_period="0s")
    return {b.digest for b in report.skipped_blobs}, {b.digest for b in report.deleted_blobs}


def test_a_pin_protects_while_its_file_exists_and_its_owner_lives(registry_root: Path) -> None:
    registry = LocalRegistry.default()
    owner = _owner(registry_root)
    try:
        pins = Path(owner.stdout.readline().strip())  # type: ignore[union-attr]
        assert pins.parent == registry_root / LEASE_DIR and pins.name.endswith(PINS_SUFFIX) and pins.is_dir()
        first, second = PinFile(pins / "task-a.pin"), PinFile(pins / "task-b.pin", sync=True)
        a = BlobStore(registry.root, pin=first).put_bytes(b"payload A").digest
        b = BlobStore(registry.root, pin=second).put_bytes(b"payload B").digest
        first.close()
        second.close()
        assert (pins / "task-a.pin").read_text() == f"+0 {a}\n"

        kept, deleted = _kept_and_deleted()
        assert {a, b} <= kept and not deleted & {a, b}
        assert registry.blobs.exists(a) and registry.blobs.exists(b)

        (pins / "task-a.pin").unlink()  # what the driver does once the run is journaled
        kept, deleted = _kept_and_deleted()
        assert a in deleted and b in kept
    finally:
        owner.communicate("\n", timeout=60)
    kept, deleted = _kept_and_deleted()  # the owner is gone: its pins protect nothing
    assert b in deleted and not registry.blobs.exists(b)
    assert not pins.exists() and list((registry_root / LEASE_DIR).glob("*.lease")) == []


def test_pinning_into_the_folder_of_a_dead_owner_fails_and_publishes_nothing(registry_root: Path) -> None:
    registry = LocalRegistry.default()
    owner = _owner(registry_root)
    pins = Path(owner.stdout.readline().strip())  # type: ignore[union-attr]
    owner.communicate("\n", timeout=60)
    gc(delete=True, grace_period="0s")
    assert not pins.exists()
    with pytest.raises(RegistryError, match="Failed to pin blob"):
        BlobStore(registry.root, pin=PinFile(pins / "late.pin")).put_bytes(b"too late")
    assert list(registry.blobs.iter_digests()) == []
    assert [p.name for p in registry.blobs.dir.iterdir()] == []  # no temp file left behind


def test_adopt_leases_a_blob_stored_elsewhere_and_checks_its_size(registry_root: Path) -> None:
    registry = LocalRegistry.default()
    registry.blobs.ensure_dirs()
    digest = BlobStore(registry.root, pin=PinFile(registry_root / "elsewhere.pin")).put_bytes(b"twelve bytes").digest
    registry.blobs.adopt(digest, 12)
    (lease,) = (registry_root / LEASE_DIR).glob("*.lease")
    assert lease.read_text().endswith(f" {digest}\n")  # this process now protects it, until a ref reaches it
    with pytest.raises(RegistryError, match="expected 13"):
        registry.blobs.adopt(digest, 13)
    with pytest.raises(RegistryError, match="not found"):
        registry.blobs.adopt("sha256:" + "0" * 64, 1)
