"""Push and pull OMMX artifacts to and from remote OCI registries (distribution API v2).

Entry points: :func:`push_artifact` (used by ``Artifact.push``) and
:func:`pull_artifact` (used by ``Artifact.load`` when a ref is missing locally).
The wire (authentication, retries, error mapping) is
:class:`~ommx_experiment.edges.remote_http.RegistryClient`'s.

Push uploads the config and layer blobs the remote lacks (``HEAD`` first), each
streamed from the CAS file in 1 MiB chunks as one monolithic ``PUT`` with a
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
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

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
from .progress import Advance, transfer_progress
from .remote_http import RegistryClient

if TYPE_CHECKING:
    from ..engine.blobstore import StagedBlob, Staging
    from ..engine.oci import Descriptor, Manifest
    from ..engine.registry import LocalRegistry

__all__ = ["pull_artifact", "push_artifact"]

log = logging.getLogger(__name__)


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
    with RegistryClient(image) as client:
        for desc in blobs:
            if client.blob_exists(desc.digest):
                log.debug("push %s: blob %s already on the remote", image, desc.digest)
                continue
            with transfer_progress(f"push {desc.digest[7:19]}", desc.size, quiet=quiet) as advance:
                client.upload_blob(desc.digest, desc.size, _chunk_source(registry, desc.digest, advance))
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
    """Stage every blob not already stored; ``None`` marks a blob reused from the CAS."""
    staged: dict[str, StagedBlob | None] = {}
    for desc in _unique_blobs(manifest):
        if registry.blobs.exists(desc.digest) and registry.blobs.size(desc.digest) == desc.size:
            staged[desc.digest] = None
            continue
        with transfer_progress(f"pull {desc.digest[7:19]}", desc.size, quiet=quiet) as advance:
            chunks = client.blob_chunks(desc.digest, desc.size, advance)
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
        staged[desc.digest] = blob
    return staged


def _experiment_config(
    registry: LocalRegistry, staged: dict[str, StagedBlob | None], manifest: Manifest, image: ImageName
) -> bytes | None:
    """The verified config bytes of an experiment after the full §5 validation, else None."""
    if manifest.artifact_type != mt.EXPERIMENT_ARTIFACT_TYPE:
        return None
    from ..format.codec import validate_experiment_artifact

    def read(desc: Descriptor) -> bytes:
        blob = staged.get(desc.digest)
        return blob.path.read_bytes() if blob is not None else registry.blobs.get(desc.digest)

    try:
        return validate_experiment_artifact(manifest, read)
    except InvalidArtifactError as exc:
        raise InvalidRemoteArtifactError(f"{image} is not a valid OMMX experiment: {exc}") from exc


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
