"""Attachment namespaces: writers and readers shared by Experiment, Run and SealedRun (§1.11).

A namespace maps an attachment *name* to the :class:`~ommx_experiment.oci.Descriptor`
of its stored blob, plus an optional export *filename* (``log_file`` only). Names
and filenames live only in the experiment config, never in layer annotations.

Writers validate the caller's input, encode the payload (JSON, codec, typed OMMX
object, optional zstd), store the blob in the CAS and hand the descriptor to the
owner's ``_add_attachment`` hook, which checks for duplicates under its lock.
Readers work on any ``(BlobStore, descriptors, filenames)`` view.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import media_types as mt
from .codec import is_valid_basename
from .errors import (
    AttachmentNotFoundError,
    InvalidArgumentTypeError,
    InvalidInputError,
    LifecycleError,
)
from .oci import Descriptor, FrozenMap

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from .blobstore import BlobStore
    from .watcher import Watcher

COMPRESSIONS = ("none", "zstd")
SNIFF_BYTES = 8192
FALLBACK_FILENAME = "attachment"

# --- typed OMMX payloads -----------------------------------------------------------------------

# kind -> (OMMX class name, v1 media type, v2 media type, error noun)
_TYPED: dict[str, tuple[str, str, str, str]] = {
    "instance": ("Instance", mt.V1_INSTANCE, mt.V2_INSTANCE, "an OMMX Instance"),
    "parametric_instance": (
        "ParametricInstance",
        mt.V1_PARAMETRIC_INSTANCE,
        mt.V2_PARAMETRIC_INSTANCE,
        "an OMMX ParametricInstance",
    ),
    "solution": ("Solution", mt.V1_SOLUTION, mt.V2_SOLUTION, "an OMMX Solution"),
    "sample_set": ("SampleSet", mt.V1_SAMPLE_SET, mt.V2_SAMPLE_SET, "an OMMX SampleSet"),
}
_KIND_BY_MEDIA_TYPE = {m: kind for kind, (_, v1, v2, _) in _TYPED.items() for m in (v1, v2)}


def ommx_type(name: str) -> Any:
    """The OMMX domain class ``name``: ``ommx.<name>`` when present, else ``ommx.v1.<name>``.

    ommx 3 keeps the classes at the top level and its ``import ommx.v1`` raises
    ImportError, so the top level is tried first (ommx 2.9.3 re-exports ``ommx.v1``'s there).
    """
    import ommx

    found = getattr(ommx, name, None)
    if isinstance(found, type):
        return found
    import ommx.v1

    return getattr(ommx.v1, name)


def _ommx_class(kind: str) -> Any:
    return ommx_type(_TYPED[kind][0])


def encode_typed(kind: str, obj: Any) -> tuple[str, bytes, dict[str, str]]:
    """``(media type, bytes, descriptor annotations)`` of an OMMX object.

    v2 protobuf (``to_v2_bytes``) where the installed ``ommx`` has it, else v1
    (``to_bytes``) with the v1 media type. Annotations are the object's flat
    annotations (``dict(obj.annotations)``).
    """
    cls = _ommx_class(kind)
    if not isinstance(obj, cls):
        where = "ommx.v1" if cls.__module__ == "ommx.v1" else "ommx"  # ommx 3's native classes say "builtins"
        raise InvalidArgumentTypeError(f"Expected {where}.{cls.__name__}, got {type(obj).__name__}")
    _, v1, v2, _ = _TYPED[kind]
    if hasattr(obj, "to_v2_bytes"):
        media_type, data = v2, obj.to_v2_bytes()
    else:
        media_type, data = v1, obj.to_bytes()
    annotations = getattr(obj, "annotations", None) or {}
    return media_type, bytes(data), {str(k): str(v) for k, v in dict(annotations).items()}


def decode_typed(kind: str, media_type: str, data: bytes, annotations: Mapping[str, str]) -> Any:
    """Decode v1 or v2 bytes and merge the descriptor annotations back (object's own win)."""
    cls = _ommx_class(kind)
    _, _, v2, _ = _TYPED[kind]
    if media_type == v2:
        decoder = getattr(cls, "from_v2_bytes", None)
        if decoder is None:
            raise LifecycleError(
                f"Cannot decode {media_type}: the installed ommx has no {cls.__name__}.from_v2_bytes "
                "(install ommx>=3 to read OMMX v2 payloads)"
            )
    else:
        # ommx 3 renamed the v1 decoder to from_v1_bytes; ommx 2.x only has from_bytes.
        decoder = getattr(cls, "from_v1_bytes", None) or cls.from_bytes
    obj = decoder(data)
    if annotations:
        _merge_annotations(obj, annotations)
    return obj


def _merge_annotations(obj: Any, annotations: Mapping[str, str]) -> None:
    """Fill annotations missing from the decoded message; the message's own values win."""
    current = dict(obj.annotations)
    merged = {**dict(annotations), **current}
    if merged == current:
        return
    # ommx 3's ``annotations`` is a read-only mapping, changed via replace_annotations;
    # ommx 2.x has a settable property.
    replace = getattr(obj, "replace_annotations", None)
    if replace is not None:
        replace(merged)
        return
    try:
        obj.annotations = merged
    except AttributeError:  # an ommx type without settable annotations
        pass


# --- encoding helpers ------------------------------------------------------------------------------


def check_compression(compression: object) -> str:
    """Return ``compression`` if it is ``"none"`` or ``"zstd"``; ValueError otherwise."""
    if compression not in COMPRESSIONS:
        raise InvalidInputError(f"Unsupported attachment compression `{compression}`; expected `none` or `zstd`")
    return str(compression)


def compress(media_type: str, data: bytes, compression: str) -> tuple[str, bytes, dict[str, str]]:
    """Stored ``(media type, bytes, annotations)`` of a raw payload."""
    if compression == "none":
        return media_type, data, {}
    import zstandard

    payload = zstandard.ZstdCompressor().compress(data)
    return media_type + mt.ZSTD_SUFFIX, payload, {mt.COMPRESSION_ANNOTATION: mt.COMPRESSION_ZSTD}


def is_compressed(desc: Descriptor) -> bool:
    return desc.annotations.get(mt.COMPRESSION_ANNOTATION) == mt.COMPRESSION_ZSTD


def logical_media_type(desc: Descriptor) -> str:
    """The media type the user logged (``+zstd`` storage suffix hidden when annotated)."""
    if is_compressed(desc):
        return desc.media_type.removesuffix(mt.ZSTD_SUFFIX)
    return desc.media_type


def decompress(desc: Descriptor, data: bytes) -> bytes:
    if not is_compressed(desc):
        return data
    import io

    import zstandard

    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
        return reader.read()


def dump_json(value: Any, who: str) -> bytes:
    """``json.dumps(value)`` with Python's defaults, as OMMX; TypeError becomes ValueError."""
    try:
        text = json.dumps(value)
    except TypeError as exc:
        raise InvalidInputError(f"{who} attachment value must be JSON-serializable: {exc}") from exc
    return text.encode("utf-8")


def codec_media_type(codec: Any) -> str:
    """Validate an ``AttachmentCodec`` class and return its ``media_type`` (§1.11)."""
    if not isinstance(codec, type):
        raise InvalidArgumentTypeError("codec must be a class implementing ommx.experiment.attachments.AttachmentCodec")
    media_type = _codec_attr(codec, "media_type", "string `media_type`")
    if not isinstance(media_type, str):
        raise InvalidArgumentTypeError("Attachment codec class must define string `media_type`")
    return media_type


def _codec_attr(codec: type, attr: str, what: str) -> Any:
    # Only a genuinely absent attribute is a protocol violation; errors raised by a
    # property or metaclass lookup (AttributeError included) propagate unchanged.
    if not _has_attr_statically(codec, attr):
        raise InvalidArgumentTypeError(f"Attachment codec class must define {what}")
    return getattr(codec, attr)


def _has_attr_statically(codec: type, attr: str) -> bool:
    import inspect

    try:
        inspect.getattr_static(codec, attr)
    except AttributeError:
        return False
    return True


def codec_callable(codec: type, attr: str) -> Any:
    value = _codec_attr(codec, attr, f"callable `{attr}`")
    if not callable(value):
        raise InvalidArgumentTypeError(f"Attachment codec class must define callable `{attr}`")
    return value


def codec_encode(codec: Any, value: Any) -> tuple[str, bytes]:
    media_type = codec_media_type(codec)
    encode = codec_callable(codec, "encode")
    codec_callable(codec, "decode")
    data = encode(value)
    if not isinstance(data, bytes):
        raise InvalidArgumentTypeError("Attachment codec `encode` must return bytes")
    return media_type, data


# --- file type sniffing (subset of the Rust `infer` crate's magic table) ----------------------------

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF8", 0, "image/gif"),
    (b"BM", 0, "image/bmp"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
    (b"\x00\x00\x01\x00", 0, "image/x-icon"),
    (b"%PDF", 0, "application/pdf"),
    (b"\x1f\x8b", 0, "application/gzip"),
    (b"BZh", 0, "application/x-bzip2"),
    (b"\xfd7zXZ\x00", 0, "application/x-xz"),
    (b"(\xb5/\xfd", 0, "application/zstd"),
    (b"7z\xbc\xaf\x27\x1c", 0, "application/x-7z-compressed"),
    (b"PK\x03\x04", 0, "application/zip"),
    (b"\x7fELF", 0, "application/x-executable"),
    (b"\x00asm", 0, "application/wasm"),
    (b"SQLite format 3\x00", 0, "application/vnd.sqlite3"),
    (b"PAR1", 0, "application/vnd.apache.parquet"),
    (b"ustar", 257, "application/x-tar"),
    (b"OggS", 0, "audio/ogg"),
    (b"fLaC", 0, "audio/x-flac"),
    (b"ID3", 0, "audio/mpeg"),
)


def sniff_media_type(head: bytes) -> str:
    """Media type from magic bytes of the first 8 KiB; ``application/octet-stream`` fallback."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/x-wav"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    for magic, offset, media_type in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return media_type
    return mt.OCTET_STREAM


# --- the writer mixin --------------------------------------------------------------------------------


class AttachmentWriter:
    """Writer methods; the owner provides ``_attachment_blobs``, ``_add_attachment``, ``_check_writable``.

    ``_add_attachment(name, descriptor, filename)`` must raise RuntimeError
    "Attachment `<name>` already exists" for a duplicate (under the owner's lock).
    ``_reserve_attachment(name)`` checks for a duplicate before the blob is written.
    """

    _attachment_owner = "Experiment"

    def _attachment_blobs(self) -> BlobStore:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_writable(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _reserve_attachment(self, name: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _add_attachment(self, name: str, desc: Descriptor, filename: str | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def _store(self, name: str, media_type: str, data: bytes, annotations: Mapping[str, str], filename: str | None = None) -> None:
        self._reserve_attachment(name)
        stored = self._attachment_blobs().put_bytes(data)
        desc = Descriptor(media_type, stored.digest, stored.size, FrozenMap(annotations))
        self._add_attachment(name, desc, filename)

    def watch(
        self,
        folder: str | os.PathLike[str],
        *,
        pattern: str | Iterable[str] | None = None,
        ignore: str | Iterable[str] | None = None,
        existing: bool = True,
    ) -> Watcher:
        """Attach every completed file written into ``folder`` (a context manager; also ``start()``/``stop()``).

        The attachment name is the file's POSIX path relative to ``folder``; see
        :mod:`ommx_experiment.watcher` for what "completed" means and how rewrites are versioned.
        """
        from .watcher import watch

        return watch(self, folder, pattern=pattern, ignore=ignore, existing=existing)

    def log_attachment(self, name: str, media_type: str, data: bytes, *, compression: str = "none") -> None:
        """Store ``data`` under ``name`` with the given media type (any string)."""
        compression = check_compression(compression)
        if not isinstance(data, bytes):
            raise InvalidArgumentTypeError(f"argument 'bytes': expected bytes, got {type(data).__name__}")
        _check_str(name, "name")
        _check_str(media_type, "media_type")
        self._check_writable()
        self._store(name, *compress(media_type, data, compression))

    def log_json(self, name: str, value: Any, *, compression: str = "none") -> None:
        """Store ``json.dumps(value)`` (Python defaults, UTF-8) as ``application/json``."""
        compression = check_compression(compression)
        _check_str(name, "name")
        self._check_writable()
        data = dump_json(value, self._attachment_owner)
        self._store(name, *compress(mt.JSON, data, compression))

    def log_with_codec(self, codec: Any, name: str, value: Any, *, compression: str = "none") -> None:
        """Store ``codec.encode(value)`` with ``codec.media_type``."""
        compression = check_compression(compression)
        _check_str(name, "name")
        self._check_writable()
        media_type, data = codec_encode(codec, value)
        self._store(name, *compress(media_type, data, compression))

    def log_file(
        self,
        name: str,
        path: str | os.PathLike[str],
        media_type: str | None = None,
        *,
        filename: str | None = None,
        compression: str = "none",
    ) -> None:
        """Store the regular file at ``path``; media type given or sniffed; export ``filename``."""
        compression = check_compression(compression)
        _check_str(name, "name")
        self._check_writable()
        source = Path(os.fspath(path))
        if not source.is_file():
            raise LifecycleError(f"Attachment source `{source}` is not a regular file")
        export = filename if filename is not None else source.name
        if not isinstance(export, str) or not is_valid_basename(export):
            raise LifecycleError(f"Invalid attachment filename `{export}`: must be a non-empty basename")
        if media_type is None:
            with open(source, "rb") as fh:
                media_type = sniff_media_type(fh.read(SNIFF_BYTES))
        if compression == "none":
            self._reserve_attachment(name)
            stored = self._attachment_blobs().put_file(source)
            self._add_attachment(name, Descriptor(media_type, stored.digest, stored.size), export)
            return
        self._store(name, *compress(media_type, source.read_bytes(), compression), filename=export)

    def _log_typed(self, kind: str, name: str, obj: Any) -> None:
        _check_str(name, "name")
        self._check_writable()
        self._store(name, *encode_typed(kind, obj))

    def log_instance(self, name: str, instance: Any) -> None:
        """Store an ``ommx.v1.Instance`` (v2 bytes where available, else v1)."""
        self._log_typed("instance", name, instance)

    def log_parametric_instance(self, name: str, parametric_instance: Any) -> None:
        """Store an ``ommx.v1.ParametricInstance``."""
        self._log_typed("parametric_instance", name, parametric_instance)

    def log_solution(self, name: str, solution: Any) -> None:
        """Store an ``ommx.v1.Solution``."""
        self._log_typed("solution", name, solution)

    def log_sample_set(self, name: str, sample_set: Any) -> None:
        """Store an ``ommx.v1.SampleSet``."""
        self._log_typed("sample_set", name, sample_set)


def _check_str(value: object, what: str) -> None:
    if not isinstance(value, str):
        raise InvalidArgumentTypeError(f"argument '{what}': expected str, got {type(value).__name__}")


# --- the reader mixin --------------------------------------------------------------------------------


class AttachmentReader:
    """Reader methods over ``_attachment_view() -> (BlobStore, descriptors, filenames)``."""

    def _attachment_view(self) -> tuple[BlobStore, Mapping[str, Descriptor], Mapping[str, str]]:  # pragma: no cover
        raise NotImplementedError

    def _descriptor(self, name: str) -> Descriptor:
        return self._lookup(name)[1]

    def _lookup(self, name: str) -> tuple[BlobStore, Descriptor, Mapping[str, str]]:
        """``(blob store, descriptor of name, filenames)`` from one view; ``AttachmentNotFoundError``."""
        blobs, descriptors, filenames = self._attachment_view()
        desc = descriptors.get(name) if isinstance(name, str) else None
        if desc is None:
            raise AttachmentNotFoundError(name)
        return blobs, desc, filenames

    def attachment_media_type(self, name: str) -> str:
        """The logical media type of attachment ``name`` (``+zstd`` storage suffix hidden)."""
        return logical_media_type(self._descriptor(name))

    def get_blob(self, name: str) -> bytes:
        """The attachment's bytes, decompressed."""
        blobs, desc, _ = self._lookup(name)
        return decompress(desc, blobs.get(desc.digest))

    def get_json(self, name: str) -> Any:
        """``json.loads`` of a ``application/json`` attachment (ValueError for other types)."""
        media_type = self.attachment_media_type(name)
        if media_type != mt.JSON:
            raise InvalidInputError(f"Expected media type 'application/json', got '{media_type}'")
        return json.loads(self.get_blob(name))

    def _get_typed(self, kind: str, name: str) -> Any:
        blobs, desc, _ = self._lookup(name)
        media_type = logical_media_type(desc)
        if _KIND_BY_MEDIA_TYPE.get(media_type) != kind:
            noun = _TYPED[kind][3]
            raise InvalidInputError(f"Expected {noun} attachment, got media type '{media_type}'")
        return decode_typed(kind, media_type, decompress(desc, blobs.get(desc.digest)), desc.annotations)

    def get_instance(self, name: str) -> Any:
        """The ``ommx.v1.Instance`` attachment ``name`` (v1 or v2 media type)."""
        return self._get_typed("instance", name)

    def get_parametric_instance(self, name: str) -> Any:
        """The ``ommx.v1.ParametricInstance`` attachment ``name``."""
        return self._get_typed("parametric_instance", name)

    def get_solution(self, name: str) -> Any:
        """The ``ommx.v1.Solution`` attachment ``name``."""
        return self._get_typed("solution", name)

    def get_sample_set(self, name: str) -> Any:
        """The ``ommx.v1.SampleSet`` attachment ``name``."""
        return self._get_typed("sample_set", name)

    def get_attachment(self, name: str) -> Any:
        """Decode by logical media type: JSON, OMMX typed objects, else raw ``bytes``."""
        media_type = self.attachment_media_type(name)
        if media_type == mt.JSON:
            return self.get_json(name)
        kind = _KIND_BY_MEDIA_TYPE.get(media_type)
        if kind is not None:
            return self._get_typed(kind, name)
        return self.get_blob(name)

    def get_with_codec(self, codec: Any, name: str) -> Any:
        """``codec.decode(bytes)``; the codec's media type is checked before the blob is read."""
        media_type = codec_media_type(codec)
        stored = self.attachment_media_type(name)
        if media_type != stored:
            raise InvalidInputError(f"Expected media type '{media_type}', got '{stored}'")
        decode = codec_callable(codec, "decode")
        return decode(self.get_blob(name))

    def write_attachment(self, name: str, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the decompressed bytes to ``path`` (or into it, if it is a directory).

        In a directory the file name is the stored export filename, else the
        attachment name's last path component; either is reduced to a plain
        basename so the file never lands outside that directory. Existing
        destination without ``overwrite``: RuntimeError.
        """
        blobs, desc, filenames = self._lookup(name)
        target = Path(os.fspath(path))
        if "\x00" in str(target):
            raise InvalidInputError(f"Attachment destination {str(target)!r} contains a NUL byte")
        if target.is_dir():
            target = target / safe_basename(filenames.get(name) or name)
        if target.exists() and not overwrite:
            raise LifecycleError(f"Attachment destination `{target}` already exists")
        data = decompress(desc, blobs.get(desc.digest))
        from .atomic import atomic_write_bytes

        atomic_write_bytes(target, data)
        return target


def safe_basename(stored: str) -> str:
    """A file name that stays inside its folder: text after the last ``/`` or ``\\``.

    An empty result, ``.`` or ``..`` becomes ``attachment``. A name containing NUL
    raises ``InvalidInputError`` (a ValueError): no file system accepts it, and
    silently renaming it would hide a corrupt or hostile artifact.
    """
    if "\x00" in stored:
        raise InvalidInputError(f"Stored attachment filename {stored!r} contains a NUL byte")
    base = stored.replace("\\", "/").rsplit("/", 1)[-1]
    if base in ("", ".", ".."):
        return FALLBACK_FILENAME
    return base
