"""Our gc and OMMX 3's gc on the same root: same roots, reachable, orphan and missing sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edges.test_catalog_ommx3 import OMMX_WRITES
from helpers.catalog_support import commit_experiment, experiment_manifest, put

from ommx_experiment import media_types as mt
from ommx_experiment.edges import maintenance
from ommx_experiment.engine.oci import Manifest
from ommx_experiment.engine.registry import LocalRegistry

OMMX_GC = """
    import json
    from ommx.artifact import gc
    r = gc(grace_period="{grace}")
    print(json.dumps({{
        "roots": sorted([x.kind, x.image_name, x.digest] for x in r.roots),
        "reachable": sorted(b.digest for b in r.reachable_blobs),
        "orphans": sorted(b.digest for b in r.orphan_candidates),
        "deferred": sorted(b.digest for b in r.deferred_blobs),
        "missing": sorted([m.digest, m.kind, m.referenced_by] for m in r.missing_blobs),
        "invalid": sorted([m.digest, m.kind, m.referenced_by] for m in r.invalid_manifests),
        "sizes": [r.reachable_size, r.orphan_candidate_size, r.deferred_size],
    }}))
"""


def _ours(root: Path, grace: str) -> dict[str, Any]:
    r = maintenance.gc(root=root, grace_period=grace)
    return {
        "roots": sorted([x.kind, x.image_name, x.digest] for x in r.roots),
        "reachable": sorted(b.digest for b in r.reachable_blobs),
        "orphans": sorted(b.digest for b in r.orphan_candidates),
        "deferred": sorted(b.digest for b in r.deferred_blobs),
        "missing": sorted([m.digest, m.kind, m.referenced_by] for m in r.missing_blobs),
        "invalid": sorted([m.digest, m.kind, m.referenced_by] for m in r.invalid_manifests),
        "sizes": [r.reachable_size, r.orphan_candidate_size, r.deferred_size],
    }


def test_same_sets_on_a_shared_root(ommx3, registry_root: Path) -> None:  # type: ignore[no-untyped-def]
    ommx3.run(OMMX_WRITES, root=registry_root)
    registry = LocalRegistry.at(registry_root)
    parent = commit_experiment(registry, "example.com/ours/parent:v1", attachment=b"parent")
    subject = Manifest.parse(registry.blobs.get(parent)).descriptor()
    child, _, cfg = experiment_manifest(registry, subject=subject, seed=4)
    registry.publish("example.com/ours/child:v1", child, config_bytes=cfg)
    maintenance.remove_image("example.com/ours/parent:v1", root=registry_root)
    put(registry, mt.OCTET_STREAM, b"orphan of ours")
    broken = commit_experiment(registry, "example.com/ours/broken:v1", attachment=b"to be lost", seed=9)
    layer = Manifest.parse(registry.blobs.get(broken)).layers[0].digest
    registry.blobs.path(layer).unlink()
    corrupt = commit_experiment(registry, "example.com/ours/corrupt:v1", seed=12)
    registry.blobs.path(corrupt).write_bytes(b"garbage")
    for grace in ("0s", "24h"):
        ours = _ours(registry_root, grace)
        theirs = ommx3.run_json(OMMX_GC.format(grace=grace), root=registry_root)
        assert ours == theirs, grace
    final = _ours(registry_root, "0s")
    assert parent in final["reachable"] and final["orphans"] and final["missing"] and final["invalid"]


def test_after_our_delete_ommx_finds_nothing_to_collect(ommx3, registry_root: Path) -> None:  # type: ignore[no-untyped-def]
    ommx3.run(OMMX_WRITES, root=registry_root)
    registry = LocalRegistry.at(registry_root)
    commit_experiment(registry, "example.com/ours/keep:v1")
    put(registry, mt.OCTET_STREAM, b"orphan")
    before = ommx3.run_json(OMMX_GC.format(grace="0s"), root=registry_root)
    assert before["orphans"]
    done = maintenance.gc(root=registry_root, delete=True, grace_period="0s", exclusive=True)
    assert sorted(b.digest for b in done.deleted_blobs) == before["orphans"]
    after = ommx3.run_json(OMMX_GC.format(grace="0s"), root=registry_root)
    assert after["orphans"] == [] and after["missing"] == [] and after["reachable"] == before["reachable"]
    load = ommx3.run_json(
        """
        import json
        from ommx.experiment import Experiment
        e = Experiment.load("example.com/ommx/child:v1")
        print(json.dumps(e.run_parameters_df()["seed"].tolist()))
        """,
        root=registry_root,
    )
    assert load == [0, 1, 2, 10]
