"""The Local Registry: one root directory that is at the same time an OCI Image
Layout (``oci-layout``, ``index.json``, ``blobs/sha256``) and OMMX 3's registry
(``index.sqlite3``).

Source of truth: OMMX's ``refs`` table plus the CAS. ``index.json`` is a view
(:mod:`layout_view`) brought up to date by each of our ref writes (planned in
the ref's own transaction, patched in place after it commits, O(1) whatever
the number of refs), on open when stale, and by :meth:`LocalRegistry.sync`. Ref writes follow OMMX's semantics: *publish*
inserts if absent (same digest: no-op; other digest: :class:`RefConflictError`),
*replace* upserts (checkpoint slots and pins), *remove* returns the old digest.
Every write that makes blobs reachable (publish, replace, alias, restore,
``publish_staged``) runs in the *publish window* (:meth:`LocalRegistry.publish_window`,
``.gc-exclusion.lock`` held ``LOCK_EX``): the manifest's closure is checked to be
on disk and touched, then the ref row is written; a missing blob raises
:class:`BlobNotFoundError` naming it and publishes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from .. import media_types as mt
from ..errors import (
    BlobNotFoundError,
    InvalidArtifactError,
    InvalidInputError,
    RefConflictError,
    RegistryError,
    RegistryIndexLostError,
)
from . import layout_view
from .blobstore import BlobStore
from .digest import is_valid_digest, sha256_digest
from .index_db import Database, create_registry_id
from .locks import gc_exclusion
from .manifest_links import CLOSURE, ManifestLinks, parse_manifest_links
from .names import ImageName
from .root import get_local_registry_root, on_reset

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from .blobstore import StagedBlob, Staging

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RefRecord:
    """One row of ``refs``."""

    image_name: ImageName
    manifest_digest: str
    updated_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat()


class LocalRegistry:
    """A handle on one registry root. Safe to share between threads and processes."""

    _instances: ClassVar[dict[Path, LocalRegistry]] = {}
    _instances_lock = threading.Lock()

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.blobs = BlobStore(self.root)
            self.blobs.ensure_dirs()
        except OSError as exc:
            raise RegistryError(f"Failed to create the registry at {self.root}: {exc}") from exc
        self.db = Database(self.root)
        self._registry_id: str | None = None
        try:
            self.db.initialise()
            self._refresh_view(step="open", only_if_stale=True, ensure_layout=True)
        except BaseException:
            self.db.close()
            raise

    # --- construction --------------------------------------------------------

    @classmethod
    def at(cls, root: str | Path) -> LocalRegistry:
        """The (process-wide, cached) registry at ``root``, created if absent.

        Listings, loads, upkeep, the CLI and each new ``Experiment`` start here,
        so a cached registry first brings ``index.json`` up to date when another
        writer (OMMX 3) changed ``refs`` since (:meth:`catch_up`); opening a
        registry does the same.
        """
        path = Path(root).expanduser().absolute()
        with cls._instances_lock:
            registry = cls._instances.get(path)
            if registry is None:
                registry = cls(path)
                cls._instances[path] = registry
                return registry
        registry.catch_up()
        return registry

    @classmethod
    def default(cls) -> LocalRegistry:
        """The registry at :func:`ommx_experiment.engine.root.get_local_registry_root`."""
        return cls.at(get_local_registry_root())

    def close(self) -> None:
        self.db.close()
        with self._instances_lock:
            if self._instances.get(self.root) is self:
                del self._instances[self.root]

    def __repr__(self) -> str:
        return f"LocalRegistry(root={str(self.root)!r})"

    @property
    def registry_id(self) -> str:
        if self._registry_id is None:
            self._registry_id = self.db.registry_id()
        return self._registry_id

    def registry_id_in(self, conn: sqlite3.Connection) -> str:
        """:attr:`registry_id`, created if need be inside the caller's write transaction ``conn``."""
        if self._registry_id is None:
            self._registry_id = create_registry_id(conn)
        return self._registry_id

    # --- reads ---------------------------------------------------------------

    def resolve(self, name: ImageName | str) -> str | None:
        """The manifest digest ``name`` points to, or None."""
        image = ImageName.parse(name)
        rows = self.db.query(
            "SELECT manifest_digest FROM refs WHERE name = ? AND reference = ?",
            (image.repository, image.reference),
        )
        return str(rows[0][0]) if rows else None

    def list_refs(self, prefix: str | None = None) -> list[RefRecord]:
        """Every ref (sorted by repository, then reference) whose canonical string starts with ``prefix``."""
        records = []
        for name, reference, digest, updated in self.db.query(
            "SELECT name, reference, manifest_digest, updated_at FROM refs ORDER BY name, reference"
        ):
            try:
                image = ImageName.from_row(str(name), str(reference))
            except InvalidInputError as exc:
                raise RegistryError(f"Invalid Local Registry image ref {name!r} {reference!r}: {exc}") from exc
            if prefix is None or str(image).startswith(prefix):
                records.append(RefRecord(image, str(digest), str(updated)))
        return records

    def read_manifest(self, digest: str) -> tuple[bytes, ManifestLinks]:
        """The verified manifest bytes and the engine's view of them."""
        data = self.blobs.get(digest)
        return data, parse_manifest_links(data, digest, CLOSURE)

    def closure(self, digest: str) -> list[tuple[str, int | None]]:
        """``(digest, size)`` of the manifest, config, layers and the locally present subject chain."""
        return [(blob, size) for blob, size, _ in self._closure_items(digest, chain=True)]

    def verify_closure(self, digest: str) -> None:
        """Raise unless every blob of the closure exists with its declared size."""
        self._verified_closure(digest)

    def _verified_closure(self, digest: str) -> list[tuple[str, int | None]]:
        closure = self.closure(digest)
        for blob, size in closure:
            actual = self.blobs.size(blob)
            if size is not None and actual != size:
                raise BlobNotFoundError(f"Blob {blob} of manifest {digest} has {actual} bytes, expected {size}")
        return closure

    def _closure_items(
        self, digest: str, *, chain: bool, facts: ManifestLinks | None = None, strict_subject: bool = False
    ) -> list[tuple[str, int | None, str]]:
        """``(digest, size, role)`` of the manifest's closure.

        ``chain``: follow the subject chain while it is present locally (each
        subject manifest read and its links listed). Otherwise only the direct
        links: config, layers, and the subject manifest itself when it is present
        (with ``strict_subject``, also when absent, so that the check fails).
        """
        out: list[tuple[str, int | None, str]] = []
        seen: set[str] = set()
        current: str | None = digest
        while current is not None and current not in seen:
            seen.add(current)
            if facts is None or current != digest:
                _, links = self.read_manifest(current)
            else:
                links = facts
            what = f"manifest {current}"
            out.append((current, None, "manifest" if current == digest else f"subject manifest {current}"))
            out.append((links.config_digest, links.config_size, f"config of {what}"))
            out.extend((d, size, f"layer {i} of {what}") for i, (d, size) in enumerate(links.layers))
            subject = links.subject
            if subject is None:
                break
            if not chain:
                if strict_subject or self.blobs.exists(subject):
                    out.append((subject, None, f"subject of {what}"))
                break
            current = subject if self.blobs.exists(subject) else None
        return out

    # --- ref writes ----------------------------------------------------------

    @contextlib.contextmanager
    def publish_window(self) -> Iterator[None]:
        """The *publish window*: ``.gc-exclusion.lock`` held ``LOCK_EX`` (re-entrant per thread).

        No deleting GC (ours or OMMX's) runs while it is held. Every ref write
        below opens one around its closure check and its SQLite write; a caller
        that writes the blobs of a manifest (commit, checkpoint, pin) opens it
        around those writes too, so that a GC cannot delete them between the
        write and the ref. Keep it short: OMMX's GC waits for it.

        It is also a blob batch (``BlobStore.batch``): the small blobs written
        inside are fsynced together when the ref write (or the window's end)
        publishes them, one file-system commit instead of one per blob.
        """
        with gc_exclusion(self.root), self.blobs.batch():
            yield
        self.blobs.compact_leases()  # a no-op inside an outer window (its lock is still held)

    def publish(
        self,
        name: ImageName | str,
        manifest_digest: str,
        *,
        config_bytes: bytes | None = None,
        manifest_bytes: bytes | None = None,
        drop: ImageName | str | None = None,
    ) -> bool:
        """Insert ``name → manifest_digest`` unless present.

        Returns True if inserted, False if it already pointed there; raises
        :class:`RefConflictError` naming both digests otherwise. Inside the
        publish window the manifest, its config, its layers and its subject (when
        present) are checked to exist with their declared sizes and touched; a
        missing one raises :class:`BlobNotFoundError` naming it and nothing is
        published. Cache rows are written in the same transaction (exact bytes),
        as OMMX does. ``manifest_bytes``: the manifest as the caller stored it (not read
        back when it hashes to ``manifest_digest``). ``drop``: a ref removed in the same
        transaction (a commit's checkpoint slot: one durable write for both, never one
        without the other).
        """
        image = ImageName.parse(name)
        dropped = None if drop is None else ImageName.parse(drop)
        written = self._write_ref(
            image, manifest_digest, config_bytes, replace=False, drop=dropped, manifest_bytes=manifest_bytes
        )
        return written is None

    def replace(
        self,
        name: ImageName | str,
        manifest_digest: str,
        *,
        config_bytes: bytes | None = None,
        manifest_bytes: bytes | None = None,
        strict_subject: bool = False,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> str | None:
        """Upsert ``name → manifest_digest`` (checkpoint slots, pins); returns the previous digest.

        Same closure check as :meth:`publish`; ``strict_subject`` makes a declared
        but absent subject manifest an error too (pin chains). ``also``: more writes of the
        caller's, run on the connection inside the ref's own transaction (all or nothing).
        """
        image = ImageName.parse(name)
        previous = self._write_ref(
            image,
            manifest_digest,
            config_bytes,
            replace=True,
            strict_subject=strict_subject,
            manifest_bytes=manifest_bytes,
            also=also,
        )
        return previous or None

    def _write_ref(
        self,
        image: ImageName,
        manifest_digest: str,
        config_bytes: bytes | None,
        *,
        replace: bool,
        chain: bool = False,
        strict_subject: bool = False,
        adopting: tuple[str, str] | None = None,
        drop: ImageName | None = None,
        manifest_bytes: bytes | None = None,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> str | None:
        """The one ref write that makes blobs reachable. Publish: None if inserted, the digest if
        unchanged. Replace: the previous digest, or "" if there was none. ``adopting``: the
        foreign ``index.json`` entry ``(name, digest)`` this write adopts (the view drops it)."""
        verb = "replace" if replace else "publish"
        with self.publish_window():
            if manifest_bytes is not None and sha256_digest(manifest_bytes) == manifest_digest:
                facts = parse_manifest_links(manifest_bytes, manifest_digest, CLOSURE)
            else:
                manifest_bytes, facts = self.read_manifest(manifest_digest)
            items = self._closure_items(manifest_digest, chain=chain, facts=facts, strict_subject=strict_subject)
            try:
                self.blobs.touch_verified(items)
            except BlobNotFoundError as exc:
                raise BlobNotFoundError(f"{exc}; {image} was not published").with_traceback(None) from None
            with self._ref_write(f"{verb} {image}") as conn:
                row = _select_ref(conn, image)
                if replace:
                    conn.execute(
                        "INSERT INTO refs(name, reference, manifest_digest, updated_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(name, reference) DO UPDATE SET manifest_digest = excluded.manifest_digest, "
                        "updated_at = excluded.updated_at",
                        (image.repository, image.reference, manifest_digest, _now()),
                    )
                    result: str | None = row[0] if row else ""
                elif row is None:
                    conn.execute(
                        "INSERT INTO refs(name, reference, manifest_digest, updated_at) VALUES (?, ?, ?, ?)",
                        (image.repository, image.reference, manifest_digest, _now()),
                    )
                    result = None
                elif row[0] != manifest_digest:
                    raise RefConflictError(
                        f"Local registry ref {image} already points to {row[0]}; "
                        f"manifest {manifest_digest} was not published"
                    )
                else:
                    result = row[0]
                _write_cache_rows(conn, manifest_digest, manifest_bytes, facts, config_bytes)
                if replace and row is not None and row[0] != manifest_digest:
                    _prune_cache_rows(conn, row[0])
                if adopting is not None:
                    layout_view.forget_foreign(conn, *adopting)
                if drop is not None and drop != image:
                    _delete_ref(conn, drop)
                if also is not None:
                    also(conn)
        self._release(manifest_digest, facts)
        if adopting is None:
            self._adopt_foreign()
        return result

    def remove(
        self,
        name: ImageName | str,
        *,
        expected_digest: str | None = None,
        expected_updated_at: str | None = None,
    ) -> str | None:
        """Delete one ref; returns the digest it pointed to, or None if nothing was deleted.

        Compare-and-delete: with ``expected_digest`` and/or ``expected_updated_at``
        (the exact ``updated_at`` string read from :meth:`list_refs`), the row is
        deleted only if it still has those values, checked and deleted in one
        ``BEGIN IMMEDIATE`` transaction. A ref re-pointed or re-tagged meanwhile
        (even to the same digest) is left alone and None is returned.
        """
        image = ImageName.parse(name)
        if not self.db.query("SELECT 1 FROM refs WHERE name = ? AND reference = ?", (image.repository, image.reference)):
            # Absent now: nothing to delete (an insert after this read is simply later than this
            # remove). The view is still brought up to date, as by any ref write of ours.
            self.catch_up()
            return None
        with self._ref_write(f"remove {image}") as conn:
            row = _select_ref(conn, image)
            if row is None or not _row_matches(row, expected_digest, expected_updated_at):
                return None
            _delete_ref(conn, image, row[0])
        return str(row[0])

    def publish_staged(
        self,
        name: ImageName | str,
        manifest_digest: str,
        staging: Staging,
        staged: Mapping[str, StagedBlob | None],
        *,
        config_bytes: bytes | None = None,
    ) -> bool:
        """Publish a received closure (import, pull): every blob first, the manifest last, then the ref.

        ``staged`` maps each blob digest of the closure, the manifest included, to
        its verified staged blob, or to None for a blob already stored (touched
        under ``blobs/.lock`` so GC grace covers it). The whole step holds
        ``.gc-exclusion.lock``, so a deleting GC cannot collect a blob between its
        publication and the ref insert. Then :meth:`publish` semantics: True
        inserted, False unchanged, :class:`RefConflictError` if ``name`` points
        elsewhere (the blobs stay, unreferenced, for GC).
        """
        with self.publish_window():
            self.blobs.touch(digest for digest, blob in staged.items() if blob is None)
            blobs = [blob for digest, blob in staged.items() if blob is not None and digest != manifest_digest]
            manifest_blob = staged.get(manifest_digest)
            staging.publish_all(blobs if manifest_blob is None else [*blobs, manifest_blob])  # manifest last
            return self.publish(name, manifest_digest, config_bytes=config_bytes)

    def alias(self, name: ImageName | str, manifest_digest: str) -> bool:
        """Publish ``name`` for an already stored manifest, after re-verifying its closure.

        In the publish window (``.gc-exclusion.lock``), as OMMX does, the whole local
        subject chain is checked and touched, so a deleting GC cannot remove a blob in between.
        """
        image = ImageName.parse(name)
        return self._write_ref(image, manifest_digest, None, replace=False, chain=True) is None

    def restore(self, name: ImageName | str, manifest_digest: str) -> bool:
        """Re-create a removed ref (``restore_image``). True inserted, False unchanged."""
        if not is_valid_digest(manifest_digest):
            raise InvalidInputError(f"Invalid manifest digest {manifest_digest!r}")
        image = ImageName.parse(name)
        try:
            return self.alias(image, manifest_digest)
        except RefConflictError:
            current = self.resolve(image)
            raise RefConflictError(
                f"Cannot restore {image} to {manifest_digest}: ref currently points to {current}"
            ) from None

    def catch_up(self) -> None:
        """Regenerate ``index.json`` if ``refs`` changed since it was written (one small query when not)."""
        self._refresh_view(step="another writer changed refs", only_if_stale=True)

    def sync(self) -> int:
        """Regenerate ``index.json`` from ``refs`` now; returns the number of entries."""
        layout_view.ensure_oci_layout(self.root)
        with layout_view.locked(self.root):
            with self.db.write("regenerate index.json") as conn:
                plan = layout_view.plan(conn, self.root, full=True)
            assert plan is not None
            layout_view.apply(self.root, plan)
        return plan.entries

    # --- internals -----------------------------------------------------------

    def _release(self, manifest_digest: str, facts: ManifestLinks) -> None:
        # A ref now reaches these blobs: our GC no longer needs this process's leases on them.
        subject = () if facts.subject is None else (facts.subject,)
        self.blobs.release((manifest_digest, facts.config_digest, *(d for d, _ in facts.layers), *subject))

    @contextlib.contextmanager
    def _ref_write(self, step: str) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction that changes ``refs``, with the ``index.json`` view
        planned inside it and written after it commits, all under ``.oxe-index.lock``.

        The ref is what matters: a view that cannot be planned or written (full disk,
        read-only root) is left stale, not wrong, and the next write, open or sync() fixes it.
        """
        plan = None
        self.blobs.sync_links()  # every blob this ref may reach is durable under its name first
        with layout_view.locked(self.root):
            with self.db.write(step) as conn:
                yield conn
                try:
                    plan = layout_view.plan(conn, self.root)
                except (OSError, sqlite3.Error, RegistryError) as exc:
                    log.warning("index.json view of %s not refreshed after %s: %s", self.root, step, exc)
            try:
                layout_view.apply(self.root, plan)
            except OSError as exc:
                log.warning("index.json view of %s not refreshed after %s: %s", self.root, step, exc)

    def _refresh_view(self, *, step: str, only_if_stale: bool = False, ensure_layout: bool = False) -> None:
        # Opening a root: a view that cannot be written (read-only root) is stale, not wrong.
        try:
            if ensure_layout:
                layout_view.ensure_oci_layout(self.root)
            if only_if_stale and not layout_view.is_stale(self.root, self.db):
                return
            with self._ref_write(step):
                pass
            self._adopt_foreign()
        except RegistryIndexLostError:
            if step == "open":
                raise
            log.warning("index.json view of %s not refreshed after %s: the index looks lost", self.root, step)
        except (OSError, sqlite3.Error, RegistryError) as exc:
            log.warning("index.json view of %s not refreshed after %s: %s", self.root, step, exc)

    def _adopt_foreign(self) -> int:
        """Adopt the foreign ``index.json`` entries the view carries (skopeo, oras, any OCI tool) as refs.

        An entry is adopted when its name is a valid image name not in ``refs`` and
        its manifest is a complete OMMX artifact (``application/org.ommx.v1.*``,
        closure checked in the publish window, as ``alias``); the view then drops
        the foreign copy. Anything else stays a foreign entry, carried verbatim by
        the view and kept by our GC. One query when there is none (the usual case).
        """
        adopted = 0
        try:
            carried = layout_view.carried_foreign(self.db)
        except RegistryError:
            return 0
        for name, digest in carried:
            try:
                image = ImageName.parse(name)
                if self.resolve(image) is not None or not self.blobs.exists(digest):
                    continue  # refs wins (the next regeneration drops the copy); or nothing to adopt
                _, facts = self.read_manifest(digest)
                if not facts.artifact_type.startswith("application/org.ommx.v1."):
                    continue
                self._write_ref(image, digest, None, replace=False, chain=True, adopting=(name, digest))
                adopted += 1
            except (InvalidInputError, RefConflictError, BlobNotFoundError, InvalidArtifactError) as exc:
                log.debug("foreign index.json entry %s -> %s kept as it is: %s", name, digest, exc)
        return adopted


def _select_ref(conn: sqlite3.Connection, image: ImageName) -> tuple[str, str] | None:
    """``(manifest_digest, updated_at)`` of one ``refs`` row inside the caller's transaction."""
    row = conn.execute(
        "SELECT manifest_digest, updated_at FROM refs WHERE name = ? AND reference = ?",
        (image.repository, image.reference),
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def _delete_ref(conn: sqlite3.Connection, image: ImageName, digest: str | None = None) -> None:
    """Delete one ref row (if present) and the cache rows it alone kept."""
    if digest is None:
        row = _select_ref(conn, image)
        if row is None:
            return
        digest = row[0]
    conn.execute("DELETE FROM refs WHERE name = ? AND reference = ?", (image.repository, image.reference))
    _prune_cache_rows(conn, digest)


def _row_matches(row: tuple[str, str], digest: str | None, updated_at: str | None) -> bool:
    return (digest is None or row[0] == digest) and (updated_at is None or row[1] == updated_at)


def _write_cache_rows(
    conn: sqlite3.Connection,
    manifest_digest: str,
    manifest_bytes: bytes,
    facts: ManifestLinks,
    config_bytes: bytes | None,
) -> None:
    if not facts.artifact_type.startswith("application/org.ommx.v1."):
        return  # OMMX only caches its own artifact types
    conn.execute(
        "INSERT OR IGNORE INTO artifact_manifests(manifest_digest, manifest_json, artifact_type, config_digest) "
        "VALUES (?, ?, ?, ?)",
        (manifest_digest, manifest_bytes, facts.artifact_type, facts.config_digest),
    )
    if config_bytes is not None and facts.artifact_type == mt.EXPERIMENT_ARTIFACT_TYPE:
        conn.execute(
            "INSERT OR IGNORE INTO experiment_configs(config_digest, config_json) VALUES (?, ?)",
            (facts.config_digest, config_bytes),
        )


def _prune_cache_rows(conn: sqlite3.Connection, manifest_digest: str) -> None:
    """Drop OMMX's cache rows of a manifest no ref reaches any more (and of its config, if unshared).

    OMMX prunes every unreferenced row on each write, a scan of the whole cache
    (about 100 ms at 10,000 refs); the rows a ref write can orphan are those of the
    digest it moved away from, found through OMMX's indexes in O(log refs).
    """
    found = conn.execute(
        "SELECT config_digest FROM artifact_manifests WHERE manifest_digest = ? "
        "AND NOT EXISTS (SELECT 1 FROM refs WHERE manifest_digest = ?)",
        (manifest_digest, manifest_digest),
    ).fetchone()
    if found is None:
        return
    conn.execute("DELETE FROM artifact_manifests WHERE manifest_digest = ?", (manifest_digest,))
    conn.execute(
        "DELETE FROM experiment_configs WHERE config_digest = ? "
        "AND NOT EXISTS (SELECT 1 FROM artifact_manifests WHERE config_digest = ?)",
        (found[0], found[0]),
    )


def insert_recovered_ref(db: Database, blobs: BlobStore, image: ImageName, manifest_digest: str, updated_at: str) -> None:
    """``recover`` only: insert a ref row as it was (its ``updated_at``) plus OMMX's cache rows into ``db``.

    The caller (holding ``.gc-exclusion.lock``, building a fresh index) decided
    which rows to restore and checked closures where it wanted them.
    """
    facts: ManifestLinks | None
    try:
        manifest_bytes = blobs.get(manifest_digest)
        facts = parse_manifest_links(manifest_bytes, manifest_digest, CLOSURE)
    except (InvalidArtifactError, RegistryError):
        manifest_bytes, facts = b"", None
    config_bytes = None
    if facts is not None and facts.artifact_type == mt.EXPERIMENT_ARTIFACT_TYPE:
        with contextlib.suppress(RegistryError):
            config_bytes = blobs.get(facts.config_digest)
    with db.write(f"recover {image}") as conn:
        conn.execute(
            "INSERT OR IGNORE INTO refs(name, reference, manifest_digest, updated_at) VALUES (?, ?, ?, ?)",
            (image.repository, image.reference, manifest_digest, updated_at),
        )
        if facts is not None:
            _write_cache_rows(conn, manifest_digest, manifest_bytes, facts, config_bytes)


def _reset_default_registry() -> None:
    """Close and forget every cached registry (test isolation)."""
    with LocalRegistry._instances_lock:
        registries = list(LocalRegistry._instances.values())
        LocalRegistry._instances.clear()
    for registry in registries:
        registry.db.close()


on_reset(_reset_default_registry)
