"""`.ommx` archive export (byte layout §4.9) and import (tar files and OCI layout directories)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from ommx_experiment import media_types as mt
from ommx_experiment.engine.digest import sha256_digest
from ommx_experiment.engine.oci import Descriptor, Manifest
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.errors import ArchiveError, DigestMismatchError, RegistryError
from ommx_experiment.format import archive, tarstream
from ommx_experiment.format.archive import import_archive, import_layout_dir, import_path, write_archive
from ommx_experiment.format.tarstream import TarReader, ustar_header
from ommx_experiment.format.run_params import encode_msgpack
from ommx_experiment.lifecycle.artifact import Artifact, ArtifactDraft, publish_manifest

NAME = "example.com/tests/archive:v1"


@pytest.fixture
def source(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry.at(tmp_path / "source")


@pytest.fixture
def target(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry.at(tmp_path / "target")


def _generic(registry: LocalRegistry, name: str = NAME, *, twice: bool = False) -> Artifact:
    draft = ArtifactDraft.new(name, registry=registry)
    draft.add_json({"k": [1, 2]}, role="meta")
    layer = draft.add_layer("application/octet-stream", b"x" * 1000)
    if twice:
        draft.add_layer(layer.media_type, b"x" * 1000, {"second": "copy"})
    return draft.commit()


def _experiment(registry: LocalRegistry, name: str, config: dict[str, object], params: bytes | None = None) -> Artifact:
    params_blob = registry.blobs.put_bytes(params if params is not None else encode_msgpack({}, []))
    layer = Descriptor(mt.RUN_PARAMETERS, params_blob.digest, params_blob.size)
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_desc = Descriptor(mt.EXPERIMENT_CONFIG, sha256_digest(config_bytes), len(config_bytes))
    manifest = Manifest(mt.EXPERIMENT_ARTIFACT_TYPE, config_desc, (layer,))
    return publish_manifest(registry, name, manifest, config_bytes=config_bytes)


def _config(status: str = "finished") -> dict[str, object]:
    return {"status": status, "attachments": {"entries": {}}, "runs": [], "run_parameters": 0}


def _members(path: Path) -> list[tuple[str, int]]:
    with tarfile.open(path, "r:") as tar:
        return [(m.name, m.size) for m in tar.getmembers()]


# --- export -------------------------------------------------------------------------------------


def test_header_fields_match_ommx() -> None:
    header = ustar_header("oci-layout", 30)
    assert len(header) == 512
    assert header[:10] == b"oci-layout" and header[10:100] == bytes(90)
    assert header[100:108] == b"0000644\0"
    assert header[108:124] == bytes(16)  # uid, gid
    assert header[124:136] == b"00000000036\0"
    assert header[136:148] == b"00000000000\0"
    assert header[148:156] == b"0006514\0"  # observed in an OMMX 3 archive
    assert header[156:157] == b"0"
    assert header[257:265] == b"ustar\x0000"
    assert header[265:] == bytes(512 - 265)


def test_size_field_switches_to_base256_at_8_gib() -> None:
    assert tarstream._size_field(8**11 - 1) == b"77777777777\0"
    big = tarstream._size_field(8**11)
    assert big[0] == 0x80 and int.from_bytes(big[4:], "big") == 8**11 and big[1:4] == bytes(3)


def test_archive_layout(source: LocalRegistry, tmp_path: Path) -> None:
    art = _generic(source, twice=True)
    out = tmp_path / "a.ommx"
    art.save(out)
    data = out.read_bytes()
    blobs = [art.manifest_digest, art.config.digest, *(d.digest for d in art.layers)]
    names = [n for n, _ in _members(out)]
    assert names == ["oci-layout", *(f"blobs/sha256/{d[7:]}" for d in blobs), "index.json"]
    assert names.count(f"blobs/sha256/{art.layers[1].digest[7:]}") == 2  # a layer listed twice is written twice
    assert len(data) % 512 == 0 and data[-1024:] == bytes(1024) and data[-1536:-1024] != bytes(512)
    with tarfile.open(out) as tar:
        index = tar.extractfile("index.json").read()  # type: ignore[union-attr]
    assert index == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":'
        b'"application/vnd.oci.image.manifest.v1+json","digest":"' + art.manifest_digest.encode() + b'","size":'
        + str(len(art.manifest_bytes)).encode() + b',"annotations":{"org.opencontainers.image.ref.name":"'
        + NAME.encode() + b'"}}]}'
    )
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_gnu_tar_lists_and_extracts(source: LocalRegistry, tmp_path: Path) -> None:
    art = _generic(source)
    art.save(tmp_path / "a.ommx")
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "a.ommx"), "-C", str(dest)], check=True)
    assert (dest / "blobs" / "sha256" / art.manifest_digest[7:]).read_bytes() == art.manifest_bytes


def test_subject_is_not_exported(source: LocalRegistry, tmp_path: Path) -> None:
    parent = _generic(source, "example.com/tests/parent:v1")
    subject = Descriptor(mt.OCI_MANIFEST, parent.manifest_digest, len(parent.manifest_bytes))
    child_manifest = Manifest(mt.GENERIC_ARTIFACT_TYPE, parent.config, parent.manifest.layers, subject)
    child = publish_manifest(source, NAME, child_manifest, config_bytes=None)
    child.save(tmp_path / "c.ommx")
    names = [n for n, _ in _members(tmp_path / "c.ommx")]
    assert f"blobs/sha256/{parent.manifest_digest[7:]}" not in names
    assert Artifact.inspect_archive(tmp_path / "c.ommx").subject == child_manifest.subject


def test_export_of_corrupt_blob_leaves_nothing(source: LocalRegistry, tmp_path: Path) -> None:
    art = _generic(source)
    path = source.blobs.path(art.layers[1].digest)
    path.write_bytes(b"y" * 1000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(DigestMismatchError):
        art.save(out_dir / "a.ommx")
    assert list(out_dir.iterdir()) == []


def test_export_to_missing_folder_fails_cleanly(source: LocalRegistry, tmp_path: Path) -> None:
    art = _generic(source)
    with pytest.raises(RegistryError, match="Failed to create archive"):
        art.save(tmp_path / "missing" / "a.ommx")


def test_export_refuses_dangling_symlink(source: LocalRegistry, tmp_path: Path) -> None:
    art = _generic(source)
    link = tmp_path / "a.ommx"
    link.symlink_to(tmp_path / "elsewhere.ommx")
    with pytest.raises(RegistryError, match="already exists"):
        art.save(link)
    assert not (tmp_path / "elsewhere.ommx").exists()


# --- import: archives ---------------------------------------------------------------------------


def test_round_trip_same_digest_and_bytes(source: LocalRegistry, target: LocalRegistry, tmp_path: Path) -> None:
    art = _generic(source, twice=True)
    art.save(tmp_path / "a.ommx")
    image, digest = import_archive(target, tmp_path / "a.ommx")
    assert (str(image), digest) == (NAME, art.manifest_digest)
    write_archive(target, digest, str(image), tmp_path / "b.ommx")
    assert (tmp_path / "a.ommx").read_bytes() == (tmp_path / "b.ommx").read_bytes()
    assert import_archive(target, tmp_path / "a.ommx") == (image, digest)  # idempotent


def test_missing_ref_name_gives_anonymous_name(source: LocalRegistry, target: LocalRegistry, tmp_path: Path) -> None:
    art = _generic(source)
    art.save(tmp_path / "a.ommx")
    layout = tmp_path / "layout"
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "a.ommx"), "-C", str(layout)], check=True)
    index = json.loads((layout / "index.json").read_bytes())
    del index["manifests"][0]["annotations"]
    (layout / "index.json").write_text(json.dumps(index))
    image, digest = import_layout_dir(target, layout)
    assert digest == art.manifest_digest
    assert str(image).startswith(f"{target.registry_id[:8]}.ommx.local/anonymous:")


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_imports_archives_written_by_python_tarfile(
    source: LocalRegistry, target: LocalRegistry, tmp_path: Path, fmt: int
) -> None:
    """Third-party tars: directory entries, `./` prefixes, owners, mtimes, record padding."""
    art = _generic(source)
    art.save(tmp_path / "a.ommx")
    layout = tmp_path / "layout"
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "a.ommx"), "-C", str(layout)], check=True)
    out = tmp_path / "third-party.tar"
    with tarfile.open(out, "w", format=fmt) as tar:
        tar.add(layout, arcname=".")
    image, digest = import_archive(target, out)
    assert (str(image), digest) == (NAME, art.manifest_digest)


def test_pax_path_records_are_followed(target: LocalRegistry, source: LocalRegistry, tmp_path: Path) -> None:
    """A pax `path` record replaces the header name; other pax keys are ignored."""
    art = _generic(source)
    art.save(tmp_path / "a.ommx")
    out = tmp_path / "pax.tar"
    with tarfile.open(tmp_path / "a.ommx") as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            member.pax_headers = {"path": member.name, "comment": "é" * 10}
            member.name = "placeholder"
            dst.addfile(member, io.BytesIO(data))
    assert import_archive(target, out)[1] == art.manifest_digest


def test_unreferenced_blobs_are_not_published(source: LocalRegistry, target: LocalRegistry, tmp_path: Path) -> None:
    art = _generic(source)
    art.save(tmp_path / "a.ommx")
    extra = b"not referenced"
    out = tmp_path / "extra.tar"
    with tarfile.open(tmp_path / "a.ommx") as src, tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as dst:
        info = tarfile.TarInfo(f"blobs/sha256/{sha256_digest(extra)[7:]}")
        info.size = len(extra)
        dst.addfile(info, io.BytesIO(extra))
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
    import_archive(target, out)
    assert not target.blobs.exists(sha256_digest(extra))
    assert target.blobs.exists(art.layers[0].digest)


def test_import_caches_experiment_config(source: LocalRegistry, target: LocalRegistry, tmp_path: Path) -> None:
    art = _experiment(source, "example.com/tests/exp:v1", _config("draft"))  # all four statuses import
    art.save(tmp_path / "e.ommx")
    image, digest = import_archive(target, tmp_path / "e.ommx")
    assert digest == art.manifest_digest
    rows = target.db.query("SELECT config_json FROM experiment_configs WHERE config_digest = ?", (art.config.digest,))
    assert rows and bytes(rows[0][0]) == source.blobs.get(art.config.digest)


@pytest.mark.parametrize(
    ("config", "params", "match"),
    [
        (_config("bogus"), None, "status"),
        ({**_config(), "run_parameters": 5}, None, "layer 5"),
        (_config(), b"\x81\xa7columns\x81\xa1a\x82\xa4type\xa5int64\xa6values\x81\x07\x01", "unknown run ids"),
        (_config(), b"\xc1", "Run-parameter|run-parameter|MessagePack|msgpack"),
    ],
)
def test_invalid_experiment_is_not_imported(
    source: LocalRegistry,
    target: LocalRegistry,
    tmp_path: Path,
    config: dict[str, object],
    params: bytes | None,
    match: str,
) -> None:
    art = _experiment(source, "example.com/tests/bad:v1", config, params)
    art.save(tmp_path / "e.ommx")
    with pytest.raises(ArchiveError, match=match):
        import_archive(target, tmp_path / "e.ommx")
    assert target.list_refs() == []
    assert list(target.blobs.iter_digests()) == []


# --- import: OCI layout directories -------------------------------------------------------------


def test_directory_import_of_a_one_ref_registry_root(source: LocalRegistry, target: LocalRegistry) -> None:
    """Our registry root is an OCI layout: with one ref it imports as a directory."""
    art = _generic(source)
    source.sync()
    image, digest = import_path(target, source.root)
    assert (str(image), digest) == (NAME, art.manifest_digest)
    assert target.verify_closure(digest) is None


def test_directory_with_two_refs_is_rejected(source: LocalRegistry, target: LocalRegistry) -> None:
    _generic(source)
    _generic(source, "example.com/tests/second:v1")
    source.sync()
    with pytest.raises(ArchiveError, match="exactly one manifest"):
        import_layout_dir(target, source.root)


def test_directory_requires_oci_layout(source: LocalRegistry, target: LocalRegistry, tmp_path: Path) -> None:
    _generic(source).save(tmp_path / "a.ommx")
    layout = tmp_path / "layout"
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "a.ommx"), "-C", str(layout)], check=True)
    (layout / "oci-layout").unlink()
    with pytest.raises(ArchiveError, match="oci-layout"):
        import_layout_dir(target, layout)
    assert target.list_refs() == []


def test_inspect_directory(source: LocalRegistry) -> None:
    art = _generic(source)
    source.sync()
    info = Artifact.inspect_archive(source.root)
    assert (info.image_name, info.manifest_digest, info.manifest) == (NAME, art.manifest_digest, art.manifest)


# --- the streaming reader on its own ------------------------------------------------------------


def test_reader_skips_unread_data(source: LocalRegistry, tmp_path: Path) -> None:
    art = _generic(source)
    art.save(tmp_path / "a.ommx")
    with open(tmp_path / "a.ommx", "rb") as fh:
        reader = TarReader(fh, "a.ommx", (tmp_path / "a.ommx").stat().st_size)
        entries = [(e.name, e.kind, e.size) for e in reader.entries()]
    assert entries == [(n, "file", s) for n, s in _members(tmp_path / "a.ommx")]


def test_reader_works_on_unseekable_stream(source: LocalRegistry, tmp_path: Path) -> None:
    _generic(source).save(tmp_path / "a.ommx")
    data = (tmp_path / "a.ommx").read_bytes()
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as w:
            w.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    with os.fdopen(read_fd, "rb") as fh:
        names = [e.name for e in TarReader(fh, "pipe").entries()]
    writer.join()
    assert names[0] == "oci-layout" and names[-1] == "index.json"


# --- bounded memory -----------------------------------------------------------------------------


def test_export_and_import_stream_large_blobs(source: LocalRegistry, target: LocalRegistry, tmp_path: Path) -> None:
    import tracemalloc

    size = 24 << 20
    stored = source.blobs.put_chunks(os.urandom(1 << 20) for _ in range(size >> 20))
    config = Descriptor(mt.OCI_EMPTY_CONFIG, mt.OCI_EMPTY_CONFIG_DIGEST, 2)
    source.blobs.put_bytes(mt.OCI_EMPTY_CONFIG_BYTES)
    layer = Descriptor("application/octet-stream", stored.digest, size)
    manifest = Manifest(mt.GENERIC_ARTIFACT_TYPE, config, (layer,))
    art = publish_manifest(source, NAME, manifest, config_bytes=None)
    tracemalloc.start()
    try:
        art.save(tmp_path / "big.ommx")
        _, export_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert import_archive(target, tmp_path / "big.ommx")[1] == art.manifest_digest
        _, import_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert export_peak < 6 << 20, export_peak
    assert import_peak < 6 << 20, import_peak
    assert target.blobs.verify(stored.digest, size)


# --- a killed save (issue 16, fault 9) ------------------------------------------------------------------------

_SAVE = """
import os, sys
from ommx_experiment.engine import atomic
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.format.archive import write_archive
mode, root, digest, dest = sys.argv[1:]
if mode == "kill":
    def boom(*args, **kwargs):
        os.kill(os.getpid(), 9)  # SIGKILL after the archive is written, before its link
    atomic.publish_noclobber = boom
else:
    real = atomic.publish_noclobber
    def pause(*args, **kwargs):
        print("written", flush=True)
        sys.stdin.readline()
        return real(*args, **kwargs)
    atomic.publish_noclobber = pause
write_archive(LocalRegistry.at(root), digest, "example.com/tests/archive:v1", dest)
"""


def _archive_temps(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(".oxe-archive-"))


def test_killed_save_temp_is_removed_by_the_next_save(source: LocalRegistry, tmp_path: Path) -> None:
    """SIGKILL inside save leaves `.oxe-archive-*.tmp` in the user's folder; the next save into that
    folder removes it (its lock is free), but never the temp of a save still in progress."""
    art = _generic(source)
    folder = tmp_path / "out"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    args = [str(source.root), art.manifest_digest]
    killed = subprocess.run([sys.executable, "-c", _SAVE, "kill", *args, str(folder / "killed.ommx")], env=env)
    assert killed.returncode == -9
    dead = _archive_temps(folder)
    assert len(dead) == 1 and not (folder / "killed.ommx").exists()
    paused = subprocess.Popen(
        [sys.executable, "-c", _SAVE, "pause", *args, str(folder / "slow.ommx")],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert paused.stdout is not None and paused.stdout.readline().strip() == "written"
        live = [p for p in _archive_temps(folder) if p not in dead]
        assert len(live) == 1
        old = time.time() - 3600  # both look old: only the lock tells them apart
        for p in (*dead, *live):
            os.utime(p, (old, old))
        write_archive(source, art.manifest_digest, NAME, folder / "next.ommx")
        assert _archive_temps(folder) == live
    finally:
        paused.communicate("\n", timeout=60)
    assert paused.returncode == 0
    assert sorted(p.name for p in folder.iterdir()) == ["next.ommx", "slow.ommx"]
