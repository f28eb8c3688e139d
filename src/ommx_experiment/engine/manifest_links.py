"""The one reader of the links in an OCI image manifest: config, layers, subject, artifact type.

The engine (publishing a closure, leases, OMMX's cache rows), GC and listings
all follow a manifest's links without decoding it completely (that is
:meth:`ommx_experiment.engine.oci.Manifest.parse`, used where a manifest is
built or rewritten). They differ only in how strictly they read, stated once
here as :class:`ManifestRules`:

========== ========= ================ =========================================
role       size cap  schemaVersion    descriptors
========== ========= ================ =========================================
CLOSURE    4 MiB     not required     valid digest, integer size
GC         none      integer          + string ``mediaType``, size >= 0 (OMMX)
LISTING    none      not required     valid digest, integer size
========== ========= ================ =========================================

Every role requires a JSON object with a ``config`` descriptor and a ``layers``
array; ``subject`` is optional; ``annotations``, when present, must be an object
of strings. Anything else raises :class:`~ommx_experiment.errors.InvalidArtifactError`
(a ValueError) naming the manifest digest and the field.

:func:`gc_links` is GC's lean reading of the same rules (the digests it follows, no
:class:`ManifestLinks`): it accepts and refuses exactly what ``parse_manifest_links(...,
GC)`` does, except that it reads UTF-8 only, as OMMX's ``serde_json`` (``json.loads`` of
bytes would also take a UTF-8 BOM, UTF-16 and UTF-32).
"""

from __future__ import annotations

import json
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArtifactError
from .digest import is_valid_digest
from .oci import EMPTY_MAP, MAX_MANIFEST_BYTES, FrozenMap


@dataclass(frozen=True, slots=True)
class ManifestRules:
    """How strictly one role reads a manifest."""

    max_bytes: int | None
    require_schema_version: bool
    strict_descriptors: bool


CLOSURE = ManifestRules(MAX_MANIFEST_BYTES, require_schema_version=False, strict_descriptors=False)
"""The registry: publishing, leases, cache rows (what it stores must stay loadable)."""
GC = ManifestRules(None, require_schema_version=True, strict_descriptors=True)
"""Garbage collection: as strict as OMMX's ``serde`` view of ``ImageManifest`` on the fields it follows."""
LISTING = ManifestRules(None, require_schema_version=False, strict_descriptors=False)
"""Listings and their cache back-fill (the catalog checks ``artifactType`` itself)."""


@dataclass(frozen=True, slots=True)
class ManifestLinks:
    """The links of one manifest: what it points at, and the fields listings show."""

    artifact_type: str
    config_digest: str
    config_size: int
    layers: tuple[tuple[str, int], ...]
    subject: str | None
    annotations: FrozenMap[str, str]


def parse_manifest_links(data: bytes, digest: str, rules: ManifestRules = CLOSURE) -> ManifestLinks:
    """The links of manifest ``data`` (stored as ``digest``), read by ``rules``."""
    if rules.max_bytes is not None and len(data) > rules.max_bytes:
        raise InvalidArtifactError(f"Manifest {digest} is {len(data)} bytes; limit {rules.max_bytes}")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidArtifactError(f"Manifest {digest} is not a valid OCI image manifest: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArtifactError(f"Manifest {digest} is not a valid OCI image manifest: not a JSON object")
    version = doc.get("schemaVersion")
    if rules.require_schema_version and (isinstance(version, bool) or not isinstance(version, int)):
        raise InvalidArtifactError(f"Manifest {digest} is not a valid OCI image manifest: no integer schemaVersion")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise InvalidArtifactError(f"Manifest {digest} is not a valid OCI image manifest: `layers` is not an array")
    config = _link(doc.get("config"), digest, "config", rules)
    subject = doc.get("subject")
    return ManifestLinks(
        artifact_type=str(doc.get("artifactType") or ""),
        config_digest=config[0],
        config_size=config[1],
        layers=tuple([_link(layer, digest, "layers", rules) for layer in layers]),
        subject=None if subject is None else _link(subject, digest, "subject", rules)[0],
        annotations=_annotations(doc.get("annotations"), digest),
    )


_decode = json.JSONDecoder().raw_decode


def gc_links(data: bytes, digest: str, known: Container[str] = ()) -> tuple[str, list[str], str | None]:
    """``(config digest, layer digests, subject digest or None)`` of manifest ``data``, read by
    :data:`GC`'s rules in one pass without a :class:`ManifestLinks` (GC reads every ref's manifest).

    ``known`` holds digests already known to be valid (GC's blob listing): their form is not
    checked again.
    """
    try:
        text = data.decode().strip(" \t\n\r")  # JSON's whitespace, as json.loads skips it
        doc, end = _decode(text)
        if end != len(text):
            raise ValueError(f"Extra data at char {end}")
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InvalidArtifactError(f"Manifest {digest} is not a valid OCI image manifest: {exc}") from None
    if type(doc) is not dict:
        raise InvalidArtifactError(f"Manifest {digest} is not a valid OCI image manifest: not a JSON object")
    if type(doc.get("schemaVersion")) is not int:  # JSON integers decode to exact ints, never bools
        raise InvalidArtifactError(f"Manifest {digest} is not a valid OCI image manifest: no integer schemaVersion")
    layers = doc.get("layers")
    if type(layers) is not list:
        raise InvalidArtifactError(f"Manifest {digest} is not a valid OCI image manifest: `layers` is not an array")
    config = _gc_link(doc.get("config"), digest, "config", known)
    layer_digests = [_gc_link(layer, digest, "layers", known) for layer in layers]
    subject = doc.get("subject")
    subject_digest = None if subject is None else _gc_link(subject, digest, "subject", known)
    annotations = doc.get("annotations")
    if annotations is not None and (
        type(annotations) is not dict or not all(type(k) is str and type(v) is str for k, v in annotations.items())
    ):
        raise InvalidArtifactError(f"Manifest {digest} has annotations that are not an object of strings")
    return config, layer_digests, subject_digest


def _gc_link(value: Any, manifest: str, field: str, known: Container[str]) -> str:
    """:func:`_link` by :data:`GC`'s rules, the digest only."""
    if type(value) is dict:
        digest, size = value.get("digest"), value.get("size")
        if (
            type(size) is int
            and size >= 0
            and type(value.get("mediaType")) is str
            and type(digest) is str
            and (digest in known or is_valid_digest(digest))
        ):
            return digest
    raise InvalidArtifactError(f"Manifest {manifest} has an invalid `{field}` descriptor: {value!r:.200}")


def _link(value: Any, manifest: str, field: str, rules: ManifestRules) -> tuple[str, int]:
    if type(value) is dict:  # JSON objects decode to exact dicts, sizes to exact ints (a bool is not one)
        digest, size = value.get("digest"), value.get("size")
        if (
            type(size) is int
            and type(digest) is str
            and is_valid_digest(digest)
            and (not rules.strict_descriptors or (type(value.get("mediaType")) is str and size >= 0))
        ):
            return digest, size
    raise InvalidArtifactError(f"Manifest {manifest} has an invalid `{field}` descriptor: {value!r:.200}")


def _annotations(value: Any, manifest: str) -> FrozenMap[str, str]:
    if value is None or value == {}:
        return EMPTY_MAP
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArtifactError(f"Manifest {manifest} has annotations that are not an object of strings")
    return FrozenMap(value)
