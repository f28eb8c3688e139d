"""LocalRegistry: ref semantics, the index.json view, the shared SQLite schema."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from workers.registry_worker import (
    EMPTY_CONFIG_DIGEST,
    digest_of,
    generic_manifest,
    store_generic,
)

from ommx_experiment.engine import layout_view
from ommx_experiment.engine.index_db import MIGRATIONS, Database
from ommx_experiment.engine.names import ImageName
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.errors import BlobNotFoundError, InvalidInputError, RefConflictError, RegistryError

OCTET = "application/octet-stream"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    reg = LocalRegistry(tmp_path / "reg")
    yield reg
    reg.close()


def _artifact(reg: LocalRegistry, payload: bytes) -> str:
    return store_generic(reg, [(OCTET, payload)])


def _refs(reg: LocalRegistry) -> dict[str, str]:
    return {str(r.image_name): r.manifest_digest for r in reg.list_refs()}


def assert_view_matches(reg: LocalRegistry) -> None:
    """index.json == refs (every manifest here is stored), and it is not stale."""
    assert layout_view.read_index(reg.root) == _refs(reg)
    assert not layout_view.is_stale(reg.root, reg.db)


def _raw(reg: LocalRegistry) -> sqlite3.Connection:
    """A second, independent connection, as OMMX 3 would have."""
    return sqlite3.connect(reg.root / "index.sqlite3", isolation_level=None, timeout=30)


# --- ref semantics ---------------------------------------------------------------------


def test_publish_same_digest_noop_and_conflict(registry: LocalRegistry) -> None:
    a, b = _artifact(registry, b"a"), _artifact(registry, b"b")
    assert registry.publish("example.com/x/y:v1", a) is True
    assert_view_matches(registry)
    assert registry.publish("example.com/x/y:v1", a) is False
    with pytest.raises(RefConflictError) as info:
        registry.publish("example.com/x/y:v1", b)
    assert a in str(info.value) and b in str(info.value) and "example.com/x/y:v1" in str(info.value)
    assert registry.resolve("example.com/x/y:v1") == a
    assert_view_matches(registry)


def test_publish_canonicalises_and_stores_ommx_row(registry: LocalRegistry) -> None:
    a = _artifact(registry, b"a")
    registry.publish("alpine", a)
    rows = _raw(registry).execute("SELECT name, reference, manifest_digest, updated_at FROM refs").fetchall()
    assert [r[:3] for r in rows] == [("docker.io/library/alpine", "latest", a)]
    assert rows[0][3].endswith("+00:00") and "T" in rows[0][3]
    assert registry.resolve("docker.io/library/alpine:latest") == a
    assert layout_view.read_index(registry.root) == {"docker.io/library/alpine:latest": a}
    # generic OMMX artifact: the manifest cache row holds the exact bytes
    cached = _raw(registry).execute("SELECT manifest_json, artifact_type, config_digest FROM artifact_manifests").fetchall()
    assert cached == [(registry.blobs.get(a), "application/org.ommx.v1.artifact", EMPTY_CONFIG_DIGEST)]


def test_publish_requires_stored_manifest(registry: LocalRegistry) -> None:
    missing = digest_of(b"never stored")
    with pytest.raises(BlobNotFoundError, match=f"Failed to read blob {missing}"):
        registry.publish("example.com/x:v1", missing)
    assert registry.list_refs() == []


def test_invalid_name_is_rejected_before_any_write(registry: LocalRegistry) -> None:
    a = _artifact(registry, b"a")
    with pytest.raises(ValueError, match="^Invalid image reference"):
        registry.publish("INVALID/EXPERIMENT", a)
    assert registry.list_refs() == []


def test_replace_returns_previous_and_prunes_cache(registry: LocalRegistry) -> None:
    a, b = _artifact(registry, b"a"), _artifact(registry, b"b")
    assert registry.replace("example.com/ck:1", a) is None
    assert registry.replace("example.com/ck:1", b) == a
    assert registry.replace("example.com/ck:1", b) == b
    assert registry.resolve("example.com/ck:1") == b
    cached = {r[0] for r in _raw(registry).execute("SELECT manifest_digest FROM artifact_manifests")}
    assert cached == {b}
    assert_view_matches(registry)


def test_remove_returns_digest_and_compare_and_delete(registry: LocalRegistry) -> None:
    a = _artifact(registry, b"a")
    registry.publish("example.com/x:v1", a)
    assert registry.remove("example.com/x:v1", expected_digest=digest_of(b"other")) is None
    assert registry.resolve("example.com/x:v1") == a
    assert registry.remove("example.com/x:v1") == a
    assert registry.remove("example.com/x:v1") is None
    assert registry.list_refs() == []
    assert registry.blobs.exists(a)  # blobs stay, as in OMMX
    assert _raw(registry).execute("SELECT COUNT(*) FROM artifact_manifests").fetchone()[0] == 0
    assert_view_matches(registry)


def test_remove_of_an_absent_ref_still_catches_up_the_view(registry: LocalRegistry) -> None:
    a = _artifact(registry, b"a")
    _raw(registry).execute(  # a foreign writer (OMMX 3) adds a ref: the view is stale
        "INSERT INTO refs VALUES ('example.com/ommx/made', 'v1', ?, '2026-01-01T00:00:00+00:00')", (a,)
    )
    assert layout_view.is_stale(registry.root, registry.db)
    assert registry.remove("example.com/never:v1") is None
    assert layout_view.read_index(registry.root) == {"example.com/ommx/made:v1": a}
    assert_view_matches(registry)


def test_publish_drops_another_ref_in_the_same_transaction(registry: LocalRegistry) -> None:
    """A commit publishes its ref and drops its checkpoint slot at once: both or neither."""
    a, b, slot = _artifact(registry, b"a"), _artifact(registry, b"b"), _artifact(registry, b"slot")
    registry.replace("example.com/cp:slot", slot)
    registry.publish("example.com/x:v1", b)
    with pytest.raises(RefConflictError):
        registry.publish("example.com/x:v1", a, drop="example.com/cp:slot")
    assert _refs(registry) == {"example.com/cp:slot": slot, "example.com/x:v1": b}  # nothing dropped
    assert registry.publish("example.com/y:v1", a, drop="example.com/cp:slot") is True
    assert _refs(registry) == {"example.com/x:v1": b, "example.com/y:v1": a}
    assert _raw(registry).execute(
        "SELECT COUNT(*) FROM artifact_manifests WHERE manifest_digest = ?", (slot,)
    ).fetchone()[0] == 0  # the slot's cache rows went with it
    assert registry.publish("example.com/z:v1", a, drop="example.com/absent:slot") is True
    assert_view_matches(registry)


def test_publish_with_the_manifest_in_hand_checks_it_as_stored(registry: LocalRegistry) -> None:
    a = _artifact(registry, b"a")
    manifest = registry.blobs.get(a)
    assert registry.publish("example.com/x:v1", a, manifest_bytes=manifest) is True
    # Bytes that do not hash to the digest are ignored: the stored manifest is read and checked.
    assert registry.replace("example.com/x:v2", a, manifest_bytes=b"{}") is None
    assert registry.resolve("example.com/x:v2") == a
    registry.blobs.path(a).unlink()
    with pytest.raises(BlobNotFoundError):
        registry.publish("example.com/x:v3", a, manifest_bytes=manifest)
    assert registry.resolve("example.com/x:v3") is None


def test_restore(registry: LocalRegistry) -> None:
    a, b = _artifact(registry, b"a"), _artifact(registry, b"b")
    registry.publish("example.com/x:v1", a)
    registry.remove("example.com/x:v1")
    assert registry.restore("example.com/x:v1", a) is True
    assert registry.restore("example.com/x:v1", a) is False
    with pytest.raises(RefConflictError, match=f"Cannot restore example.com/x:v1 to {b}: ref currently points to {a}"):
        registry.restore("example.com/x:v1", b)
    with pytest.raises(InvalidInputError, match="Invalid manifest digest"):
        registry.restore("example.com/x:v1", "sha256:nothex")
    assert (registry.root / ".gc-exclusion.lock").exists()
    assert_view_matches(registry)


def test_alias_verifies_the_closure(registry: LocalRegistry) -> None:
    layer = b"layer bytes"
    digest = _artifact(registry, layer)
    assert registry.alias("example.com/alias:1", digest) is True
    registry.blobs.path(digest_of(layer)).unlink()
    with pytest.raises(BlobNotFoundError, match=digest_of(layer)):
        registry.alias("example.com/alias:2", digest)
    registry.blobs.path(digest_of(layer)).write_bytes(b"short")
    with pytest.raises(BlobNotFoundError, match="expected 11"):
        registry.alias("example.com/alias:2", digest)
    assert registry.resolve("example.com/alias:2") is None
    registry.blobs.put_bytes(layer)  # repairs the squatting file
    assert registry.alias("example.com/alias:2", digest) is True
    assert_view_matches(registry)


def test_alias_follows_subject_chain(registry: LocalRegistry) -> None:
    parent = _artifact(registry, b"parent")
    child_doc = json.loads(generic_manifest([(OCTET, b"child")]))
    child_doc["subject"] = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": parent,
        "size": registry.blobs.size(parent),
    }
    registry.blobs.put_bytes(b"child")
    child = registry.blobs.put_bytes(json.dumps(child_doc, sort_keys=True, separators=(",", ":")).encode()).digest
    closure = {d for d, _ in registry.closure(child)}
    assert {child, parent, digest_of(b"child"), digest_of(b"parent"), EMPTY_CONFIG_DIGEST} == closure
    registry.blobs.path(digest_of(b"parent")).unlink()
    with pytest.raises(BlobNotFoundError, match=digest_of(b"parent")):
        registry.alias("example.com/child:1", child)


# --- the index.json view ---------------------------------------------------------------


def test_layout_files(registry: LocalRegistry) -> None:
    assert (registry.root / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    doc = json.loads((registry.root / "index.json").read_bytes())
    marks = doc.pop("annotations")
    view = marks[layout_view.VIEW_ANNOTATION]
    assert re.fullmatch(r"[0-9a-f]{16}\.[0-9]{16}", view)
    assert marks[layout_view.MARKS_ANNOTATION] == "1"  # our entries are marked: unmarked ones are foreign
    assert doc == {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}


def test_index_entries_are_oci_descriptors(registry: LocalRegistry) -> None:
    a = _artifact(registry, b"a")
    registry.publish("example.com/x:v1", a)
    registry.publish(f"example.com/x@{a}", a)
    entries = json.loads((registry.root / "index.json").read_bytes())["manifests"]
    assert sorted(entries, key=lambda e: e["annotations"]["org.opencontainers.image.ref.name"]) == [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": a,
            "size": registry.blobs.size(a),
            "artifactType": "application/org.ommx.v1.artifact",
            "annotations": {"org.opencontainers.image.ref.name": name, "org.ommx-experiment.view": "1"},
        }
        for name in sorted([f"example.com/x@{a}", "example.com/x:v1"])
    ]


def test_sync_picks_up_refs_written_by_another_writer(registry: LocalRegistry) -> None:
    a = _artifact(registry, b"a")
    before = registry.db.refs_version()
    _raw(registry).execute(
        "INSERT INTO refs(name, reference, manifest_digest, updated_at) VALUES (?, ?, ?, ?)",
        ("example.com/ommx/made", "v1", a, "2026-01-01T00:00:00+00:00"),
    )
    assert registry.db.refs_version() == before + 1  # our trigger fires on foreign writes
    assert layout_view.is_stale(registry.root, registry.db)
    assert layout_view.read_index(registry.root) == {}
    assert registry.sync() == 1
    assert layout_view.read_index(registry.root) == {"example.com/ommx/made:v1": a}
    assert_view_matches(registry)


def test_reopen_regenerates_stale_view(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg")
    a = _artifact(reg, b"a")
    _raw(reg).execute(
        "INSERT INTO refs VALUES ('example.com/ommx/made', 'v1', ?, '2026-01-01T00:00:00+00:00')", (a,)
    )
    reg.close()
    reopened = LocalRegistry(tmp_path / "reg")
    assert layout_view.read_index(reopened.root) == {"example.com/ommx/made:v1": a}
    reopened.close()


def test_the_next_operation_catches_up_with_another_writer(registry_root: Path) -> None:
    """A listing (any entry through ``LocalRegistry.at``) refreshes a view another writer made stale."""
    from ommx_experiment import list_artifacts

    reg = LocalRegistry.at(registry_root)
    a = _artifact(reg, b"a")
    _raw(reg).execute(
        "INSERT INTO refs VALUES ('example.com/ommx/made', 'v1', ?, '2026-01-01T00:00:00+00:00')", (a,)
    )
    assert layout_view.read_index(reg.root) == {}
    assert [r.image_name for r in list_artifacts(root=registry_root)] == ["example.com/ommx/made:v1"]
    assert layout_view.read_index(reg.root) == {"example.com/ommx/made:v1": a}
    assert_view_matches(reg)


def test_view_skips_refs_whose_manifest_is_missing(registry: LocalRegistry) -> None:
    a = _artifact(registry, b"a")
    registry.publish("example.com/ok:v1", a)
    ghost = digest_of(b"no such manifest")
    conn = _raw(registry)
    conn.execute("INSERT INTO refs VALUES ('example.com/ghost', 'v1', ?, '2026-01-01T00:00:00+00:00')", (ghost,))
    conn.execute("INSERT INTO refs VALUES ('example.com/bad', 'v1', 'md5:xyz', '2026-01-01T00:00:00+00:00')")
    assert registry.sync() == 1
    assert layout_view.read_index(registry.root) == {"example.com/ok:v1": a}
    b = _artifact(registry, b"b")
    registry.publish("example.com/ok:v2", b)  # a later write keeps skipping it
    assert ghost not in layout_view.read_index(registry.root).values()


# --- identity and schema -----------------------------------------------------------------


def test_registry_id_is_stable(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg")
    rid = reg.registry_id
    assert len(rid) == 32 and int(rid, 16) >= 0 and rid == rid.lower()
    reg.close()
    again = LocalRegistry(tmp_path / "reg")
    assert again.registry_id == rid
    assert _raw(again).execute("SELECT COUNT(*) FROM ommx_local_registry_metadata").fetchone()[0] == 1
    again.close()


def test_at_caches_per_root(tmp_path: Path) -> None:
    a = LocalRegistry.at(tmp_path / "r")
    assert LocalRegistry.at(str(tmp_path / "r")) is a
    assert LocalRegistry.at(tmp_path / "other") is not a


def test_default_uses_env_root(registry_root: Path) -> None:
    assert LocalRegistry.default().root == registry_root.absolute()
    assert (registry_root / "index.sqlite3").exists()


OMMX_TABLES = {
    "ommx_local_registry_metadata": [("key", "TEXT", 0, 1), ("value", "TEXT", 1, 0)],
    "refs": [("name", "TEXT", 1, 1), ("reference", "TEXT", 1, 2), ("manifest_digest", "TEXT", 1, 0), ("updated_at", "TEXT", 1, 0)],
    "artifact_manifests": [
        ("manifest_digest", "TEXT", 0, 1), ("manifest_json", "BLOB", 1, 0),
        ("artifact_type", "TEXT", 1, 0), ("config_digest", "TEXT", 1, 0),
    ],
    "experiment_configs": [("config_digest", "TEXT", 0, 1), ("config_json", "BLOB", 1, 0)],
}


def test_schema_is_ommx_plus_oxe(registry: LocalRegistry) -> None:
    conn = _raw(registry)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for table, columns in OMMX_TABLES.items():
        info = [(r[1], r[2], r[3], r[5]) for r in conn.execute(f"PRAGMA table_info({table})")]
        assert info == columns, table
    objects = {(t, n) for t, n in conn.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")}
    ours = {(t, n) for t, n in objects if n.startswith("oxe_")}
    assert objects - ours == {
        ("table", t) for t in OMMX_TABLES
    } | {("index", "idx_refs_manifest_digest"), ("index", "idx_artifact_manifests_config_digest")}
    assert {n for t, n in ours if t == "trigger"} == {
        "oxe_refs_after_insert", "oxe_refs_after_update", "oxe_refs_after_delete",
        "oxe_refs_log_insert", "oxe_refs_log_update", "oxe_refs_log_delete",
    }
    assert ("table", "oxe_meta") in ours
    meta = dict(conn.execute("SELECT key, value FROM oxe_meta"))
    assert int(meta["schema_version"]) == len(MIGRATIONS)
    # no foreign keys from our tables into OMMX's (OMMX runs foreign_keys=ON)
    for _, name in ours:
        if name in {n for t, n in ours if t == "table"}:
            assert conn.execute(f"PRAGMA foreign_key_list({name})").fetchall() == []


def test_refs_version_triggers_count_every_write(registry: LocalRegistry) -> None:
    a, b = _artifact(registry, b"a"), _artifact(registry, b"b")
    v0 = registry.db.refs_version()
    registry.publish("example.com/t:1", a)
    registry.replace("example.com/t:1", b)
    registry.remove("example.com/t:1")
    assert registry.db.refs_version() == v0 + 3


@pytest.mark.parametrize("version", [1, 3, 99])
def test_unknown_user_version_fails_clearly(tmp_path: Path, version: int) -> None:
    root = tmp_path / "reg"
    root.mkdir()
    conn = sqlite3.connect(root / "index.sqlite3")
    conn.execute("CREATE TABLE refs(name TEXT)")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    with pytest.raises(RegistryError, match=f"user_version {version}"):
        LocalRegistry(root)
    conn = sqlite3.connect(root / "index.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version  # untouched


def test_foreign_tables_with_user_version_0_fail(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    root.mkdir()
    conn = sqlite3.connect(root / "index.sqlite3")
    conn.execute("CREATE TABLE something(x)")
    conn.commit()
    conn.close()
    with pytest.raises(RegistryError, match="not an OMMX registry index"):
        LocalRegistry(root)


def test_wrong_ommx_table_shape_fails(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg")
    reg.close()
    conn = sqlite3.connect(tmp_path / "reg" / "index.sqlite3")
    conn.execute("ALTER TABLE refs ADD COLUMN note TEXT")
    conn.commit()
    conn.close()
    with pytest.raises(RegistryError, match="table refs has columns"):
        LocalRegistry(tmp_path / "reg")


def test_migrations_are_idempotent_on_reopen(tmp_path: Path) -> None:
    for _ in range(3):
        LocalRegistry(tmp_path / "reg").close()
    conn = sqlite3.connect(tmp_path / "reg" / "index.sqlite3")
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0] == 6
    assert Database(tmp_path / "reg").schema_version() >= 1


# OMMX 3's migrate_legacy_schema_to_v2 (rust/ommx/src/artifact/local_registry/index.rs), which runs
# create_schema (our OMMX_DDL) between the two batches: `refs` is renamed and dropped, our triggers with it.
OMMX_LEGACY_MIGRATION = (
    "DROP TABLE IF EXISTS experiment_configs; DROP TABLE IF EXISTS artifact_manifests;"
    " DROP INDEX IF EXISTS idx_refs_name; DROP INDEX IF EXISTS idx_refs_manifest_digest;"
    " ALTER TABLE refs RENAME TO refs_legacy;",
    "INSERT INTO refs (name, reference, manifest_digest, updated_at)"
    " SELECT name, reference, manifest_digest, updated_at FROM refs_legacy; DROP TABLE refs_legacy;",
)


def test_triggers_dropped_by_ommx_migration_are_recreated_on_open(tmp_path: Path) -> None:
    from ommx_experiment.engine.index_db import OMMX_DDL

    reg = LocalRegistry(tmp_path / "reg")
    a = _artifact(reg, b"a")
    reg.publish("example.com/ours:v1", a)
    reg.close()
    raw = _raw(reg)
    raw.executescript("BEGIN IMMEDIATE; " + OMMX_LEGACY_MIGRATION[0] + "; ".join(OMMX_DDL) + "; "
                      + OMMX_LEGACY_MIGRATION[1] + " COMMIT;")
    assert raw.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'").fetchone() == (0,)
    raw.execute("INSERT INTO refs VALUES ('example.com/ommx/made', 'v1', ?, '2026-01-01T00:00:00+00:00')", (a,))
    reopened = LocalRegistry(tmp_path / "reg")
    names = raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name").fetchall()
    assert names == [
        ("oxe_refs_after_delete",), ("oxe_refs_after_insert",), ("oxe_refs_after_update",),
        ("oxe_refs_log_delete",), ("oxe_refs_log_insert",), ("oxe_refs_log_update",),
    ]
    assert layout_view.read_index(reopened.root) == {"example.com/ours:v1": a, "example.com/ommx/made:v1": a}
    before = reopened.db.refs_version()
    raw.execute("DELETE FROM refs WHERE name = 'example.com/ommx/made'")
    assert reopened.db.refs_version() == before + 1
    reopened.close()


# --- stateful model ------------------------------------------------------------------------

NAMES = ["example.com/m/a:v1", "example.com/m/a:v2", "localhost:5000/m/b", "alpine"]
CANON = {n: str(ImageName.parse(n)) for n in NAMES}


class RegistryMachine(RuleBasedStateMachine):
    """Random ref operations against a real registry and a dict model."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="oxe-sm-"))
        self.reg = LocalRegistry(self.dir / "reg")
        self.digests = [_artifact(self.reg, bytes([i])) for i in range(3)]
        self.model: dict[str, str] = {}
        self.stale = False

    def teardown(self) -> None:
        self.reg.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize()
    def start(self) -> None:
        assert self.reg.list_refs() == []

    def _insert_like(self, call: str, name: str, i: int) -> None:
        digest = self.digests[i]
        current = self.model.get(CANON[name])
        if current is None or current == digest:
            assert getattr(self.reg, call)(name, digest) is (current is None)
            self.model[CANON[name]] = digest
            self.stale = False
        else:
            with pytest.raises(RefConflictError, match=current):
                getattr(self.reg, call)(name, digest)

    @rule(name=st.sampled_from(NAMES), i=st.integers(0, 2))
    def publish(self, name: str, i: int) -> None:
        self._insert_like("publish", name, i)

    @rule(name=st.sampled_from(NAMES), i=st.integers(0, 2))
    def alias(self, name: str, i: int) -> None:
        self._insert_like("alias", name, i)

    @rule(name=st.sampled_from(NAMES), i=st.integers(0, 2))
    def restore(self, name: str, i: int) -> None:
        self._insert_like("restore", name, i)

    @rule(name=st.sampled_from(NAMES), i=st.integers(0, 2))
    def replace(self, name: str, i: int) -> None:
        assert self.reg.replace(name, self.digests[i]) == self.model.get(CANON[name])
        self.model[CANON[name]] = self.digests[i]
        self.stale = False

    @rule(name=st.sampled_from(NAMES))
    def remove(self, name: str) -> None:
        expected = self.model.pop(CANON[name], None)
        assert self.reg.remove(name) == expected
        self.stale = False  # every ref write of ours brings the view up to date, even a no-op

    @rule(name=st.sampled_from(NAMES), i=st.integers(0, 2))
    def foreign_insert(self, name: str, i: int) -> None:
        """OMMX 3 publishing through its own connection: refs change, index.json does not."""
        image = ImageName.parse(name)
        cur = _raw(self.reg).execute(
            "INSERT OR IGNORE INTO refs VALUES (?, ?, ?, '2026-01-01T00:00:00+00:00')",
            (image.repository, image.reference, self.digests[i]),
        )
        if cur.rowcount == 1:
            self.model[CANON[name]] = self.digests[i]
            self.stale = True

    @rule()
    def sync(self) -> None:
        assert self.reg.sync() == len(self.model)
        self.stale = False

    @invariant()
    def refs_match_model(self) -> None:
        assert _refs(self.reg) == self.model

    @invariant()
    def view_matches_model_unless_stale(self) -> None:
        assert layout_view.is_stale(self.reg.root, self.reg.db) is self.stale
        if not self.stale:
            assert layout_view.read_index(self.reg.root) == self.model


TestRegistryStateMachine = RegistryMachine.TestCase
TestRegistryStateMachine.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# --- compare-and-delete on updated_at (prune_anonymous, §4.6) ------------------------------------------


def test_remove_compares_updated_at_too(registry: LocalRegistry) -> None:
    a = _artifact(registry, b"a")
    registry.publish("example.com/x:v1", a)
    (seen,) = registry.list_refs()
    # OMMX 3 re-tags the ref to the same manifest through its own connection: only updated_at changes.
    _raw(registry).execute("UPDATE refs SET updated_at = '2030-01-01T00:00:00+00:00'")
    assert registry.remove("example.com/x:v1", expected_digest=a, expected_updated_at=seen.updated_at) is None
    assert registry.resolve("example.com/x:v1") == a
    (current,) = registry.list_refs()
    assert current.updated_at == "2030-01-01T00:00:00+00:00"
    assert registry.remove("example.com/x:v1", expected_digest=a, expected_updated_at=current.updated_at) == a
    assert registry.list_refs() == []
    assert_view_matches(registry)


def test_remove_updated_at_alone_and_with_wrong_digest(registry: LocalRegistry) -> None:
    a = _artifact(registry, b"a")
    registry.publish("example.com/x:v1", a)
    (seen,) = registry.list_refs()
    other = digest_of(b"other")
    assert registry.remove("example.com/x:v1", expected_digest=other, expected_updated_at=seen.updated_at) is None
    assert registry.remove("example.com/x:v1", expected_updated_at=seen.updated_at) == a
    assert registry.remove("example.com/x:v1", expected_updated_at=seen.updated_at) is None


# --- Artifact.save refuses an existing destination ------------------------------------------------------


def test_save_onto_existing_path_raises_archive_exists(registry: LocalRegistry, tmp_path: Path) -> None:
    from ommx_experiment.errors import ArchiveExistsError
    from ommx_experiment.format.archive import write_archive

    a = _artifact(registry, b"a")
    dest = tmp_path / "a.ommx"
    dest.write_bytes(b"keep me")
    with pytest.raises(ArchiveExistsError, match=str(dest)) as info:
        write_archive(registry, a, "example.com/x:v1", dest)
    assert isinstance(info.value, RegistryError) and isinstance(info.value, FileExistsError)
    assert dest.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ommx", "reg"]  # no temp file left
