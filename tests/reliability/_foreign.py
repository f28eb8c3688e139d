"""Build foreign ``.ommx`` archives and OCI layout directories by hand (our codecs + tar writer)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ommx_experiment import media_types as mt
from ommx_experiment.engine.digest import sha256_digest
from ommx_experiment.engine.oci import Descriptor, FrozenMap, Manifest, image_index_bytes
from ommx_experiment.format.run_params import encode_msgpack
from ommx_experiment.format.tarstream import END_OF_ARCHIVE, write_entry

LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


def experiment_blobs(
    config: dict[str, Any] | bytes,
    payloads: list[tuple[str, bytes]],
    *,
    annotations: dict[str, str] | None = None,
    extra_layers: list[tuple[str, bytes, dict[str, str]]] = (),  # type: ignore[assignment]
) -> tuple[bytes, dict[str, bytes]]:
    """``(manifest bytes, {digest: bytes})`` of an experiment artifact with these layers, in order."""
    blobs: dict[str, bytes] = {}
    layers = []
    for media_type, data in payloads:
        blobs[sha256_digest(data)] = data
        layers.append(Descriptor(media_type, sha256_digest(data), len(data)))
    for media_type, data, ann in extra_layers:
        blobs[sha256_digest(data)] = data
        layers.append(Descriptor(media_type, sha256_digest(data), len(data), FrozenMap(ann)))
    config_bytes = config if isinstance(config, bytes) else json.dumps(config, separators=(",", ":")).encode()
    blobs[sha256_digest(config_bytes)] = config_bytes
    manifest = Manifest(
        mt.EXPERIMENT_ARTIFACT_TYPE,
        Descriptor(mt.EXPERIMENT_CONFIG, sha256_digest(config_bytes), len(config_bytes)),
        tuple(layers),
        None,
        FrozenMap(annotations or {}),
    )
    data = manifest.to_bytes()
    blobs[sha256_digest(data)] = data
    return data, blobs


def simple_experiment(filenames: dict[str, str] | None = None, run_filenames: dict[str, str] | None = None) -> tuple[bytes, dict[str, bytes]]:
    """One experiment attachment ``doc``, one run with attachment ``rf`` and param ``a``."""
    attachments: dict[str, Any] = {"entries": {"doc": 0}}
    if filenames:
        attachments["filenames"] = filenames
    run_attachments: dict[str, Any] = {"entries": {"rf": 1}}
    if run_filenames:
        run_attachments["filenames"] = run_filenames
    config = {
        "status": "finished",
        "attachments": attachments,
        "runs": [{"run_id": 0, "status": "finished", "attachments": run_attachments, "solves": [], "samplings": []}],
        "run_parameters": 2,
    }
    payloads = [
        (mt.OCTET_STREAM, b"experiment doc"),
        (mt.OCTET_STREAM, b"run file"),
        (mt.RUN_PARAMETERS, encode_msgpack({0: {"a": 1}}, [0])),
    ]
    return experiment_blobs(config, payloads)


def write_archive(path: Path, manifest: bytes, blobs: dict[str, bytes], ref: str | None) -> Path:
    digest = sha256_digest(manifest)
    with open(path, "wb") as out:
        write_entry(out, "oci-layout", LAYOUT)
        write_entry(out, f"blobs/sha256/{digest[7:]}", manifest)
        for d, data in blobs.items():
            if d != digest:
                write_entry(out, f"blobs/sha256/{d[7:]}", data)
        write_entry(out, "index.json", image_index_bytes([(Descriptor(mt.OCI_MANIFEST, digest, len(manifest)), ref)]))
        out.write(END_OF_ARCHIVE)
    return path


def write_layout(folder: Path, manifest: bytes, blobs: dict[str, bytes], ref: str | None) -> Path:
    digest = sha256_digest(manifest)
    (folder / "blobs" / "sha256").mkdir(parents=True)
    (folder / "oci-layout").write_bytes(LAYOUT)
    for d, data in {**blobs, digest: manifest}.items():
        (folder / "blobs" / "sha256" / d[7:]).write_bytes(data)
    index = image_index_bytes([(Descriptor(mt.OCI_MANIFEST, digest, len(manifest)), ref)])
    (folder / "index.json").write_bytes(index)
    return folder


def snapshot(top: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mode)}`` of everything under ``top`` except the ``skip`` tree."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = here / name
            if p == skip:
                continue
            st = os.lstat(p)
            out[str(p.relative_to(top))] = (st.st_size if not p.is_dir() else 0, st.st_mode)
    return out
