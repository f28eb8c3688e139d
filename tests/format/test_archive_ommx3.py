"""Archive interop with OMMX 3.0.0b7 (side venv): byte-identical export, import both ways."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.format.archive import write_archive
from ommx_experiment.lifecycle.artifact import Artifact, ArtifactDraft

if TYPE_CHECKING:
    from helpers.ommx3 import Ommx3Driver

EXPERIMENT = "example.com/interop/exp:v1"
GENERIC = "example.com/interop/generic:v1"

OMMX_EXPERIMENT = """
import json, sys
from ommx.experiment import Experiment
exp = Experiment({name!r})
exp.set_annotation("com.example.owner", "alice")
exp.log_json("meta", {{"a": 1, "nested": {{"b": [1, 2, "é"]}}}})
with exp.run() as run:
    run.log_parameter("alpha", 0.5)
    run.log_parameter("solver", "highs")
    run.log_json("result", [1, 2, 3])
with exp.run() as run:
    run.log_parameter("alpha", 1.5)
exp.commit()
exp.save({path!r})
print(json.dumps({{"name": exp.image_name}}))
"""

OMMX_GENERIC = """
import json
from ommx.artifact import ArtifactDraft
draft = ArtifactDraft.new({name!r})
draft.add_json({{"k": "v"}}, title="meta")
desc = draft.add_layer("application/octet-stream", b"payload" * 100, {{"x": "y"}})
draft.add_layer("application/octet-stream", b"payload" * 100, {{"second": "copy"}})
draft.add_annotation("com.example.k", "v")
art = draft.commit()
art.save({path!r})
print(json.dumps({{"name": art.image_name}}))
"""

OMMX_FAILED = """
import json
from ommx.experiment import Experiment
try:
    with Experiment({name!r}) as exp:
        with exp.run() as run:
            run.log_parameter("alpha", 2)
        raise ValueError("boom")
except ValueError:
    pass
exp.save({path!r})
print(json.dumps({{"name": exp.artifact.image_name, "status": exp.status}}))
"""


def _index_digest(path: Path) -> tuple[str, str]:
    with tarfile.open(path) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    entry = index["manifests"][0]
    return entry["annotations"]["org.opencontainers.image.ref.name"], entry["digest"]


def _ommx_writes(ommx3: Ommx3Driver, script: str, name: str, tmp_path: Path, label: str) -> tuple[Path, dict[str, str]]:
    path = tmp_path / f"{label}.ommx"
    out = ommx3.run_json(script.format(name=name, path=str(path)), root=tmp_path / f"ommx-root-{label}")
    return path, out


@pytest.mark.parametrize(
    ("script", "name"), [(OMMX_EXPERIMENT, EXPERIMENT), (OMMX_GENERIC, GENERIC), (OMMX_FAILED, EXPERIMENT)]
)
def test_ommx_archive_imports_and_reexports_byte_identically(
    ommx3: Ommx3Driver, tmp_path: Path, script: str, name: str
) -> None:
    ommx_archive, out = _ommx_writes(ommx3, script, name, tmp_path, "ommx")
    ref_name, digest = _index_digest(ommx_archive)
    assert ref_name == out["name"]

    imported = Artifact.import_archive(ommx_archive)
    assert (imported.image_name, imported.manifest_digest) == (ref_name, digest)

    ours = tmp_path / "ours.ommx"
    write_archive(LocalRegistry.default(), digest, ref_name, ours)
    assert ours.read_bytes() == ommx_archive.read_bytes()
    imported.save(tmp_path / "ours-again.ommx")
    assert (tmp_path / "ours-again.ommx").read_bytes() == ommx_archive.read_bytes()


def test_our_generic_archive_loads_in_ommx(ommx3: Ommx3Driver, tmp_path: Path) -> None:
    draft = ArtifactDraft.new(GENERIC)
    meta = draft.add_json({"k": "é"}, title="meta")
    blob = draft.add_layer("application/octet-stream", b"\x00\x01" * 500, {"x": "y"})
    draft.add_layer("application/octet-stream", b"\x00\x01" * 500)
    draft.add_annotation("com.example.k", "v")
    ours = draft.commit()
    ours.save(tmp_path / "ours.ommx")
    result = ommx3.run_json(
        f"""
        import json
        from ommx.artifact import Artifact
        imported = Artifact.import_archive({str(tmp_path / "ours.ommx")!r})
        art = Artifact.load({GENERIC!r})
        print(json.dumps({{
            "name": imported.image_name,
            "annotations": art.annotations,
            "layers": [l.to_dict() for l in art.layers],
            "json": art.get_json(art.layers[0]),
            "blob": art.get_blob(art.layers[1]).hex(),
        }}))
        """,
        root=tmp_path / "ommx-root",
    )
    assert result["name"] == GENERIC
    assert result["annotations"] == {"com.example.k": "v"}
    assert [(l["digest"], l["size"], l["annotations"]) for l in result["layers"]] == [
        (d.digest, d.size, dict(d.annotations)) for d in ours.layers
    ]
    assert result["json"] == {"k": "é"}
    assert bytes.fromhex(result["blob"]) == b"\x00\x01" * 500
    assert meta.annotations == {"org.ommx.user.title": "meta"} and blob.annotations == {"x": "y"}


def test_reexported_experiment_loads_in_ommx(ommx3: Ommx3Driver, tmp_path: Path) -> None:
    ommx_archive, _ = _ommx_writes(ommx3, OMMX_EXPERIMENT, EXPERIMENT, tmp_path, "ommx")
    imported = Artifact.import_archive(ommx_archive)
    ours = tmp_path / "ours.ommx"
    imported.save(ours)
    result = ommx3.run_json(
        f"""
        import json
        from ommx.experiment import Experiment
        Experiment.import_archive({str(ours)!r})
        exp = Experiment.load({EXPERIMENT!r})
        df = exp.run_parameters_df()
        print(json.dumps({{
            "status": exp.status,
            "annotations": exp.annotations,
            "meta": exp.get_json("meta"),
            "runs": [r.run_id for r in exp.runs],
            "alpha": [float(x) for x in df["alpha"]],
        }}))
        """,
        root=tmp_path / "ommx-root-2",
    )
    assert result == {
        "status": "finished",
        "annotations": {"com.example.owner": "alice"},
        "meta": {"a": 1, "nested": {"b": [1, 2, "é"]}},
        "runs": [0, 1],
        "alpha": [0.5, 1.5],
    }


def test_ommx_imports_our_layout_directory(ommx3: Ommx3Driver, tmp_path: Path) -> None:
    """A registry root of ours holding one ref is an OCI layout directory OMMX can import."""
    source = LocalRegistry.at(tmp_path / "ours-root")
    draft = ArtifactDraft.new(GENERIC, registry=source)
    draft.add_json([1, 2, 3])
    art = draft.commit()
    source.sync()
    result = ommx3.run_json(
        f"""
        import json
        from ommx.artifact import Artifact
        art = Artifact.import_archive({str(source.root)!r})
        print(json.dumps({{"name": art.image_name, "json": art.get_json(art.layers[0])}}))
        """,
        root=tmp_path / "ommx-root",
    )
    assert result == {"name": art.image_name, "json": [1, 2, 3]}
