from __future__ import annotations

import json
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ommx_experiment import media_types as mt
from ommx_experiment.engine.digest import is_valid_digest, parse_digest, sha256_digest, sha256_digest_chunks
from ommx_experiment.engine.oci import (
    MAX_MANIFEST_BYTES,
    Descriptor,
    FrozenMap,
    Manifest,
    canonical_json,
    image_index_bytes,
    layer_json,
    parse_image_index,
)
from ommx_experiment.errors import InvalidArtifactError, InvalidInputError

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64

# Manifest written by ommx 3.0.0b7 (experiment with a JSON attachment, a run attachment, 3 runs).
OMMX_MANIFEST = (
    b'{"artifactType":"application/org.ommx.v1.experiment","config":{"digest":"sha256:615d097630456898e7838c0ac6aa2e6'
    b'47ef9ffcf20a29e2ff0924889d4efcf11","mediaType":"application/org.ommx.v1.experiment.config+json","size":359},'
    b'"layers":[{"annotations":{},"digest":"sha256:f9d86028c6e0d64e225186f96acb69338b2c59764df79162107f5c4bb34d1310",'
    b'"mediaType":"application/json","size":8},{"annotations":{},"digest":"sha256:3608bca1e44ea6c4d268eb6db02260269892'
    b'c0b42b86bbf1e77a6fa16c3c9282","mediaType":"application/octet-stream","size":3},{"annotations":{},"digest":"sha25'
    b'6:067f1172200752399b8edc999bfbdafa6ab609ce22ff53c1b556cedd8dd1ad5e","mediaType":"application/org.ommx.v1.experim'
    b'ent.run-parameters+msgpack","size":162}],"schemaVersion":2}'
)


# --- digest ---------------------------------------------------------------------------------------


def test_empty_config_digest_is_sha256_of_its_bytes() -> None:
    assert sha256_digest(mt.OCI_EMPTY_CONFIG_BYTES) == mt.OCI_EMPTY_CONFIG_DIGEST


@pytest.mark.parametrize(
    "value",
    ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha512:" + "a" * 64, "a" * 64, "sha256:" + "a" * 64 + "\n", 5, None],
)
def test_invalid_digests(value: object) -> None:
    assert not is_valid_digest(value)
    with pytest.raises(InvalidInputError, match="Invalid layer digest") as info:
        parse_digest(value, what="layer digest")
    assert isinstance(info.value, ValueError)


def test_parse_digest_returns_hex_and_chunks_hash_like_whole() -> None:
    assert parse_digest(D1) == "1" * 64
    assert sha256_digest_chunks([b"ab", b"", b"c"]) == (sha256_digest(b"abc"), 3)


# --- FrozenMap / Descriptor ---------------------------------------------------------------------------


def test_frozen_map_is_immutable_hashable_and_picklable() -> None:
    source = {"b": "1", "a": "2"}
    frozen = FrozenMap(source)
    source["c"] = "3"
    assert frozen == {"b": "1", "a": "2"}
    assert list(frozen) == ["b", "a"]
    assert hash(frozen) == hash(FrozenMap({"a": "2", "b": "1"}))
    assert pickle.loads(pickle.dumps(frozen)) == frozen
    with pytest.raises(TypeError):
        frozen["x"] = "y"  # type: ignore[index]


def test_descriptor_is_value_like() -> None:
    a = Descriptor("application/json", D1, 3, {"k": "v"})
    b = Descriptor("application/json", D1, 3, FrozenMap({"k": "v"}))
    assert a == b and hash(a) == hash(b)
    assert a != Descriptor("application/json", D1, 3)
    assert pickle.loads(pickle.dumps(a)) == a
    assert {a: 1}[b] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"digest": "sha256:ABC"}, "digest"),
        ({"size": -1}, "size"),
        ({"size": True}, "size"),
        ({"size": 1.0}, "size"),
        ({"annotations": {"k": 1}}, "annotations"),
        ({"media_type": None}, "media type"),
    ],
)
def test_descriptor_rejects_bad_fields(kwargs: dict[str, object], match: str) -> None:
    fields: dict[str, object] = {"media_type": "a/b", "digest": D1, "size": 1, **kwargs}
    with pytest.raises(InvalidInputError, match=match):
        Descriptor(**fields)  # type: ignore[arg-type]


def test_descriptor_to_dict_layer_form_in_field_order() -> None:
    desc = Descriptor.for_blob("application/json", b"{}")
    assert list(desc.to_dict()) == ["mediaType", "digest", "size", "annotations"]
    assert desc.to_dict()["annotations"] == {}
    assert desc.digest == mt.OCI_EMPTY_CONFIG_DIGEST and desc.size == 2


# --- Manifest -------------------------------------------------------------------------------------------


def test_ommx_manifest_round_trips_byte_identically() -> None:
    manifest = Manifest.parse(OMMX_MANIFEST)
    assert manifest.artifact_type == mt.EXPERIMENT_ARTIFACT_TYPE
    assert manifest.config.media_type == mt.EXPERIMENT_CONFIG
    assert [layer.size for layer in manifest.layers] == [8, 3, 162]
    assert manifest.to_bytes() == OMMX_MANIFEST


def _manifest() -> Manifest:
    return Manifest(
        artifact_type=mt.EXPERIMENT_ARTIFACT_TYPE,
        config=Descriptor(mt.EXPERIMENT_CONFIG, D1, 10),
        layers=(Descriptor("application/json", D2, 2, {"z": "1", "a": "é"}), Descriptor(mt.RUN_PARAMETERS, D3, 10)),
        subject=Descriptor(mt.OCI_MANIFEST, D3, 99),
        annotations={"com.example.owner": "ü\n"},
    )


def test_manifest_serialisation_shape() -> None:
    data = _manifest().to_bytes()
    obj = json.loads(data)
    assert list(obj) == ["annotations", "artifactType", "config", "layers", "schemaVersion", "subject"]
    assert "annotations" not in obj["config"] and "annotations" not in obj["subject"]
    assert all("annotations" in layer for layer in obj["layers"])
    assert "mediaType" not in obj
    assert list(obj["layers"][0]["annotations"]) == ["a", "z"]
    assert b" " not in data.replace(b"com.example", b"")
    assert "é".encode() in data and b"\\n" in data  # raw UTF-8, escaped control char
    expected = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert data == expected


def test_manifest_omits_empty_annotations_and_absent_subject() -> None:
    manifest = Manifest(mt.EXPERIMENT_ARTIFACT_TYPE, Descriptor(mt.EXPERIMENT_CONFIG, D1, 1))
    assert json.loads(manifest.to_bytes()) == {
        "artifactType": mt.EXPERIMENT_ARTIFACT_TYPE,
        "config": {"digest": D1, "mediaType": mt.EXPERIMENT_CONFIG, "size": 1},
        "layers": [],
        "schemaVersion": 2,
    }


def test_manifest_descriptor_points_at_bytes() -> None:
    manifest = _manifest()
    desc = manifest.descriptor()
    assert desc.media_type == mt.OCI_MANIFEST
    assert desc.digest == sha256_digest(manifest.to_bytes()) and desc.size == len(manifest.to_bytes())


def test_parse_tolerates_order_whitespace_unknown_keys_and_media_type() -> None:
    obj = json.loads(_manifest().to_bytes())
    obj = {"mediaType": mt.OCI_MANIFEST, "x-unknown": [1, {"a": None}], **dict(reversed(list(obj.items())))}
    data = json.dumps(obj, indent=4).encode()
    parsed = Manifest.parse(data)
    assert parsed == _manifest()
    assert parsed.to_bytes() == _manifest().to_bytes()


def test_parse_layer_without_annotations_and_null_subject() -> None:
    obj = {
        "schemaVersion": 2,
        "artifactType": mt.GENERIC_ARTIFACT_TYPE,
        "config": {"mediaType": mt.OCI_EMPTY_CONFIG, "digest": mt.OCI_EMPTY_CONFIG_DIGEST, "size": 2},
        "layers": [{"mediaType": "a/b", "digest": D1, "size": 0}],
        "subject": None,
    }
    manifest = Manifest.parse(json.dumps(obj).encode())
    assert manifest.layers[0].annotations == {}
    assert manifest.subject is None


def _bad(mutate: object) -> bytes:
    obj = json.loads(_manifest().to_bytes())
    mutate(obj)  # type: ignore[operator]
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"[]", "expected an object"),
        (b'{"schemaVersion": 2, "x": NaN}', "not valid JSON"),
        (_bad(lambda o: o.update(schemaVersion=1)), "schemaVersion"),
        (_bad(lambda o: o.update(schemaVersion=True)), "schemaVersion"),
        (_bad(lambda o: o.update(schemaVersion="2")), "schemaVersion"),
        (_bad(lambda o: o.update(mediaType=mt.OCI_INDEX)), "manifest.mediaType"),
        (_bad(lambda o: o.pop("config")), "`config`"),
        (_bad(lambda o: o.update(layers={})), "manifest.layers"),
        (_bad(lambda o: o.update(artifactType=3)), "manifest.artifactType"),
        (_bad(lambda o: o["layers"][1].update(size=-1)), r"manifest.layers\[1\].size"),
        (_bad(lambda o: o["layers"][1].update(size=1.5)), r"manifest.layers\[1\].size"),
        (_bad(lambda o: o["layers"][1].update(size=False)), r"manifest.layers\[1\].size"),
        (_bad(lambda o: o["layers"][0].update(digest="sha256:" + "A" * 64)), r"manifest.layers\[0\].digest"),
        (_bad(lambda o: o["layers"][0].pop("mediaType")), r"manifest.layers\[0\]: missing required field `mediaType`"),
        (_bad(lambda o: o["layers"][0]["annotations"].update(k=1)), r"manifest.layers\[0\].annotations"),
        (_bad(lambda o: o["config"].update(digest=None)), "manifest.config.digest"),
        (_bad(lambda o: o.update(subject=[])), "manifest.subject"),
        (_bad(lambda o: o.update(annotations=["x"])), "manifest.annotations"),
        (_bad(lambda o: o["annotations"].update(k="\ud800")), "not valid Unicode"),
    ],
)
def test_parse_rejects_malformed_manifests(data: bytes, match: str) -> None:
    with pytest.raises(InvalidArtifactError, match=match) as info:
        Manifest.parse(data)
    assert isinstance(info.value, RuntimeError)


def test_parse_rejects_oversized_input() -> None:
    data = _manifest().to_bytes()
    padded = data[:-1] + b" " * (MAX_MANIFEST_BYTES - len(data) + 1) + b"}"
    with pytest.raises(InvalidArtifactError, match="larger than the limit"):
        Manifest.parse(padded)


@pytest.mark.parametrize("depth", [65, 200, 100_000])
def test_parse_rejects_deep_nesting_without_recursion_error(depth: int) -> None:
    data = b'{"schemaVersion":2,"x":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidArtifactError, match="nested deeper than 64"):
        Manifest.parse(data)


def test_parse_accepts_moderate_nesting_in_unknown_keys() -> None:
    obj = json.loads(_manifest().to_bytes())
    obj["x"] = json.loads("[" * 60 + "]" * 60)
    assert Manifest.parse(json.dumps(obj).encode()) == _manifest()


_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
_descriptors = st.builds(
    Descriptor,
    media_type=_text,
    digest=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h),
    size=st.integers(min_value=0, max_value=2**63),
    annotations=st.dictionaries(_text, _text, max_size=3),
)


@given(
    st.builds(
        Manifest,
        artifact_type=st.sampled_from([mt.EXPERIMENT_ARTIFACT_TYPE, mt.GENERIC_ARTIFACT_TYPE]),
        config=_descriptors.map(lambda d: d.replace_annotations({})),
        layers=st.lists(_descriptors, max_size=4).map(tuple),
        subject=st.none() | _descriptors.map(lambda d: d.replace_annotations({})),
        annotations=st.dictionaries(_text, _text, max_size=3),
    )
)
def test_manifest_round_trip_property(manifest: Manifest) -> None:
    data = manifest.to_bytes()
    parsed = Manifest.parse(data)
    assert parsed == manifest
    assert parsed.to_bytes() == data
    # the templated layers write exactly what json.dumps writes for the whole object
    assert data == canonical_json(manifest.to_dict())
    assert manifest.to_bytes(layer_texts=[layer_json(d) for d in manifest.layers]) == data


@given(
    media_type=_text | st.sampled_from(["%s", "%d", "100%", 'a"b', "a\\b", "\x00\x1f\x7f", "é名"]),
    digest=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h),
    size=st.integers(min_value=0, max_value=2**64),
    artifact_type=st.none() | _text,
    annotations=st.dictionaries(_text, _text, max_size=2),
)
def test_layer_json_is_canonical_json_of_the_descriptor(
    media_type: str, digest: str, size: int, artifact_type: str | None, annotations: dict[str, str]
) -> None:
    desc = Descriptor(media_type, digest, size, annotations, artifact_type)
    assert layer_json(desc) == canonical_json(desc.to_dict()).decode("utf-8")


# --- image index -------------------------------------------------------------------------------------------


def test_archive_index_bytes_match_ommx_layout() -> None:
    desc = Descriptor(mt.OCI_MANIFEST, D1, 123)
    expected = (
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":'
        '"application/vnd.oci.image.manifest.v1+json","digest":"' + D1 + '","size":123,"annotations":'
        '{"org.opencontainers.image.ref.name":"example.com/team/é:v1"}}]}'
    ).encode()
    assert image_index_bytes([(desc, "example.com/team/é:v1")]) == expected


def test_registry_index_with_artifact_types_round_trips() -> None:
    entries = [
        (Descriptor(mt.OCI_MANIFEST, D1, 1, artifact_type=mt.EXPERIMENT_ARTIFACT_TYPE), "a/b:v1"),
        (Descriptor(mt.OCI_MANIFEST, D2, 2), None),
    ]
    data = image_index_bytes(entries)
    first = json.loads(data)["manifests"][0]
    assert list(first) == ["mediaType", "digest", "size", "artifactType", "annotations"]
    assert "annotations" not in json.loads(data)["manifests"][1]
    parsed = parse_image_index(data)
    assert parsed[0].annotations == {mt.REF_NAME_ANNOTATION: "a/b:v1"}
    assert parsed[0].artifact_type == mt.EXPERIMENT_ARTIFACT_TYPE
    assert parsed[1] == entries[1][0]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b'{"schemaVersion":2,"mediaType":"x","manifests":[]}', "index.json.mediaType"),
        (b'{"schemaVersion":2,"manifests":{}}', "index.json.manifests"),
        (b'{"schemaVersion":3,"manifests":[]}', "schemaVersion"),
        (b'{"schemaVersion":2,"manifests":[{"mediaType":"m","digest":"bad","size":1}]}', r"manifests\[0\].digest"),
    ],
)
def test_parse_image_index_rejects(data: bytes, match: str) -> None:
    with pytest.raises(InvalidArtifactError, match=match):
        parse_image_index(data)


def test_frozen_map_views_are_the_dicts_and_wrapping_shares_it() -> None:
    data = {"b": 1, "a": 2}
    fm = FrozenMap(data)
    assert (list(fm.keys()), list(fm.values()), list(fm.items())) == (["b", "a"], [1, 2], [("b", 1), ("a", 2)])
    assert fm.items() == data.items() and fm.keys() == {"a", "b"}
    assert type(fm.items()) is type(data.items())  # the dict's view, not the Mapping mixin's
    owned = {"x": 1}
    wrapped = FrozenMap.wrapping(owned)
    assert wrapped == {"x": 1} and wrapped.shared_dict() is owned and FrozenMap(data).shared_dict() is not data
