"""Attachment namespaces: writers and readers shared by Experiment, Run and SealedRun (§1.11).

A namespace maps an attachment *name* to the :class:`~ommx_experiment.engine.oci.Descriptor`
of its stored blob, plus an optional export *filename* (``log_file`` only). Names
and filenames live only in the experiment config, never in layer annotations.

Writers validate the caller's input, encode the payload (JSON, codec, typed OMMX
object, optional zstd), store the blob in the CAS and hand the descriptor to the
owner's ``_add_attachment`` hook, which checks for duplicates under its lock.
Readers work on any ``(BlobStore, descriptors, filenames)`` view.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import media_types as mt
from ..engine.oci import Descriptor, FrozenMap
from ..engine.text import check_text, is_utf8_text
from ..errors import AttachmentNotFoundError, InvalidArgumentTypeError, InvalidInputError, LifecycleError
from ..format.codec import is_valid_basename
from ..format.payload import (
    SNIFF_BYTES,
    check_compression,
    codec_callable,
    codec_encode,
    codec_media_type,
    compress,
    decode_typed,
    decompress,
    decompress_chunks,
    dump_json,
    encode_typed,
    is_compressed,
    logical_media_type,
    sniff_media_type,
    typed_kind,
    typed_noun,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from ..edges.watcher import Watcher
    from ..engine.blobstore import BlobStore

FALLBACK_FILENAME = "attachment"


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

    def _publish_attachment(
        self, name: str, desc: Descriptor, filename: str | None, reput: Callable[[], str]
    ) -> None:
        """Record a stored attachment. ``reput()`` stores its bytes again and returns their digest:
        an owner that pins at once (an Experiment) calls it when a GC collected the blob meanwhile."""
        self._add_attachment(name, desc, filename)

    def _store_window(self) -> contextlib.AbstractContextManager[object]:
        """Held around an in-memory attachment's blob write and its publication: an owner that
        pins at once (an Experiment) opens its publish window here, so that the blob and its
        pin are fsynced together and no GC runs between them."""
        return contextlib.nullcontext()

    def _store(self, name: str, media_type: str, data: bytes, annotations: Mapping[str, str], filename: str | None = None) -> None:
        self._reserve_attachment(name)
        blobs = self._attachment_blobs()
        with self._store_window():
            stored = blobs.put_bytes(data)
            desc = Descriptor(media_type, stored.digest, stored.size, FrozenMap(annotations))
            self._publish_attachment(name, desc, filename, lambda: blobs.put_bytes(data).digest)

    def watch(
        self,
        folder: str | os.PathLike[str],
        *,
        pattern: str | Iterable[str] | None = None,
        ignore: str | Iterable[str] | None = None,
        existing: bool = False,
    ) -> Watcher:
        """Attach every completed file written into ``folder`` (a context manager; also ``start()``/``stop()``).

        The attachment name is the file's POSIX path relative to ``folder``; see
        :mod:`ommx_experiment.edges.watcher` for what "completed" means and how rewrites are versioned.
        Files already in ``folder`` at start are not attached unless ``existing=True``
        (as ``ommx-experiment run --watch``). Media types: magic bytes, else the extension.
        """
        from ..edges.watcher import watch

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
        if filename is None and not is_utf8_text(export):  # a file name that is not UTF-8 (OMMX's message)
            shown = os.fsencode(source).decode("utf-8", "backslashreplace")
            raise LifecycleError(f"Attachment file `{shown}` does not have a valid UTF-8 filename")
        check_text(export, "attachment filename")
        if media_type is not None:
            _check_str(media_type, "media_type")
        if media_type is None:
            with open(source, "rb") as fh:
                media_type = sniff_media_type(fh.read(SNIFF_BYTES))
        if compression == "none":
            self._reserve_attachment(name)
            blobs = self._attachment_blobs()
            stored = blobs.put_file(source)
            desc = Descriptor(media_type, stored.digest, stored.size)
            self._publish_attachment(name, desc, export, lambda: blobs.put_file(source).digest)
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
    check_text(value, f"attachment {what.replace('_', ' ')}")  # as OMMX 3: UnicodeEncodeError at log time


# --- the reader mixin --------------------------------------------------------------------------------


class AttachmentReader:
    """Reader methods over ``_attachment_view() -> (BlobStore, descriptors, filenames)``."""

    __slots__ = ()  # a slotted subclass (SealedRun) stays dict-free

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
        if typed_kind(media_type) != kind:
            noun = typed_noun(kind)
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
        kind = typed_kind(media_type)
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
        from ..engine import atomic

        # Streamed (memory bounded by a chunk whatever the size): verified while copied
        # into a temp file beside the target, which replaces the target only if the
        # whole blob hashed to its digest.
        with atomic.temp_file(target.parent, stem="w") as (tmp, handle):
            if is_compressed(desc) or not hasattr(os, "copy_file_range"):
                for chunk in decompress_chunks(desc, blobs.iter_chunks(desc.digest)):
                    handle.write(chunk)
            else:  # the kernel copies, the copied bytes are hashed back from the temp file
                blobs.copy_to(desc.digest, handle, tmp)
            atomic.sync_file(handle)
            atomic.publish_replace(tmp, target)
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
