"""Remote interop: skopeo reads what we push and we pull what skopeo pushes (from
``.ommx`` archives, ours and OMMX 3's); ``Artifact``/``Experiment`` push → load."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers.credentials import clear_ambient_credentials
from helpers.oci_registry import OciRegistry
from edges.test_remote import store_artifact, unique_name

from ommx_experiment.edges.remote import pull_artifact, push_artifact
from ommx_experiment.engine import root
from ommx_experiment.engine.names import ImageName
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.format import archive
from ommx_experiment.lifecycle.artifact import Artifact, ArtifactDraft
from ommx_experiment.lifecycle.experiment import Experiment

if TYPE_CHECKING:
    from helpers.ommx3 import Ommx3Driver


@pytest.fixture(autouse=True)
def _no_ambient_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_ambient_credentials(tmp_path, monkeypatch)


def _skopeo(skopeo: Path, *args: str) -> None:
    proc = subprocess.run([str(skopeo), *args], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"skopeo {' '.join(args)} failed: {proc.stderr}"


def _layout_digest(layout: Path, ref_name: str) -> str:
    index = json.loads((layout / "index.json").read_bytes())
    (entry,) = [m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref_name]
    return str(entry["digest"])


def _switch_root(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setenv("OMMX_LOCAL_REGISTRY_ROOT", str(path))
    root._reset_for_tests()


def test_skopeo_copies_what_we_pushed(tmp_path: Path, oci_registry: OciRegistry, skopeo: Path) -> None:
    name = unique_name(oci_registry, "for-skopeo")
    src = LocalRegistry.at(tmp_path / "src")
    digest, data = store_artifact(src, name, [os.urandom(1 << 16), b"second"])
    push_artifact(src, name, digest, quiet=True)
    out = tmp_path / "skopeo-layout"
    ref = "example.com/copied/artifact:v1"
    _skopeo(skopeo, "copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{out}:{ref}")
    assert _layout_digest(out, ref) == digest
    assert (out / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes() == data


def test_pull_what_skopeo_pushed_from_our_archive(tmp_path: Path, oci_registry: OciRegistry, skopeo: Path) -> None:
    src = LocalRegistry.at(tmp_path / "src")
    local_name = "example.com/archived/artifact:v1"
    digest, data = store_artifact(src, local_name, [b"archived payload"])
    path = tmp_path / "artifact.ommx"
    archive.write_archive(src, digest, local_name, path)
    remote_name = unique_name(oci_registry, "from-archive")
    _skopeo(skopeo, "copy", "--dest-tls-verify=false", f"oci-archive:{path}:{local_name}", f"docker://{remote_name}")
    dst = LocalRegistry.at(tmp_path / "dst")
    assert pull_artifact(dst, remote_name, quiet=True) == digest
    assert dst.read_manifest(digest)[0] == data


@pytest.mark.timeout(300)
def test_load_ommx3_experiment_that_skopeo_pushed(
    tmp_path: Path, oci_registry: OciRegistry, skopeo: Path, ommx3: Ommx3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_name = "example.com/ommx3/experiment:v1"
    path = tmp_path / "ommx3.ommx"
    made = ommx3.run_json(
        f"""
        import json
        from ommx.experiment import Experiment
        with Experiment({local_name!r}) as exp:
            exp.log_json("meta", {{"solver": "none"}})
            with exp.run() as run:
                run.log_parameter("alpha", 0.5)
                run.log_json("result", [1, 2, 3])
        exp.save({str(path)!r})
        print(json.dumps({{"name": exp.image_name}}))
        """,
        root=tmp_path / "ommx3-root",
    )
    assert made == {"name": local_name}
    with tarfile.open(path) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    ommx3_digest = index["manifests"][0]["digest"]
    remote_name = unique_name(oci_registry, "ommx3")
    _skopeo(skopeo, "copy", "--dest-tls-verify=false", f"oci-archive:{path}:{local_name}", f"docker://{remote_name}")
    loaded = Experiment.load(remote_name)
    assert loaded.artifact.manifest_digest == ommx3_digest
    assert loaded.get_json("meta") == {"solver": "none"}
    (run,) = loaded.runs
    assert run.get_json("result") == [1, 2, 3]
    assert loaded.run_parameters_df().loc[0, "alpha"] == 0.5


def test_artifact_push_then_load_elsewhere(
    tmp_path: Path, oci_registry: OciRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique_name(oci_registry, "artifact")
    draft = ArtifactDraft.new(name)
    layer = draft.add_layer("application/octet-stream", os.urandom(1 << 20))
    draft.add_json({"k": "v"}, title="meta")
    pushed = draft.commit()
    pushed.push()
    _switch_root(monkeypatch, tmp_path / "second-root")
    loaded = Artifact.load(name)
    assert loaded.manifest_digest == pushed.manifest_digest
    assert loaded.manifest_bytes == pushed.manifest_bytes
    assert loaded.get_blob(layer) == pushed.get_blob(layer)
    assert LocalRegistry.default().root == tmp_path / "second-root"


def test_experiment_commit_push_load_in_fresh_root(
    tmp_path: Path, oci_registry: OciRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique_name(oci_registry, "experiment")
    payload = os.urandom(1 << 18)
    with Experiment(name) as exp:
        exp.log_json("setup", {"n": 3})
        exp.log_attachment("raw", "application/octet-stream", payload)
        for i in range(3):
            with exp.run() as run:
                run.log_parameter("i", i)
                run.log_parameter("label", f"run-{i}")
                run.log_json("out", {"value": i * i})
    exp.push()
    digest = exp.artifact.manifest_digest
    before = exp.run_parameters_df()
    _switch_root(monkeypatch, tmp_path / "fresh-root")
    loaded = Experiment.load(name)
    assert loaded.artifact.manifest_digest == digest
    assert loaded.get_blob("raw") == payload
    assert loaded.get_json("setup") == {"n": 3}
    assert [r.run_id for r in loaded.runs] == [r.run_id for r in exp.runs]
    assert [r.get_json("out") for r in loaded.runs] == [{"value": i * i} for i in range(3)]
    assert loaded.run_parameters_df().equals(before)
    assert [r.image_name for r in LocalRegistry.default().list_refs()] == [ImageName.parse(name)]


def test_experiment_fork_pushed_and_pulled_keeps_subject(
    tmp_path: Path, oci_registry: OciRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent_name, child_name = unique_name(oci_registry, "parent"), unique_name(oci_registry, "child")
    with Experiment(parent_name) as parent:
        with parent.run() as run:
            run.log_parameter("x", 1)
            run.log_json("out", {"run": 0})
    parent.push()
    child = parent.fork(child_name)
    with child.run() as run:
        run.log_parameter("x", 2)
    child.commit()
    child.push()
    parent_digest, child_digest = parent.artifact.manifest_digest, child.artifact.manifest_digest
    before = child.run_parameters_df()

    _switch_root(monkeypatch, tmp_path / "fresh-root")
    loaded = Experiment.load(child_name)  # pulls the child only: the subject is not transferred
    assert loaded.artifact.manifest_digest == child_digest
    assert loaded.artifact.subject is not None and loaded.artifact.subject.digest == parent_digest
    assert [r.run_id for r in loaded.runs] == [0, 1]
    assert loaded.runs[0].get_json("out") == {"run": 0}  # carried by descriptor from the parent
    assert loaded.run_parameters_df().equals(before)
    assert Experiment.load(parent_name).artifact.manifest_digest == parent_digest  # the parent pulls too


def test_uncommitted_experiment_push_is_refused(oci_registry: OciRegistry) -> None:
    exp = Experiment(unique_name(oci_registry, "uncommitted"))
    with pytest.raises(RuntimeError, match="committed"):
        exp.push()


def test_anonymous_experiment_push_says_rename(tmp_path: Path) -> None:
    with Experiment() as exp:
        exp.log_json("x", 1)
    with pytest.raises(RuntimeError, match="rename"):
        exp.push()
