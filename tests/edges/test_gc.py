"""gc(): OMMX's mark & sweep on our registries, plus the files it must never touch."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from helpers.catalog_support import commit_experiment, commit_generic, experiment_manifest, put

from ommx_experiment import media_types as mt
from ommx_experiment.edges import maintenance
from ommx_experiment.engine.oci import Manifest
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.errors import RegistryError
from ommx_experiment.format import journal as checkpoints
from ommx_experiment.format import journal_roots

OLD = time.time() - 3 * 86400


@pytest.fixture
def registry(registry_root: Path) -> LocalRegistry:
    return LocalRegistry.at(registry_root)


def _age(registry: LocalRegistry, digest: str, mtime: float = OLD) -> None:
    os.utime(registry.blobs.path(digest), (mtime, mtime))


def _age_all(registry: LocalRegistry) -> None:
    for digest in registry.blobs.iter_digests():
        _age(registry, digest)


def _digests(blobs: tuple[maintenance.GcBlob, ...]) -> set[str]:
    return {b.digest for b in blobs}


def test_empty_root(tmp_path: Path) -> None:
    report = maintenance.gc(root=tmp_path / "r")
    assert report.root == (tmp_path / "r").absolute() and report.delete_applied is False
    assert report.roots == report.reachable_blobs == report.orphan_candidates == ()
    assert report.reachable_size == report.orphan_candidate_size == report.deferred_size == report.deleted_size == 0
    assert "Roots 0" in report.summary()


def test_roots_and_reachable_closure(registry: LocalRegistry) -> None:
    digest = commit_experiment(registry, "example.com/t/a:v1", runs=2, solves=1)
    report = maintenance.gc()
    [root] = report.roots
    assert (root.kind, root.name, root.reference, root.image_name, root.digest) == (
        "ref", "example.com/t/a", "v1", "example.com/t/a:v1", digest,
    )
    closure = {d for d, _ in registry.closure(digest)}
    assert _digests(report.reachable_blobs) == closure
    assert report.reachable_size == sum(registry.blobs.size(d) for d in closure)
    assert report.orphan_candidates == report.deferred_blobs == report.missing_blobs == report.invalid_manifests == ()


def test_orphans_by_age_and_delete_only_old_ones(registry: LocalRegistry) -> None:
    keep = commit_experiment(registry, "example.com/t/keep:v1")
    old_orphan = put(registry, mt.OCTET_STREAM, b"old orphan").digest
    young_orphan = put(registry, mt.OCTET_STREAM, b"young orphan").digest
    _age_all(registry)
    os.utime(registry.blobs.path(young_orphan))
    dry = maintenance.gc()
    assert _digests(dry.orphan_candidates) == {old_orphan}
    assert _digests(dry.deferred_blobs) == {young_orphan}
    assert registry.blobs.exists(old_orphan)
    done = maintenance.gc(delete=True)
    assert done.delete_applied and _digests(done.deleted_blobs) == {old_orphan} and done.skipped_blobs == ()
    assert done.deleted_size == len(b"old orphan")
    assert not registry.blobs.exists(old_orphan) and registry.blobs.exists(young_orphan)
    assert all(registry.blobs.exists(d) for d, _ in registry.closure(keep))
    assert "Deleted 1 blobs" in done.summary()
    zero = maintenance.gc(delete=True, grace_period="0s", exclusive=True)
    assert _digests(zero.deleted_blobs) == {young_orphan}


def test_candidate_touched_before_delete_is_skipped(registry: LocalRegistry) -> None:
    orphan = put(registry, mt.OCTET_STREAM, b"revived").digest
    _age(registry, orphan)
    report = maintenance._mark_and_sweep(registry, 3600)
    assert _digests(report.orphan_candidates) == {orphan}
    os.utime(registry.blobs.path(orphan))  # a writer re-put it meanwhile
    done = maintenance._delete(registry, report, 3600)
    assert _digests(done.skipped_blobs) == {orphan} and done.deleted_blobs == ()
    assert registry.blobs.exists(orphan)


def test_fork_parent_is_kept_through_the_subject_chain(registry: LocalRegistry) -> None:
    parent_digest = commit_experiment(registry, "example.com/t/parent:v1", seed=1, attachment=b"parent data")
    parent = Manifest.parse(registry.blobs.get(parent_digest))
    grand_digest, _, cfg = experiment_manifest(registry, seed=2, subject=parent.descriptor())
    grand = Manifest.parse(registry.blobs.get(grand_digest))
    child_digest, _, cfg = experiment_manifest(registry, seed=3, subject=grand.descriptor())
    registry.publish("example.com/t/child:v1", child_digest, config_bytes=cfg)
    assert maintenance.remove_image("example.com/t/parent:v1") == parent_digest
    _age_all(registry)
    report = maintenance.gc(delete=True, grace_period="0s", exclusive=True)
    reachable = _digests(report.reachable_blobs)
    assert {parent_digest, grand_digest, child_digest} <= reachable
    assert {d for d, _ in registry.closure(parent_digest)} <= reachable
    assert report.deleted_blobs == ()


def test_journal_pins_keep_journaled_runs(registry: LocalRegistry) -> None:
    # The checkpoint journal keeps its blobs alive with generic "pin" refs chained by subject.
    repo = f"{registry.registry_id[:8]}.ommx.local/checkpoint"
    run_blob = put(registry, mt.JSON, b'{"run": 0}')
    config = put(registry, mt.OCI_EMPTY_CONFIG, mt.OCI_EMPTY_CONFIG_BYTES)
    first = put(registry, mt.OCI_MANIFEST, Manifest(mt.GENERIC_ARTIFACT_TYPE, config, (run_blob,)).to_bytes())
    second_run = put(registry, mt.JSON, b'{"run": 1}')
    second = Manifest(mt.GENERIC_ARTIFACT_TYPE, config, (second_run,), subject=first)
    pin = put(registry, mt.OCI_MANIFEST, second.to_bytes()).digest
    registry.replace(f"{repo}:pin-{'e' * 64}", pin)
    _age_all(registry)
    report = maintenance.gc(delete=True, grace_period="0s", exclusive=True)
    assert {run_blob.digest, second_run.digest, first.digest, pin} <= _digests(report.reachable_blobs)
    assert report.deleted_blobs == ()


def test_journal_blob_digests_are_roots(registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    journaled_digest, _, _ = experiment_manifest(registry, seed=11)
    plain = put(registry, mt.OCTET_STREAM, b"journaled payload").digest
    _age_all(registry)
    assert journaled_digest in _digests(maintenance.gc().orphan_candidates)
    monkeypatch.setattr(journal_roots, "journal_blob_digests", lambda reg: [journaled_digest, plain, "junk"])
    report = maintenance.gc(delete=True, grace_period="0s", exclusive=True)
    assert {r.kind for r in report.roots} == {"protected_digest"}
    assert {d for d, _ in registry.closure(journaled_digest)} | {plain} <= _digests(report.reachable_blobs)
    assert report.deleted_blobs == () and report.invalid_manifests == ()


def test_missing_and_invalid_are_reported(registry: LocalRegistry) -> None:
    ok = commit_experiment(registry, "example.com/t/layerless:v1", seed=1, attachment=b"will vanish")
    manifest = Manifest.parse(registry.blobs.get(ok))
    vanished = manifest.layers[0].digest
    registry.blobs.path(vanished).unlink()
    gone = commit_experiment(registry, "example.com/t/gone:v1", seed=2)
    registry.blobs.path(gone).unlink()
    corrupt = commit_experiment(registry, "example.com/t/corrupt:v1", seed=3)
    registry.blobs.path(corrupt).write_bytes(b"not the manifest")
    report = maintenance.gc()
    missing = {(m.digest, m.kind, m.referenced_by) for m in report.missing_blobs}
    assert missing == {(vanished, "layer", ok), (gone, "ref_manifest", None)}
    [invalid] = report.invalid_manifests
    assert (invalid.digest, invalid.kind, invalid.referenced_by) == (corrupt, "ref_manifest", None)
    assert corrupt in invalid.error


def test_unparseable_subject_is_invalid(registry: LocalRegistry) -> None:
    bogus = put(registry, mt.OCI_MANIFEST, b"[1, 2, 3]")
    child_digest, _, cfg = experiment_manifest(registry, seed=4, subject=bogus)
    registry.publish("example.com/t/child:v1", child_digest, config_bytes=cfg)
    report = maintenance.gc()
    [invalid] = report.invalid_manifests
    assert (invalid.digest, invalid.kind, invalid.referenced_by) == (bogus.digest, "subject", child_digest)
    assert bogus.digest in _digests(report.reachable_blobs)


def test_never_touches_layout_index_locks_or_foreign_files(registry: LocalRegistry) -> None:
    commit_experiment(registry, "example.com/t/a:v1")
    commit_generic(registry, "example.com/t/g:v1")
    root = registry.root
    hex64 = hashlib.sha256(b"foreign").hexdigest()
    outside = root.parent / "outside.bin"
    outside.write_bytes(b"outside")
    foreign = {
        root / "blobs" / "sha256" / "foo": b"foo",
        root / "blobs" / "sha512" / ("ab" * 64): b"sha512 blob",
        root / "blobs" / "sha256" / hex64.upper(): b"uppercase",  # OMMX's own GC fails on this name
        root / "blobs" / "sha256" / hex64[:63]: b"63 hex",
        root / "blobs" / "sha256" / f"{hex64}.partial": b"partial",
        root / "blobs" / "sha256" / f".ours-{hex64}.tmp": b"someone's temp",
        root / "blobs" / hex64: b"top level",
        root / "blobs" / "Sha256" / hex64: b"other case dir",
        root / "notes.txt": b"user notes",
    }
    for path, data in foreign.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "blobs" / "sha256" / hashlib.sha256(b"dir").hexdigest()).mkdir()
    link = root / "blobs" / "sha256" / hashlib.sha256(b"link").hexdigest()
    link.symlink_to(outside)
    for lock in (root / ".gc-exclusion.lock", root / "blobs" / ".lock"):
        lock.touch()
    fixed = [root / "oci-layout", root / "index.json", root / "index.sqlite3", root / ".gc-exclusion.lock",
             root / "blobs" / ".lock"]
    before = {p: p.read_bytes() for p in [*foreign, *fixed]}
    for path in [*foreign, *fixed, outside]:
        os.utime(path, (OLD, OLD), follow_symlinks=True)
    _age_all(registry)
    report = maintenance.gc(delete=True, grace_period="0s", exclusive=True)
    assert report.orphan_candidates == report.deferred_blobs == report.missing_blobs == ()
    assert report.invalid_manifests == () and report.deleted_blobs == ()
    for path in foreign:
        assert path.read_bytes() == before[path], path
    for path in fixed:
        assert path.exists(), path
    assert (root / "oci-layout").read_bytes() == before[root / "oci-layout"]
    assert link.is_symlink() and outside.read_bytes() == b"outside"


def test_stale_temp_files_of_dead_writers_are_removed_on_delete(registry: LocalRegistry) -> None:
    from ommx_experiment.engine import atomic

    dead_pid = 2**22 + 12345  # above the default pid_max: never a live process
    stale = registry.blobs.dir / atomic.temp_name("blob-").replace(str(os.getpid()), str(dead_pid))
    stale.write_bytes(b"partial write")
    os.utime(stale, (OLD, OLD))
    maintenance.gc()
    assert stale.exists()  # a dry run changes nothing
    maintenance.gc(delete=True)
    assert not stale.exists()


def test_invalid_grace_period_is_rejected_before_opening(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="invalid duration suffix"):
        maintenance.gc(root=blocker / "registry", grace_period="last-week")
    with pytest.raises(ValueError, match="duration must not be empty"):
        maintenance.gc(root=blocker / "registry", grace_period="")
    assert blocker.read_text() == "x"


def test_journaled_blobs_survive_gc_without_their_pin_ref(registry: LocalRegistry) -> None:
    from ommx_experiment import AutosavePolicy
    from ommx_experiment.engine.digest import sha256_digest
    from ommx_experiment.engine.names import ImageName
    from ommx_experiment.lifecycle.experiment import Experiment

    name = "example.com/t/journaled:v1"
    exp = Experiment(name)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    pad = b"." * 70_000  # over INLINE_MAX_BYTES: stored and pinned at once (small ones stay inline until a batch or commit)
    exp.log_attachment("top", mt.OCTET_STREAM, b"experiment-level payload" + pad)
    for i in range(3):
        with exp.run() as run:
            run.log_parameter("i", i)
            run.log_attachment("blob", mt.OCTET_STREAM, f"payload-{i}".encode() + pad)
    payloads = [b"experiment-level payload" + pad, *(f"payload-{i}".encode() + pad for i in range(3))]
    [pin] = checkpoints.pin_refs(registry, ImageName.parse(name))  # one writer, one pin chain
    assert registry.remove(pin) is not None
    assert registry.list_refs() == []  # nothing but the journal names these blobs now
    assert {sha256_digest(p) for p in payloads} <= journal_roots.journal_blob_digests(registry)
    _age_all(registry)
    report = maintenance.gc(delete=True, grace_period="0s", exclusive=True)
    assert {r.kind for r in report.roots} == {"protected_digest"}
    assert {sha256_digest(p) for p in payloads} <= _digests(report.reachable_blobs)
    assert report.missing_blobs == () and report.invalid_manifests == ()
    assert all(registry.blobs.exists(sha256_digest(p)) for p in payloads)
    del exp
    restored = Experiment.restore_from_checkpoint(name)
    assert restored.get_blob("top") == payloads[0]
    assert [r.get_blob("blob") for r in restored.runs] == payloads[1:]
    restored.commit()
    assert [r.get_blob("blob") for r in Experiment.load(name).runs] == payloads[1:]


def test_root_image_names_without_a_parse_agree_with_the_parse() -> None:
    """Ref rows whose host names itself are shown joined (no parse per ref); every row reads
    exactly as ImageName.from_row shows it (or joined, when it does not parse)."""
    from ommx_experiment.engine.names import ImageName
    from ommx_experiment.errors import InvalidInputError

    def parsed(name: str, reference: str) -> str:
        try:
            return str(ImageName.from_row(name, reference))
        except InvalidInputError:
            return f"{name}{'@' if ':' in reference else ':'}{reference}"

    hosts = ["example.com", "localhost", "localhost:5000", "a.b-c.io:443", "docker.io", "index.docker.io",
             "registry-1.docker.io", "ubuntu", "Example.com", "a_b.com", "1234abcd.ommx.local", "x.com:"]  # fmt: skip
    paths = ["x", "team/sweep", "a/b/c", "library/ubuntu", "A/b", "x__y", "x..y", "-x", "x-"]
    references = ["v1", "latest", "sha256:" + "a" * 64, "", "V1.0_rc", "sha256:bad", "a" * 129, "x:y"]
    for host in hosts:
        for path in paths:
            for reference in references:
                name = f"{host}/{path}"
                assert maintenance._ref_string(name, reference) == parsed(name, reference), (name, reference)


def _write_blob(registry: LocalRegistry, data: bytes) -> str:
    """A blob written as another tool writes it: a plain file, no lease of ours."""
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    (registry.blobs.dir / digest[len("sha256:") :]).write_bytes(data)
    return digest


def _add_foreign_image(registry: LocalRegistry) -> set[str]:
    """A plain OCI image as skopeo leaves it: blob files (no lease of ours) and an unmarked
    ``index.json`` entry. Returns its manifest, config and layer digests."""
    layer_bytes = b"foreign layer"
    layer, config = _write_blob(registry, layer_bytes), _write_blob(registry, b"{}")
    manifest_bytes = json.dumps({
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": len(layer_bytes)}],
    }).encode()
    manifest = _write_blob(registry, manifest_bytes)
    index_path = registry.root / "index.json"
    document = json.loads(index_path.read_bytes())
    document["manifests"].append({
        "mediaType": mt.OCI_MANIFEST, "digest": manifest, "size": len(manifest_bytes),
        "annotations": {"org.opencontainers.image.ref.name": "foreign/plain:v1"},
    })
    index_path.write_text(json.dumps(document))
    _age_all(registry)
    foreign = {manifest, config, layer}
    assert foreign <= _digests(maintenance.gc().reachable_blobs)  # a readable entry is a root
    return foreign


def _assert_gc_refuses(registry: LocalRegistry, foreign: set[str]) -> None:
    index_path = registry.root / "index.json"
    with pytest.raises(RegistryError, match=re.escape(str(index_path))):
        maintenance.gc()
    with pytest.raises(RegistryError, match="not a valid OCI image index"):
        maintenance.gc(delete=True, grace_period="0s", exclusive=True)
    assert all(registry.blobs.exists(d) for d in foreign)


def test_gc_refuses_while_index_json_stays_invalid_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening the root regenerates a damaged ``index.json``; on a full disk that fails (a
    warning) and the file stays damaged. The images other tools listed there are roots GC
    cannot see, so GC refuses, dry run and delete, naming the file, and deletes nothing."""
    from helpers.processes import tmpfs

    with tmpfs(tmp_path / "disk", "4m") as disk:
        monkeypatch.setenv("OMMX_LOCAL_REGISTRY_ROOT", str(disk / "registry"))
        registry = LocalRegistry.at(disk / "registry")
        commit_experiment(registry, "example.com/t/ours:v1")
        foreign = _add_foreign_image(registry)
        damaged = b'{"schemaVersion": 2, "manifests": [{"digest": "sha256:'  # cut short
        (registry.root / "index.json").write_bytes(damaged)
        with open(disk / "filler", "wb", buffering=0) as filler:
            for chunk in (1 << 20, 1 << 12, 1):
                with contextlib.suppress(OSError):
                    while True:
                        filler.write(b"\0" * chunk)
        try:
            _assert_gc_refuses(registry, foreign)
            assert (registry.root / "index.json").read_bytes() == damaged  # regeneration failed: still damaged
        finally:
            registry.close()
            (disk / "filler").unlink()


def test_a_regenerated_damaged_index_json_is_kept_and_its_digests_stay_roots(registry: LocalRegistry) -> None:
    """Our next ref write regenerates a damaged ``index.json`` from ``refs``; the entries other
    tools listed there cannot be parsed, so the damaged bytes are kept beside it
    (``index.json.damaged-*``) and every digest written in them stays a GC root (delete
    included) until the user removes the copy."""
    commit_experiment(registry, "example.com/t/ours:v1")
    foreign = _add_foreign_image(registry)
    index_path = registry.root / "index.json"
    text = index_path.read_bytes()
    damaged = text[: text.index(b"foreign/plain:v1")]  # cut after the foreign entry's digest
    index_path.write_bytes(damaged)
    commit_experiment(registry, "example.com/t/ours:v2")  # a ref write: the view is regenerated
    document = json.loads(index_path.read_bytes())
    names = {m["annotations"]["org.opencontainers.image.ref.name"] for m in document["manifests"]}
    assert {"example.com/t/ours:v1", "example.com/t/ours:v2"} <= names
    assert "foreign/plain:v1" not in names  # unparseable: not carried into the new file
    kept = sorted(registry.root.glob("index.json.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    _age_all(registry)
    assert foreign <= _digests(maintenance.gc().reachable_blobs)
    maintenance.gc(delete=True, grace_period="0s", exclusive=True)
    assert all(registry.blobs.exists(d) for d in foreign)
    kept[0].unlink()  # the user looked at the copy and let it go
    assert foreign <= _digests(maintenance.gc().orphan_candidates)


def test_gc_refuses_while_index_json_is_unreadable(registry: LocalRegistry) -> None:
    """An ``index.json`` that cannot be read nor replaced (here a folder) is refused the same way;
    with no ``index.json`` at all there is nothing unread, and GC runs."""
    commit_experiment(registry, "example.com/t/ours:v1")
    foreign = _add_foreign_image(registry)
    index_path = registry.root / "index.json"
    index_path.unlink()
    index_path.mkdir()
    (index_path / "x").write_text("not an index")
    _assert_gc_refuses(registry, foreign)
    shutil.rmtree(index_path)
    report = maintenance.gc()  # the file is regenerated from refs: the foreign entry is gone
    assert foreign <= _digests(report.orphan_candidates)
