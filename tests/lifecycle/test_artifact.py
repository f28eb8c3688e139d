"""Artifact handles and generic ArtifactDraft: round trips, verification, save/import/inspect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ommx_experiment import media_types as mt
from ommx_experiment.engine.oci import Descriptor, Manifest
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.errors import (
    BlobNotFoundError,
    DigestMismatchError,
    InvalidArtifactError,
    LifecycleError,
    RefConflictError,
    RegistryError,
    RemoteArtifactNotFoundError,
)
from ommx_experiment.lifecycle.artifact import Artifact, ArtifactDraft, publish_manifest

if TYPE_CHECKING:
    from helpers.oci_registry import OciRegistry

NAME = "example.com/tests/artifact:v1"


def _draft(name: str = NAME) -> Artifact:
    draft = ArtifactDraft.new(name)
    draft.add_json({"a": 1, "b": "é"}, title="meta")
    draft.add_layer("application/octet-stream", b"hello", {"x": "y"})
    draft.add_annotation("com.example.owner", "alice")
    return draft.commit()


def test_commit_then_load_round_trip(registry_root: Path) -> None:
    committed = _draft()
    loaded = Artifact.load(NAME)
    assert loaded == committed
    assert hash(loaded) == hash(committed)
    assert loaded.image_name == NAME
    assert loaded.artifact_type == mt.GENERIC_ARTIFACT_TYPE
    assert loaded.annotations == {"com.example.owner": "alice"}
    assert loaded.config == Descriptor(mt.OCI_EMPTY_CONFIG, mt.OCI_EMPTY_CONFIG_DIGEST, 2)
    assert [layer.media_type for layer in loaded.layers] == [mt.JSON, "application/octet-stream"]
    assert loaded.layers[0].annotations == {"org.ommx.user.title": "meta"}
    assert loaded.layers[1].annotations == {"x": "y"}
    assert loaded.get_json(loaded.layers[0]) == {"a": 1, "b": "é"}
    assert loaded.get_blob(loaded.layers[1]) == b"hello"
    assert loaded.get_blob(loaded.layers[1].digest) == b"hello"
    assert loaded.subject is None
    assert repr(loaded) == f"Artifact(image_name={NAME!r}, manifest_digest={loaded.manifest_digest!r})"


def test_manifest_bytes_match_ommx_layout(registry_root: Path) -> None:
    artifact = _draft()
    assert Manifest.parse(artifact.manifest_bytes) == artifact.manifest
    assert artifact.manifest.to_bytes() == artifact.manifest_bytes
    # The JSON layer uses Python's json.dumps defaults, as OMMX's add_json does.
    assert artifact.get_blob(artifact.layers[0]) == b'{"a": 1, "b": "\\u00e9"}'
    doc = json.loads(artifact.manifest_bytes)
    assert list(doc) == ["annotations", "artifactType", "config", "layers", "schemaVersion"]


def test_second_commit_and_add_after_commit_fail(registry_root: Path) -> None:
    draft = ArtifactDraft.new(NAME)
    draft.commit()
    with pytest.raises(RuntimeError, match="Already committed artifact"):
        draft.commit()
    with pytest.raises(LifecycleError, match="Already committed artifact"):
        draft.add_layer("application/octet-stream", b"x")


def test_reserved_user_annotation_rejected(registry_root: Path) -> None:
    draft = ArtifactDraft.new(NAME)
    with pytest.raises(ValueError, match="reserved for OMMX metadata"):
        draft.add_json({}, annotation_namespace="org.ommx.v1", foo="x")
    desc = draft.add_json({}, annotation_namespace="my.ns", foo="x")
    assert desc.annotations == {"my.ns.foo": "x"}


def test_anonymous_draft_name(registry_root: Path) -> None:
    artifact = ArtifactDraft.new_anonymous().commit()
    registry = LocalRegistry.default()
    assert artifact.image_name.startswith(f"{registry.registry_id[:8]}.ommx.local/anonymous:")
    assert registry.resolve(artifact.image_name) == artifact.manifest_digest


def test_layer_descriptor_lookup(registry_root: Path) -> None:
    artifact = _draft()
    layer = artifact.layers[1]
    assert artifact.get_layer_descriptor(layer.digest) == layer
    with pytest.raises(ValueError, match="Invalid layer digest"):
        artifact.get_layer_descriptor("not-a-digest")
    with pytest.raises(KeyError):
        artifact.get_layer_descriptor("sha256:" + "0" * 64)


def test_typed_getters_check_media_type(registry_root: Path) -> None:
    artifact = _draft()
    with pytest.raises(ValueError, match="Expected media type 'application/json'"):
        artifact.get_json(artifact.layers[1])
    with pytest.raises(ValueError, match="Expected media type 'application/vnd.apache.parquet'"):
        artifact.get_dataframe(artifact.layers[0])


def test_dataframe_and_ndarray_layers(registry_root: Path) -> None:
    import numpy as np
    import pandas as pd

    draft = ArtifactDraft.new(NAME)
    frame = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    df_desc = draft.add_dataframe(frame, kind="table")
    nd_desc = draft.add_ndarray(np.arange(4))
    artifact = draft.commit()
    assert df_desc.media_type == mt.PARQUET and df_desc.annotations == {"org.ommx.user.kind": "table"}
    pd.testing.assert_frame_equal(artifact.get_dataframe(df_desc), frame)
    assert artifact.get_ndarray(nd_desc).tolist() == [0, 1, 2, 3]


def test_get_blob_detects_corruption(registry_root: Path) -> None:
    artifact = _draft()
    layer = artifact.layers[1]
    path = LocalRegistry.default().blobs.path(layer.digest)
    path.chmod(0o644)
    path.write_bytes(b"HELLO")  # same size, other bytes, behind the registry's back
    with pytest.raises(DigestMismatchError, match=layer.digest):
        artifact.get_blob(layer)


def test_get_blob_missing(registry_root: Path) -> None:
    artifact = _draft()
    LocalRegistry.default().blobs.path(artifact.layers[1].digest).unlink()
    with pytest.raises(BlobNotFoundError, match="Failed to read blob"):
        artifact.get_blob(artifact.layers[1])


def test_save_refuses_existing_file(registry_root: Path, tmp_path: Path) -> None:
    artifact = _draft()
    target = tmp_path / "out.ommx"
    target.write_bytes(b"precious")
    with pytest.raises(RegistryError, match=str(target)):
        artifact.save(target)
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".oxe-")] == []


def test_save_then_import_into_second_root(registry_root: Path, tmp_path: Path) -> None:
    artifact = _draft()
    target = tmp_path / "out.ommx"
    artifact.save(target)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".oxe-")] == []
    other = LocalRegistry.at(tmp_path / "second")
    from ommx_experiment.format.archive import import_path

    image, digest = import_path(other, target)
    assert (str(image), digest) == (NAME, artifact.manifest_digest)
    imported = Artifact._open(other, image, digest)
    assert imported != artifact  # other root
    assert imported.get_json(imported.layers[0]) == {"a": 1, "b": "é"}
    assert other.resolve(NAME) == artifact.manifest_digest


def test_import_archive_into_default_registry_is_idempotent(tmp_path: Path) -> None:
    source = LocalRegistry.at(tmp_path / "source")
    draft = ArtifactDraft.new(NAME, registry=source)
    draft.add_layer("application/octet-stream", b"payload")
    original = draft.commit()
    original.save(tmp_path / "a.ommx")
    first = Artifact.import_archive(tmp_path / "a.ommx")
    second = Artifact.import_archive(tmp_path / "a.ommx")
    assert first == second
    assert first.manifest_digest == original.manifest_digest
    assert first.registry.root != source.root


def test_import_archive_rejects_non_path(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="Path must be a file or a directory"):
        Artifact.import_archive(tmp_path / "nope")


def test_import_conflict_names_ref(tmp_path: Path) -> None:
    source = LocalRegistry.at(tmp_path / "source")
    draft = ArtifactDraft.new(NAME, registry=source)
    draft.add_layer("application/octet-stream", b"one")
    draft.commit().save(tmp_path / "one.ommx")
    ArtifactDraft.new(NAME).commit()  # same name, other content, in the default registry
    with pytest.raises(RefConflictError, match=f"Local registry ref conflict for {NAME}"):
        Artifact.import_archive(tmp_path / "one.ommx")


def test_inspect_archive_writes_nothing(tmp_path: Path, registry_root: Path) -> None:
    source = LocalRegistry.at(tmp_path / "source")
    draft = ArtifactDraft.new(NAME, registry=source)
    draft.add_json([1, 2, 3])
    original = draft.commit()
    original.save(tmp_path / "a.ommx")
    info = Artifact.inspect_archive(tmp_path / "a.ommx")
    assert info.image_name == NAME
    assert info.manifest_digest == original.manifest_digest
    assert info.manifest == original.manifest
    assert info.layers == original.layers
    name, manifest = info
    assert (name, manifest) == (NAME, original.manifest)
    assert not registry_root.exists()  # the default registry was never even opened


def test_load_missing_local_name_is_clear(registry_root: Path) -> None:
    registry = LocalRegistry.default()
    missing = f"{registry.registry_id[:8]}.ommx.local/anonymous:20260101T000000-000000000000"
    with pytest.raises(RemoteArtifactNotFoundError, match="not in the Local Registry"):
        Artifact.load(missing)


def test_load_pulls_when_missing_or_incomplete(registry_root: Path, oci_registry: OciRegistry) -> None:
    name = f"{oci_registry.host}/tests/artifact-load:v1"
    draft = ArtifactDraft.new(name)
    layer = draft.add_layer("application/octet-stream", b"remote payload")
    pushed = draft.commit()
    pushed.push()
    registry = LocalRegistry.default()
    registry.blobs.path(layer.digest).unlink()  # closure incomplete -> pull again
    loaded = Artifact.load(name)
    assert loaded == pushed
    assert loaded.get_blob(layer) == b"remote payload"
    registry.remove(name)  # ref missing -> pull
    assert Artifact.load(name).manifest_digest == pushed.manifest_digest


def test_load_missing_remote_repository(registry_root: Path, oci_registry: OciRegistry) -> None:
    with pytest.raises(RemoteArtifactNotFoundError):
        Artifact.load(f"{oci_registry.host}/tests/never-pushed:v1")


def test_publish_manifest_requires_stored_blobs(registry_root: Path) -> None:
    registry = LocalRegistry.default()
    stored = registry.blobs.put_bytes(b"layer")
    config = Descriptor(mt.OCI_EMPTY_CONFIG, mt.OCI_EMPTY_CONFIG_DIGEST, 2)
    good = Manifest(mt.GENERIC_ARTIFACT_TYPE, config, (Descriptor("text/plain", stored.digest, stored.size),))
    with pytest.raises(BlobNotFoundError):  # the empty config blob was never stored
        publish_manifest(registry, NAME, good, config_bytes=None)
    artifact = publish_manifest(registry, NAME, good, config_bytes=b"{}")
    assert artifact.manifest_bytes == good.to_bytes()
    lying = Manifest(mt.GENERIC_ARTIFACT_TYPE, config, (Descriptor("text/plain", stored.digest, 99),))
    with pytest.raises(InvalidArtifactError, match="size"):
        publish_manifest(registry, "example.com/tests/other:v1", lying, config_bytes=b"{}")
    assert registry.resolve("example.com/tests/other:v1") is None


def test_keep_alive_is_held(registry_root: Path) -> None:
    class Holder:
        pass

    registry = LocalRegistry.default()
    holder = Holder()
    stored = registry.blobs.put_bytes(b"{}")
    config = Descriptor(mt.OCI_EMPTY_CONFIG, stored.digest, stored.size)
    manifest = Manifest(mt.GENERIC_ARTIFACT_TYPE, config)
    artifact = publish_manifest(registry, NAME, manifest, config_bytes=None, keep_alive=holder)
    import weakref

    ref = weakref.ref(holder)
    del holder
    assert ref() is not None
    del artifact
    assert ref() is None


def test_artifact_not_constructible_directly() -> None:
    with pytest.raises(TypeError):
        Artifact()
