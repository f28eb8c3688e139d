"""index.json patched in place: O(1) per ref write, always a valid OCI index equal to ``refs``."""

from __future__ import annotations

import json
import os
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from workers.registry_worker import store_generic

from ommx_experiment.engine import layout_view
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.errors import RefConflictError

OCTET = "application/octet-stream"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    reg = LocalRegistry(tmp_path / "reg")
    yield reg
    reg.close()


def _refs(reg: LocalRegistry) -> dict[str, str]:
    return {str(r.image_name): r.manifest_digest for r in reg.list_refs()}


def _state(reg: LocalRegistry) -> layout_view.ViewState:
    with reg.db.read() as conn:
        state = layout_view._load_state(conn)
    assert state is not None
    return state


def _raw(reg: LocalRegistry) -> sqlite3.Connection:
    return sqlite3.connect(reg.root / "index.sqlite3", isolation_level=None, timeout=30)


def assert_view(reg: LocalRegistry) -> None:
    """index.json parses, equals refs, is not stale, and every slot sits inside one page."""
    data = (reg.root / "index.json").read_bytes()
    doc = json.loads(data)
    assert layout_view.read_index(reg.root) == _refs(reg)
    assert len(doc["manifests"]) == len(_refs(reg))  # no leftover duplicates
    assert not layout_view.is_stale(reg.root, reg.db)
    slots = reg.db.query("SELECT pos, len FROM oxe_view_slots")
    for pos, length in slots:
        assert int(pos) // layout_view.PAGE == (int(pos) + int(length) - 1) // layout_view.PAGE
        assert data[int(pos) : int(pos) + 1] in (b",", b" ")


def _inode(reg: LocalRegistry) -> int:
    return (reg.root / "index.json").stat().st_ino


def test_a_small_registry_has_a_small_view(registry: LocalRegistry) -> None:
    """The reservoir is at least 16 KiB (``MIN_RESERVOIR``), else half the entries' bytes: a
    registry of a few refs keeps a ~20 KiB index.json, and 60 more publishes still leave a valid view."""
    registry.publish("example.com/a:v1", store_generic(registry, [(OCTET, b"a")]))
    assert (registry.root / "index.json").stat().st_size <= 20 * 1024
    for i in range(60):  # past the reservoir: regenerated once, with room again
        registry.publish(f"example.com/many/m{i}:v1", store_generic(registry, [(OCTET, bytes([i]) * 2)]))
    assert_view(registry)


def test_writes_patch_in_place(registry: LocalRegistry) -> None:
    digests = [store_generic(registry, [(OCTET, bytes([i]))]) for i in range(3)]
    registry.publish("example.com/a:v1", digests[0])
    inode = _inode(registry)
    size = (registry.root / "index.json").stat().st_size
    registry.publish("example.com/b:v1", digests[1])
    registry.replace("example.com/a:v1", digests[2])
    registry.remove("example.com/b:v1")
    registry.publish("example.com/c:v1", digests[1])
    assert _inode(registry) == inode, "patched in place, not rewritten"
    assert (registry.root / "index.json").stat().st_size == size, "the reservoir is preallocated"
    assert_view(registry)
    assert _state(registry).gen >= 4


def test_first_slot_removed_takes_the_next_comma(registry: LocalRegistry) -> None:
    digests = [store_generic(registry, [(OCTET, bytes([i]))]) for i in range(3)]
    for i, d in enumerate(digests):
        registry.publish(f"example.com/n{i}:v1", d)
    inode = _inode(registry)
    registry.remove("example.com/n0:v1")
    assert_view(registry)
    registry.remove("example.com/n1:v1")
    registry.remove("example.com/n2:v1")
    assert json.loads((registry.root / "index.json").read_bytes())["manifests"] == []
    registry.publish("example.com/n0:v1", digests[0])
    assert _inode(registry) == inode
    assert_view(registry)


def test_an_entry_that_outgrows_its_slot_moves(registry: LocalRegistry) -> None:
    small = store_generic(registry, [(OCTET, b"x")])
    registry.publish("example.com/first:v1", small)
    registry.publish("example.com/grow:v1", small)
    before = registry.db.query("SELECT pos FROM oxe_view_slots WHERE name = 'example.com/grow'")[0][0]
    # A generic manifest far bigger than 10**16 bytes is impossible, so grow the entry through
    # its artifactType: OMMX's cache row for the manifest names it.
    big = store_generic(registry, [(OCTET, b"y" * 100)], annotations={"k": "v" * 50})
    _raw(registry).execute(
        "INSERT OR REPLACE INTO artifact_manifests VALUES (?, x'00', ?, 'sha256:' || hex(zeroblob(32)))",
        (big, "application/org.ommx.v1.artifact+" + "z" * 40),
    )
    registry.replace("example.com/grow:v1", big)
    after = registry.db.query("SELECT pos FROM oxe_view_slots WHERE name = 'example.com/grow'")[0][0]
    assert after != before
    assert_view(registry)


def test_reservoir_exhaustion_regenerates(registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout_view, "MIN_RESERVOIR", 1024)
    registry.sync()
    d = store_generic(registry, [(OCTET, b"x")])
    inodes = set()
    for i in range(40):
        registry.publish(f"example.com/many:{i}", d)
        inodes.add(_inode(registry))
        assert_view(registry)
    assert len(inodes) > 1, "the file was regenerated when the reservoir ran out"


@pytest.mark.parametrize("damage", ["foreign rewrite", "header behind", "truncated", "other boot", "missing"])
def test_a_file_that_does_not_match_the_state_is_regenerated(registry: LocalRegistry, damage: str) -> None:
    d = store_generic(registry, [(OCTET, b"x")])
    registry.publish("example.com/a:v1", d)
    path = registry.root / "index.json"
    if damage == "foreign rewrite":  # skopeo rewrites in place, compactly, keeping our annotation
        doc = json.loads(path.read_bytes())
        path.write_text(json.dumps(doc, separators=(",", ":")))
    elif damage == "header behind":  # a writer killed between its COMMIT and its writes
        with registry.db.write("bump") as conn:
            state = layout_view._load_state(conn)
            assert state is not None
            state.gen += 1
            layout_view._store_state(conn, state)
    elif damage == "truncated":
        os.truncate(path, path.stat().st_size - 100)
    elif damage == "other boot":
        with registry.db.write("reboot") as conn:
            state = layout_view._load_state(conn)
            assert state is not None
            state.boot = "an earlier boot"
            layout_view._store_state(conn, state)
    else:
        path.unlink()
    assert layout_view.is_stale(registry.root, registry.db)
    registry.publish("example.com/b:v1", d)
    assert_view(registry)


def test_foreign_changes_are_patched_by_our_next_write(registry: LocalRegistry) -> None:
    a = store_generic(registry, [(OCTET, b"a")])
    registry.publish("example.com/ours:v1", a)
    inode = _inode(registry)
    conn = _raw(registry)
    conn.execute("INSERT INTO refs VALUES ('example.com/ommx', 'v1', ?, '2026-01-01T00:00:00+00:00')", (a,))
    conn.execute("DELETE FROM refs WHERE name = 'example.com/ours'")
    assert layout_view.is_stale(registry.root, registry.db)
    assert registry.remove("example.com/nothing:v1") is None  # even a no-op write brings it up to date
    assert _inode(registry) == inode
    assert layout_view.read_index(registry.root) == {"example.com/ommx:v1": a}
    assert_view(registry)


def test_random_ref_churn_keeps_the_view_exact(registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout_view, "MIN_RESERVOIR", 4096)
    rng = random.Random(12)
    digests = [store_generic(registry, [(OCTET, bytes([i]) * (i * 37))]) for i in range(6)]
    names = [f"example.com/r{i % 7}/x:{'t' * (i % 5)}{i}" for i in range(30)]
    for _step in range(300):
        name, digest = rng.choice(names), rng.choice(digests)
        op = rng.random()
        if op < 0.4:
            registry.replace(name, digest)
        elif op < 0.7:
            registry.remove(name)
        elif op < 0.9:
            try:
                registry.publish(name, digest)
            except RefConflictError:
                continue  # rolled back: the view is not touched (it may be stale from OMMX's writes)
        else:  # OMMX writing through its own connection
            repo, _, tag = name.rpartition(":")
            _raw(registry).execute(
                "INSERT OR REPLACE INTO refs VALUES (?, ?, ?, '2026-01-01T00:00:00+00:00')", (repo, tag, digest)
            )
            continue
        assert_view(registry)


@pytest.mark.parametrize("artifact_type", [None, "application/org.ommx.v1.experiment", 'odd/"type"\\é'])
def test_entries_are_compact_json_of_the_descriptor(registry: LocalRegistry, artifact_type: str | None) -> None:
    digest = store_generic(registry, [(OCTET, b"e")])
    expected: dict[str, object] = {"mediaType": layout_view.MANIFEST_MEDIA_TYPE, "digest": digest, "size": registry.blobs.size(digest)}
    if artifact_type:
        expected["artifactType"] = artifact_type
    expected["annotations"] = {layout_view.REF_NAME: "example.com/é-less/x:v1.0_a"}
    entry = layout_view._entry(registry.root, "example.com/é-less/x", "v1.0_a", digest, artifact_type)
    assert entry is None  # not a valid repository name: skipped, as OMMX would never write it
    expected["annotations"] = {layout_view.REF_NAME: "example.com/ok/x:v1.0_a", layout_view.VIEW_MARK: "1"}
    entry = layout_view._entry(registry.root, "example.com/ok/x", "v1.0_a", digest, artifact_type)
    assert entry == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()


def test_compaction_with_a_damaged_slot_regenerates_from_refs(
    registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Header, size and tail intact but an entry overwritten (by some foreign tool): the
    compaction copying entries from the file notices and rebuilds from refs instead."""
    monkeypatch.setattr(layout_view, "MIN_RESERVOIR", 1024)
    registry.sync()
    d = store_generic(registry, [(OCTET, b"x")])
    registry.publish("example.com/a:v1", d)
    (pos, length), = registry.db.query("SELECT pos, len FROM oxe_view_slots")
    with open(registry.root / "index.json", "r+b") as f:
        f.seek(int(pos))
        f.write(b" " * int(length))  # blank, so the file still parses
    for i in range(40):  # until the reservoir runs out and the layout is rebuilt
        registry.publish(f"example.com/fill:{i}", d)
    assert_view(registry)
