"""Interop with OMMX 3.0.0b7 (side venv, subprocess) in both directions, byte identity, GC safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ommx_experiment import AutosavePolicy, Experiment, LocalRegistry
from ommx_experiment.format.run_meta import trailing_layers
from ommx_experiment.engine.oci import Manifest

WORKERS = Path(__file__).resolve().parents[1] / "workers"
REPO = Path(__file__).resolve().parents[2]
PRELUDE = f"""
import json, sys, warnings
sys.path.insert(0, {str(WORKERS)!r})
from experiment_worker import summary
from ommx.experiment import Experiment, AutosavePolicy, list_experiments, list_experiment_checkpoints
from ommx.artifact import Artifact, gc, list_artifacts
warnings.simplefilter("error")
"""

pytestmark = pytest.mark.ommx3


def _ours_summary(root: Path, command: str, name: str) -> dict:
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run(
        [sys.executable, str(WORKERS / "experiment_worker.py"), command, name], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _instance():
    from ommx.v1 import DecisionVariable, Instance

    x = DecisionVariable.binary(0)
    return Instance.from_components(decision_variables=[x], objective=x, constraints=[], sense=Instance.MAXIMIZE)


def _rich_experiment(name: str, tmp_path: Path) -> Experiment:
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    exp = Experiment(name)
    exp.set_annotation("com.example.owner", "alice")
    exp.log_json("cfg", {"b": 1, "a": [1, 2]})
    exp.log_attachment("raw", "application/x-raw", b"\x00\xff", compression="zstd")
    exp.log_file("data", data)
    inst = _instance()
    exp.log_instance("inst", inst)
    for i, (flag, count, x, label) in enumerate([(True, 1, 0.5, "a"), (False, -(2**63), float("inf"), "é")]):
        with exp.run() as run:
            run.log_parameter("flag", flag)
            run.log_parameter("count", count)
            run.log_parameter("x", x)
            run.log_parameter("label", label)
            run.log_json("result", {"i": i})
            run.log_solution("sol", inst.evaluate({0: i}))
    with pytest.raises(ValueError):
        with exp.run() as run:
            run.log_parameter("x", 2)
            raise ValueError("bad run")
    exp.commit()
    child = exp.fork(name.rsplit(":", 1)[0] + ":fork")
    with child.run() as run:
        run.log_parameter("x", 7.25)
    child.commit()
    return exp


def test_ours_loaded_by_ommx3_same_root_and_archive(ommx3, registry_root: Path, tmp_path: Path) -> None:
    name = "example.com/interop/ours:v1"
    exp = _rich_experiment(name, tmp_path)
    archive = tmp_path / "ours.ommx"
    exp.save(archive)
    ours = {n: _ours_summary(registry_root, "dump", n) for n in (name, name.replace(":v1", ":fork"))}
    other_root = tmp_path / "other-root"
    result = ommx3.run_json(
        PRELUDE
        + f"""
out = {{n: summary(Experiment.load(n)) for n in {list(ours)!r}}}
e = Experiment.load({name!r})
out["typed"] = [e.get_instance("inst").objective is not None, e.runs[0].get_solution("sol").objective]
out["listed"] = [r.image_name for r in list_experiments()]
out["checkpoints"] = [c.requested_image_name for c in list_experiment_checkpoints()]
out["artifacts"] = [a.image_name for a in list_artifacts()]
out["gc_missing"] = len(gc().missing_blobs)
print(json.dumps(out))
""",
        root=registry_root,
    )
    for n, summary in ours.items():
        assert result[n] == summary
    assert result[name]["runs"][2]["status"] == "failed"
    assert result[name]["dtypes"] == ["Int64", "boolean", "string", "Float64"]
    assert result["typed"][0] is True and result["typed"][1] == 0.0
    assert sorted(result["listed"]) == sorted(ours)
    assert result["checkpoints"] == [] and sorted(result["artifacts"]) == sorted(ours)
    assert result["gc_missing"] == 0
    imported = ommx3.run_json(
        PRELUDE + f"print(json.dumps(summary(Experiment.import_archive({str(archive)!r}))))", root=other_root
    )
    assert imported == ours[name]


def test_ommx3_commit_and_draft_read_by_us(ommx3, registry_root: Path) -> None:
    ommx3.run(
        PRELUDE
        + """
with Experiment("example.com/interop/theirs:v1") as e:
    e.set_annotation("com.example.k", "v")
    e.log_json("cfg", {"k": [1, 2]})
    with e.run() as r:
        r.log_parameter("p", 1); r.log_parameter("q", "s"); r.log_attachment("raw", "a/b", b"xyz")
    with e.run() as r:
        r.log_parameter("p", 2.5); r.log_parameter("flag", True)
d = Experiment("example.com/interop/draft:v1")
d.set_autosave_policy(AutosavePolicy.every_run_close())
for i in range(3):
    with d.run() as r:
        r.log_parameter("i", i); r.log_json("j", {"i": i})
""",
        root=registry_root,
    )
    theirs = ommx3.run_json(PRELUDE + 'print(json.dumps(summary(Experiment.load("example.com/interop/theirs:v1"))))', root=registry_root)
    assert _ours_summary(registry_root, "dump", "example.com/interop/theirs:v1") == theirs
    loaded = Experiment.load("example.com/interop/theirs:v1")
    derived = loaded.run_parameters_parquet
    assert derived.parent == registry_root / ".oxe-derived"
    import pandas as pd

    assert pd.read_parquet(derived)["p"].tolist() == [1.0, 2.5]
    restored = Experiment.restore_from_checkpoint("example.com/interop/draft:v1")
    assert [r.run_id for r in restored.runs] == [0, 1, 2]
    assert restored.runs[2].get_json("j") == {"i": 2}
    with restored.run() as run:
        assert run.run_id == 3
        run.log_parameter("i", 3)
    restored.commit()
    back = ommx3.run_json(
        PRELUDE
        + """
e = Experiment.load("example.com/interop/draft:v1")
print(json.dumps({"s": summary(e), "cps": [c.requested_image_name for c in list_experiment_checkpoints()]}))
""",
        root=registry_root,
    )
    assert back["s"]["index"] == [0, 1, 2, 3] and back["cps"] == []


def test_our_draft_checkpoint_restored_by_ommx3(ommx3, registry_root: Path) -> None:
    exp = Experiment("example.com/interop/ourdraft:v1")
    exp.set_autosave_policy(AutosavePolicy.every_run_close())
    for i in range(2):
        with exp.run() as run:
            run.log_parameter("i", i)
    out = ommx3.run_json(
        PRELUDE
        + """
cps = [(c.requested_image_name, c.status, c.run_count) for c in list_experiment_checkpoints()]
e = Experiment.restore_from_checkpoint("example.com/interop/ourdraft:v1")
with e.run() as r:
    r.log_parameter("i", 9)
e.commit()
print(json.dumps({"cps": cps, "s": summary(Experiment.load("example.com/interop/ourdraft:v1"))}))
""",
        root=registry_root,
    )
    assert out["cps"] == [["example.com/interop/ourdraft:v1", "draft", 2]]
    assert out["s"]["index"] == [0, 1, 2]


SAME_CALLS = """
e = Experiment(NAME)
e.set_autosave_policy(AutosavePolicy.disabled())
e.set_annotation("com.example.owner", "ñ")
e.log_json("cfg", {"b": 1, "a": [1, 2]})
e.log_attachment("raw", "application/x-raw", b"\\x00\\x01")
e.log_attachment("z", "text/plain", b"hello hello hello", compression="none")
for i in range(3):
    with e.run() as r:
        r.log_parameter("i", i)
        r.log_parameter("x", i / 3)
        r.log_parameter("s", "v%d" % i)
        r.log_parameter("b", i % 2 == 0)
        r.log_json("res", {"i": i})
try:
    with e.run() as r:
        r.log_parameter("i", 99)
        raise ValueError("bad\\n run")
except ValueError:
    pass
e.commit()
"""


def test_byte_identity_without_typed_payloads(ommx3, registry_root: Path) -> None:
    ommx3.run(PRELUDE + 'NAME = "example.com/interop/bytes:theirs"\n' + SAME_CALLS, root=registry_root)
    namespace = {"Experiment": Experiment, "AutosavePolicy": AutosavePolicy, "NAME": "example.com/interop/bytes:ours"}
    exec(SAME_CALLS, namespace)
    registry = LocalRegistry.default()
    theirs_digest = registry.resolve("example.com/interop/bytes:theirs")
    theirs = Manifest.parse(registry.blobs.get(theirs_digest))
    ours = Manifest.parse(registry.blobs.get(registry.resolve("example.com/interop/bytes:ours")))
    n_ours = len(trailing_layers(ours))
    assert n_ours == 4  # run_parameters.parquet, runs.parquet, solves.parquet, provenance.json
    stripped = Manifest(ours.artifact_type, ours.config, ours.layers[:-n_ours], ours.subject, ours.annotations)
    assert stripped.to_bytes() == registry.blobs.get(theirs_digest)
    assert ours.config == theirs.config  # identical config bytes (same digest)


def test_journaled_blobs_survive_ommx3_gc(ommx3, registry_root: Path) -> None:
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(registry_root), PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen(
        [sys.executable, str(WORKERS / "experiment_worker.py"), "sweep", "example.com/interop/gc:v1", "4", "--policy", "disabled"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    for i in range(4):
        assert proc.stdout.readline().strip() == f"closed {i}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    report = ommx3.run_json(
        PRELUDE
        + """
r = gc(delete=True, grace_period="0s")
print(json.dumps({"deleted": len(r.deleted_blobs), "missing": len(r.missing_blobs), "invalid": len(r.invalid_manifests),
                  "artifacts": [a.image_name for a in list_artifacts()], "cps": len(list_experiment_checkpoints())}))
""",
        root=registry_root,
    )
    assert report["missing"] == 0 and report["invalid"] == 0
    assert report["artifacts"] == [] and report["cps"] == 0  # the pin ref is hidden from OMMX listings
    state = _ours_summary(registry_root, "restore", "example.com/interop/gc:v1")
    assert [r["attachments"]["blob"] for r in state["runs"]] == [f"payload-{i}".encode().hex() for i in range(4)]
    assert state["attachments"] == {"shared": b"experiment-level".hex()}
