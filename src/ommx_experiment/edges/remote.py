"""Push and pull OMMX artifacts to and from remote OCI registries (distribution API v2).

Entry points: :func:`push_artifact` (used by ``Artifact.push``) and
:func:`pull_artifact` (used by ``Artifact.load`` when a ref is missing locally).
The wire (authentication, retries, error mapping) is
:class:`~ommx_experiment.edges.remote_http.RegistryClient`'s.

Blobs move :func:`transfer_concurrency` at a time (``OMMX_ARTIFACT_TRANSFER_CONCURRENCY``,
default 8; OMMX 3's is 4), each worker thread on its own HTTP session that starts with the
token the first request obtained; one progress line (blobs and bytes) is drawn on a
terminal for a transfer that lasts more than a second.

Push uploads the config and layer blobs the remote lacks (``HEAD`` first), each
streamed from the CAS file in chunks as one monolithic ``PUT`` with a
``Content-Length`` (memory bounded whatever the size), then ``PUT``s the manifest
bytes verbatim so the remote digest equals ours. The ``subject`` is not pushed.

Pull ``GET``s the manifest, checks its digest (against ``@digest`` and
``Docker-Content-Digest``) and its OMMX ``artifactType``, streams config and layers
into the registry's staging area with digest and size checks, validates
experiments (:func:`~ommx_experiment.format.codec.validate_experiment_artifact`), and
only then publishes blobs, manifest and ref: a failed pull leaves no ref and no
temp files.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from .. import media_types as mt
from ..engine.digest import sha256_digest
from ..engine.names import ImageName
from ..errors import (
    InvalidArtifactError,
    InvalidInputError,
    InvalidRemoteArtifactError,
    RefConflictError,
    RegistryError,
    RemoteArtifactError,
    RemoteArtifactNotFoundError,
)
from .progress import Advance, TransferProgress, transfer_progress
from .remote_http import RegistryClient

if TYPE_CHECKING:
    from ..engine.blobstore import StagedBlob, Staging
    from ..engine.oci import Descriptor, Manifest
    from ..engine.registry import LocalRegistry

__all__ = ["pull_artifact", "push_artifact", "transfer_concurrency"]

log = logging.getLogger(__name__)

CONCURRENCY_ENV = "OMMX_ARTIFACT_TRANSFER_CONCURRENCY"
# OMMX 3's default is 4 (rust/ommx/src/artifact/remote_transport.rs). A transfer of many small
# blobs waits on the registry's per-request latency, not on bandwidth: a 2,000-blob pull from a
# loopback docker-registry on a busy 2-core machine took 11-15 s at 4, 11-12 s at 8, 9-10 s at 16.
DEFAULT_CONCURRENCY = 8
HEAD_PROBE = 8  # blobs checked with HEAD before a push that found none stops checking small ones
SMALL_BLOB = 1 << 20  # bytes: up to this, an upload without a HEAD is cheap enough

_T = TypeVar("_T")
_R = TypeVar("_R")


def transfer_concurrency() -> int:
    """Blobs in flight per push or pull: ``OMMX_ARTIFACT_TRANSFER_CONCURRENCY`` (a positive
    integer, as OMMX 3 reads it), else :data:`DEFAULT_CONCURRENCY`. Anything else raises ``InvalidInputError``."""
    value = os.environ.get(CONCURRENCY_ENV)
    if value is None:
        return DEFAULT_CONCURRENCY
    digits = value[1:] if value.startswith("+") else value
    if not (digits.isascii() and digits.isdigit()) or int(digits) == 0:
        raise InvalidInputError(f"{CONCURRENCY_ENV} must be a positive integer, got {value!r}")
    return int(digits)


def _in_parallel(
    client: RegistryClient, items: Sequence[_T], work: Callable[[RegistryClient, _T], _R], workers: int
) -> list[_R]:
    """``work(client, item)`` for every item, ``workers`` at a time, results in item order.

    Each worker thread uses its own fork of ``client``. The first failure cancels what has
    not started, waits for what has, and is raised.
    """
    if workers <= 1 or len(items) <= 1:
        return [work(client, item) for item in items]
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    local = threading.local()
    forks: list[RegistryClient] = []
    guard = threading.Lock()

    def run(item: _T) -> _R:
        mine = getattr(local, "client", None)
        if mine is None:
            mine = local.client = client.fork()
            with guard:
                forks.append(mine)
        return work(mine, item)

    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="oxe-transfer")
    try:
        futures = [pool.submit(run, item) for item in items]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception() is not None), None)
        if failed is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            raise failed.exception()  # type: ignore[misc]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for fork in forks:
            fork.close()


# --- public entry points -------------------------------------------------------------


def push_artifact(
    registry: LocalRegistry, image_name: ImageName | str, manifest_digest: str, *, quiet: bool = False
) -> str:
    """Push the stored manifest ``manifest_digest`` and its config/layers to ``image_name``.

    Returns the manifest digest, which the remote confirmed. Raises
    ``RemoteArtifactError`` for ``.local`` names (rename first), ``BlobNotFoundError``
    when the local closure is incomplete, and the ``RemoteArtifactError`` tree for
    remote failures.
    """
    image = ImageName.parse(image_name)
    _refuse_local(image, "push")
    if image.digest is not None and image.digest != manifest_digest:
        raise InvalidInputError(f"Cannot push manifest {manifest_digest} as {image}: the name pins another digest")
    manifest_bytes, manifest = _local_manifest(registry, manifest_digest)
    blobs = _unique_blobs(manifest)
    for desc in blobs:
        if registry.blobs.size(desc.digest) != desc.size:
            raise RegistryError(f"Cannot push {image}: local blob {desc.digest} does not have {desc.size} bytes")
    workers = transfer_concurrency()
    with RegistryClient(image) as client, transfer_progress(
        "push", len(blobs), sum(d.size for d in blobs), quiet=quiet
    ) as progress:

        probe = _HeadProbe()

        def push_one(session: RegistryClient, desc: Descriptor) -> None:
            if probe.wanted(desc.size) and probe.seen(session.blob_exists(desc.digest)):
                log.debug("push %s: blob %s already on the remote", image, desc.digest)
                progress.advance(desc.size)
            else:
                session.upload_blob(desc.digest, desc.size, _chunk_source(registry, desc.digest, progress.advance))
            progress.blob_done()

        push_one(client, blobs[0])  # the first request authenticates; the workers start with its token
        _in_parallel(client, blobs[1:], push_one, workers)
        remote = client.put_manifest(image.tag or manifest_digest, manifest_bytes)
    if remote is not None and remote != manifest_digest:
        raise InvalidRemoteArtifactError(
            f"Registry {image.domain} stored {image} as {remote}, not {manifest_digest}: it re-serialised the manifest"
        )
    return manifest_digest


def pull_artifact(registry: LocalRegistry, image: ImageName | str, *, quiet: bool = False) -> str:
    """Pull ``image`` into ``registry``, all or nothing; returns the manifest digest.

    Raises ``RefConflictError`` if the local ref points to another manifest,
    ``InvalidRemoteArtifactError`` for a manifest that is not an OMMX artifact or
    any digest/size mismatch, and the rest of the ``RemoteArtifactError`` tree.
    """
    name = ImageName.parse(image)
    _refuse_local(name, "pull")
    with RegistryClient(name) as client:
        data, header_digest = client.get_manifest(name.reference)
        digest = _verified_manifest_digest(name, data, header_digest)
        manifest = _parse_remote_manifest(name, data, digest)
        current = registry.resolve(name)
        if current is not None and current != digest:
            raise RefConflictError(f"Cannot pull {name}: local ref points to {current}, remote to {digest}")
        with registry.blobs.staging() as staging:
            staged = _download_blobs(client, registry, staging, manifest, name, quiet)
            config_bytes = _experiment_config(registry, staged, manifest, name)
            _publish(registry, staging, staged, name, data, digest, config_bytes)
    return digest


# --- push helpers ---------------------------------------------------------------------------


def _refuse_local(image: ImageName, verb: str) -> None:
    if not image.is_local:
        return
    why = (
        "`.local` names (anonymous and checkpoint artifacts) never leave this machine; rename it to a "
        "registry name (e.g. ghcr.io/<org>/<name>:<tag>) first"
    )
    error = RemoteArtifactError if verb == "push" else RemoteArtifactNotFoundError
    raise error(f"Cannot {verb} {image}: {why}")


def _local_manifest(registry: LocalRegistry, digest: str) -> tuple[bytes, Manifest]:
    from ..engine.oci import Manifest

    data, _ = registry.read_manifest(digest)
    return data, Manifest.parse(data)


def _unique_blobs(manifest: Manifest) -> list[Descriptor]:
    seen: dict[str, Descriptor] = {}
    for desc in (manifest.config, *manifest.layers):
        seen.setdefault(desc.digest, desc)
    return list(seen.values())


class _HeadProbe:
    """Whether a blob is worth a ``HEAD`` before its upload (thread-safe).

    Every blob is checked until :data:`HEAD_PROBE` checks found none on the remote (a new
    artifact); from then on blobs of at most :data:`SMALL_BLOB` bytes are uploaded without a
    check: re-uploading a small blob the remote has is correct and costs about what its
    ``HEAD`` does, while checking every blob of a fresh push costs one request in three.
    Larger blobs are always checked. One blob found present keeps the checks on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checks = 0
        self._hits = 0

    def wanted(self, size: int) -> bool:
        with self._lock:
            return size > SMALL_BLOB or self._hits > 0 or self._checks < HEAD_PROBE

    def seen(self, present: bool) -> bool:
        with self._lock:
            self._checks += 1
            self._hits += present
        return present


def _chunk_source(registry: LocalRegistry, digest: str, advance: Advance) -> Callable[[], Iterable[bytes]]:
    def chunks() -> Iterator[bytes]:
        for chunk in registry.blobs.iter_chunks(digest):  # verifies: a corrupt local blob fails the PUT
            advance(len(chunk))
            yield chunk

    return chunks


# --- pull helpers ---------------------------------------------------------------------------


def _verified_manifest_digest(image: ImageName, data: bytes, header_digest: str | None) -> str:
    digest = sha256_digest(data)
    if image.digest is not None and image.digest != digest:
        raise InvalidRemoteArtifactError(f"Manifest of {image} from {image.domain} hashes to {digest}")
    if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
        raise InvalidRemoteArtifactError(
            f"Manifest of {image} hashes to {digest} but {image.domain} announced {header_digest}"
        )
    return digest


def _parse_remote_manifest(image: ImageName, data: bytes, digest: str) -> Manifest:
    from ..engine.oci import Manifest

    try:
        manifest = Manifest.parse(data)
    except InvalidArtifactError as exc:
        raise InvalidRemoteArtifactError(f"{image} ({digest}) is not a valid OCI image manifest: {exc}") from exc
    if manifest.artifact_type not in mt.OMMX_ARTIFACT_TYPES:
        raise InvalidRemoteArtifactError(
            f"{image} ({digest}) has artifactType {manifest.artifact_type!r}; expected one of "
            f"{sorted(mt.OMMX_ARTIFACT_TYPES)}: it is not an OMMX artifact"
        )
    return manifest


def _download_blobs(
    client: RegistryClient,
    registry: LocalRegistry,
    staging: Staging,
    manifest: Manifest,
    image: ImageName,
    quiet: bool,
) -> dict[str, StagedBlob | None]:
    """Stage every blob not already stored (``transfer_concurrency()`` at a time); ``None`` marks
    a blob reused from the CAS."""
    blobs = _unique_blobs(manifest)
    staged: dict[str, StagedBlob | None] = {}
    missing = []
    for desc in blobs:
        if registry.blobs.exists(desc.digest) and registry.blobs.size(desc.digest) == desc.size:
            staged[desc.digest] = None
        else:
            missing.append(desc)
    with transfer_progress("pull", len(missing), sum(d.size for d in missing), quiet=quiet) as progress:
        fetched = _in_parallel(
            client, missing, lambda session, desc: _download_one(session, staging, desc, image, progress),
            transfer_concurrency(),
        )
    staged.update(zip((d.digest for d in missing), fetched, strict=True))
    return {d.digest: staged[d.digest] for d in blobs}


def _download_one(
    client: RegistryClient, staging: Staging, desc: Descriptor, image: ImageName, progress: TransferProgress
) -> StagedBlob:
    chunks = client.blob_chunks(desc.digest, desc.size, progress.advance)
    try:
        blob = staging.add_chunks(
            chunks, expected_digest=desc.digest, max_size=desc.size, source=f"{image} on {image.domain}"
        )
    except RegistryError as exc:  # DigestMismatchError, size overflow
        raise InvalidRemoteArtifactError(f"Pull of {image} failed for blob {desc.digest}: {exc}") from exc
    if blob.size != desc.size:
        raise InvalidRemoteArtifactError(
            f"Pull of {image} failed: blob {desc.digest} has {blob.size} bytes, manifest declares {desc.size}"
        )
    progress.blob_done()
    return blob


def _experiment_config(
    registry: LocalRegistry, staged: dict[str, StagedBlob | None], manifest: Manifest, image: ImageName
) -> bytes | None:
    """The verified config bytes of an experiment after the full §5 validation, else None."""
    if manifest.artifact_type != mt.EXPERIMENT_ARTIFACT_TYPE:
        return None
    from ..format.codec import validate_experiment_artifact
    from ..format.parquet_trust import note_received_parquet

    def read(desc: Descriptor) -> bytes:
        blob = staged.get(desc.digest)
        return blob.path.read_bytes() if blob is not None else registry.blobs.get(desc.digest)

    try:
        config_bytes = validate_experiment_artifact(manifest, read)
    except InvalidArtifactError as exc:
        raise InvalidRemoteArtifactError(f"{image} is not a valid OMMX experiment: {exc}") from exc
    note_received_parquet(registry.db, manifest, config_bytes)
    return config_bytes


def _publish(
    registry: LocalRegistry,
    staging: Staging,
    staged: dict[str, StagedBlob | None],
    image: ImageName,
    data: bytes,
    digest: str,
    config_bytes: bytes | None,
) -> None:
    blobs = {**staged, digest: staging.add_bytes(data, expected_digest=digest, source=f"{image} manifest")}
    registry.publish_staged(image, digest, staging, blobs, config_bytes=config_bytes)
    log.info("pulled %s (%s, %d blobs)", image, digest, len(staged))
