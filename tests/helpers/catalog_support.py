"""Builders shared by the catalog/maintenance/gc tests (no tests here).

Experiments are assembled with the storage engine and the codecs directly, so the
tests exercise real artifacts in a real registry without depending on the
``Experiment`` session API.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ommx_experiment import media_types as mt
from ommx_experiment.engine.names import ImageName, checkpoint_name
from ommx_experiment.engine.oci import Descriptor, FrozenMap, Manifest
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.format.content import (
    AttachmentContent,
    ExperimentContent,
    RunContent,
    SolveContent,
    build_experiment,
)
from ommx_experiment.format.run_params import encode_msgpack


def put(registry: LocalRegistry, media_type: str, data: bytes) -> Descriptor:
    """Store ``data`` and return its descriptor."""
    registry.blobs.put_bytes(data)
    return Descriptor.for_blob(media_type, data)


def experiment_manifest(
    registry: LocalRegistry,
    *,
    runs: int = 1,
    solves: int = 0,
    status: str = "finished",
    reason: str | None = None,
    requested: str | None = None,
    annotations: dict[str, str] | None = None,
    subject: Descriptor | None = None,
    seed: int = 0,
    attachment: bytes | None = None,
) -> tuple[str, bytes, bytes]:
    """Store one experiment's blobs; returns ``(manifest digest, manifest bytes, config bytes)``."""
    run_ids = list(range(runs))
    run_params = put(registry, mt.RUN_PARAMETERS, encode_msgpack({i: {"seed": seed + i} for i in run_ids}, run_ids))
    run_contents = []
    for run_id in run_ids:
        calls = tuple(
            SolveContent(
                call_id=s,
                status="failed",
                input=put(registry, mt.V2_INSTANCE, f"instance {seed} {run_id} {s}".encode()),
                output=None,
                adapter="tests.FakeAdapter",
            )
            for s in range(solves)
        )
        run_contents.append(RunContent(run_id=run_id, solves=calls))
    attachments = AttachmentContent()
    if attachment is not None:
        attachments = AttachmentContent({"blob": put(registry, mt.OCTET_STREAM, attachment)})
    content = ExperimentContent(attachments, tuple(run_contents), run_params)
    layers, config = build_experiment(content, status=status, reason=reason, requested_image_name=requested)
    config_bytes = config.to_bytes()
    config_desc = put(registry, mt.EXPERIMENT_CONFIG, config_bytes)
    manifest = Manifest(mt.EXPERIMENT_ARTIFACT_TYPE, config_desc, layers, subject, FrozenMap(annotations or {}))
    manifest_bytes = manifest.to_bytes()
    return put(registry, mt.OCI_MANIFEST, manifest_bytes).digest, manifest_bytes, config_bytes


def commit_experiment(registry: LocalRegistry, name: str, *, cache: bool = True, **kwargs: object) -> str:
    """Store an experiment and publish ``name`` to it; returns the manifest digest."""
    digest, _, config_bytes = experiment_manifest(registry, **kwargs)  # type: ignore[arg-type]
    registry.publish(name, digest, config_bytes=config_bytes if cache else None)
    if not cache:
        drop_cache_rows(registry.root)
    return digest


def commit_checkpoint(registry: LocalRegistry, requested: str, *, status: str = "draft", **kwargs: object) -> str:
    """Write an OMMX-format checkpoint of ``requested`` (replace semantics); returns the digest."""
    canonical = str(ImageName.parse(requested))
    reason = "ValueError: boom" if status in ("failed", "interrupted") else None
    digest, _, config_bytes = experiment_manifest(
        registry, status=status, reason=reason, requested=canonical, **kwargs  # type: ignore[arg-type]
    )
    registry.replace(checkpoint_name(registry.registry_id, ImageName.parse(canonical)), digest, config_bytes=config_bytes)
    return digest


def commit_generic(registry: LocalRegistry, name: str, payload: bytes = b'{"a": 1}') -> str:
    """A generic ``org.ommx.v1.artifact`` with one JSON layer; returns the manifest digest."""
    config = put(registry, mt.OCI_EMPTY_CONFIG, mt.OCI_EMPTY_CONFIG_BYTES)
    layer = put(registry, mt.JSON, payload)
    manifest = Manifest(mt.GENERIC_ARTIFACT_TYPE, config, (layer,))
    digest = put(registry, mt.OCI_MANIFEST, manifest.to_bytes()).digest
    registry.publish(name, digest)
    return digest


def sql(root: Path, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement on the registry's SQLite file with a separate connection (autocommit)."""
    conn = sqlite3.connect(root / "index.sqlite3", isolation_level=None, timeout=30)
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


def drop_cache_rows(root: Path) -> None:
    """Delete every OMMX cache row (as a root written by a cache-less foreign writer)."""
    sql(root, "DELETE FROM artifact_manifests")
    sql(root, "DELETE FROM experiment_configs")


def cache_counts(root: Path) -> tuple[int, int]:
    """``(artifact_manifests rows, experiment_configs rows)``."""
    return (
        int(sql(root, "SELECT COUNT(*) FROM artifact_manifests")[0][0]),
        int(sql(root, "SELECT COUNT(*) FROM experiment_configs")[0][0]),
    )
