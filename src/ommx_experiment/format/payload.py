"""Attachment payloads: typed OMMX objects (v2 written, v1 read), JSON, codecs, zstd, sniffing (§1.11).

Pure encoders and decoders between Python values and ``(media type, bytes,
annotations)``; no storage. Used by the attachment namespaces of the lifecycle
and by the folder watcher (media type sniffing).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .. import media_types as mt
from ..engine.oci import Descriptor
from ..errors import InvalidArgumentTypeError, InvalidInputError, LifecycleError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

COMPRESSIONS = ("none", "zstd")
SNIFF_BYTES = 8192

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


def typed_kind(media_type: str) -> str | None:
    """The typed-payload kind (``instance``, ``solution``, …) of a logical media type, or None."""
    return _KIND_BY_MEDIA_TYPE.get(media_type)


def typed_noun(kind: str) -> str:
    """How errors name a kind: ``an OMMX Instance``."""
    return _TYPED[kind][3]


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


def decompress_chunks(desc: Descriptor, chunks: Iterable[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    """:func:`decompress` as a stream of pieces of at most ``size`` bytes: memory stays bounded
    whatever the blob size and however well it compressed."""
    if not is_compressed(desc):
        yield from chunks
        return
    import zstandard

    source: Any = _ChunkReader(chunks)  # duck-typed: stream_reader only calls read()
    with zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True) as reader:
        while piece := reader.read(size):
            yield piece


class _ChunkReader:
    """A minimal readable file over an iterator of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""

    def read(self, n: int = -1) -> bytes:
        if not self._pending:
            self._pending = next(self._chunks, b"")
        if n < 0 or n >= len(self._pending):
            out, self._pending = self._pending, b""
        else:
            out, self._pending = self._pending[:n], self._pending[n:]
        return out


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




_BY_EXTENSION = {
    ".json": mt.JSON, ".parquet": mt.PARQUET, ".npy": mt.NUMPY, ".txt": "text/plain", ".log": "text/plain",
    ".csv": "text/csv", ".tsv": "text/tab-separated-values", ".md": "text/markdown", ".yaml": "application/yaml",
    ".yml": "application/yaml", ".toml": "application/toml", ".html": "text/html", ".svg": "image/svg+xml",
    ".lp": "text/plain", ".mps": "text/plain", ".sol": "text/plain", ".xml": "application/xml",
}


def guess_media_type(name: str, head: bytes) -> str:
    """Magic bytes first (:func:`sniff_media_type`), else the file extension, else ``application/octet-stream``."""
    sniffed = sniff_media_type(head)
    if sniffed != mt.OCTET_STREAM:
        return sniffed
    suffix = name.rsplit("/", 1)[-1]
    suffix = suffix[suffix.rfind("."):].lower() if "." in suffix else ""
    if suffix in _BY_EXTENSION:
        return _BY_EXTENSION[suffix]
    import mimetypes

    guessed, encoding = mimetypes.guess_type("x" + suffix, strict=False) if suffix else (None, None)
    return guessed if guessed is not None and encoding is None else mt.OCTET_STREAM
