"""OCI descriptors, image manifests and image indexes, serialised exactly as OMMX 3 does.

Vocabulary
----------
descriptor
    ``(mediaType, digest, size, annotations)`` naming one blob (§2.2).
manifest
    An OCI Image Manifest whose ``artifactType`` identifies an OMMX artifact.
    Its canonical bytes are ``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` of: ``schemaVersion``, ``artifactType``, ``config``
    (no annotations), ``layers`` (annotations always present), optional ``subject``
    (no annotations) and optional ``annotations`` (only when non-empty). No
    top-level ``mediaType``. The manifest digest is sha256 of those bytes.

Parsing is tolerant of key order, whitespace, unknown keys and a top-level
``mediaType`` (OCI-conformant), but strict on types; any defect raises
:class:`~ommx_experiment.errors.InvalidArtifactError` naming the field. Bytes
written by others are not guaranteed to re-serialise identically (e.g. a layer
without an ``annotations`` key): callers that copy an existing artifact must copy
its manifest bytes, not ``to_bytes()``.
"""

from __future__ import annotations

import json
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .. import media_types as mt
from ..errors import InvalidArtifactError, InvalidInputError
from .digest import is_valid_digest, sha256_digest

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 64


_K = TypeVar("_K")
_V = TypeVar("_V")


class FrozenMap(Mapping[_K, _V]):
    """An immutable, picklable mapping that keeps insertion order.

    Hashable when its values are. Compares equal to any mapping with the same
    items (including a plain ``dict``).
    """

    __slots__ = ("_data",)

    def __init__(self, items: Mapping[_K, _V] | None = None) -> None:
        if type(items) is FrozenMap:  # immutable: its dict is shared, not copied through the Mapping protocol
            self._data: dict[_K, _V] = items._data
        else:
            self._data = dict(items or {})

    @classmethod
    def wrapping(cls, data: dict[_K, _V]) -> FrozenMap[_K, _V]:
        """A FrozenMap over ``data`` itself, not a copy: for a dict the caller has just built and
        hands over (it must never mutate it afterwards)."""
        self = object.__new__(cls)
        self._data = data
        return self

    def __getitem__(self, key: _K) -> _V:
        return self._data[key]

    # the dict's own (read-only) views: the Mapping mixins would look every key up again
    def keys(self) -> KeysView[_K]:
        return self._data.keys()

    def values(self) -> ValuesView[_V]:
        return self._data.values()

    def items(self) -> ItemsView[_K, _V]:
        return self._data.items()

    def __iter__(self) -> Iterator[_K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: _K, default: Any = None) -> Any:  # dict speed; Mapping.get goes through try/except
        return self._data.get(key, default)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __reduce__(self) -> tuple[type[FrozenMap[_K, _V]], tuple[dict[_K, _V]]]:
        return (FrozenMap, (self._data,))

    def to_dict(self) -> dict[_K, _V]:
        """A fresh mutable copy."""
        return dict(self._data)

    def shared_dict(self) -> dict[_K, _V]:
        """The inner dict itself, not a copy: for read-only passes at C speed (msgpack, ``zip``,
        ``set.union``) over large maps. The caller must never mutate it."""
        return self._data


EMPTY_MAP: FrozenMap[Any, Any] = FrozenMap()


def _check_str_map(value: Mapping[str, str], what: str) -> FrozenMap[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be a mapping of str to str, got {type(value).__name__}")
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise InvalidInputError(f"{what} must map str to str, got {key!r}: {val!r}")
    return value if isinstance(value, FrozenMap) else FrozenMap(value)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor.

    ``annotations`` is stored as an immutable :class:`FrozenMap`; ``artifact_type``
    is only used for image-index entries. Construction validates the digest form,
    a non-negative integer size and str-to-str annotations (``InvalidInputError``).
    """

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default=EMPTY_MAP)
    artifact_type: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.media_type, str):
            raise InvalidInputError(f"Descriptor media type must be str, got {self.media_type!r}")
        if not is_valid_digest(self.digest):
            raise InvalidInputError(f"Invalid descriptor digest {self.digest!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise InvalidInputError(f"Descriptor size must be a non-negative int, got {self.size!r}")
        object.__setattr__(self, "annotations", _check_str_map(self.annotations, "Descriptor annotations"))

    @classmethod
    def for_blob(cls, media_type: str, data: bytes, annotations: Mapping[str, str] | None = None) -> Descriptor:
        """Descriptor of ``data`` (digest and size computed)."""
        return cls(media_type, sha256_digest(data), len(data), FrozenMap(annotations))

    def to_dict(self, *, with_annotations: bool = True) -> dict[str, Any]:
        """JSON object in OMMX's layer form: ``mediaType``, ``digest``, ``size``,
        [``artifactType``], ``annotations`` (always, ``{}`` when empty, unless
        ``with_annotations`` is False)."""
        obj: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type is not None:
            obj["artifactType"] = self.artifact_type
        if with_annotations:
            obj["annotations"] = dict(self.annotations)
        return obj

    def replace_annotations(self, annotations: Mapping[str, str]) -> Descriptor:
        """Same blob, other annotations."""
        return Descriptor(self.media_type, self.digest, self.size, FrozenMap(annotations), self.artifact_type)


def _config_or_subject_dict(desc: Descriptor) -> dict[str, Any]:
    # OMMX never writes annotations on config/subject; keep foreign ones if a parsed manifest had them.
    return desc.to_dict(with_annotations=bool(desc.annotations))


@dataclass(frozen=True, slots=True)
class Manifest:
    """An OCI Image Manifest as OMMX writes it (see module docstring)."""

    artifact_type: str | None
    config: Descriptor
    layers: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    annotations: Mapping[str, str] = field(default=EMPTY_MAP)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "annotations", _check_str_map(self.annotations, "Manifest annotations"))

    def to_dict(self, *, with_layers: bool = True) -> dict[str, Any]:
        """The JSON object ``to_bytes`` serialises (without ``layers`` unless ``with_layers``)."""
        obj: dict[str, Any] = {"schemaVersion": 2}
        if self.artifact_type is not None:
            obj["artifactType"] = self.artifact_type
        obj["config"] = _config_or_subject_dict(self.config)
        if with_layers:
            obj["layers"] = [layer.to_dict() for layer in self.layers]
        if self.subject is not None:
            obj["subject"] = _config_or_subject_dict(self.subject)
        if self.annotations:
            obj["annotations"] = dict(self.annotations)
        return obj

    def to_bytes(self, *, layer_texts: Sequence[str] | None = None) -> bytes:
        """OMMX's exact manifest bytes (sorted keys, compact, UTF-8): ``canonical_json(to_dict())``.

        The layer descriptors are rendered by :func:`layer_json` (a template per media type, not
        one dict per layer through ``json.dumps``). ``layer_texts``: ``layer_json`` of each of
        ``self.layers`` in order, rendered before by the caller (a build reusing a draft's).
        """
        obj = self.to_dict(with_layers=False)
        # sorted keys: "annotations", "artifactType", "config" < "layers" < "schemaVersion", "subject"
        head = canonical_json({k: v for k, v in obj.items() if k < "layers"})
        tail = canonical_json({k: v for k, v in obj.items() if k > "layers"})
        texts = ",".join(map(layer_json, self.layers) if layer_texts is None else layer_texts)
        return b"".join((head[:-1], b',"layers":[', texts.encode("utf-8"), b"],", tail[1:]))

    def descriptor(self) -> Descriptor:
        """Descriptor of ``to_bytes()`` with the OCI manifest media type (for ``subject``/index)."""
        data = self.to_bytes()
        return Descriptor(mt.OCI_MANIFEST, sha256_digest(data), len(data))

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        """Parse manifest bytes; ``InvalidArtifactError`` names the first defect."""
        obj = load_json_bounded(data, what="manifest", max_bytes=MAX_MANIFEST_BYTES)
        return _manifest_from_obj(obj)


_LAYER_TEMPLATES: dict[str, str] = {}


def layer_json(desc: Descriptor) -> str:
    """``canonical_json(desc.to_dict())`` as text, from a template per media type for a layer without
    annotations or artifact type (its digest is ``sha256:<hex>``, its size an int: nothing to escape)."""
    if desc.annotations or desc.artifact_type is not None:
        return canonical_json(desc.to_dict()).decode("utf-8")
    template = _LAYER_TEMPLATES.get(desc.media_type)
    if template is None:
        mediatype = json.dumps(desc.media_type, ensure_ascii=False).replace("%", "%%")
        template = _LAYER_TEMPLATES[desc.media_type] = '{"annotations":{},"digest":"%s","mediaType":' + mediatype + ',"size":%d}'
    return template % (desc.digest, desc.size)


def canonical_json(obj: Any) -> bytes:
    """``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` as UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --- bounded JSON loading ----------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _json_depth(obj: Any) -> int:
    """Maximum container nesting depth, computed iteratively (no recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def load_json_bounded(
    data: bytes,
    *,
    what: str,
    max_bytes: int,
    max_depth: int = MAX_JSON_DEPTH,
    object_pairs_hook: Any = None,
) -> Any:
    """Decode strict UTF-8 JSON with a size and nesting bound.

    Rejects: more than ``max_bytes`` bytes, invalid UTF-8, invalid JSON, the
    non-standard ``NaN``/``Infinity`` constants, nesting deeper than ``max_depth``.
    Every failure is an ``InvalidArtifactError`` whose message starts with ``what``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArtifactError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise InvalidArtifactError(f"{what} is {len(data)} bytes, larger than the limit of {max_bytes} bytes")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArtifactError(f"{what} is not valid UTF-8: {exc}") from exc
    try:
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=object_pairs_hook)
    except RecursionError as exc:
        raise InvalidArtifactError(f"{what} JSON is nested deeper than {max_depth} levels") from exc
    except ValueError as exc:
        raise InvalidArtifactError(f"{what} is not valid JSON: {exc}") from exc
    if _json_depth(obj) > max_depth:
        raise InvalidArtifactError(f"{what} JSON is nested deeper than {max_depth} levels")
    return obj


# --- typed field access for parsing ---------------------------------------------------------------


def _get_str(obj: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> str | None:
    if key not in obj:
        if required:
            raise InvalidArtifactError(f"{path}: missing required field `{key}`")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise InvalidArtifactError(f"{path}.{key}: expected a string, got {json_type(value)}")
    _check_encodable(value, f"{path}.{key}")
    return value


def _check_encodable(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogate from a \ud800 escape
        raise InvalidArtifactError(f"{path}: string is not valid Unicode ({exc.reason})") from exc


def json_type(value: Any) -> str:
    """How an error message names the JSON kind of ``value`` ("null", "a number", "an array", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _expect_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArtifactError(f"{path}: expected an object, got {json_type(value)}")
    return value


def _parse_str_map(value: Any, path: str) -> FrozenMap[str, str]:
    obj = _expect_object(value, path)
    for key, val in obj.items():
        _check_encodable(key, path)
        if not isinstance(val, str):
            raise InvalidArtifactError(f"{path}[{key!r}]: expected a string, got {json_type(val)}")
        _check_encodable(val, f"{path}[{key!r}]")
    return FrozenMap(obj)


def parse_descriptor(value: Any, path: str) -> Descriptor:
    """Parse one JSON descriptor object (``InvalidArtifactError`` naming ``path``)."""
    obj = _expect_object(value, path)
    media_type = _get_str(obj, "mediaType", path)
    digest = _get_str(obj, "digest", path)
    if not is_valid_digest(digest):
        raise InvalidArtifactError(f"{path}.digest: invalid digest {digest!r}, expected sha256:<64 lowercase hex>")
    size = obj.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidArtifactError(f"{path}.size: expected a non-negative integer, got {size!r}")
    annotations = _parse_str_map(obj["annotations"], f"{path}.annotations") if "annotations" in obj else EMPTY_MAP
    artifact_type = _get_str(obj, "artifactType", path, required=False)
    assert media_type is not None and digest is not None
    # Every field is checked above as ``Descriptor.__post_init__`` would check it: built without a second pass
    # (a manifest of 10,000 layers, a journal of 10,000 runs with attachments).
    desc = _new_descriptor(Descriptor)
    _set_field(desc, "media_type", media_type)
    _set_field(desc, "digest", digest)
    _set_field(desc, "size", size)
    _set_field(desc, "annotations", annotations)
    _set_field(desc, "artifact_type", artifact_type)
    return desc


_new_descriptor = object.__new__
_set_field = object.__setattr__  # frozen dataclasses' own way to set a field


def _manifest_from_obj(value: Any) -> Manifest:
    obj = _expect_object(value, "manifest")
    version = obj.get("schemaVersion")
    if isinstance(version, bool) or version != 2:
        raise InvalidArtifactError(f"manifest.schemaVersion: expected 2, got {version!r}")
    media_type = _get_str(obj, "mediaType", "manifest", required=False)
    if media_type is not None and media_type != mt.OCI_MANIFEST:
        raise InvalidArtifactError(f"manifest.mediaType: expected {mt.OCI_MANIFEST}, got {media_type}")
    if "config" not in obj:
        raise InvalidArtifactError("manifest: missing required field `config`")
    layers_value = obj.get("layers")
    if not isinstance(layers_value, list):
        raise InvalidArtifactError(f"manifest.layers: expected an array, got {json_type(layers_value)}")
    subject_value = obj.get("subject")
    annotations_value = obj.get("annotations")
    return Manifest(
        artifact_type=_get_str(obj, "artifactType", "manifest", required=False),
        config=parse_descriptor(obj["config"], "manifest.config"),
        layers=tuple(parse_descriptor(layer, f"manifest.layers[{i}]") for i, layer in enumerate(layers_value)),
        subject=None if subject_value is None else parse_descriptor(subject_value, "manifest.subject"),
        annotations=EMPTY_MAP
        if annotations_value is None
        else _parse_str_map(annotations_value, "manifest.annotations"),
    )


# --- image index (index.json) ------------------------------------------------------------------------


def image_index_bytes(entries: Sequence[tuple[Descriptor, str | None]]) -> bytes:
    """``index.json`` bytes in the field order of §4.9.

    Each entry is ``(manifest descriptor, ref name)``; the entry object is
    ``mediaType``, ``digest``, ``size``, [``artifactType`` if the descriptor has one],
    ``annotations`` (the descriptor's annotations plus
    ``org.opencontainers.image.ref.name`` when a ref name is given; omitted when empty).
    With one entry, an OCI-manifest descriptor without annotations/artifact type and a
    ref name, the bytes equal OMMX's archive ``index.json``.
    """
    manifests = []
    for desc, ref_name in entries:
        entry = desc.to_dict(with_annotations=False)
        annotations = dict(desc.annotations)
        if ref_name is not None:
            annotations[mt.REF_NAME_ANNOTATION] = ref_name
        if annotations:
            entry["annotations"] = annotations
        manifests.append(entry)
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
    return json.dumps(index, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_image_index(data: bytes, *, max_bytes: int = MAX_MANIFEST_BYTES) -> tuple[Descriptor, ...]:
    """Parse ``index.json``; returns the ``manifests`` descriptors (annotations incl. ref name).

    Checks ``schemaVersion`` 2 and, when present, the index ``mediaType``; raises
    ``InvalidArtifactError`` otherwise.
    """
    obj = _expect_object(load_json_bounded(data, what="index.json", max_bytes=max_bytes), "index.json")
    version = obj.get("schemaVersion")
    if isinstance(version, bool) or version != 2:
        raise InvalidArtifactError(f"index.json.schemaVersion: expected 2, got {version!r}")
    media_type = _get_str(obj, "mediaType", "index.json", required=False)
    if media_type is not None and media_type != mt.OCI_INDEX:
        raise InvalidArtifactError(f"index.json.mediaType: expected {mt.OCI_INDEX}, got {media_type}")
    manifests = obj.get("manifests")
    if not isinstance(manifests, list):
        raise InvalidArtifactError(f"index.json.manifests: expected an array, got {json_type(manifests)}")
    return tuple(parse_descriptor(entry, f"index.json.manifests[{i}]") for i, entry in enumerate(manifests))
