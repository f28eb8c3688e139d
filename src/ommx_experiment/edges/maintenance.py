"""Registry upkeep: garbage collection, anonymous-ref pruning, ref removal/restore, sizes.

:func:`gc` is OMMX 3's mark & sweep (§4.5, OMMX ``registry/gc.rs``) plus our
own roots:

- roots: every ``refs`` row (named, anonymous, checkpoint), then the blobs our
  checkpoint journal still needs and the manifests of foreign ``index.json``
  entries (skopeo, oras: protected digests; a manifest among them is walked,
  any other blob is just kept);
- mark: each root manifest, its config, its layers and its ``subject`` chain,
  breadth-first with a deque (never recursion); referenced-but-absent blobs are
  ``missing_blobs`` (kind ``ref_manifest|config|layer|subject|protected_digest``),
  unreadable or unparseable ref/subject manifests ``invalid_manifests``;
- sweep: only regular files ``blobs/sha256/<64 lowercase hex>`` (never
  ``oci-layout``, ``index.json``, ``index.sqlite3*``, locks, temp or foreign
  files); unmarked blobs at least ``grace_period`` old are ``orphan_candidates``,
  younger ones ``deferred_blobs``;
- ``delete=True`` holds ``.gc-exclusion.lock`` for the whole pass and unlinks
  each candidate only if its mtime is still old under ``blobs/.lock`` and no
  live writer (another process, or another thread of this one) holds a lease on
  it (blobs written but not yet reachable from a ref; :mod:`blobstore`).

Every argument is validated before the registry is opened.
"""

from __future__ import annotations

import calendar
import os
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import NamedTuple

from ..engine import layout_view
from ..engine.digest import is_valid_digest
from ..engine.durations import parse_duration_seconds
from ..engine.locks import gc_exclusion
from ..engine.manifest_links import gc_links
from ..engine.names import ImageName, is_anonymous
from ..engine.registry import LocalRegistry  # every entry point opens one: loaded with the module, as OMMX's gc
from ..errors import InvalidInputError, OmmxExperimentError, RefNotFoundError, RegistryError
from ..format import journal_roots

_I64_MAX = 2**63 - 1
# chrono's DateTime<Utc> lower bound (year -262143), in seconds from the epoch.
_CHRONO_MIN_SECONDS = -8_334_601_228_800


def _open(root: str | Path | None) -> LocalRegistry:
    return LocalRegistry.default() if root is None else LocalRegistry.at(root)


# --- GC report ------------------------------------------------------------------------------------


class GcRoot(NamedTuple):
    """A GC root: a ``refs`` row (``kind="ref"``) or a digest our journal protects (a named tuple, as GcBlob)."""

    kind: str
    digest: str
    name: str | None = None
    reference: str | None = None
    image_name: str | None = None


class GcBlob(NamedTuple):
    """One CAS blob file: digest, size and mtime (Unix seconds; None if unknown).

    A named tuple, not a dataclass: a dry run makes one per blob (10,000s), and a tuple is
    made in one C call (a fresh process spent ~13 ms more per 10,000 on slotted objects).
    """

    digest: str
    size: int
    modified_at_unix_seconds: float | None


@dataclass(frozen=True, slots=True)
class GcMissingBlob:
    """A blob referenced (by a ref, or by manifest ``referenced_by``) but absent."""

    digest: str
    kind: str
    referenced_by: str | None


@dataclass(frozen=True, slots=True)
class GcInvalidManifest:
    """A ref or subject manifest that could not be read or parsed."""

    digest: str
    kind: str
    referenced_by: str | None
    error: str


def _total(blobs: Iterable[GcBlob]) -> int:
    return sum(b.size for b in blobs)


@dataclass(frozen=True, slots=True)
class GcReport:
    """What :func:`gc` found (and, with ``delete_applied``, removed)."""

    root: Path
    delete_applied: bool
    roots: tuple[GcRoot, ...]
    reachable_blobs: tuple[GcBlob, ...]
    orphan_candidates: tuple[GcBlob, ...]
    deferred_blobs: tuple[GcBlob, ...]
    missing_blobs: tuple[GcMissingBlob, ...]
    invalid_manifests: tuple[GcInvalidManifest, ...]
    deleted_blobs: tuple[GcBlob, ...] = ()
    skipped_blobs: tuple[GcBlob, ...] = ()

    @property
    def reachable_size(self) -> int:
        return _total(self.reachable_blobs)

    @property
    def orphan_candidate_size(self) -> int:
        return _total(self.orphan_candidates)

    @property
    def deferred_size(self) -> int:
        return _total(self.deferred_blobs)

    @property
    def deleted_size(self) -> int:
        return _total(self.deleted_blobs)

    def summary(self) -> str:
        """Human-readable lines in ``ommx gc``'s layout (12-character right-aligned labels)."""
        lines = [
            ("Registry", str(self.root)),
            ("Roots", str(len(self.roots))),
            ("Reachable", _count(self.reachable_blobs)),
            ("Orphans", _count(self.orphan_candidates)),
            ("Deferred", _count(self.deferred_blobs)),
            ("Missing", str(len(self.missing_blobs))),
            ("Invalid", str(len(self.invalid_manifests))),
        ]
        if self.delete_applied:
            lines += [("Deleted", _count(self.deleted_blobs)), ("Skipped", _count(self.skipped_blobs))]
        return "\n".join(f"{label:>12} {text}" for label, text in lines)

    def __repr__(self) -> str:
        return (
            f'GcReport(root="{self.root}", delete_applied={str(self.delete_applied).lower()}, '
            f"roots={len(self.roots)}, reachable_blobs={len(self.reachable_blobs)}, "
            f"orphan_candidates={len(self.orphan_candidates)}, deferred_blobs={len(self.deferred_blobs)}, "
            f"deleted_blobs={len(self.deleted_blobs)})"
        )


def human_size(n: int) -> str:
    """``1.5 KiB`` style size (``B`` below 1 KiB)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _count(blobs: tuple[GcBlob, ...]) -> str:
    return f"{len(blobs)} blobs ({human_size(_total(blobs))})"


# --- mark & sweep ---------------------------------------------------------------------------------


_Visit = tuple[str, str | None, str, bool]
"""A manifest to walk: ``(digest, referenced_by, kind, strict)`` (a plain tuple: one per ref)."""


_BLOB_NAME = re.compile(r"[0-9a-f]{64}")
_HEX_RUN = re.compile(r"[0-9a-f]*")  # over the names joined, when each has 64 characters: all blob names


def _list_blob_files(registry: LocalRegistry) -> dict[str, GcBlob]:
    """``blobs/sha256/<64 lowercase hex>`` regular files (no symlinks), by digest.

    One ``lstat`` per blob name, as OMMX's listing (the size and mtime of every blob are
    in the report). The names are sorted first, so the report's objects are created, and
    later read, in the order it lists them.
    """
    found: dict[str, GcBlob] = {}
    try:
        fd = os.open(registry.blobs.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return found
    try:
        names = os.listdir(fd)
        if set(map(len, names)) != {64} or _HEX_RUN.fullmatch("".join(names)) is None:  # one C pass, usually
            names = [name for name in names if len(name) == 64 and _BLOB_NAME.fullmatch(name)]  # temp files
        names.sort()
        stat, new = os.stat, tuple.__new__
        for name in names:  # the loop body kept flat (10,000s of names)
            try:
                st = stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not S_ISREG(st.st_mode):
                continue
            digest = "sha256:" + name
            found[digest] = new(GcBlob, (digest, st.st_size, st.st_mtime))  # GcBlob(...) in one C call
    finally:
        os.close(fd)
    return found


class _Traversal:
    def __init__(self, registry: LocalRegistry) -> None:
        self.registry = registry
        self.blobs = _list_blob_files(registry)
        self.blob_dir = f"{registry.blobs.dir}{os.sep}"
        self.roots: list[GcRoot] = []
        self.reachable: set[str] = set()
        self.parsed: set[str] = set()
        self.queue: deque[_Visit] = deque()
        self.missing: list[GcMissingBlob] = []
        self.invalid: list[GcInvalidManifest] = []
        self.refs_read_at_ns = time.monotonic_ns()

    def add_refs(self) -> None:
        self.refs_read_at_ns = time.monotonic_ns()  # lease releases stamped later stay leased
        rows = self.registry.db.query("SELECT name, reference, manifest_digest FROM refs ORDER BY name, reference")
        roots, queue, new = self.roots, self.queue, tuple.__new__
        for name, reference, digest in rows:
            roots.append(new(GcRoot, ("ref", str(digest), str(name), str(reference), _ref_string(name, reference))))
            queue.append((str(digest), None, "ref_manifest", True))

    def add_protected(self, digests: Iterable[str]) -> None:
        for digest in digests:
            self.roots.append(GcRoot("protected_digest", digest))
            self.queue.append((digest, None, "protected_digest", False))

    def run(self) -> None:
        """Walk the queue breadth-first: mark each manifest, then its config, layers and subject.

        Marking is inlined for the common case (a listed blob seen for the first time);
        :meth:`_mark` handles the rest (a blob seen again, or absent: ``missing``).
        """
        queue, reachable, parsed, listed, invalid = self.queue, self.reachable, self.parsed, self.blobs, self.invalid
        mark, present, read = self._mark, self._present, self._manifest_bytes
        while queue:
            digest, referenced_by, kind, strict = queue.popleft()
            if digest in parsed:
                continue  # already marked and walked
            parsed.add(digest)
            if digest in listed:
                reachable.add(digest)
            else:
                mark(digest, referenced_by, kind)
                if not present(digest):
                    continue
            try:
                config, layers, subject = gc_links(read(digest), digest, listed)
            except (OmmxExperimentError, ValueError) as exc:
                if strict:
                    invalid.append(GcInvalidManifest(digest, kind, referenced_by, str(exc)))
                continue  # a protected non-manifest blob: keep only the blob
            if config not in reachable and config in listed:
                reachable.add(config)
            else:
                mark(config, digest, "config")
            for layer in layers:
                if layer not in reachable and layer in listed:
                    reachable.add(layer)
                else:
                    mark(layer, digest, "layer")
            if subject is not None:
                queue.append((subject, digest, "subject", True))

    def _manifest_bytes(self, digest: str) -> bytes:
        """The manifest's bytes, read from its blob file as OMMX's GC does (unhashed): a
        manifest damaged behind our back, even to the same size, is reported invalid. Never
        from OMMX's cache rows (another writer may have changed the file since)."""
        try:  # ``digest`` is valid here: listed, or checked by _present
            fd = os.open(self.blob_dir + digest[len("sha256:") :], os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return self.registry.blobs.get(digest)  # raises the store's error for the report
        try:
            listed = self.blobs.get(digest)
            want = 1 << 16 if listed is None else listed.size + 1
            chunk = os.read(fd, want)
            if len(chunk) < want:  # a short read of a regular file: its end (one read per manifest)
                return chunk
            chunks = [chunk]
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _mark(self, digest: str, referenced_by: str | None, kind: str) -> None:
        if digest in self.reachable:
            return
        self.reachable.add(digest)
        if not self._present(digest):
            self.missing.append(GcMissingBlob(digest, kind, referenced_by))

    def _present(self, digest: str) -> bool:
        # A blob written after the listing (a manifest committed meanwhile) is present
        # too: its config and layers, listed earlier, must be marked through it.
        return digest in self.blobs or (is_valid_digest(digest) and self.registry.blobs.exists(digest))

    def report(self, root: Path, grace_seconds: int, now: float) -> GcReport:
        """Every listed blob, by digest: reachable, or unreachable and past the grace (orphan) or not (deferred)."""
        blobs, reachable = self.blobs, self.reachable
        kept = tuple([blobs[d] for d in sorted(reachable) if d in blobs])
        orphans: list[GcBlob] = []
        deferred: list[GcBlob] = []
        for digest, blob in blobs.items():  # sorted by digest
            if digest in reachable:
                continue
            mtime = blob.modified_at_unix_seconds
            age = now - mtime if mtime is not None else -1.0
            (orphans if age >= 0 and age >= grace_seconds else deferred).append(blob)
        return GcReport(
            root, False, tuple(self.roots), kept, tuple(orphans), tuple(deferred),
            tuple(self.missing), tuple(self.invalid),
        )


# ``host[:port]/path`` with a host that names itself (a dot, a port or localhost): parsing the
# joined row gives the same string back (or fails, and the joined row is shown anyway).
_EXPLICIT_HOST_NAME = re.compile(r"(?:localhost|[a-z0-9-]+\.[a-z0-9.-]+|[a-z0-9.-]+:[0-9]+)/[a-z0-9._/-]+")
_NORMALISED_HOSTS = ("docker.io", "registry-1.docker.io", "index.docker.io")


def _ref_string(name: object, reference: object) -> str:
    name, reference = str(name), str(reference)
    joined = f"{name}{'@' if ':' in reference else ':'}{reference}"
    if _EXPLICIT_HOST_NAME.fullmatch(name) and name.split("/", 1)[0] not in _NORMALISED_HOSTS:
        return joined  # the rows we and OMMX write: no parse per ref
    try:
        return str(ImageName.from_row(name, reference))
    except InvalidInputError:
        return joined


def _journal_roots(registry: LocalRegistry) -> list[str]:
    """Blobs our SQLite checkpoint journal names (``journal_roots.journal_blob_digests``).

    The journal's pin refs already protect them; these roots keep them even if a
    pin ref was removed. A manifest among them is walked like a ref.
    """
    return sorted({d for d in journal_roots.journal_blob_digests(registry) if is_valid_digest(d)})


def _mark_and_sweep(registry: LocalRegistry, grace_seconds: int) -> GcReport:
    return _mark_and_sweep_timed(registry, grace_seconds)[0]


def _mark_and_sweep_timed(registry: LocalRegistry, grace_seconds: int) -> tuple[GcReport, int]:
    """The report and the ``time.monotonic_ns()`` at which ``refs`` were read."""
    traversal = _Traversal(registry)
    traversal.add_refs()
    traversal.add_protected(_journal_roots(registry))
    traversal.add_protected(sorted(layout_view.foreign_digests(registry.root, registry.db)))  # skopeo/oras entries
    traversal.run()
    return traversal.report(registry.root, grace_seconds, time.time()), traversal.refs_read_at_ns


def _delete(registry: LocalRegistry, report: GcReport, grace_seconds: int, refs_read_at_ns: int = 0) -> GcReport:
    """Sweep ``report``'s candidates. ``refs_read_at_ns`` 0 (unknown) counts every lease release as too late."""
    cutoff = time.time() - grace_seconds
    # Leases of live writers are read under blobs/.lock inside the sweep: an in-flight
    # blob (written, no ref yet) survives even grace_period="0s" (spec/registry.md §3).
    candidates = [b.digest for b in report.orphan_candidates]
    gone = set(registry.blobs.delete_unleased_if_older(candidates, cutoff, refs_read_at_ns))
    deleted = [b for b in report.orphan_candidates if b.digest in gone]
    skipped = [b for b in report.orphan_candidates if b.digest not in gone and registry.blobs.exists(b.digest)]
    return GcReport(
        report.root, True, report.roots, report.reachable_blobs, report.orphan_candidates,
        report.deferred_blobs, report.missing_blobs, report.invalid_manifests, tuple(deleted), tuple(skipped),
    )


SHARED_MIN_GRACE_SECONDS = 24 * 3600
"""OMMX 3's default grace period: the shortest one a deleting GC may use beside OMMX 3 writers."""


def check_grace(grace_seconds: int, *, exclusive: bool, root: str | Path | None = None) -> None:
    """Refuse a deleting GC whose grace is shorter than :data:`SHARED_MIN_GRACE_SECONDS` unless
    the caller asserts that no OMMX 3 process writes to the root (``exclusive``).

    OMMX 3 protects the blobs of a commit in progress (written, no ref yet) only by
    their mtime: it takes no lock between its blob writes and its ref insert and
    leaves no lease we could see. A shorter grace would delete them.
    """
    if exclusive or grace_seconds >= SHARED_MIN_GRACE_SECONDS:
        return
    from ..engine.root import get_local_registry_root

    where = get_local_registry_root() if root is None else Path(root)
    raise InvalidInputError(
        f"grace_period {grace_seconds}s is shorter than 24h: blobs an OMMX 3 process wrote for a commit "
        f"in progress in {where} would be deleted (OMMX publishes no in-flight state). Pass exclusive=True "
        "(CLI: --exclusive) only when no OMMX 3 process writes to this root"
    )


def gc(
    *, root: str | Path | None = None, delete: bool = False, grace_period: str = "24h", exclusive: bool = False
) -> GcReport:
    """Report (dry run, the default) or delete CAS blobs unreachable from any root.

    ``grace_period`` (``30s``, ``15m``, ``24h``, ``7d``, bare seconds) is
    validated before the registry is opened (ValueError). A deleting pass with
    a grace shorter than 24 h is refused (ValueError) unless ``exclusive=True``
    asserts that no OMMX 3 process writes to this root (:func:`check_grace`);
    our own writers are protected at any grace by their leases. With
    ``delete=True`` the whole pass holds ``.gc-exclusion.lock``, the index is
    checked (``PRAGMA quick_check``) before anything is deleted, and our own
    stale temp files are removed too. SQLite is never modified.
    """
    grace_seconds = parse_duration_seconds(grace_period)
    if delete:
        check_grace(grace_seconds, exclusive=exclusive, root=root)
    registry = _open(root)
    if not delete:
        return _mark_and_sweep(registry, grace_seconds)
    with gc_exclusion(registry.root):
        # Never sweep from a damaged refs table: SQLite only notices corruption on pages it reads.
        registry.db.check_writable("gc")
        registry.db.quick_check()
        report, refs_read_at_ns = _mark_and_sweep_timed(registry, grace_seconds)
        report = _delete(registry, report, grace_seconds, refs_read_at_ns)
        registry.blobs.clean_stale_temp_files()
    return report


# --- anonymous pruning ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnonymousArtifactRef:
    """An anonymous ref (``<id8>.ommx.local/anonymous|experiment:<stamp>-<nonce>``)."""

    image_name: str
    kind: str
    name: str
    reference: str
    digest: str
    updated_at: str

    def __repr__(self) -> str:
        return f'AnonymousArtifactRef(image_name="{self.image_name}", kind="{self.kind}", digest="{self.digest}")'


@dataclass(frozen=True, slots=True)
class PruneAnonymousReport:
    """Candidates (dry run) or removed refs (``delete_applied``) of :func:`prune_anonymous`."""

    root: Path
    delete_applied: bool
    refs: tuple[AnonymousArtifactRef, ...]

    @property
    def count(self) -> int:
        return len(self.refs)

    def __repr__(self) -> str:
        return (
            f'PruneAnonymousReport(root="{self.root}", delete_applied={str(self.delete_applied).lower()}, '
            f"refs={len(self.refs)})"
        )


_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def _timestamp_ns(value: str, image_name: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 ``updated_at`` (RuntimeError otherwise, as OMMX)."""
    match = _RFC3339_RE.fullmatch(value)
    try:
        if match is None:
            raise ValueError("not an RFC 3339 timestamp with an offset")
        y, mo, d, h, mi, s = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
        if not (1 <= mo <= 12 and 1 <= d <= calendar.monthrange(y, mo)[1] and h < 24 and mi < 60 and s < 61):
            raise ValueError("field out of range")
        seconds = calendar.timegm((y, mo, d, h, mi, min(s, 59), 0, 0, 0))
        if match.group(9):
            offset = (int(match.group(10)) * 60 + int(match.group(11))) * 60
            seconds -= offset if match.group(9) == "+" else -offset
    except ValueError as exc:
        raise RegistryError(f"Invalid Local Registry ref timestamp for {image_name}: {value!r}: {exc}") from None
    fraction = (match.group(7) or "").ljust(9, "0")[:9]
    return seconds * 1_000_000_000 + int(fraction)


def _retention_cutoff_ns(age_seconds: int | None) -> int | None:
    """``now - age`` in ns, with OMMX's (chrono's) range limits; None when no age was given."""
    if age_seconds is None:
        return None
    if age_seconds * 1000 > _I64_MAX:
        raise RegistryError(
            "Anonymous ref retention duration is too large: Source duration value is out of range for the target type"
        )
    now_ns = time.time_ns()
    if now_ns // 1_000_000_000 - age_seconds < _CHRONO_MIN_SECONDS:
        raise RegistryError("Anonymous ref retention cutoff is out of range")
    return now_ns - age_seconds * 1_000_000_000


def _anonymous_refs(registry: LocalRegistry, experiments: bool, cutoff_ns: int | None) -> list[AnonymousArtifactRef]:
    out = []
    for record in registry.list_refs():
        image = record.image_name
        if not is_anonymous(image, experiments=experiments):
            continue
        text = str(image)
        if cutoff_ns is not None and _timestamp_ns(record.updated_at, text) > cutoff_ns:
            continue
        kind = "experiment" if image.path == "experiment" else "artifact"
        out.append(
            AnonymousArtifactRef(text, kind, image.repository, image.reference, record.manifest_digest, record.updated_at)
        )
    return out


def prune_anonymous(
    *,
    root: str | Path | None = None,
    delete: bool = False,
    experiments: bool = False,
    older_than: str | None = None,
) -> PruneAnonymousReport:
    """List (dry run) or remove anonymous refs (§4.6); blobs stay until :func:`gc`.

    Candidates are ``<8 hex>.ommx.local/anonymous`` refs (plus
    ``.../experiment`` with ``experiments=True``) tagged
    ``YYYYMMDDTHHMMSS-<12 hex>``, of any registry prefix; ``older_than`` keeps
    only refs with ``updated_at <= now - age``. Deletion is compare-and-delete
    on name, reference, digest and ``updated_at``: a ref re-pointed or re-tagged
    meanwhile (even to the same digest) is left alone and not reported.
    """
    age = None if older_than is None else parse_duration_seconds(older_than)
    cutoff_ns = _retention_cutoff_ns(age)
    registry = _open(root)
    candidates = _anonymous_refs(registry, experiments, cutoff_ns)
    if not delete:
        return PruneAnonymousReport(registry.root, False, tuple(candidates))
    removed = tuple(
        ref
        for ref in candidates
        if registry.remove(
            ImageName.from_row(ref.name, ref.reference), expected_digest=ref.digest, expected_updated_at=ref.updated_at
        )
    )
    return PruneAnonymousReport(registry.root, True, removed)


# --- single refs ---------------------------------------------------------------------------------------


def remove_image(image_name: str, *, root: str | Path | None = None) -> str | None:
    """Remove one ref; returns the manifest digest it pointed to, or None if absent. Blobs stay."""
    image = ImageName.parse(image_name)
    return _open(root).remove(image)


def restore_image(image_name: str, manifest_digest: str, *, root: str | Path | None = None) -> bool:
    """Re-create a ref to a stored manifest (the rollback of :func:`remove_image`).

    True if inserted, False if it already pointed there; RuntimeError "Cannot
    restore X to D: ref currently points to E" if it points elsewhere. The
    manifest's full closure is verified under ``.gc-exclusion.lock`` first.
    """
    if not is_valid_digest(manifest_digest):
        raise InvalidInputError(f"Invalid manifest digest {manifest_digest!r}: expected sha256:<64 lowercase hex>")
    image = ImageName.parse(image_name)
    return _open(root).restore(image, manifest_digest)


def size(image_name: str, *, root: str | Path | None = None) -> int:
    """Logical size of a ref as ``ommx size``: manifest bytes + config size + unique layer sizes.

    The ``subject`` is excluded. ``RefNotFoundError`` (a RuntimeError) if the ref is absent.
    """
    image = ImageName.parse(image_name)
    registry = _open(root)
    digest = registry.resolve(image)
    if digest is None:
        raise RefNotFoundError(f"Image {image} is not in the Local Registry at {registry.root}")
    data, facts = registry.read_manifest(digest)
    layers = dict(facts.layers)
    return len(data) + facts.config_size + sum(layers.values())


__all__ = [
    "AnonymousArtifactRef",
    "GcBlob",
    "GcInvalidManifest",
    "GcMissingBlob",
    "GcReport",
    "GcRoot",
    "PruneAnonymousReport",
    "gc",
    "human_size",
    "prune_anonymous",
    "remove_image",
    "restore_image",
    "size",
]
