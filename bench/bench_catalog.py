"""Catalog and GC: ``list_experiments`` over 1,000 experiments and ``gc`` dry run over 10,000 blobs.

One root is built once (real experiment artifacts: attachment, run-parameter layer,
config and manifest blobs per experiment, ``refs`` rows plus OMMX's cache rows
written as OMMX writes them), then each implementation lists it in fresh
processes: the *first* call (cold in-process caches, registry opened by the call)
and *warm* calls (median of 5 more calls in the same process). Then orphan blobs
are added until the CAS holds 10,000 blob files and both run a ``gc`` dry run.
Every figure is the median over ``REPEATS`` fresh processes. Target: our warm
listing at most OMMX 3's warm listing.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from _common import OMMX3_PYTHON, OURS_PYTHON, fmt_mb, python_or_none, run_python, scratch_dir

EXPERIMENTS = 1000
BLOBS = 10_000
REPEATS = 3

_BUILD = """
import json, sys
from datetime import datetime, timezone
from ommx_experiment import media_types as mt
from ommx_experiment.format.content import AttachmentContent, ExperimentContent, RunContent, build_experiment
from ommx_experiment.engine.oci import Descriptor, FrozenMap, Manifest
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.format.run_params import encode_msgpack

registry = LocalRegistry.at({root!r})
registry.registry_id
blob_dir = registry.blobs.dir

def put(media_type, data):
    desc = Descriptor.for_blob(media_type, data)
    path = blob_dir / desc.digest[len("sha256:"):]
    if not path.exists():
        path.write_bytes(data)
    return desc

refs, manifests, configs = [], [], []
for i in range({n}):
    run_ids = list(range(1 + i % 5))
    params = {{r: {{"seed": i * 10 + r, "solver": "highs", "time_limit": 1.5 * r}} for r in run_ids}}
    run_params = put(mt.RUN_PARAMETERS, encode_msgpack(params, run_ids))
    attachment = put(mt.JSON, json.dumps({{"experiment": i}}).encode())
    content = ExperimentContent(
        AttachmentContent({{f"input-{{i}}": attachment}}), tuple(RunContent(run_id=r) for r in run_ids), run_params
    )
    layers, config = build_experiment(content, status="finished")
    config_bytes = config.to_bytes()
    config_desc = put(mt.EXPERIMENT_CONFIG, config_bytes)
    manifest = Manifest(mt.EXPERIMENT_ARTIFACT_TYPE, config_desc, layers, None, FrozenMap({{"com.example.index": str(i)}}))
    manifest_bytes = manifest.to_bytes()
    digest = put(mt.OCI_MANIFEST, manifest_bytes).digest
    now = datetime.now(timezone.utc).isoformat()
    refs.append((f"bench.example.com/catalog/exp-{{i:04d}}", "v1", digest, now))
    manifests.append((digest, manifest_bytes, mt.EXPERIMENT_ARTIFACT_TYPE, config_desc.digest))
    configs.append((config_desc.digest, config_bytes))
with registry.db.write("bench catalog build") as conn:
    conn.executemany("INSERT INTO refs(name, reference, manifest_digest, updated_at) VALUES (?, ?, ?, ?)", refs)
    conn.executemany("INSERT OR IGNORE INTO artifact_manifests VALUES (?, ?, ?, ?)", manifests)
    conn.executemany("INSERT OR IGNORE INTO experiment_configs VALUES (?, ?)", configs)
registry.sync()
print(json.dumps({{"blobs": sum(1 for _ in registry.blobs.iter_digests())}}))
"""

_LIST = """
import json, time, warnings
warnings.simplefilter("error")
start = time.perf_counter()
from {module} import list_experiments
imported = time.perf_counter()
refs = list_experiments(root={root!r})
first = time.perf_counter()
warm = []
for _ in range(5):
    t = time.perf_counter()
    again = list_experiments(root={root!r})
    warm.append(time.perf_counter() - t)
assert len(again) == len(refs)
warm.sort()
print(json.dumps({{"n": len(refs), "import": imported - start, "first": first - imported, "warm": warm[2],
                   "runs": sum(r.run_count for r in refs)}}))
"""

_GC = """
import json, time
start = time.perf_counter()
from {module} import gc
imported = time.perf_counter()
report = gc(root={root!r})
done = time.perf_counter()
print(json.dumps({{"seconds": done - imported, "reachable": len(report.reachable_blobs),
                   "orphans": len(report.orphan_candidates) + len(report.deferred_blobs)}}))
"""


def _add_orphans(root: Path, total: int) -> None:
    blob_dir = root / "blobs" / "sha256"
    have = sum(1 for _ in blob_dir.iterdir() if len(_.name) == 64)
    import hashlib

    for i in range(max(0, total - have)):
        data = f"orphan payload {i}".encode() + os.urandom(64)
        (blob_dir / hashlib.sha256(data).hexdigest()).write_bytes(data)


def _median_runs(code: str, python: Path, keys: tuple[str, ...]) -> tuple[dict[str, float], int, dict[str, object]]:
    results = [run_python(code, python=python) for _ in range(REPEATS)]
    medians = {k: statistics.median(float(r.data[k]) for r in results) for k in keys}
    rss = int(statistics.median(r.peak_rss_bytes for r in results))
    return medians, rss, results[-1].data


def _row(case: str, impl: str, ms: float, rss: int, note: str = "") -> dict[str, object]:
    row: dict[str, object] = {
        "benchmark": "catalog", "case": case, "impl": impl, "ms": round(ms * 1000, 1), "peak_rss_MB": fmt_mb(rss),
    }
    if note:
        row["note"] = note
    return row


def _impls() -> list[tuple[str, Path, str, str]]:
    impls = [("ours", OURS_PYTHON, "ommx_experiment.edges.catalog", "ommx_experiment.edges.maintenance")]
    ommx3 = python_or_none(OMMX3_PYTHON)
    if ommx3 is not None:
        impls.append(("ommx3", ommx3, "ommx.experiment", "ommx.artifact"))
    return impls


def run() -> list[dict[str, object]]:
    """list_experiments first/warm over 1,000 experiments and gc dry run over 10,000 blobs, ours vs OMMX 3."""
    rows: list[dict[str, object]] = []
    with scratch_dir("ommx-bench-catalog-") as tmp:
        root = tmp / "registry"
        build = run_python(_BUILD.format(root=str(root), n=EXPERIMENTS), python=OURS_PYTHON)
        warm: dict[str, float] = {}
        for impl, python, list_module, _ in _impls():
            code = _LIST.format(module=list_module, root=str(root))
            medians, rss, data = _median_runs(code, python, ("first", "warm", "import"))
            assert data["n"] == EXPERIMENTS, data
            warm[impl] = medians["warm"]
            note = f"{data['n']} experiments, {data['runs']} runs; import {medians['import'] * 1000:.0f} ms"
            rows.append(_row(f"list_experiments {EXPERIMENTS} first call", impl, medians["first"], rss, note))
            rows.append(_row(f"list_experiments {EXPERIMENTS} warm", impl, medians["warm"], rss))
        if "ommx3" in warm:
            ratio = warm["ours"] / warm["ommx3"]
            rows[-1]["note"] = f"ours/ommx3 warm = {ratio:.2f}x (target <= 1x)"
        _add_orphans(root, BLOBS)
        for impl, python, _, gc_module in _impls():
            code = _GC.format(module=gc_module, root=str(root))
            medians, rss, data = _median_runs(code, python, ("seconds",))
            note = f"{data['reachable']} reachable, {data['orphans']} orphans (built {build.data['blobs']} + orphans)"
            rows.append(_row(f"gc dry run {BLOBS} blobs", impl, medians["seconds"], rss, note))
    if "ommx3" not in warm:
        rows.append({"benchmark": "catalog", "case": "-", "impl": "ommx3", "note": f"{OMMX3_PYTHON} missing"})
    return rows
