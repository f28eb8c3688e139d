"""Read-only artifact handles (:class:`Artifact`) and generic artifact drafts (:class:`ArtifactDraft`).

An :class:`Artifact` names one manifest in one :class:`LocalRegistry`. It keeps a
reference to that registry and to an optional *keep-alive* object (e.g. the
holder of a temporary registry), so whatever backs the handle lives as long as
the handle. Generic artifacts (``application/org.ommx.v1.artifact``) use the OCI
empty config, as OMMX 3 does.
"""

from __future__ import annotations

import importlib
import io
import json
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .. import media_types as mt
from ..engine.digest import is_valid_digest
from ..engine.names import ImageName, anonymous_artifact_name
from ..engine.oci import Descriptor, FrozenMap, Manifest
from ..engine.registry import LocalRegistry
from ..engine.text import check_annotation_text, check_text
from ..errors import (
    BlobNotFoundError,
    DigestMismatchError,
    InvalidArtifactError,
    InvalidInputError,
    LifecycleError,
    RemoteArtifactError,
    RemoteArtifactNotFoundError,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping

    import pandas as pd

    from ..format.archive import ArchiveManifest


def _remote() -> ModuleType | None:
    """``ommx_experiment.edges.remote`` if it is installed (it is optional at this layer)."""
    try:
        return importlib.import_module("ommx_experiment.edges.remote")
    except ModuleNotFoundError as exc:
        if exc.name == "ommx_experiment.edges.remote":
            return None
        raise


class Artifact:
    """A read-only view of one manifest stored in a Local Registry.

    Obtain one with :meth:`load`, :meth:`import_archive`, :meth:`ArtifactDraft.commit`
    or from an Experiment. Blob reads are verified against their digests.
    Handles compare equal when they name the same registry root, digest and ref.
    """

    __slots__ = ("_registry", "_image", "_digest", "_manifest_bytes", "_manifest", "_keep_alive")
    _registry: LocalRegistry
    _image: ImageName
    _digest: str
    _manifest_bytes: bytes
    _manifest: Manifest
    _keep_alive: object

    def __init__(self) -> None:
        raise TypeError("Artifact handles come from Artifact.load, Artifact.import_archive or ArtifactDraft.commit")

    @classmethod
    def _open(
        cls,
        registry: LocalRegistry,
        image_name: ImageName | str,
        manifest_digest: str,
        *,
        keep_alive: object = None,
        parsed: tuple[Manifest, bytes] | None = None,
    ) -> Artifact:
        """Internal constructor: read and parse the (verified) manifest blob.

        ``parsed``: the manifest of ``manifest_digest`` and its exact bytes as the caller
        built or parsed them (a commit's): neither read nor parsed again.
        """
        if parsed is None:
            data = registry.blobs.get(manifest_digest)
            manifest = Manifest.parse(data)
        else:
            manifest, data = parsed
        self = object.__new__(cls)
        self._registry = registry
        self._image = ImageName.parse(image_name)
        self._digest = manifest_digest
        self._manifest_bytes = data
        self._manifest = manifest
        self._keep_alive = keep_alive
        return self

    # --- identity ------------------------------------------------------------------------------

    @property
    def registry(self) -> LocalRegistry:
        return self._registry

    @property
    def image_name(self) -> str:
        """The canonical ref name this handle was opened under."""
        return str(self._image)

    @property
    def manifest_digest(self) -> str:
        return self._digest

    def __repr__(self) -> str:
        return f"Artifact(image_name={self.image_name!r}, manifest_digest={self._digest!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Artifact):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[str, str, str]:
        return (str(self._registry.root), self._digest, str(self._image))

    # --- manifest ------------------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def manifest_bytes(self) -> bytes:
        """The exact stored manifest bytes (hash to :attr:`manifest_digest`)."""
        return self._manifest_bytes

    @property
    def artifact_type(self) -> str | None:
        return self._manifest.artifact_type

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self._manifest.annotations)

    @property
    def layers(self) -> list[Descriptor]:
        """Every manifest layer, in manifest order (including layers no config refers to)."""
        return list(self._manifest.layers)

    @property
    def config(self) -> Descriptor:
        return self._manifest.config

    @property
    def subject(self) -> Descriptor | None:
        return self._manifest.subject

    def get_layer_descriptor(self, digest: str) -> Descriptor:
        """The first layer with ``digest``; ``ValueError`` "Invalid layer digest", ``KeyError`` if absent."""
        if not is_valid_digest(digest):
            raise InvalidInputError(f"Invalid layer digest: {digest!r}")
        for layer in self._manifest.layers:
            if layer.digest == digest:
                return layer
        raise KeyError(digest)

    # --- blobs ---------------------------------------------------------------------------------

    def get_blob(self, descriptor: Descriptor | str) -> bytes:
        """The verified bytes of a blob (a descriptor or a digest).

        Raises ``BlobNotFoundError`` ("Failed to read blob ...") when it is absent and
        ``DigestMismatchError`` when the stored bytes do not hash to the digest.
        """
        digest = descriptor.digest if isinstance(descriptor, Descriptor) else descriptor
        data = self._registry.blobs.get(digest)
        if isinstance(descriptor, Descriptor) and len(data) != descriptor.size:
            raise DigestMismatchError(f"Blob {digest} has {len(data)} bytes, the descriptor says {descriptor.size}")
        return data

    def get_json(self, descriptor: Descriptor) -> Any:
        """``json.loads`` of an ``application/json`` layer (``ValueError`` for another media type)."""
        _expect_media_type(descriptor, mt.JSON)
        return json.loads(self.get_blob(descriptor))

    def get_dataframe(self, descriptor: Descriptor) -> pd.DataFrame:
        """``pandas.read_parquet`` of an ``application/vnd.apache.parquet`` layer."""
        import pandas as pd

        _expect_media_type(descriptor, mt.PARQUET)
        return pd.read_parquet(io.BytesIO(self.get_blob(descriptor)))

    def get_ndarray(self, descriptor: Descriptor) -> Any:
        """``numpy.load`` of an ``application/vnd.numpy`` layer (pickles refused)."""
        import numpy as np

        _expect_media_type(descriptor, mt.NUMPY)
        return np.load(io.BytesIO(self.get_blob(descriptor)), allow_pickle=False)

    # --- export --------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a ``.ommx`` archive (§4.9) at ``path``; fails if the file exists."""
        from ..format import archive  # loaded by the archive paths only (tar reader/writer)

        archive.write_archive(self._registry, self._digest, self.image_name, path)

    def push(self) -> None:
        """Push to the remote registry named by :attr:`image_name`."""
        remote = _remote()
        if remote is None:
            raise LifecycleError(f"Cannot push {self.image_name}: remote support (ommx_experiment.edges.remote) is missing")
        remote.push_artifact(self._registry, self._image, self._digest)

    # --- constructors --------------------------------------------------------------------------

    @staticmethod
    def load(image_name: str) -> Artifact:
        """Open ``image_name`` from the default registry, pulling it first if it is missing or incomplete.

        Every blob of the returned artifact's closure was found with its declared size: checked here
        (``verify_closure``), or by the ref write that published the pulled copy.
        """
        image = ImageName.parse(image_name)
        registry = LocalRegistry.default()
        digest = registry.resolve(image)
        incomplete: BlobNotFoundError | None = None
        if digest is not None:
            try:
                registry.verify_closure(digest)
            except BlobNotFoundError as exc:
                digest, incomplete = None, exc
        if digest is None:
            try:
                digest = _pull(registry, image)
            except RemoteArtifactError as exc:
                if incomplete is None:
                    raise
                # The local damage is the news; the failed repair attempt is context.
                raise BlobNotFoundError(f"{incomplete} (local copy of {image} is incomplete; pulling it failed: {exc})") from exc
        return Artifact._open(registry, image, digest)

    @staticmethod
    def import_archive(path: str | os.PathLike[str]) -> Artifact:
        """Import a ``.ommx`` file or an OCI layout directory into the default registry."""
        from ..format import archive

        registry = LocalRegistry.default()
        image, digest = archive.import_path(registry, path)
        return Artifact._open(registry, image, digest)

    @staticmethod
    def inspect_archive(path: str | os.PathLike[str]) -> ArchiveManifest:
        """Ref name and manifest of an archive or layout directory, without any registry write."""
        from ..format import archive

        return archive.inspect_archive(path)


def _pull(registry: LocalRegistry, image: ImageName) -> str:
    remote = _remote()
    if remote is None or image.is_local:
        why = "`.local` names are never pulled" if image.is_local else "ommx_experiment.edges.remote is missing"
        raise RemoteArtifactNotFoundError(
            f"Artifact {image} is not in the Local Registry at {registry.root} and cannot be pulled: {why}"
        )
    return str(remote.pull_artifact(registry, image))


def _expect_media_type(descriptor: Descriptor, expected: str) -> None:
    if descriptor.media_type != expected:
        raise InvalidInputError(f"Expected media type '{expected}', got '{descriptor.media_type}'")


def publish_manifest(
    registry: LocalRegistry,
    image: ImageName | str,
    manifest: Manifest,
    *,
    config_bytes: bytes | None,
    keep_alive: object = None,
) -> Artifact:
    """Store ``manifest.to_bytes()``, publish ``image`` to it and return a handle.

    The config and layer blobs must already be stored (``config_bytes``, when
    given, is stored again idempotently and fills OMMX's config cache row).
    Publish semantics: ``RefConflictError`` if ``image`` points elsewhere.
    """
    with registry.publish_window():  # no GC between the manifest write and the ref (closure checked there)
        if config_bytes is not None:
            registry.blobs.put_bytes(config_bytes, expected_digest=manifest.config.digest)
        for desc in (manifest.config, *manifest.layers):
            if registry.blobs.size(desc.digest) != desc.size:
                raise InvalidArtifactError(
                    f"Cannot publish {image}: blob {desc.digest} is stored with a size other than {desc.size}"
                )
        stored = registry.blobs.put_bytes(manifest.to_bytes())
        registry.publish(image, stored.digest, config_bytes=config_bytes)
    return Artifact._open(registry, image, stored.digest, keep_alive=keep_alive)


class ArtifactDraft:
    """A generic OMMX artifact being assembled; :meth:`commit` publishes it once.

    Layer blobs are stored as they are added; the manifest (artifactType
    ``application/org.ommx.v1.artifact``, OCI empty config) is written at commit.
    """

    def __init__(self, registry: LocalRegistry, image: ImageName, *, keep_alive: object = None) -> None:
        self._registry = registry
        self._image = image
        self._keep_alive = keep_alive
        self._layers: list[Descriptor] = []
        self._annotations: dict[str, str] = {}
        self._committed = False

    @classmethod
    def new(cls, image_name: str, *, registry: LocalRegistry | None = None) -> ArtifactDraft:
        """A draft to be published as ``image_name`` (default registry unless given)."""
        image = ImageName.parse(image_name)
        return cls(registry or LocalRegistry.default(), image)

    @classmethod
    def new_anonymous(cls, *, registry: LocalRegistry | None = None) -> ArtifactDraft:
        """A draft named ``<id8>.ommx.local/anonymous:<timestamp>-<nonce>``."""
        registry = registry or LocalRegistry.default()
        return cls(registry, anonymous_artifact_name(registry.registry_id))

    @property
    def image_name(self) -> str:
        return str(self._image)

    def _check_open(self) -> None:
        if self._committed:
            raise LifecycleError("Already committed artifact")

    def add_layer(self, media_type: str, blob: bytes, annotations: Mapping[str, str] | None = None) -> Descriptor:
        """Store ``blob`` and append it as a layer; returns its descriptor."""
        self._check_open()
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise TypeError(f"blob must be bytes, got {type(blob).__name__}")
        check_text(media_type, "layer media type")
        for key, value in (annotations or {}).items():
            check_annotation_text(key, value)
        stored = self._registry.blobs.put_bytes(bytes(blob))
        desc = Descriptor(media_type, stored.digest, stored.size, FrozenMap(annotations or {}))
        self._layers.append(desc)
        return desc

    def add_json(
        self, obj: Any, *, annotation_namespace: str = mt.USER_ANNOTATION_PREFIX, **annotations: str
    ) -> Descriptor:
        """Add ``json.dumps(obj)`` (Python defaults, as OMMX) as an ``application/json`` layer."""
        data = json.dumps(obj).encode("utf-8")
        return self.add_layer(mt.JSON, data, _user_annotations(annotation_namespace, annotations))

    def add_dataframe(
        self, df: pd.DataFrame, *, annotation_namespace: str = mt.USER_ANNOTATION_PREFIX, **annotations: str
    ) -> Descriptor:
        """Add ``df.to_parquet()`` as an ``application/vnd.apache.parquet`` layer."""
        buffer = io.BytesIO()
        df.to_parquet(buffer)
        return self.add_layer(mt.PARQUET, buffer.getvalue(), _user_annotations(annotation_namespace, annotations))

    def add_ndarray(
        self, array: Any, *, annotation_namespace: str = mt.USER_ANNOTATION_PREFIX, **annotations: str
    ) -> Descriptor:
        """Add ``numpy.save(array)`` bytes as an ``application/vnd.numpy`` layer."""
        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return self.add_layer(mt.NUMPY, buffer.getvalue(), _user_annotations(annotation_namespace, annotations))

    def add_annotation(self, key: str, value: str) -> None:
        """Set a manifest annotation (same key again overwrites)."""
        self._check_open()
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidInputError(f"Annotation key and value must be str, got {key!r}: {value!r}")
        check_annotation_text(key, value)
        self._annotations[key] = value

    def commit(self) -> Artifact:
        """Publish the manifest under the draft's name; a second call raises ``Already committed artifact``."""
        self._check_open()
        config = Descriptor(mt.OCI_EMPTY_CONFIG, mt.OCI_EMPTY_CONFIG_DIGEST, len(mt.OCI_EMPTY_CONFIG_BYTES))
        self._registry.blobs.put_bytes(mt.OCI_EMPTY_CONFIG_BYTES, expected_digest=config.digest)
        manifest = Manifest(mt.GENERIC_ARTIFACT_TYPE, config, tuple(self._layers), None, self._annotations)
        artifact = publish_manifest(
            self._registry, self._image, manifest, config_bytes=None, keep_alive=self._keep_alive
        )
        self._committed = True
        return artifact


def _user_annotations(namespace: str, annotations: Mapping[str, str]) -> dict[str, str]:
    prefix = namespace if namespace.endswith(".") else namespace + "."
    out = {prefix + key: value for key, value in annotations.items()}
    for key in out:
        if key.startswith(mt.RESERVED_ANNOTATION_PREFIX):
            raise InvalidInputError(f"User annotation key `{key}` is reserved for OMMX metadata")
    return out
