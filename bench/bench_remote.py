"""Push and pull of a 1 GiB attachment through a loopback docker-registry: ours beside skopeo.

The artifact is a generic OMMX artifact with one 1 GiB random layer, stored in a Local
Registry root (which is also an OCI image layout, so skopeo reads it as ``oci:ROOT:NAME``).

Cases, each a fresh process with its own peak RSS (``_common.run_measured``):

- ``push 1 GiB`` / ``ours``: ``remote.push_artifact`` into an empty registry;
- ``push 1 GiB`` / ``skopeo``: ``skopeo copy oci:ROOT:NAME docker://…`` into another empty registry;
- ``pull 1 GiB`` / ``ours``: ``remote.pull_artifact`` into a fresh root (verified, staged, published);
- ``pull 1 GiB`` / ``skopeo``: ``skopeo copy docker://… oci:OUT:NAME`` into a fresh layout.

``seconds`` includes process start-up for both. The note of each ``ours`` row gives the
throughput ratio against skopeo (target ≥ 0.8x) and ``peak_rss_MB`` (target < 150 MB).
``BENCH_REMOTE_MIB`` overrides the size for a quick run. Files live under ``bench/.work/``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import OURS_PYTHON, REPO_ROOT, MiB, make_file, run_measured, run_python, throughput_row

SIZE = int(os.environ.get("BENCH_REMOTE_MIB", "1024")) * MiB
WORK = REPO_ROOT / "bench" / ".work" / "remote"
LOCAL_NAME = "example.com/bench/remote:v1"
CASE_PUSH = f"push {SIZE // MiB} MiB"
CASE_PULL = f"pull {SIZE // MiB} MiB"

_SETUP = """
import json, sys
from pathlib import Path
sys.path.insert(0, {src!r})
from ommx_experiment import media_types as mt
from ommx_experiment.engine.oci import Descriptor, Manifest
from ommx_experiment.engine.registry import LocalRegistry
reg = LocalRegistry.at(Path({root!r}))
layer = reg.blobs.put_file(Path({payload!r}))
config = reg.blobs.put_bytes(mt.OCI_EMPTY_CONFIG_BYTES)
manifest = Manifest(mt.GENERIC_ARTIFACT_TYPE, Descriptor(mt.OCI_EMPTY_CONFIG, config.digest, config.size),
                    (Descriptor(mt.OCTET_STREAM, layer.digest, layer.size, {{mt.TITLE_ANNOTATION: "payload.bin"}}),))
digest = reg.blobs.put_bytes(manifest.to_bytes()).digest
reg.publish({name!r}, digest)
print(json.dumps({{"digest": digest}}))
"""

_PUSH = """
import json, sys
sys.path.insert(0, {src!r})
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.edges.remote import push_artifact
print(json.dumps({{"digest": push_artifact(LocalRegistry.at({root!r}), {name!r}, {digest!r}, quiet=True)}}))
"""

_PULL = """
import json, sys
sys.path.insert(0, {src!r})
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.edges.remote import pull_artifact
print(json.dumps({{"digest": pull_artifact(LocalRegistry.at({root!r}), {name!r}, quiet=True)}}))
"""


@contextmanager
def _registry(workdir: Path) -> Iterator[str]:
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    try:
        from helpers.oci_registry import running_registry
    finally:
        sys.path.remove(str(REPO_ROOT / "tests"))
    with running_registry(workdir) as reg:
        yield reg.host
    shutil.rmtree(workdir, ignore_errors=True)


def _row(case: str, impl: str, seconds: float, rss: int, note: str = "") -> dict[str, object]:
    return throughput_row("remote", case, impl, seconds, rss, SIZE, **({"note": note} if note else {}))


def _skopeo(*args: str) -> tuple[float, int]:
    result = run_measured(["skopeo", *args])
    if result.returncode != 0:
        raise RuntimeError(f"skopeo {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result.seconds, result.peak_rss_bytes


def _ours(snippet: str, expected: str, **fmt: str) -> tuple[float, int]:
    result = run_python(snippet.format(src=str(REPO_ROOT / "src"), **fmt), python=OURS_PYTHON)
    if result.data["digest"] != expected:
        raise RuntimeError(f"digest changed in transit: {result.data['digest']} != {expected}")
    return result.seconds, result.peak_rss_bytes


def _layout_digest(layout: Path) -> str:
    import json

    return str(json.loads((layout / "index.json").read_bytes())["manifests"][0]["digest"])


def _measure_all(tmp: Path) -> dict[tuple[str, str], tuple[float, int]]:
    root = tmp / "root"
    payload = make_file(tmp / "payload.bin", SIZE)
    digest = run_python(
        _SETUP.format(src=str(REPO_ROOT / "src"), root=str(root), payload=str(payload), name=LOCAL_NAME),
        python=OURS_PYTHON,
    ).data["digest"]
    payload.unlink()
    out: dict[tuple[str, str], tuple[float, int]] = {}
    with _registry(tmp / "registry-ours") as host:
        remote_name = f"{host}/bench/ours:v1"
        out[(CASE_PUSH, "ours")] = _ours(_PUSH, digest, root=str(root), name=remote_name, digest=digest)
        out[(CASE_PULL, "ours")] = _ours(_PULL, digest, root=str(tmp / "pulled-root"), name=remote_name)
        shutil.rmtree(tmp / "pulled-root")
    with _registry(tmp / "registry-skopeo") as host:
        remote_ref = f"docker://{host}/bench/skopeo:v1"
        out[(CASE_PUSH, "skopeo")] = _skopeo("copy", "--dest-tls-verify=false", f"oci:{root}:{LOCAL_NAME}", remote_ref)
        layout = tmp / "skopeo-layout"
        out[(CASE_PULL, "skopeo")] = _skopeo("copy", "--src-tls-verify=false", remote_ref, f"oci:{layout}:{LOCAL_NAME}")
        if _layout_digest(layout) != digest:
            raise RuntimeError("skopeo changed the manifest digest")
    return out


def run() -> list[dict[str, object]]:
    """Push and pull rows for ours and skopeo (same artifact, same run)."""
    if shutil.which("skopeo") is None or shutil.which("docker-registry") is None:
        raise RuntimeError("skopeo and docker-registry are required (Debian packages skopeo, docker-registry)")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    try:
        results = _measure_all(WORK)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    rows = []
    for case in (CASE_PUSH, CASE_PULL):
        ours_s, ours_rss = results[(case, "ours")]
        skopeo_s, skopeo_rss = results[(case, "skopeo")]
        ratio = skopeo_s / ours_s if ours_s > 0 else float("inf")
        verdict = "ok" if ratio >= 0.8 and ours_rss < 150 * MiB else "MISSES TARGET"
        note = f"{ratio:.2f}x skopeo throughput (target >= 0.8x, RSS < 150 MB): {verdict}"
        rows.append(_row(case, "ours", ours_s, ours_rss, note))
        rows.append(_row(case, "skopeo", skopeo_s, skopeo_rss))
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
