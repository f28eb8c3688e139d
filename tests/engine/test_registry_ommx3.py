"""Interop with OMMX 3.0.0b7 (side venv, driven in a subprocess) on one shared root."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from helpers.ommx3 import Ommx3Driver
from helpers.ours_on_ommx3 import OursOnOmmx3
from workers.registry_worker import EMPTY_CONFIG_DIGEST, digest_of, store_generic

from ommx_experiment.engine import layout_view
from ommx_experiment.engine.registry import LocalRegistry

pytestmark = pytest.mark.ommx3

GENERIC = "application/org.ommx.v1.artifact"


def _works(python: Path) -> bool:
    if not python.exists():
        return False
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(python), "-c", "import ommx.experiment"], env=env, capture_output=True, timeout=120).returncode == 0


@pytest.fixture(scope="module")
def ommx(request: pytest.FixtureRequest) -> Ommx3Driver:
    """The conftest ``ommx3`` driver if its venv is installed, else /tmp/venv-ommx3."""
    repo = Path(__file__).resolve().parents[2]
    candidates = [Path(p) for p in [os.environ.get("OMMX3_PYTHON")] if p]
    candidates += [repo / ".venv-ommx3" / "bin" / "python", Path("/tmp/venv-ommx3/bin/python")]
    for python in candidates:
        if _works(python):
            return Ommx3Driver(python)
    from conftest import unavailable

    unavailable(f"no OMMX 3 side venv with ommx importable among {[str(c) for c in candidates]}")
    raise AssertionError("unreachable")


_LOAD_AND_LIST = """
import base64, json, warnings
from ommx.artifact import Artifact, list_artifacts
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    art = Artifact.load("example.com/ours/generic:v1")
    layers = [(d.digest, d.media_type, base64.b64encode(art.get_blob(d)).decode()) for d in art.layers]
    listed = {r.image_name: [r.manifest_digest, r.artifact_type] for r in list_artifacts()}
print(json.dumps({"layers": layers, "listed": listed, "warnings": [str(w.message) for w in caught]}))
"""


def test_ommx3_loads_and_lists_our_generic_artifact(ommx: Ommx3Driver, tmp_path: Path) -> None:
    root = tmp_path / "reg"
    reg = LocalRegistry(root)
    payload = os.urandom(2048)
    digest = store_generic(reg, [("application/octet-stream", payload)])
    assert reg.publish("example.com/ours/generic:v1", digest) is True
    reg.close()

    out = ommx.run_json(_LOAD_AND_LIST, root=root)
    assert out["warnings"] == []
    assert out["layers"] == [[digest_of(payload), "application/octet-stream", base64.b64encode(payload).decode()]]
    assert out["listed"] == {"example.com/ours/generic:v1": [digest, GENERIC]}


_OMMX_COMMITS = """
import json
from ommx.experiment import Experiment
from ommx.artifact import ArtifactDraft, list_artifacts
with Experiment("example.com/ommx/exp:v1") as exp:
    with exp.run() as run:
        run.log_parameter("seed", 7)
draft = ArtifactDraft.new("example.com/ommx/art:v1")
draft.add_layer("application/octet-stream", b"ommx layer bytes")
draft.commit()
print(json.dumps({r.image_name: r.manifest_digest for r in list_artifacts()}))
"""


def test_we_read_what_ommx3_commits(ommx: Ommx3Driver, tmp_path: Path, skopeo: Path) -> None:
    root = tmp_path / "reg"
    theirs = ommx.run_json(_OMMX_COMMITS, root=root)
    assert set(theirs) == {"example.com/ommx/exp:v1", "example.com/ommx/art:v1"}

    reg = LocalRegistry(root)  # an OMMX-created root: our migration adds only oxe_ objects
    assert reg.sync() == 2
    assert layout_view.read_index(root) == theirs
    for name, digest in theirs.items():
        assert reg.resolve(name) == digest
        data, facts = reg.read_manifest(digest)
        reg.verify_closure(digest)
        for blob, size in reg.closure(digest):
            assert reg.blobs.verify(blob, size), (name, blob)
        raw = subprocess.run(
            [str(skopeo), "inspect", "--raw", f"oci:{root}:{name}"], capture_output=True, timeout=120, check=True
        ).stdout
        assert raw == data
    _, art = reg.read_manifest(theirs["example.com/ommx/art:v1"])
    assert art.artifact_type == GENERIC and art.config_digest == EMPTY_CONFIG_DIGEST
    assert [reg.blobs.get(d) for d, _ in art.layers] == [b"ommx layer bytes"]
    _, exp = reg.read_manifest(theirs["example.com/ommx/exp:v1"])
    assert exp.artifact_type == "application/org.ommx.v1.experiment"
    conn = sqlite3.connect(root / "index.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    reg.close()


_COMMIT_INTO_OURS = """
import json, warnings
from ommx.experiment import Experiment
from ommx.artifact import list_artifacts
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with Experiment("example.com/ommx/into-ours:v1") as exp:
        with exp.run() as run:
            run.log_parameter("x", 1.5)
    listed = {r.image_name: r.manifest_digest for r in list_artifacts()}
print(json.dumps({"listed": listed, "warnings": [str(w.message) for w in caught]}))
"""


def _schema(path: Path, *, ours: bool) -> set[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    conn.close()
    return {(t, n, s) for t, n, s in rows if n.startswith("oxe_") == ours}


def test_ommx3_commits_into_a_root_we_created(ommx: Ommx3Driver, tmp_path: Path) -> None:
    root = tmp_path / "reg"
    reg = LocalRegistry(root)
    mine = store_generic(reg, [("application/octet-stream", b"mine")])
    reg.publish("example.com/ours/first:v1", mine)
    version_before = reg.db.refs_version()
    oxe_before = _schema(root / "index.sqlite3", ours=True)
    reg.close()

    out = ommx.run_json(_COMMIT_INTO_OURS, root=root)
    assert out["warnings"] == []
    assert set(out["listed"]) == {"example.com/ours/first:v1", "example.com/ommx/into-ours:v1"}

    # No migration by OMMX: user_version 2, our objects intact, and our triggers saw its writes.
    conn = sqlite3.connect(root / "index.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert _schema(root / "index.sqlite3", ours=True) == oxe_before
    version_after = int(conn.execute("SELECT value FROM oxe_meta WHERE key = 'refs_version'").fetchone()[0])
    assert version_after > version_before
    conn.close()

    # Our DDL for OMMX's tables is byte-identical to what OMMX itself creates.
    ommx_root = tmp_path / "ommx-made"
    ommx.run("from ommx.artifact import get_images; get_images()", root=ommx_root)
    assert _schema(root / "index.sqlite3", ours=False) == _schema(ommx_root / "index.sqlite3", ours=False)

    assert "example.com/ommx/into-ours:v1" not in layout_view.read_index(root)  # OMMX never writes the view
    reg = LocalRegistry(root)  # opening sees refs_version moved and regenerates the stale view
    assert not layout_view.is_stale(reg.root, reg.db)
    assert layout_view.read_index(root) == out["listed"]
    reg.verify_closure(out["listed"]["example.com/ommx/into-ours:v1"])
    reg.close()


_VIEW_AFTER_OMMX = """
import json, os, pathlib
import ommx.experiment as oe, ommx_experiment as ox
from ommx_experiment.engine import layout_view
ox.list_experiments()                                  # our registry is open (and cached) in this process
with oe.Experiment("example.com/view/theirs:v1") as e:
    with e.run() as r:
        r.log_parameter("x", 1)
root = pathlib.Path(os.environ["OMMX_LOCAL_REGISTRY_ROOT"])
before = sorted(layout_view.read_index(root))
listed = [x.image_name for x in ox.list_experiments()]
print(json.dumps({"before": before, "listed": listed, "after": sorted(layout_view.read_index(root))}))
"""


def test_our_next_call_refreshes_index_json_after_ommx_committed_in_process(
    ours3: OursOnOmmx3, registry_root: Path
) -> None:
    assert ours3.run_json(_VIEW_AFTER_OMMX, root=registry_root) == {
        "before": [], "listed": ["example.com/view/theirs:v1"], "after": ["example.com/view/theirs:v1"],
    }
