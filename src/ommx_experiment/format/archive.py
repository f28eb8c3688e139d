""".ommx archives (a tar of an OCI Image Layout) and OCI layout directories: the policy.

Export (:func:`write_archive`) reproduces OMMX 3's bytes exactly (§4.9): ustar
entries ``oci-layout``, the manifest, the config and every layer in manifest
order (a layer listed twice is written twice), then ``index.json``; two zero
blocks and no record padding (the header format is :mod:`tarstream`'s). Blobs
are streamed from the CAS in chunks, into a temp file in the destination folder
that is published with create-new semantics (:mod:`atomic`).

Import (:func:`import_archive`, :func:`import_layout_dir`) treats its input as
hostile. Nothing is ever extracted by name: tar entries are parsed by
:class:`~ommx_experiment.format.tarstream.TarReader`, and only regular files named
``oci-layout``, ``index.json`` or ``blobs/sha256/<64 lowercase hex>`` (optionally
``./``-prefixed) are accepted; every other entry kind or name is an
:class:`ArchiveError` naming the entry. Blobs are hashed while being staged
inside the registry (:meth:`BlobStore.staging`); experiments get the full §5
validation (:func:`~ommx_experiment.format.codec.validate_experiment_artifact`); nothing
is published until the whole input has been read and validated, and a failing
import leaves no blob, no ref and no temp file behind.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .. import media_types as mt
from ..engine import atomic
from ..engine.blobstore import fd_chunks
from ..engine.digest import is_valid_hex, sha256_digest
from ..engine.names import ImageName, anonymous_artifact_name
from ..engine.oci import (
    MAX_MANIFEST_BYTES,
    Descriptor,
    Manifest,
    image_index_bytes,
    load_json_bounded,
    parse_image_index,
)
from ..errors import (
    ArchiveError,
    ArchiveExistsError,
    DigestMismatchError,
    InvalidArtifactError,
    InvalidInputError,
    RefConflictError,
    RegistryError,
)
from .codec import validate_received_experiment
from .parquet_trust import note_received_parquet
from .tarstream import END_OF_ARCHIVE, TarEntry, TarReader, padding, ustar_header, write_entry

if TYPE_CHECKING:
    from ..engine.blobstore import StagedBlob, Staging
    from ..engine.registry import LocalRegistry
    from .codec import ExperimentConfig
    from .run_params import ParameterTable

__all__ = [
    "ArchiveManifest",
    "Received",
    "import_archive",
    "import_layout_dir",
    "import_path",
    "inspect_archive",
    "write_archive",
]

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 1 << 20
"""Limit for ``index.json`` and ``oci-layout``."""
OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'
_BLOB_DIR = "blobs/sha256/"
_ALLOWED_DIRS = frozenset({"", ".", "blobs", "blobs/sha256"})


@dataclass(frozen=True, slots=True)
class ArchiveManifest:
    """What :func:`inspect_archive` reads: the ref name (None if absent) and the manifest.

    Mirrors OMMX's ``ArchiveManifest`` properties; also unpacks as ``name, manifest = ...``.
    """

    image_name: str | None
    manifest_digest: str
    manifest: Manifest

    def __iter__(self) -> Iterator[Any]:
        return iter((self.image_name, self.manifest))

    @property
    def artifact_type(self) -> str | None:
        return self.manifest.artifact_type

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.manifest.annotations)

    @property
    def config(self) -> Descriptor:
        return self.manifest.config

    @property
    def layers(self) -> list[Descriptor]:
        return list(self.manifest.layers)

    @property
    def subject(self) -> Descriptor | None:
        return self.manifest.subject


# =============================================================================================
# export
# =============================================================================================


def _blob_entry_name(digest: str) -> str:
    return _BLOB_DIR + digest.removeprefix("sha256:")


def _write_blob_entry(out: BinaryIO, registry: LocalRegistry, digest: str, size: int) -> None:
    actual = registry.blobs.size(digest)
    if actual != size:
        raise InvalidArtifactError(f"Blob {digest} has {actual} bytes in the registry, the manifest declares {size}")
    out.write(ustar_header(_blob_entry_name(digest), size))
    written = 0
    for chunk in registry.blobs.iter_chunks(digest):  # verifies the digest at the end
        written += len(chunk)
        if written > size:
            break
        out.write(chunk)
    if written != size:
        raise InvalidArtifactError(f"Blob {digest} changed size while it was being exported")
    out.write(padding(size))


def _exists_error(dest: Path) -> ArchiveExistsError:
    return ArchiveExistsError(f"Failed to create archive at {dest}: file already exists")


ARCHIVE_TEMP_STEM = "archive-"
ARCHIVE_TEMP_MIN_AGE = 5.0  # seconds: covers the instant between creating a temp and locking it


def remove_dead_archive_temps(folder: Path) -> int:
    """Remove ``.oxe-archive-*.tmp`` files a killed ``save`` left in ``folder``; returns the count.

    A save holds ``flock(LOCK_EX)`` on its temp file for its whole life, so a temp
    whose lock can be taken, and that is older than a few seconds, is dead. Only
    our own temp-name pattern is touched, only in the destination folder.
    """
    removed = 0
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(atomic.TEMP_PREFIX + ARCHIVE_TEMP_STEM)]
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        if not atomic.is_temp_name(entry.name):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < ARCHIVE_TEMP_MIN_AGE:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a save in progress
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
        finally:
            os.close(fd)
    return removed


def write_archive(
    registry: LocalRegistry,
    manifest_digest: str,
    ref_name: str,
    path: str | os.PathLike[str],
    *,
    manifest: Manifest | None = None,
) -> None:
    """Export one manifest and its config/layer blobs to a new ``.ommx`` file at ``path``.

    ``manifest``: the caller's parsed copy of ``manifest_digest`` (not parsed again).

    The bytes equal OMMX 3's ``Artifact.save`` for the same artifact and ref name.
    Create-new: :class:`ArchiveExistsError` (a ``RegistryError``, ``RuntimeError``
    and ``FileExistsError``, naming the path) if ``path`` exists, whether before
    the export or by the time it is published; the file appears complete or not
    at all. The ``subject`` chain is not exported.
    """
    dest = Path(path).absolute()
    manifest_bytes = registry.blobs.get(manifest_digest)  # verified against the digest
    if manifest is None:
        manifest = Manifest.parse(manifest_bytes)
    if os.path.lexists(dest):
        raise _exists_error(dest)
    index = image_index_bytes([(Descriptor(mt.OCI_MANIFEST, manifest_digest, len(manifest_bytes)), ref_name)])
    blobs = [(manifest.config.digest, manifest.config.size), *((d.digest, d.size) for d in manifest.layers)]
    remove_dead_archive_temps(dest.parent)
    try:
        with atomic.temp_file(dest.parent, stem=ARCHIVE_TEMP_STEM) as (tmp, out):
            fcntl.flock(out.fileno(), fcntl.LOCK_EX)  # held until closed: a live save is never swept
            write_entry(out, "oci-layout", OCI_LAYOUT_BYTES)
            write_entry(out, _blob_entry_name(manifest_digest), manifest_bytes)
            for digest, size in blobs:
                _write_blob_entry(out, registry, digest, size)
            write_entry(out, "index.json", index)
            out.write(END_OF_ARCHIVE)
            atomic.sync_file(out)
            published = atomic.publish_noclobber(tmp, dest)
    except OSError as exc:
        raise RegistryError(f"Failed to create archive at {dest}: {exc}") from exc
    if not published:
        raise _exists_error(dest)


# =============================================================================================
# import: shared validation and publication
# =============================================================================================


@dataclass(slots=True)
class _Input:
    """What an archive or layout directory provides to :func:`_finish_import`."""

    source: str
    oci_layout: bytes | None
    index: bytes | None
    blob: Callable[[Descriptor, str], StagedBlob]  # (descriptor, role) -> staged, verified blob


_VERB: contextvars.ContextVar[str] = contextvars.ContextVar("archive_verb", default="import")


def _fail(source: str, message: str) -> ArchiveError:
    """``Cannot import|inspect <source>: <message>`` (the verb of the operation in progress)."""
    return ArchiveError(f"Cannot {_VERB.get()} {source}: {message}")


def _kind_of(path: Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a directory (None if it is one, or absent)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    for test, kind in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"


def _check_oci_layout(data: bytes | None, source: str, *, required: bool) -> None:
    if data is None:
        if required:
            raise _fail(source, "missing `oci-layout`")
        log.warning("%s has no oci-layout file; importing anyway", source)
        return
    obj = load_json_bounded(data, what="oci-layout", max_bytes=MAX_JSON_BYTES)
    version = obj.get("imageLayoutVersion") if isinstance(obj, dict) else None
    if version != mt.OCI_LAYOUT_VERSION:
        raise _fail(source, f"unsupported oci-layout imageLayoutVersion {version!r}, expected 1.0.0")


def _index_entry(data: bytes | None, source: str) -> Descriptor:
    if data is None:
        raise _fail(source, "missing `index.json`")
    entries = parse_image_index(data, max_bytes=MAX_JSON_BYTES)
    if len(entries) != 1:
        raise _fail(source, f"index.json must list exactly one manifest, found {len(entries)}")
    entry = entries[0]
    if entry.media_type != mt.OCI_MANIFEST:
        raise _fail(source, f"index.json manifest media type is {entry.media_type}, expected {mt.OCI_MANIFEST}")
    if entry.size > MAX_MANIFEST_BYTES:
        raise _fail(source, f"manifest {entry.digest} is {entry.size} bytes; limit {MAX_MANIFEST_BYTES}")
    return entry


def _ref_name(entry: Descriptor, registry: LocalRegistry, source: str) -> ImageName:
    raw = entry.annotations.get(mt.REF_NAME_ANNOTATION)
    if raw is None:
        return anonymous_artifact_name(registry.registry_id)
    try:
        return ImageName.parse(raw)
    except InvalidInputError as exc:
        raise _fail(source, f"invalid ref name annotation: {exc}") from exc


@dataclass(slots=True)
class Received:
    """Filled in by an import it is passed to: the manifest it stored and, for an experiment, the
    config and run-parameter table it validated (so the Experiment opened next reads neither again)."""

    manifest: Manifest | None = None
    experiment: tuple[ExperimentConfig, ParameterTable] | None = None


def _finish_import(
    registry: LocalRegistry, staging: Staging, src: _Input, *, layout_required: bool, received: Received | None = None
) -> tuple[ImageName, str]:
    try:
        _check_oci_layout(src.oci_layout, src.source, required=layout_required)
        entry = _index_entry(src.index, src.source)
        manifest_blob = src.blob(entry, "manifest")
        manifest = Manifest.parse(manifest_blob.path.read_bytes())
        if manifest.artifact_type not in mt.OMMX_ARTIFACT_TYPES:
            raise _fail(src.source, f"artifactType {manifest.artifact_type!r} is not an OMMX artifact type")
        staged = {entry.digest: manifest_blob}
        for role, desc in (("config", manifest.config), *((f"layer {i}", d) for i, d in enumerate(manifest.layers))):
            if desc.digest not in staged:
                staged[desc.digest] = src.blob(desc, role)
            elif staged[desc.digest].size != desc.size:
                raise _fail(src.source, f"the {role} blob {desc.digest} is declared with two different sizes")
        config_bytes = None
        validated = None
        if manifest.artifact_type == mt.EXPERIMENT_ARTIFACT_TYPE:
            validated = validate_received_experiment(manifest, lambda d: staged[d.digest].path.read_bytes())
            config_bytes = validated.config_bytes
        image = _ref_name(entry, registry, src.source)
    except ArchiveError:
        raise
    except InvalidArtifactError as exc:
        raise _fail(src.source, str(exc)) from exc
    except OSError as exc:
        raise _fail(src.source, f"reading a staged blob failed: {exc}") from exc
    note_received_parquet(registry.db, manifest, None if validated is None else validated.config)
    _publish(registry, staging, staged, image, entry.digest, config_bytes)
    if received is not None:
        received.manifest = manifest
        received.experiment = None if validated is None else (validated.config, validated.table)
    return image, entry.digest


def _conflict(image: ImageName, current: str, digest: str) -> RefConflictError:
    return RefConflictError(f"Local registry ref conflict for {image}: it points to {current}, the import has {digest}")


def _publish(
    registry: LocalRegistry,
    staging: Staging,
    staged: dict[str, StagedBlob],
    image: ImageName,
    digest: str,
    config_bytes: bytes | None,
) -> None:
    current = registry.resolve(image)
    if current is not None and current != digest:
        raise _conflict(image, current, digest)
    try:
        registry.publish_staged(image, digest, staging, staged, config_bytes=config_bytes)
    except RefConflictError:
        raise _conflict(image, registry.resolve(image) or "?", digest) from None


# =============================================================================================
# import: .ommx file
# =============================================================================================


def _entry_role(entry: TarEntry, source: str) -> str | None:
    """``oci-layout``/``index.json``/a digest for an accepted entry, None for a skipped directory."""
    name = entry.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _fail(source, f"entry {name!r} has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise _fail(source, f"entry {name!r} contains a `..` component")
    norm = name[2:] if name.startswith("./") else name
    if entry.kind == "directory":
        if norm.rstrip("/") in _ALLOWED_DIRS:
            return None
        raise _fail(source, f"unexpected directory entry {name!r}")
    if entry.kind != "file":
        raise _fail(source, f"entry {name!r} is not a regular file ({entry.kind}); only regular files are accepted")
    if norm in ("oci-layout", "index.json"):
        return norm
    if norm.startswith(_BLOB_DIR) and is_valid_hex(norm[len(_BLOB_DIR) :]):
        return "sha256:" + norm[len(_BLOB_DIR) :]
    raise _fail(source, f"unexpected entry {name!r}; expected oci-layout, index.json or blobs/sha256/<hex>")


def _stage_tar_blob(reader: TarReader, entry: TarEntry, digest: str, staging: Staging, source: str) -> StagedBlob:
    try:
        return staging.add_chunks(reader.chunks(entry), expected_digest=digest, source=f"{source}:{entry.name}")
    except DigestMismatchError as exc:
        raise _fail(source, f"entry {entry.name!r} does not match its digest: {exc}") from exc


def _read_tar(
    fh: BinaryIO, source: str, total: int | None, staging: Staging
) -> tuple[dict[str, bytes], dict[str, StagedBlob]]:
    reader = TarReader(fh, source, total)
    files: dict[str, bytes] = {}
    blobs: dict[str, StagedBlob] = {}
    for entry in reader.entries():
        role = _entry_role(entry, source)
        if role is None:
            continue
        if role.startswith("sha256:"):
            blob = _stage_tar_blob(reader, entry, role, staging, source)
            blobs.setdefault(role, blob)
            continue
        data = reader.read_all(entry, MAX_JSON_BYTES)
        if files.setdefault(role, data) != data:
            raise _fail(source, f"duplicate entry {entry.name!r} with different content")
    return files, blobs


def _lookup(blobs: dict[str, StagedBlob], source: str) -> Callable[[Descriptor, str], StagedBlob]:
    def find(desc: Descriptor, role: str) -> StagedBlob:
        blob = blobs.get(desc.digest)
        if blob is None:
            raise _fail(source, f"the {role} blob {desc.digest} is missing from the archive")
        if blob.size != desc.size:
            raise _fail(source, f"the {role} blob {desc.digest} has {blob.size} bytes, declared {desc.size}")
        return blob

    return find


def _open_regular(path: str | os.PathLike[str], source: str) -> BinaryIO:
    """Open a regular file for reading; a fifo or device is refused without blocking on it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ArchiveError(f"Cannot import {source}: {exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _fail(source, "not a regular file")
    return os.fdopen(fd, "rb")


def import_archive(
    registry: LocalRegistry, path: str | os.PathLike[str], *, received: Received | None = None
) -> tuple[ImageName, str]:
    """Import a ``.ommx`` file; returns ``(ref name, manifest digest)``.

    All-or-nothing: a failure (``ArchiveError``, ``RefConflictError`` "Local
    registry ref conflict for ...") publishes no blob and no ref. Re-importing the
    same archive is a no-op.
    """
    source = str(path)
    fh = _open_regular(path, source)
    with fh, registry.blobs.staging() as staging:
        info = os.fstat(fh.fileno())
        files, blobs = _read_tar(fh, source, info.st_size, staging)
        src = _Input(source, files.get("oci-layout"), files.get("index.json"), _lookup(blobs, source))
        return _finish_import(registry, staging, src, layout_required=False, received=received)


# =============================================================================================
# import: OCI layout directory
# =============================================================================================


def _open_inside(root_fd: int, parts: tuple[str, ...], source: str) -> int:
    """Open ``root/parts...`` refusing symlinks and non-regular files at every step."""
    fd = root_fd
    shown = "/".join(parts)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            flags |= os.O_NONBLOCK if last else os.O_DIRECTORY  # NONBLOCK: opening a fifo must not hang
            new_fd = os.open(part, flags, dir_fd=fd)
            if fd != root_fd:
                os.close(fd)
            fd = new_fd
    except OSError as exc:
        if fd != root_fd:
            os.close(fd)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _fail(source, f"{shown} is (or passes through) a symlink or not a directory") from exc
        if exc.errno == errno.ENOENT:
            raise _fail(source, f"{shown} is missing") from exc
        raise _fail(source, f"cannot open {shown}: {exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _fail(source, f"{shown} is not a regular file")
    return fd


def _read_bounded(root_fd: int, parts: tuple[str, ...], source: str, limit: int) -> bytes:
    """The whole of ``root/parts...`` (no symlinks), refused if it is or grows beyond ``limit`` bytes."""
    name = "/".join(parts)
    fd = _open_inside(root_fd, parts, source)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise _fail(source, f"{name} is {size} bytes, larger than the limit of {limit} bytes")
        data = b"".join(fd_chunks(fd))
    finally:
        os.close(fd)
    if len(data) > limit:
        raise _fail(source, f"{name} grew beyond {limit} bytes while being read")
    return data


def _read_small(root_fd: int, name: str, source: str) -> bytes:
    return _read_bounded(root_fd, (name,), source, MAX_JSON_BYTES)


def _dir_blob(root_fd: int, staging: Staging, source: str) -> Callable[[Descriptor, str], StagedBlob]:
    def stage(desc: Descriptor, role: str) -> StagedBlob:
        fd = _open_inside(root_fd, ("blobs", "sha256", desc.digest.removeprefix("sha256:")), source)
        try:
            size = os.fstat(fd).st_size
            if size != desc.size:
                raise _fail(source, f"the {role} blob {desc.digest} has {size} bytes, declared {desc.size}")
            return staging.add_chunks(fd_chunks(fd), expected_digest=desc.digest, max_size=desc.size, source=source)
        except DigestMismatchError as exc:
            raise _fail(source, f"the {role} blob {desc.digest} does not match its digest: {exc}") from exc
        finally:
            os.close(fd)

    return stage


def import_layout_dir(
    registry: LocalRegistry, path: str | os.PathLike[str], *, received: Received | None = None
) -> tuple[ImageName, str]:
    """Import an OCI Image Layout directory holding exactly one OMMX manifest.

    Same checks and all-or-nothing publication as :func:`import_archive`;
    ``oci-layout`` is mandatory; only the manifest, config and layer blobs are
    read, each through ``O_NOFOLLOW`` opens that refuse symlinks on the way.
    """
    source = str(path)
    try:
        root_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ArchiveError(f"Cannot import {source}: {exc}") from exc
    try:
        layout = _read_small(root_fd, "oci-layout", source)
        index = _read_small(root_fd, "index.json", source)
        with registry.blobs.staging() as staging:
            src = _Input(source, layout, index, _dir_blob(root_fd, staging, source))
            return _finish_import(registry, staging, src, layout_required=True, received=received)
    finally:
        os.close(root_fd)


# =============================================================================================
# inspect (no registry write)
# =============================================================================================


def _inspect_tar(path: Path) -> tuple[bytes | None, dict[str, bytes]]:
    """Pass 1 finds index.json; pass 2 reads the manifest blob it names."""
    source = str(path)
    with _open_regular(path, source) as fh:
        total = os.fstat(fh.fileno()).st_size
        reader = TarReader(fh, source, total)
        index = None
        for entry in reader.entries():
            if _entry_role(entry, source) == "index.json":
                index = reader.read_all(entry, MAX_JSON_BYTES)
        if index is None:
            return None, {}
        digest = _index_entry(index, source).digest
        fh.seek(0)
        reader = TarReader(fh, source, total)
        for entry in reader.entries():
            if _entry_role(entry, source) == digest:
                return index, {digest: reader.read_all(entry, MAX_MANIFEST_BYTES)}
    return index, {}


def _inspect_dir(path: Path) -> tuple[bytes | None, dict[str, bytes]]:
    source = str(path)
    root_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        index = _read_small(root_fd, "index.json", source)
        digest = _index_entry(index, source).digest
        parts = ("blobs", "sha256", digest.removeprefix("sha256:"))
        return index, {digest: _read_bounded(root_fd, parts, source, MAX_MANIFEST_BYTES)}
    finally:
        os.close(root_fd)


def inspect_archive(path: str | os.PathLike[str]) -> ArchiveManifest:
    """Read the ref name and manifest of a ``.ommx`` file or layout directory without importing it."""
    target = Path(path)
    source = str(path)
    token = _VERB.set("inspect")
    try:
        return _inspect(target, source)
    finally:
        _VERB.reset(token)


def _inspect(target: Path, source: str) -> ArchiveManifest:
    kind = _kind_of(target)
    if kind is not None:
        raise _fail(source, f"not a .ommx archive or an OCI layout directory ({kind})")
    try:
        index, blobs = _inspect_tar(target) if target.is_file() else _inspect_dir(target)
        entry = _index_entry(index, source)
        data = blobs.get(entry.digest)
        if data is None:
            raise _fail(source, f"the manifest blob {entry.digest} is missing")
        if sha256_digest(data) != entry.digest:
            raise _fail(source, f"the manifest blob does not match its digest {entry.digest}")
        manifest = Manifest.parse(data)
    except ArchiveError:
        raise
    except InvalidArtifactError as exc:
        raise _fail(source, str(exc)) from exc
    except OSError as exc:
        raise _fail(source, str(exc)) from exc
    return ArchiveManifest(entry.annotations.get(mt.REF_NAME_ANNOTATION), entry.digest, manifest)


def import_path(
    registry: LocalRegistry, path: str | os.PathLike[str], *, received: Received | None = None
) -> tuple[ImageName, str]:
    """Dispatch: a file is a ``.ommx`` archive, a directory an OCI layout; else ``ArchiveError``.

    ``received``: filled in with what the import validated (see :class:`Received`)."""
    target = Path(path)
    if target.is_file():
        return import_archive(registry, target, received=received)
    if target.is_dir():
        return import_layout_dir(registry, target, received=received)
    kind = _kind_of(target)
    if kind is not None:
        raise _fail(str(path), f"not a .ommx archive or an OCI layout directory ({kind})")
    raise ArchiveError(f"Path must be a file or a directory: {path}")
