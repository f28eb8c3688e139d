"""Subprocess workloads for the registry concurrency and crash tests, plus the small
artifact builders the registry tests share.

Run as ``python tests/workers/registry_worker.py MODE ROOT ...``:

- ``publish ROOT WORKER N``: N publishes of distinct refs ``example.com/w<WORKER>/r:<i>``;
- ``read ROOT STOPFILE``: parse ``index.json`` in a loop until STOPFILE exists, then
  print ``{"reads": n, "errors": [...]}``;
- ``churn ROOT SEED``: put blobs (incl. a 4 MiB one) and publish/replace/remove refs
  forever; the crash test kills it with SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

_SRC = Path(__file__).resolve().parents[2] / "src"
if str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from ommx_experiment.engine.registry import LocalRegistry  # noqa: E402

GENERIC_ARTIFACT_TYPE = "application/org.ommx.v1.artifact"
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def generic_manifest(layers: list[tuple[str, bytes]], annotations: dict[str, str] | None = None) -> bytes:
    """OMMX-style generic artifact manifest bytes (sorted keys, compact) for ``layers``."""
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "artifactType": GENERIC_ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_CONFIG_MEDIA_TYPE, "digest": EMPTY_CONFIG_DIGEST, "size": len(EMPTY_CONFIG)},
        "layers": [
            {"mediaType": mt, "digest": digest_of(data), "size": len(data), "annotations": {}} for mt, data in layers
        ],
    }
    if annotations:
        doc["annotations"] = annotations
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def store_generic(registry: LocalRegistry, layers: list[tuple[str, bytes]], **kw: dict[str, str]) -> str:
    """Put every blob (layers, config, manifest last) and return the manifest digest."""
    for _, data in layers:
        registry.blobs.put_bytes(data)
    registry.blobs.put_bytes(EMPTY_CONFIG)
    return registry.blobs.put_bytes(generic_manifest(layers, kw.get("annotations"))).digest


def _publish(root: Path, worker: int, count: int) -> None:
    registry = LocalRegistry.at(root)
    for i in range(count):
        layer = f"worker {worker} ref {i}".encode()
        digest = store_generic(registry, [("application/octet-stream", layer)])
        registry.publish(f"example.com/w{worker}/r:{i}", digest)


def _read(root: Path, stopfile: Path) -> None:
    """A plain reader (as skopeo is): a read that does not parse is read again at once; only a
    file that stays unreadable is an error. Torn reads (a read racing an in-place patch of a
    page, spec/registry.md §5) are counted apart."""
    reads, errors, torn = 0, [], 0
    index = root / "index.json"
    while not stopfile.exists():
        failure = None
        for _ in range(20):
            try:
                data = index.read_bytes()
            except FileNotFoundError:
                failure = None
                break
            try:
                doc = json.loads(data)
                assert isinstance(doc["manifests"], list)
                failure = None
                break
            except Exception as exc:  # read again: a torn page is gone once the patch is written
                failure = f"{type(exc).__name__}: {exc} ({len(data)} bytes)"
                torn += 1
                time.sleep(0.001)
        if failure is not None:
            errors.append(failure)
        reads += 1
    print(json.dumps({"reads": reads, "errors": errors[:20], "n_errors": len(errors), "torn_reads": torn}))


def _churn(root: Path, seed: int) -> None:
    rng = random.Random(seed)
    registry = LocalRegistry.at(root)
    big = bytearray(os.urandom(4 << 20))
    print("ready", flush=True)
    step = 0
    while True:
        step += 1
        big[:8] = step.to_bytes(8, "big")  # a new 4 MiB blob per step
        big[8:16] = rng.getrandbits(64).to_bytes(8, "big")
        layers = [("application/octet-stream", bytes(big)), ("application/json", f'{{"s":{step}}}'.encode())]
        digest = store_generic(registry, layers)
        slot = rng.randrange(8)
        op = rng.random()
        if op < 0.5:
            registry.publish(f"example.com/crash/s{seed}:{step}", digest)
        elif op < 0.85:
            registry.replace(f"example.com/crash/slot:{slot}", digest)
        else:
            registry.remove(f"example.com/crash/slot:{slot}")


def main(argv: list[str]) -> None:
    mode, root = argv[0], Path(argv[1])
    if mode == "publish":
        _publish(root, int(argv[2]), int(argv[3]))
    elif mode == "read":
        _read(root, Path(argv[2]))
    elif mode == "churn":
        _churn(root, int(argv[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
