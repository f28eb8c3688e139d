"""Hostile input, part 2 (extends tests/format/test_archive_hostile.py, which fuzzes tar bytes).

Here: OCI layout DIRECTORY imports with mutated files (symlinks, hard links, FIFOs, huge
sparse files, deeply nested / huge JSON, invalid UTF-8, directories where files belong),
semantic defects behind valid digests (layer refs out of range, MessagePack with wrong
types or trailing bytes, garbage Parquet), through both ``Experiment.import_archive`` and
``Artifact.import_archive``; and ``write_attachment`` with hostile stored names/filenames.
Every rejected case: an error of our tree, no ref, no blob, no temp file, nothing written
outside the registry.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ommx_experiment import Artifact, Experiment
from ommx_experiment import media_types as mt
from ommx_experiment.engine.digest import sha256_digest
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.errors import OmmxExperimentError
from ommx_experiment.format.run_params import encode_msgpack

from . import _foreign as fx
from . import _support as sup

NAME = "example.com/rel/hostile:v1"
IMPORTERS: dict[str, Callable[[Path], object]] = {
    "experiment": Experiment.import_archive,
    "artifact": Artifact.import_archive,
}


class Scene:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.registry = LocalRegistry.default()
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        self.secret = self.outside / "secret.txt"
        self.secret.write_bytes(b"canary")
        self.inputs = tmp_path / "inputs"
        self.inputs.mkdir()
        self.manifest, self.blobs = fx.simple_experiment()
        self.digest = sha256_digest(self.manifest)
        self.valid = fx.write_layout(tmp_path / "valid-layout", self.manifest, self.blobs, NAME)

    def state(self) -> tuple[object, ...]:
        refs = [(str(r.image_name), r.manifest_digest) for r in self.registry.list_refs()]
        outside = fx.snapshot(self.tmp_path, self.registry.root)
        outside = {k: v for k, v in outside.items() if not k.startswith("inputs")}
        return refs, frozenset(self.registry.blobs.iter_digests()), outside, self.secret.read_bytes()

    def temp_files(self) -> list[str]:
        return [p.name for p in self.registry.blobs.dir.iterdir() if p.name.startswith(".")]

    def expect_rejected(self, path: Path, importer: str) -> None:
        before = self.state()
        with pytest.raises(OmmxExperimentError) as info:
            IMPORTERS[importer](path)
        assert isinstance(info.value, RuntimeError), repr(info.value)
        assert str(path) in str(info.value) or "Invalid" in str(info.value) or "import" in str(info.value), repr(info.value)
        assert self.state() == before
        assert self.temp_files() == []


@pytest.fixture
def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scene:
    work = tmp_path / "work" / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # a `../` write would land inside the snapshot
    return Scene(tmp_path)


def test_valid_layout_imports_with_both_entry_points(scene: Scene) -> None:
    exp = Experiment.import_archive(scene.valid)
    assert exp.get_blob("doc") == b"experiment doc"
    art = Artifact.import_archive(scene.valid)
    assert art.manifest_digest == scene.digest == exp.artifact.manifest_digest


# --- mutated layout directories (hypothesis) -----------------------------------------------------------

TARGETS = ("oci-layout", "index.json", "manifest", "config", "layer0", "layer2", "blobs", "blobs/sha256")
KINDS = (
    "symlink-outside", "symlink-inside", "hardlink-outside", "fifo", "huge-sparse", "nested-json",
    "huge-json", "invalid-utf8", "random", "empty", "directory",
)


def _target_path(scene: Scene, root: Path, target: str) -> Path:
    manifest = json.loads(scene.manifest)
    digests = {
        "manifest": scene.digest,
        "config": manifest["config"]["digest"],
        "layer0": manifest["layers"][0]["digest"],
        "layer2": manifest["layers"][2]["digest"],
    }
    if target in digests:
        return root / "blobs" / "sha256" / digests[target][7:]
    return root / target


def _mutate(scene: Scene, root: Path, target: str, kind: str, noise: bytes) -> None:
    path = _target_path(scene, root, target)
    parent = path.parent
    while parent != root:  # an earlier mutation replaced a parent: nothing to mutate in there
        if parent.is_symlink() or not parent.is_dir():
            return
        parent = parent.parent
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "symlink-outside":
        os.symlink(scene.secret if target not in ("blobs", "blobs/sha256") else scene.outside, path)
    elif kind == "symlink-inside":
        os.symlink(root / "oci-layout", path)
    elif kind == "hardlink-outside":
        os.link(scene.secret, path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "huge-sparse":
        with open(path, "wb") as fh:
            fh.truncate(5 << 30)
    elif kind == "nested-json":
        path.write_bytes(b"[" * 200_000 + b"]" * 200_000)
    elif kind == "huge-json":
        path.write_bytes(b'{"schemaVersion":2,"x":"' + b"x" * (3 << 20) + b'"}')
    elif kind == "invalid-utf8":
        path.write_bytes(b'{"schemaVersion":2,"\xff\xfe":"\xc3\x28"}')
    elif kind == "random":
        path.write_bytes(noise)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mutations=st.lists(st.tuples(st.sampled_from(TARGETS), st.sampled_from(KINDS)), min_size=1, max_size=3),
    noise=st.binary(max_size=300),
    importer=st.sampled_from(sorted(IMPORTERS)),
)
def test_mutated_layout_directories(scene: Scene, mutations: list[tuple[str, str]], noise: bytes, importer: str) -> None:
    root = scene.inputs / uuid.uuid4().hex
    shutil.copytree(scene.valid, root)
    for target, kind in mutations:
        _mutate(scene, root, target, kind, noise)
    scene.expect_rejected(root, importer)
    shutil.rmtree(root)


@pytest.mark.stress
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mutations=st.lists(st.tuples(st.sampled_from(TARGETS), st.sampled_from(KINDS)), min_size=1, max_size=4),
    noise=st.binary(max_size=2000),
    importer=st.sampled_from(sorted(IMPORTERS)),
)
def test_mutated_layout_directories_stress(scene: Scene, mutations: list[tuple[str, str]], noise: bytes, importer: str) -> None:
    test_mutated_layout_directories.hypothesis.inner_test(scene, mutations, noise, importer)  # type: ignore[attr-defined]


# --- semantic defects behind valid digests --------------------------------------------------------------


_config = sup.experiment_config


def _params(packed: bytes) -> list[tuple[str, bytes]]:
    return [(mt.OCTET_STREAM, b"experiment doc"), (mt.OCTET_STREAM, b"run file"), (mt.RUN_PARAMETERS, packed)]


GOOD_PARAMS = encode_msgpack({0: {"a": 1}}, [0])
SEMANTIC: dict[str, tuple[dict[str, object] | bytes, bytes]] = {
    "attachment-ref-out-of-range": (_config(attachments={"entries": {"doc": 99}}), GOOD_PARAMS),
    "attachment-ref-negative": (_config(attachments={"entries": {"doc": -1}}), GOOD_PARAMS),
    "attachment-ref-not-int": (_config(attachments={"entries": {"doc": "0"}}), GOOD_PARAMS),
    "run-parameters-out-of-range": (_config(run_parameters=3), GOOD_PARAMS),
    "run-parameters-is-an-attachment-layer": (_config(run_parameters=0), GOOD_PARAMS),
    "run-attachment-huge-index": (
        _config(runs=[{"run_id": 0, "status": "finished", "attachments": {"entries": {"rf": 2**70}}, "solves": [], "samplings": []}]),
        GOOD_PARAMS,
    ),
    "msgpack-trailing-bytes": (_config(), GOOD_PARAMS + b"\xc0"),
    "msgpack-wrong-value-type": (_config(), msgpack.packb({"columns": {"a": {"type": "int64", "values": {0: "x"}}}})),
    "msgpack-unknown-type": (_config(), msgpack.packb({"columns": {"a": {"type": "int128", "values": {0: 1}}}})),
    "msgpack-not-a-map": (_config(), msgpack.packb([1, 2, 3])),
    "msgpack-unknown-run": (_config(), msgpack.packb({"columns": {"a": {"type": "int64", "values": {7: 1}}}})),
    "msgpack-truncated": (_config(), GOOD_PARAMS[:-2]),
    "msgpack-huge-map-header": (_config(), b"\xdf\xff\xff\xff\xff"),
    "config-invalid-utf8": (b'{"status":"finished\xff"}', GOOD_PARAMS),
    "config-deeply-nested": (b'{"status":' + b"[" * 100_000 + b"]" * 100_000 + b"}", GOOD_PARAMS),
    "config-duplicate-keys": (b'{"status":"finished","status":"failed","attachments":{"entries":{}},"runs":[],"run_parameters":2}', GOOD_PARAMS),
}


@pytest.mark.parametrize("importer", sorted(IMPORTERS))
@pytest.mark.parametrize("form", ["archive", "layout"])
@pytest.mark.parametrize("case", sorted(SEMANTIC))
def test_semantic_defects_are_rejected(scene: Scene, case: str, form: str, importer: str) -> None:
    config, packed = SEMANTIC[case]
    manifest, blobs = fx.experiment_blobs(config, _params(packed))
    if form == "archive":
        path = fx.write_archive(scene.inputs / f"{case}.ommx", manifest, blobs, NAME)
    else:
        path = fx.write_layout(scene.inputs / case, manifest, blobs, NAME)
    scene.expect_rejected(path, importer)


def _parquet_is_never_read(scene: Scene, label: str, parquet: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """Import (OMMX reads only the MessagePack layer, so the artifact is valid), then every
    read of run parameters gives the MessagePack table and a warning names the ignored layer."""
    extra = [(mt.PARQUET, parquet, {mt.TITLE_ANNOTATION: mt.PARQUET_RUN_PARAMS_TITLE})]
    manifest, blobs = fx.experiment_blobs(_config(), _params(GOOD_PARAMS), extra_layers=extra)
    exp = Experiment.import_archive(fx.write_archive(scene.inputs / f"{label}.ommx", manifest, blobs, NAME))
    with caplog.at_level("WARNING"):
        assert exp.run_parameters_df()["a"].tolist() == [1]
    assert "Ignoring the Parquet run-parameter layer" in caplog.text
    from ommx_experiment.engine.digest import sha256_digest as _digest_of

    planted_path = exp._registry.blobs.path(_digest_of(parquet))
    assert exp.run_parameters_parquet != planted_path  # derived from the MessagePack table instead
    import pandas as pd

    assert pd.read_parquet(exp.run_parameters_parquet)["a"].tolist() == [1]
    assert Experiment.load(NAME).run_parameters_df()["a"].tolist() == [1]  # a fresh handle compares again


def test_garbage_parquet_layer_is_never_read(scene: Scene, caplog: pytest.LogCaptureFixture) -> None:
    """Our own Parquet run-parameter layer (title annotation) with garbage bytes: since
    ``run_parameters_df()`` of an artifact carrying it reads the Parquet layer, a received one
    is compared with the MessagePack layer before its first read, and ignored if it differs."""
    _parquet_is_never_read(scene, "garbage", b"PAR1 not really parquet PAR1", caplog)


# --- write_attachment with hostile stored names ------------------------------------------------------------

HOSTILE_FILENAMES = ["../../x", "/etc/passwd", "a/../../b", "..", ".", "", "nul\x00name", "a\\..\\..\\b", "x/" * 200 + "deep"]


@pytest.mark.parametrize("filename", HOSTILE_FILENAMES, ids=repr)
def test_write_attachment_never_leaves_the_folder(scene: Scene, filename: str) -> None:
    manifest, blobs = fx.simple_experiment(filenames={"doc": filename}, run_filenames={"rf": filename})
    path = fx.write_archive(scene.inputs / "names.ommx", manifest, blobs, NAME)
    before = scene.state()
    try:
        exp = Experiment.import_archive(path)
    except OmmxExperimentError as exc:  # rejected at import: clearly, and nothing published
        assert isinstance(exc, RuntimeError)
        assert scene.state() == before and scene.temp_files() == []
        return
    folder = scene.tmp_path / "export" / "here"
    folder.mkdir(parents=True)
    outside_before = {k: v for k, v in fx.snapshot(scene.tmp_path, folder).items() if not k.startswith(("registry", "inputs"))}
    for owner, name, payload in ((exp, "doc", b"experiment doc"), (exp.runs[0], "rf", b"run file")):
        try:
            written = owner.write_attachment(name, folder)
        except OmmxExperimentError as exc:
            assert isinstance(exc, ValueError | RuntimeError) and "NUL" in str(exc), repr(exc)
            continue
        assert written.parent == folder and written.read_bytes() == payload
    outside_after = {k: v for k, v in fx.snapshot(scene.tmp_path, folder).items() if not k.startswith(("registry", "inputs"))}
    assert outside_after == outside_before
    assert not Path("/etc/passwd").read_bytes().startswith(b"experiment doc")


@pytest.mark.parametrize("name", ["../../evil", "/abs/evil", "a/../../evil", ".."], ids=repr)
def test_hostile_attachment_names_write_inside_the_folder(scene: Scene, name: str) -> None:
    config = _config(attachments={"entries": {name: 0}})
    manifest, blobs = fx.experiment_blobs(config, _params(GOOD_PARAMS))
    exp = Experiment.import_archive(fx.write_archive(scene.inputs / "n.ommx", manifest, blobs, NAME))
    folder = scene.tmp_path / "export2"
    folder.mkdir()
    written = exp.write_attachment(name, folder)
    assert written.parent == folder and written.read_bytes() == b"experiment doc"
    assert not (scene.tmp_path / "evil").exists() and not Path("/abs").exists()


def test_parquet_layer_that_disagrees_with_msgpack_is_never_read(scene: Scene, caplog: pytest.LogCaptureFixture) -> None:
    """A well-formed Parquet table planting other values than the MessagePack layer (which
    OMMX 3 reads) would make ``run_parameters_df()`` lie: it is never read; an honest one is."""
    from ommx_experiment.format import run_params as rp

    _parquet_is_never_read(scene, "planted", rp.encode_parquet(rp.build_table({0: {"a": 999}}, [0]), [0]), caplog)
    honest = rp.encode_parquet(rp.build_table({0: {"a": 1}}, [0]), [0])
    extra = [(mt.PARQUET, honest, {mt.TITLE_ANNOTATION: mt.PARQUET_RUN_PARAMS_TITLE})]
    manifest, blobs = fx.experiment_blobs(_config(), _params(GOOD_PARAMS), extra_layers=extra)
    exp = Experiment.import_archive(fx.write_archive(scene.inputs / "honest.ommx", manifest, blobs, "example.com/rel/honest:v1"))
    assert exp.run_parameters_df()["a"].tolist() == [1]
    assert exp.run_parameters_parquet.read_bytes() == honest  # the layer itself, once compared