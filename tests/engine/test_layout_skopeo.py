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
