"""Hostile `.ommx` archives and OCI layout directories.

Every case must end in one of our errors (a RuntimeError), publish no ref and no
blob, leave no temp file in ``blobs/sha256/`` and write nothing outside the
registry (the test runs with its working directory deep inside ``tmp_path`` so a
``../`` extraction would land in the snapshot).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ommx_experiment import media_types as mt
from ommx_experiment.engine.digest import sha256_digest
from ommx_experiment.engine.oci import Descriptor, Manifest
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.errors import ArchiveError, InvalidArtifactError, OmmxExperimentError
from ommx_experiment.format.archive import import_archive, import_layout_dir, import_path
from ommx_experiment.format.tarstream import ustar_header
from ommx_experiment.format.run_params import encode_msgpack
from ommx_experiment.lifecycle.artifact import ArtifactDraft, publish_manifest

NAME = "example.com/tests/hostile:v1"
Entries = list[tuple[str, bytes]]


@dataclass(frozen=True)
class State:
    refs: list[tuple[str, str]]
    blobs: frozenset[str]
    outside: frozenset[str]


@dataclass
class Scene:
    """A valid archive's entries, a target registry and the invariants to check."""

    tmp_path: Path
    registry: LocalRegistry
    entries: Entries
    digest: str
    archive: bytes

    @property
    def manifest(self) -> dict[str, object]:
        return json.loads(self.entry(f"blobs/sha256/{self.digest[7:]}"))

    def entry(self, name: str) -> bytes:
        return dict(self.entries)[name]

    def layer_name(self, i: int = 0) -> str:
        return "blobs/sha256/" + self.manifest["layers"][i]["digest"][7:]  # type: ignore[index]

    def write(self, data: bytes, name: str = "hostile.ommx") -> Path:
        path = self.tmp_path / "inputs" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        return path

    def state(self) -> State:
        refs = [(str(r.image_name), r.manifest_digest) for r in self.registry.list_refs()]
        outside = frozenset(
            str(p.relative_to(self.tmp_path))
            for p in self.tmp_path.rglob("*")
            if self.registry.root not in (p, *p.parents)
        )
        return State(refs, frozenset(self.registry.blobs.iter_digests()), outside)

    def temp_files(self) -> list[str]:
        return [p.name for p in self.registry.blobs.dir.iterdir() if p.name.startswith(".")]

    def expect_rejected(
        self, path: Path, match: str, importer: Callable[[LocalRegistry, Path], object] = import_path
    ) -> None:
        before = self.state()
        with pytest.raises(OmmxExperimentError, match=match) as info:
            importer(self.registry, path)
        assert isinstance(info.value, RuntimeError)
        assert isinstance(info.value, (ArchiveError, InvalidArtifactError)), repr(info.value)
        after = self.state()
        assert after.refs == before.refs
        assert after.blobs == before.blobs
        assert after.outside == before.outside
        assert self.temp_files() == []
        assert list((self.tmp_path / "canary").iterdir()) == []


def _entries_of(archive: bytes) -> Entries:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


@pytest.fixture
def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scene:
    source = LocalRegistry.at(tmp_path / "source")
    draft = ArtifactDraft.new(NAME, registry=source)
    draft.add_json({"hello": "world"})
    draft.add_layer("application/octet-stream", bytes(range(256)) * 3)
    art = draft.commit()
    art.save(tmp_path / "valid.ommx")
    (tmp_path / "canary").mkdir()
    work = tmp_path / "work" / "a" / "b" / "c"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    registry = LocalRegistry.default()
    data = (tmp_path / "valid.ommx").read_bytes()
    return Scene(tmp_path, registry, _entries_of(data), art.manifest_digest, data)


# --- tar builders -------------------------------------------------------------------------------


def build(entries: Entries, *, fmt: int = tarfile.USTAR_FORMAT, special: Sequence[tarfile.TarInfo] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for info in special:
            tar.addfile(info)
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def raw(entries: list[tuple[bytes, bytes]]) -> bytes:
    """Concatenate (header, data) pairs with padding and the two zero blocks."""
    out = b""
    for header, data in entries:
        out += header + data + bytes(-len(data) % 512)
    return out + bytes(1024)


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def with_index(scene: Scene, index: object) -> Entries:
    data = index if isinstance(index, bytes) else json.dumps(index).encode()
    return [(n, data if n == "index.json" else d) for n, d in scene.entries]


def with_manifest(scene: Scene, mutate: Callable[[dict], None]) -> Entries:
    manifest = scene.manifest
    mutate(manifest)
    data = json.dumps(manifest).encode()
    digest = sha256_digest(data)
    old = f"blobs/sha256/{scene.digest[7:]}"
    entries = [(f"blobs/sha256/{digest[7:]}", data) if n == old else (n, d) for n, d in scene.entries]
    index = json.loads(scene.entry("index.json"))
    index["manifests"][0].update(digest=digest, size=len(data))
    return [(n, json.dumps(index).encode() if n == "index.json" else d) for n, d in entries]


def index_doc(scene: Scene) -> dict:
    return json.loads(scene.entry("index.json"))


# --- entry names and kinds ------------------------------------------------------------------------

NAME_CASES = {
    "dotdot": ("../evil", "`..`"),
    "dotdot-nested": ("blobs/../../evil", "`..`"),
    "dotdot-dot-prefix": ("./../evil", "`..`"),
    "absolute": ("/tmp/evil-absolute", "absolute"),
    "unexpected-name": ("evil.txt", "unexpected entry"),
    "uppercase-hex": ("blobs/sha256/" + "A" * 64, "unexpected entry"),
    "other-algorithm": ("blobs/sha512/" + "a" * 128, "unexpected entry"),
}


@pytest.mark.parametrize("case", sorted(NAME_CASES))
def test_bad_entry_names(scene: Scene, case: str) -> None:
    name, match = NAME_CASES[case]
    data = build([(name, b"pwned"), *scene.entries], fmt=tarfile.PAX_FORMAT)
    scene.expect_rejected(scene.write(data), match)


SPECIAL_CASES = {
    "symlink": (tarfile.SYMTYPE, "symlink", "/etc/passwd"),
    "hardlink": (tarfile.LNKTYPE, "hard link", "/etc/passwd"),
    "chardev": (tarfile.CHRTYPE, "character device", ""),
    "blockdev": (tarfile.BLKTYPE, "block device", ""),
    "fifo": (tarfile.FIFOTYPE, "fifo", ""),
    "directory": (tarfile.DIRTYPE, "unexpected directory", ""),
}


@pytest.mark.parametrize("case", sorted(SPECIAL_CASES))
def test_non_regular_entries(scene: Scene, case: str) -> None:
    kind, match, link = SPECIAL_CASES[case]
    name = "blobs/evil" if case == "directory" else scene.layer_name()
    data = build(scene.entries, special=[special(name, kind, link)])
    scene.expect_rejected(scene.write(data), match)


def test_symlink_named_like_index(scene: Scene) -> None:
    entries = [(n, d) for n, d in scene.entries if n != "index.json"]
    data = build(entries, special=[special("index.json", tarfile.SYMTYPE, "/etc/passwd")])
    scene.expect_rejected(scene.write(data), "symlink")


def test_pax_path_traversal(scene: Scene) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("harmless")
        info.pax_headers = {"path": "../../pax-evil"}
        info.size = 5
        tar.addfile(info, io.BytesIO(b"pwned"))
    scene.expect_rejected(scene.write(buffer.getvalue()), "`..`")


def test_gnu_longname_traversal(scene: Scene) -> None:
    data = build([("../" * 40 + "gnu-evil", b"pwned"), *scene.entries], fmt=tarfile.GNU_FORMAT)
    scene.expect_rejected(scene.write(data), "`..`")


def test_duplicate_index_with_different_content(scene: Scene) -> None:
    other = index_doc(scene)
    other["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = "example.com/tests/other:v1"
    data = build([*scene.entries, ("index.json", json.dumps(other).encode())])
    scene.expect_rejected(scene.write(data), "duplicate entry")


def test_identical_duplicates_are_accepted(scene: Scene) -> None:
    data = build([*scene.entries, *scene.entries])
    assert import_path(scene.registry, scene.write(data))[1] == scene.digest


# --- sizes, truncation, checksums ---------------------------------------------------------------


def test_enormous_octal_size(scene: Scene) -> None:
    header = bytearray(ustar_header(scene.layer_name(), 5))
    header[124:136] = b"77777777777\0"
    header[148:156] = b" " * 8
    header[148:156] = b"%07o\0" % sum(header)
    data = raw([(bytes(header), b"short")])
    scene.expect_rejected(scene.write(data), "truncated")


def test_enormous_base256_size(scene: Scene) -> None:
    header = bytearray(ustar_header(scene.layer_name(), 5))
    header[124:136] = b"\x80" + (2**80).to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = b"%07o\0" % sum(header)
    scene.expect_rejected(scene.write(raw([(bytes(header), b"short")])), "truncated")


def test_negative_base256_size(scene: Scene) -> None:
    header = bytearray(ustar_header(scene.layer_name(), 5))
    header[124:136] = b"\xff" * 12
    header[148:156] = b" " * 8
    header[148:156] = b"%07o\0" % sum(header)
    scene.expect_rejected(scene.write(raw([(bytes(header), b"short")])), "negative")


def test_bad_checksum(scene: Scene) -> None:
    data = bytearray(scene.archive)
    data[0] ^= 0x01  # first header's name
    scene.expect_rejected(scene.write(bytes(data)), "checksum")


def test_lone_zero_block_followed_by_data(scene: Scene) -> None:
    data = bytes(512) + scene.archive
    scene.expect_rejected(scene.write(data), "lone zero block")


@pytest.mark.parametrize("fraction", [i / 40 for i in range(40)] + [0.999])
def test_truncated_archive(scene: Scene, fraction: float) -> None:
    n = len(scene.archive)
    cut = int(n * fraction) + (int(fraction * 40) % 3) * 7  # block boundaries and odd offsets
    cut = min(cut, n - 1)
    scene.expect_rejected(scene.write(scene.archive[:cut]), "truncated|missing|empty")


@pytest.mark.parametrize("cut", [512, 1024, 1536])
def test_cut_exactly_after_entries(scene: Scene, cut: int) -> None:
    """Cut at an entry boundary: what remains parses, but index.json is missing."""
    scene.expect_rejected(scene.write(scene.archive[:cut]), "truncated")


def test_empty_file(scene: Scene) -> None:
    scene.expect_rejected(scene.write(b""), "truncated")


def test_random_garbage(scene: Scene) -> None:
    scene.expect_rejected(scene.write(os.urandom(4096)), "checksum|ustar|truncated")


def test_digest_mismatch(scene: Scene) -> None:
    layer = scene.layer_name(1)
    entries = [(n, b"\xaa" + d[1:] if n == layer else d) for n, d in scene.entries]
    scene.expect_rejected(scene.write(build(entries)), "does not match its digest")


def test_declared_size_mismatch(scene: Scene) -> None:
    def lie(manifest: dict) -> None:
        manifest["layers"][1]["size"] += 1

    scene.expect_rejected(scene.write(build(with_manifest(scene, lie))), "declared")


# --- index.json and manifest content ------------------------------------------------------------


def test_index_with_zero_manifests(scene: Scene) -> None:
    index = index_doc(scene)
    index["manifests"] = []
    scene.expect_rejected(scene.write(build(with_index(scene, index))), "exactly one manifest, found 0")


def test_index_with_two_manifests(scene: Scene) -> None:
    index = index_doc(scene)
    index["manifests"] = index["manifests"] * 2
    scene.expect_rejected(scene.write(build(with_index(scene, index))), "exactly one manifest, found 2")


def test_index_with_docker_manifest_media_type(scene: Scene) -> None:
    index = index_doc(scene)
    index["manifests"][0]["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json"
    scene.expect_rejected(scene.write(build(with_index(scene, index))), "media type")


def test_index_with_invalid_ref_name(scene: Scene) -> None:
    index = index_doc(scene)
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = "UPPER/Case"
    scene.expect_rejected(scene.write(build(with_index(scene, index))), "ref name")


def test_index_declares_wrong_manifest_size(scene: Scene) -> None:
    index = index_doc(scene)
    index["manifests"][0]["size"] += 3
    scene.expect_rejected(scene.write(build(with_index(scene, index))), "declared")


def test_missing_index(scene: Scene) -> None:
    entries = [(n, d) for n, d in scene.entries if n != "index.json"]
    scene.expect_rejected(scene.write(build(entries)), "missing `index.json`")


def test_missing_layer_blob(scene: Scene) -> None:
    layer = scene.layer_name(1)
    entries = [(n, d) for n, d in scene.entries if n != layer]
    scene.expect_rejected(scene.write(build(entries)), "missing from the archive")


def test_missing_manifest_blob(scene: Scene) -> None:
    manifest = f"blobs/sha256/{scene.digest[7:]}"
    entries = [(n, d) for n, d in scene.entries if n != manifest]
    scene.expect_rejected(scene.write(build(entries)), "manifest blob .* missing")


def test_non_ommx_artifact_type(scene: Scene) -> None:
    def foreign(manifest: dict) -> None:
        manifest["artifactType"] = "application/vnd.example.thing"

    scene.expect_rejected(scene.write(build(with_manifest(scene, foreign))), "not an OMMX artifact type")


def test_missing_artifact_type(scene: Scene) -> None:
    entries = with_manifest(scene, lambda m: m.pop("artifactType"))
    scene.expect_rejected(scene.write(build(entries)), "OMMX artifact type")


def test_wrong_oci_layout_version(scene: Scene) -> None:
    entries = [(n, b'{"imageLayoutVersion":"2.0.0"}' if n == "oci-layout" else d) for n, d in scene.entries]
    scene.expect_rejected(scene.write(build(entries)), "imageLayoutVersion")


JSON_CASES = {
    "invalid-json": (b"{not json", "not valid JSON"),
    "invalid-utf8": (b'{"schemaVersion":2,"manifests":[],"x":"\xff\xfe"}', "UTF-8"),
    "deeply-nested": (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    "nan": (b'{"schemaVersion":NaN}', "not valid JSON|NaN"),
    "huge": (b" " * (2 << 20) + b"{}", "larger than the limit"),
    "not-an-object": (b"[]", "expected an object"),
}


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_bad_index_json(scene: Scene, case: str) -> None:
    data, match = JSON_CASES[case]
    scene.expect_rejected(scene.write(build(with_index(scene, data))), match)


@pytest.mark.parametrize("case", ["invalid-json", "invalid-utf8", "deeply-nested", "not-an-object"])
def test_bad_manifest_json(scene: Scene, case: str) -> None:
    data = JSON_CASES[case][0]
    digest = sha256_digest(data)
    index = index_doc(scene)
    index["manifests"][0].update(digest=digest, size=len(data))
    entries = [*with_index(scene, index), (f"blobs/sha256/{digest[7:]}", data)]
    scene.expect_rejected(scene.write(build(entries)), "manifest|UTF-8|JSON|nested")


def test_invalid_utf8_entry_name(scene: Scene) -> None:
    header = bytearray(ustar_header("x", 5))
    header[0:4] = b"\xff\xfeab"
    header[148:156] = b" " * 8
    header[148:156] = b"%07o\0" % sum(header)
    scene.expect_rejected(scene.write(raw([(bytes(header), b"pwned")])), "UTF-8")


# --- paths that are not regular files -----------------------------------------------------------


def test_fifo_path_does_not_block(scene: Scene) -> None:
    fifo = scene.tmp_path / "inputs" / "fifo.ommx"
    fifo.parent.mkdir(exist_ok=True)
    os.mkfifo(fifo)
    scene.expect_rejected(fifo, "not a regular file", import_archive)


def test_missing_path(scene: Scene) -> None:
    scene.expect_rejected(scene.tmp_path / "nope.ommx", "Path must be a file or a directory")


# --- OCI layout directories -----------------------------------------------------------------------


def _layout(scene: Scene, name: str = "layout") -> Path:
    root = scene.tmp_path / "inputs" / name
    for entry, data in scene.entries:
        (root / entry).parent.mkdir(parents=True, exist_ok=True)
        (root / entry).write_bytes(data)
    return root


def test_valid_layout_dir_imports(scene: Scene) -> None:
    assert import_layout_dir(scene.registry, _layout(scene))[1] == scene.digest


def test_layout_blob_symlink(scene: Scene) -> None:
    root = _layout(scene)
    blob = root / scene.layer_name(1)
    outside = scene.tmp_path / "canary-data"
    outside.write_bytes(blob.read_bytes())  # the target even has the right bytes
    blob.unlink()
    blob.symlink_to(outside)
    scene.expect_rejected(root, "symlink")


def test_layout_blobs_dir_symlink(scene: Scene) -> None:
    root = _layout(scene)
    real = scene.tmp_path / "inputs" / "elsewhere"
    (root / "blobs").rename(real)
    (root / "blobs").symlink_to(real)
    scene.expect_rejected(root, "symlink")


def test_layout_index_symlink(scene: Scene) -> None:
    root = _layout(scene)
    (root / "index.json").rename(root / "real-index.json")
    (root / "index.json").symlink_to(root / "real-index.json")
    scene.expect_rejected(root, "symlink")


def test_layout_blob_fifo(scene: Scene) -> None:
    root = _layout(scene)
    blob = root / scene.layer_name(1)
    blob.unlink()
    os.mkfifo(blob)
    scene.expect_rejected(root, "not a regular file")


def test_layout_blob_wrong_size(scene: Scene) -> None:
    root = _layout(scene)
    blob = root / scene.layer_name(1)
    blob.write_bytes(blob.read_bytes() + b"!")
    scene.expect_rejected(root, "declared")


def test_layout_blob_wrong_content(scene: Scene) -> None:
    root = _layout(scene)
    blob = root / scene.layer_name(1)
    blob.write_bytes(b"\x01" + blob.read_bytes()[1:])
    scene.expect_rejected(root, "does not match its digest")


def test_layout_without_oci_layout(scene: Scene) -> None:
    root = _layout(scene)
    (root / "oci-layout").unlink()
    scene.expect_rejected(root, "oci-layout")


def test_layout_huge_index(scene: Scene) -> None:
    root = _layout(scene)
    (root / "index.json").write_bytes(b" " * (2 << 20) + b"{}")
    scene.expect_rejected(root, "larger than the limit")


def test_layout_missing_blob(scene: Scene) -> None:
    root = _layout(scene)
    (root / scene.layer_name(0)).unlink()
    scene.expect_rejected(root, "missing")


# --- fuzzing ------------------------------------------------------------------------------------


def _header_offsets(archive: bytes) -> list[int]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return [m.offset for m in tar.getmembers()]


def _fix_checksums(data: bytearray, offsets: list[int]) -> None:
    for off in offsets:
        block = data[off : off + 512]
        block[148:156] = b" " * 8
        data[off + 148 : off + 156] = b"%07o\0" % (sum(block) & 0o7777777)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_archives(scene: Scene, data: st.DataObject) -> None:
    """Random byte edits (headers favoured, checksums optionally repaired) and truncation:
    the import yields the same manifest, or one of our errors; never a temp file or a stray ref."""
    archive = bytearray(scene.archive)
    offsets = _header_offsets(scene.archive)
    position = st.one_of(
        st.integers(0, len(archive) - 1),
        st.sampled_from(offsets).flatmap(lambda o: st.integers(o, o + 511)),
    )
    for pos, value in data.draw(st.lists(st.tuples(position, st.integers(0, 255)), min_size=1, max_size=8)):
        archive[pos] = value
    if data.draw(st.booleans()):
        _fix_checksums(archive, offsets)
    if data.draw(st.booleans()):
        del archive[data.draw(st.integers(0, len(archive))) :]
    path = scene.write(bytes(archive), "fuzz.ommx")
    before = scene.state()
    try:
        _, digest = import_archive(scene.registry, path)
    except OmmxExperimentError as exc:
        assert isinstance(exc, RuntimeError), repr(exc)
        assert scene.state().refs == before.refs
    else:
        assert digest == scene.digest
    assert scene.temp_files() == []
    assert list((scene.tmp_path / "canary").iterdir()) == []
    assert not (scene.tmp_path / "work" / "evil").exists()


_TOKENS = [
    *(b'"status"', b"0", b"7", b"-1", b"null", b"true", b"[]", b"{}", b'"x"', b"1.5", b'"failed"', b'"draft"'),
    *(b'"outcome"', b'{"reason":"r"}', b'"trace"', b'"solves"', b"18446744073709551616", b'"\\ud800"'),
]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_experiment_configs(tmp_path: Path, data: st.DataObject) -> None:
    """Config edits behind valid digests reach the experiment validation: our errors only."""

    config = (
        b'{"status":"finished","attachments":{"entries":{"meta":0}},"runs":[{"run_id":0,"status":"finished",'
        b'"attachments":{"entries":{"r":1}},"solves":[],"samplings":[]}],"run_parameters":2}'
    )
    edited = bytearray(config)
    edits = st.lists(st.tuples(st.integers(0, len(config) - 1), st.sampled_from(_TOKENS)), max_size=3)
    for pos, token in data.draw(edits):
        edited[pos : pos + data.draw(st.integers(0, 6))] = token
    source = LocalRegistry.at(tmp_path / "src")
    layers = [
        Descriptor(mt.JSON, (b := source.blobs.put_bytes(b"{}")).digest, b.size),
        Descriptor(mt.JSON, (c := source.blobs.put_bytes(b"[1]")).digest, c.size),
        Descriptor(mt.RUN_PARAMETERS, (p := source.blobs.put_bytes(encode_msgpack({}, [0]))).digest, p.size),
    ]
    stored = source.blobs.put_bytes(bytes(edited))
    config_desc = Descriptor(mt.EXPERIMENT_CONFIG, stored.digest, stored.size)
    manifest = Manifest(mt.EXPERIMENT_ARTIFACT_TYPE, config_desc, layers)
    art = publish_manifest(source, f"example.com/tests/cfg:{stored.digest[7:23]}", manifest, config_bytes=None)
    out = tmp_path / f"{art.manifest_digest[7:23]}.ommx"
    if not out.exists():
        art.save(out)
    target = LocalRegistry.default()
    try:
        import_archive(target, out)
    except OmmxExperimentError as exc:
        assert isinstance(exc, RuntimeError), repr(exc)
    assert [p.name for p in target.blobs.dir.iterdir() if p.name.startswith(".")] == []
