"""Concurrent writers in one root: our committers, deleting GC loops, same-name races, OMMX 3.

Issue 8, "Concurrent writers". GC runs with ``grace_period="0s"``: OMMX's mtime grace then
protects nothing, so these tests prove our own protection of in-flight blobs (blob leases,
spec/registry.md §3).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from . import _support as sup

WRITERS = 4
GC_LOOPS = 2


def _concurrent(tmp_path: Path, per_writer: int) -> None:
    root = tmp_path / "registry"
    stop = tmp_path / "stop"
    sup.run_json(root, "writer", "init", "1")  # create the root before the loops start
    logs = {}

    def spawn(label: str, *args: str) -> subprocess.Popen[bytes]:
        out = open(tmp_path / f"{label}.out", "wb")
        err = open(tmp_path / f"{label}.err", "wb")
        logs[label] = (tmp_path / f"{label}.out", tmp_path / f"{label}.err")
        return sup.spawn(root, *args, stdout=out, stderr=err)

    gcs = [spawn(f"gc{g}", "gcloop", str(stop)) for g in range(GC_LOOPS)]
    writers = [spawn(f"w{w}", "writer", f"w{w}", str(per_writer)) for w in range(WRITERS)]
    try:
        codes = [w.wait(timeout=1800) for w in writers]
    finally:
        stop.touch()
        gc_codes = [g.wait(timeout=300) for g in gcs]
    texts = {label: (out.read_text(), err.read_text()) for label, (out, err) in logs.items()}
    assert codes == [0] * WRITERS, texts
    assert gc_codes == [0] * GC_LOOPS, texts
    for label, (out, err) in texts.items():
        assert "database is locked" not in out + err, (label, out, err)
        report = json.loads(out.strip().splitlines()[-1])
        assert report["errors"] == [], (label, report["errors"][:5])
        if label.startswith("gc"):
            assert report["passes"] > 0

    expected = {f"example.com/cw/w{w}:{i}" for w in range(WRITERS) for i in range(per_writer)}
    conn = sqlite3.connect(root / "index.sqlite3")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    names = {f"{n}:{r}" for n, r in conn.execute("SELECT name, reference FROM refs WHERE name LIKE 'example.com/cw/w%'")}
    assert names == expected
    check = sup.run_json(root, "check-writers", json.dumps(sorted(expected)), timeout=900)
    assert check["problems"] == [], check["problems"][:5]
    assert check["loaded"] == len(expected)


@pytest.mark.parametrize(
    "per_writer", [pytest.param(40, id="4x40"), pytest.param(250, id="4x250", marks=pytest.mark.stress)]
)
def test_writers_with_deleting_gc_loops(tmp_path: Path, per_writer: int) -> None:
    _concurrent(tmp_path, per_writer)


# --- leases: the fix these tests found ---------------------------------------------------------------------


def test_in_flight_blob_of_another_process_survives_zero_grace_gc(registry_root: Path) -> None:
    """A blob written by a live process that no ref reaches yet is leased: gc(0s) keeps it;
    once that process is dead its lease is void, the blob is collected and the lease file goes."""
    from ommx_experiment import gc
    from ommx_experiment.engine.blobstore import LEASE_DIR
    from ommx_experiment.engine.registry import LocalRegistry

    registry = LocalRegistry.default()
    script = (
        "import sys; from ommx_experiment.engine.registry import LocalRegistry; "
        "print(LocalRegistry.default().blobs.put_bytes(b'in flight').digest, flush=True); sys.stdin.readline()"
    )
    proc = subprocess.Popen(
        [sup.sys.executable, "-c", script], env=sup.env(registry_root), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        digest = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert registry.blobs.exists(digest)
        report = gc(delete=True, grace_period="0s", exclusive=True)
        assert digest in {b.digest for b in report.orphan_candidates}
        assert digest in {b.digest for b in report.skipped_blobs} and registry.blobs.exists(digest)
    finally:
        proc.communicate("\n", timeout=60)
    assert len(list((registry_root / LEASE_DIR).glob("*.lease"))) == 1
    report = gc(delete=True, grace_period="0s", exclusive=True)
    assert digest in {b.digest for b in report.deleted_blobs} and not registry.blobs.exists(digest)
    assert list((registry_root / LEASE_DIR).glob("*.lease")) == []


def test_release_after_the_gc_read_refs_still_protects(registry_root: Path) -> None:
    """Thread B writes X and publishes a ref to it *after* the GC read refs: the release is
    stamped later than the GC's ref snapshot, so the sweep keeps X (it used to delete it)."""
    import threading

    from ommx_experiment import media_types as mt
    from ommx_experiment.edges import maintenance
    from ommx_experiment.engine.registry import LocalRegistry
    from ommx_experiment.lifecycle.artifact import ArtifactDraft

    registry = LocalRegistry.default()
    registry.blobs.put_bytes(b"listed first")  # so the listing is not empty
    holder: dict[str, str] = {}

    def write_blob() -> None:
        holder["x"] = registry.blobs.put_bytes(b"payload X").digest

    thread = threading.Thread(target=write_blob)
    thread.start()
    thread.join()
    report, refs_read_at = maintenance._mark_and_sweep_timed(registry, 0)
    assert holder["x"] in {b.digest for b in report.orphan_candidates}

    def publish() -> None:
        draft = ArtifactDraft.new("example.com/rel/late:v1", registry=registry)
        draft.add_layer(mt.OCTET_STREAM, b"payload X")
        draft.commit()

    thread = threading.Thread(target=publish)
    thread.start()
    thread.join()
    done = maintenance._delete(registry, report, 0, refs_read_at)
    assert holder["x"] not in {b.digest for b in done.deleted_blobs}
    assert registry.blobs.exists(holder["x"])
    # the next pass sees the ref; nothing of it is a candidate
    assert holder["x"] in {b.digest for b in maintenance.gc(delete=True, grace_period="0s", exclusive=True).reachable_blobs}


def test_manifest_written_after_the_listing_is_walked(registry_root: Path) -> None:
    """GC lists blobs, then reads refs: a manifest committed in between is not in the listing
    but its (listed) config and layers are reachable through it, and it is not 'missing'."""
    from ommx_experiment import media_types as mt
    from ommx_experiment.edges import maintenance
    from ommx_experiment.engine.registry import LocalRegistry
    from ommx_experiment.lifecycle.artifact import ArtifactDraft

    registry = LocalRegistry.default()
    draft = ArtifactDraft.new("example.com/rel/between:v1", registry=registry)
    layer = draft.add_layer(mt.OCTET_STREAM, b"listed layer")
    traversal = maintenance._Traversal(registry)  # the listing
    art = draft.commit()  # manifest + ref appear after it
    traversal.add_refs()
    traversal.run()
    assert {layer.digest, art.manifest_digest} <= traversal.reachable
    assert traversal.missing == []


# --- same name, two processes -----------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(3))
def test_two_processes_commit_the_same_name(tmp_path: Path, attempt: int) -> None:
    root = tmp_path / "registry"
    go = tmp_path / "go"
    name = "example.com/rel/same:v1"
    sup.run_json(root, "writer", "init", "1")
    procs = [
        sup.spawn(root, "same", name, who, str(go), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for who in ("alpha", "beta")
    ]
    time.sleep(1.0)
    go.touch()
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        outs.append(json.loads(out.decode().strip().splitlines()[-1]))
    winners = [o for o in outs if "won" in o]
    losers = [o for o in outs if "conflict" in o]
    assert len(winners) == 1 and len(losers) == 1, outs
    assert losers[0]["runtime_error"] is True
    assert winners[0]["won"] in losers[0]["conflict"] or name in losers[0]["conflict"]
    check = sup.run_json(root, "verify-name", name, winners[0]["won"])
    assert check["problems"] == [], check
    assert check["who"] in ("alpha", "beta")


# --- OMMX 3 at the same time --------------------------------------------------------------------------------

_OMMX3_WRITER = """
from ommx.experiment import Experiment
for i in range({n}):
    with Experiment(f"example.com/theirs/t:{{i}}") as e:
        e.log_json("cfg", {{"i": i}})
        with e.run() as r:
            r.log_parameter("i", i)
            r.log_attachment("raw", "application/octet-stream", b"theirs-%d" % i)
print("done")
"""

_OMMX3_READER = """
import json
from ommx.experiment import Experiment
out = {{}}
for name in {names!r}:
    e = Experiment.load(name)
    out[name] = [e.runs[0].run_id, {{k: v for k, v in e.run_parameters_df().iloc[0].items()}}]
print(json.dumps(out, default=str))
"""


def test_ommx3_commits_concurrently_with_us(ommx3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "registry"
    n = 15
    sup.run_json(root, "writer", "init", "1")
    ours = sup.spawn(root, "writer", "ours", str(n), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    theirs = ommx3.run(_OMMX3_WRITER.format(n=n), root=root, timeout=600)
    out, err = ours.communicate(timeout=600)
    assert ours.returncode == 0, err.decode()
    assert json.loads(out.decode().strip().splitlines()[-1])["errors"] == []
    assert "done" in theirs.stdout
    our_names = [f"example.com/cw/ours:{i}" for i in range(n)]
    their_names = [f"example.com/theirs/t:{i}" for i in range(n)]
    check = sup.run_json(root, "check-writers", json.dumps(our_names))
    assert check["problems"] == [] and check["loaded"] == n
    seen = sup.run_json(root, "verify-theirs", json.dumps(their_names))
    assert seen["problems"] == []
    read_back = ommx3.run_json(_OMMX3_READER.format(names=our_names + their_names), root=root)
    assert set(read_back) == set(our_names + their_names)
    assert all(run_id == 0 for run_id, _ in read_back.values())
    assert read_back[their_names[3]][1]["i"] in (3, "3")
