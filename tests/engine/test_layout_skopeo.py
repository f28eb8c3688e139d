"""The root is a real OCI Image Layout: skopeo (a third-party reader) agrees with us."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from workers.registry_worker import store_generic

from ommx_experiment.engine import layout_view
from ommx_experiment.engine.registry import LocalRegistry


def _skopeo(skopeo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([str(skopeo), *args], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def test_skopeo_reads_refs_and_copies_keep_the_digest(skopeo: Path, tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg")
    first = store_generic(reg, [("application/octet-stream", b"first payload")])
    second = store_generic(reg, [("application/json", b'{"k":1}'), ("application/octet-stream", b"\x00" * 4096)])
    refs = {
        "example.com/team/one:v1": first,
        "example.com/team/one:also": first,  # two names, one digest
        "localhost:5000/team/two:v2": second,
    }
    for name, digest in refs.items():
        reg.publish(name, digest)
    assert layout_view.read_index(reg.root) == refs

    for name, digest in refs.items():
        raw = _skopeo(skopeo, "inspect", "--raw", f"oci:{reg.root}:{name}").stdout
        assert raw == reg.blobs.get(digest), name

    other = tmp_path / "copy"
    name = "localhost:5000/team/two:v2"
    _skopeo(skopeo, "copy", "--quiet", f"oci:{reg.root}:{name}", f"oci:{other}:{name}")
    index = json.loads((other / "index.json").read_bytes())
    assert [m["digest"] for m in index["manifests"]] == [second]
    assert (other / "blobs" / "sha256" / second.removeprefix("sha256:")).read_bytes() == reg.blobs.get(second)
    copied = _skopeo(skopeo, "inspect", "--raw", f"oci:{other}:{name}").stdout
    assert copied == reg.blobs.get(second)
    reg.close()


def test_skopeo_does_not_see_removed_refs(skopeo: Path, tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg")
    digest = store_generic(reg, [("application/octet-stream", b"x")])
    reg.publish("example.com/gone:v1", digest)
    reg.remove("example.com/gone:v1")
    proc = subprocess.run(
        [str(skopeo), "inspect", "--raw", f"oci:{reg.root}:example.com/gone:v1"], capture_output=True, timeout=120
    )
    assert proc.returncode != 0
    reg.close()


# --- entries other tools write into the root (issue 16, fault 4) -------------------------------------------


def _plain_oci_image(folder: Path, name: str) -> dict[str, str]:
    """A minimal non-OMMX OCI image layout written by hand (what `docker save`-like tools produce)."""
    import hashlib

    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / digest[7:]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    config = put(b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')
    layer = put(b"not really a tarball, but skopeo copies bytes")
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
    }).encode()
    desc = put(manifest)
    (folder / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **desc,
        "annotations": {"org.opencontainers.image.ref.name": name},
    }]}
    (folder / "index.json").write_text(json.dumps(index))
    return {"manifest": str(desc["digest"]), "config": str(config["digest"]), "layer": str(layer["digest"])}


def test_skopeo_copy_into_the_root_is_adopted(skopeo: Path, tmp_path: Path, ommx3) -> None:  # type: ignore[no-untyped-def]
    """`skopeo copy` of an OMMX experiment into the root adds an index.json entry OMMX's refs do
    not know; our next ref write adopts it as a ref under its canonical name (closure checked),
    so neither the entry nor its blobs are lost, and OMMX 3 lists and loads it."""
    from ommx_experiment import Experiment

    source = tmp_path / "source"
    src_reg = LocalRegistry(source)
    src = Experiment.with_temp_local_registry("example.com/sk/src:v1")
    with src.run() as run:
        run.log_parameter("i", 3)
        run.log_json("p", {"copied": True})
    src.commit()
    src.save(tmp_path / "src.ommx")
    from ommx_experiment.format.archive import import_path

    _, copied = import_path(src_reg, tmp_path / "src.ommx")
    src_reg.close()

    root = tmp_path / "root"
    reg = LocalRegistry(root)
    first = store_generic(reg, [("application/octet-stream", b"ours before")])
    reg.publish("example.com/sk/ours:v1", first)
    _skopeo(skopeo, "copy", "--quiet", f"oci:{source}:example.com/sk/src:v1", f"oci:{root}:foreign/copied:v1")
    assert reg.resolve("foreign/copied:v1") is None  # skopeo wrote only the layout
    second = store_generic(reg, [("application/octet-stream", b"ours after")])
    reg.publish("example.com/sk/next:v1", second)  # our next ref write adopts the foreign entry
    assert reg.resolve("foreign/copied:v1") == copied
    raw = _skopeo(skopeo, "inspect", "--raw", f"oci:{root}:docker.io/foreign/copied:v1").stdout
    assert raw == reg.blobs.get(copied)  # skopeo reads it under its canonical name
    assert layout_view.read_index(root)["docker.io/foreign/copied:v1"] == copied  # now one of ours
    doc = json.loads((root / "index.json").read_bytes())
    assert layout_view.foreign_entries(doc) == []  # the foreign copy was dropped with the adoption
    reg.remove("docker.io/foreign/copied:v1")  # a removed ref is not adopted again
    reg.publish("example.com/sk/later:v1", store_generic(reg, [("application/octet-stream", b"later")]))
    assert reg.resolve("foreign/copied:v1") is None
    reg.restore("docker.io/foreign/copied:v1", copied)
    reg.close()
    loaded = ommx3.run_json(
        "import json\nfrom ommx.experiment import Experiment, list_experiments\n"
        "e = Experiment.load('foreign/copied:v1')\n"
        "print(json.dumps([e.runs[0].get_json('p'), sorted(r.image_name for r in list_experiments())]))",
        root=root,
    )
    assert loaded[0] == {"copied": True} and "docker.io/foreign/copied:v1" in loaded[1]


def test_foreign_non_ommx_entry_is_preserved(skopeo: Path, tmp_path: Path) -> None:
    """A non-OMMX image `skopeo copy`-ed into the root is never adopted nor erased: its entry
    survives 10 of our commits (skopeo can still read it) and our deleting GC keeps its blobs."""
    from ommx_experiment.edges import maintenance

    _plain_oci_image(tmp_path / "plain", "plain:v1")
    root = tmp_path / "root"
    reg = LocalRegistry(root)
    reg.publish("example.com/sk/first:v1", store_generic(reg, [("application/octet-stream", b"first")]))
    _skopeo(skopeo, "copy", "--quiet", f"oci:{tmp_path / 'plain'}:plain:v1", f"oci:{root}:foreign/plain:v1")
    entry = [m for m in json.loads((root / "index.json").read_bytes())["manifests"]
             if m["annotations"]["org.opencontainers.image.ref.name"] == "foreign/plain:v1"][0]
    manifest = json.loads(reg.blobs.get(entry["digest"]))  # skopeo re-serialises the manifest
    plain = {"manifest": entry["digest"], "config": manifest["config"]["digest"], "layer": manifest["layers"][0]["digest"]}
    for i in range(10):
        reg.publish(f"example.com/sk/n:{i}", store_generic(reg, [("application/octet-stream", b"n%d" % i)]))
    assert reg.resolve("foreign/plain:v1") is None  # not an OMMX artifact: not a ref
    doc = json.loads((root / "index.json").read_bytes())
    foreign = [m for m in doc["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == "foreign/plain:v1"]
    assert [m["digest"] for m in foreign] == [plain["manifest"]]
    assert _skopeo(skopeo, "inspect", "--raw", f"oci:{root}:foreign/plain:v1").stdout == reg.blobs.get(plain["manifest"])
    report = maintenance.gc(root=root, delete=True, grace_period="0s", exclusive=True)
    assert {plain["manifest"], plain["config"], plain["layer"]} <= {b.digest for b in report.reachable_blobs}
    assert all(reg.blobs.exists(d) for d in plain.values())
    reg.close()
