"""``recover``: rebuild a lost, emptied or corrupt ``index.sqlite3`` from what the root still holds.

The refs live in OMMX's ``refs`` table; when ``index.sqlite3`` is deleted, emptied,
truncated or damaged, the root still holds the blobs, ``index.json`` (our view of
the refs, plus entries other OCI tools wrote) and often the damaged file itself.
:func:`recover`:

1. holds ``.gc-exclusion.lock`` for the whole run (no GC, ours or OMMX's, and no
   publish window meanwhile);
2. moves ``index.sqlite3`` (and ``-wal``/``-shm``) aside to
   ``index.sqlite3.broken-<UTC stamp>`` (never deletes it) and creates a fresh
   index with OMMX's schema and ours;
3. salvages, table by table, every row the damaged file still yields (refs,
   registry metadata, the checkpoint journal; rows on damaged pages are lost);
4. keeps the registry id (salvaged, else a new one with the 8-hex prefix seen in
   ``<id8>.ommx.local/…`` names of ``index.json``), so checkpoint and pin names
   still match;
5. restores refs, first come first served by name: salvaged rows; then
   ``index.json`` entries (ours and foreign OMMX artifacts) whose manifest
   closure is complete; then journal pins; then *unreferenced* OMMX manifests
   newer than ``index.json`` (committed after the view was last written, e.g.
   by OMMX 3): the newest draft per requested name becomes its checkpoint slot
   again, other experiments and annotated generic artifacts get a visible ref
   ``recovered.local/<experiment|artifact>:<manifest hex[:16]>`` so no GC
   collects them (``adopt_unreferenced=False`` only lists them);
6. regenerates ``index.json`` (foreign entries carried) and removes the
   corruption marker.

``dry_run`` changes nothing and reports what would be restored. A healthy index
(present, with tables, ``quick_check`` ok, not marked corrupt) is left alone.
Run it when no other process writes to the root: a process that had the
registry open keeps writing into the file moved aside until it reopens it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import media_types as mt
from ..engine import atomic, layout_view
from ..engine.blobstore import BlobStore
from ..engine.digest import is_valid_digest
from ..engine.index_db import DB_NAME, Database, clear_corruption, shared_connections
from ..engine.locks import gc_exclusion
from ..engine.manifest_links import CLOSURE, parse_manifest_links
from ..engine.names import ImageName, checkpoint_name
from ..engine.oci import MAX_MANIFEST_BYTES
from ..errors import InvalidInputError, OmmxExperimentError
from ..format.codec import ExperimentConfig
from ..format.journal import pin_name, writer_pin_name

SALVAGED_TABLES = ("ommx_local_registry_metadata", "refs")
"""Salvaged besides every ``oxe_journal_*`` table (the checkpoint journal, whatever its version)."""
JOURNAL_PREFIX = "oxe_journal_"
RECOVERED_HOST = "recovered.local"


@dataclass(frozen=True, slots=True)
class RecoveredRef:
    """A ref restored (or, in ``skipped``, not restored) by :func:`recover`."""

    image_name: str
    manifest_digest: str
    source: str  # salvaged | index.json | journal pin | checkpoint draft | unreferenced
    note: str = ""


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What :func:`recover` found and did."""

    root: Path
    dry_run: bool
    state: str  # missing | empty | corrupt | marked corrupt | healthy
    moved_aside: tuple[Path, ...] = ()
    registry_id: str = ""
    restored: tuple[RecoveredRef, ...] = ()
    skipped: tuple[RecoveredRef, ...] = ()
    journal_rows: dict[str, int] = field(default_factory=dict)
    salvage_errors: tuple[str, ...] = ()
    foreign_entries: int = 0

    @property
    def rebuilt(self) -> bool:
        return self.state != "healthy"

    def summary(self) -> str:
        """Human-readable lines (12-character right-aligned labels, as the other upkeep commands)."""
        verb = "Would restore" if self.dry_run else "Restored"
        lines = [("Registry", str(self.root)), ("Index", self.state)]
        if not self.rebuilt:
            lines.append(("Nothing", "the index is healthy; nothing was changed"))
            return "\n".join(f"{a:>12} {b}" for a, b in lines)
        lines += [("Moved aside" if not self.dry_run else "Would move", str(p)) for p in self.moved_aside]
        lines.append(("Registry ID", self.registry_id))
        by_source: dict[str, int] = {}
        for ref in self.restored:
            by_source[ref.source] = by_source.get(ref.source, 0) + 1
        lines.append((verb, f"{len(self.restored)} refs " + json.dumps(by_source, sort_keys=True)))
        lines.append(("Journal", ", ".join(f"{k} {v}" for k, v in sorted(self.journal_rows.items())) or "none"))
        lines.append(("Skipped", f"{len(self.skipped)} candidates"))
        lines += [("Skipped", f"{r.image_name} -> {r.manifest_digest} ({r.source}): {r.note}") for r in self.skipped[:20]]
        lines += [("Salvage", e) for e in self.salvage_errors[:20]]
        lines.append(("Foreign", f"{self.foreign_entries} index.json entries of other tools kept"))
        return "\n".join(f"{a:>12} {b}" for a, b in lines)


def recover(
    *, root: str | Path | None = None, dry_run: bool = False, adopt_unreferenced: bool = True
) -> RecoveryReport:
    """Rebuild ``<root>/index.sqlite3`` from the damaged file, ``index.json`` and the blobs (module doc)."""
    from ..engine.root import get_local_registry_root

    path = (get_local_registry_root() if root is None else Path(root)).expanduser().absolute()
    if not path.is_dir():
        raise InvalidInputError(f"No registry root at {path}")
    db_path = path / DB_NAME
    with gc_exclusion(path):
        state = _diagnose(db_path)
        if state == "healthy":
            return RecoveryReport(path, dry_run, state, foreign_entries=len(layout_view.foreign_entries(layout_view.read_document(path))))
        _forget_open_handles(path)
        salvage = _salvage(db_path) if db_path.exists() and state != "empty" else _Salvage()
        plan = _plan(path, salvage, adopt_unreferenced)
        moved: list[Path] = _aside_candidates(db_path)
        if not dry_run:
            moved = _install(path, salvage, plan)
        return RecoveryReport(
            root=path,
            dry_run=dry_run,
            state=state,
            moved_aside=tuple(moved),
            registry_id=plan.registry_id,
            restored=tuple(plan.restored),
            skipped=tuple(plan.skipped),
            journal_rows={t: len(rows) for t, rows in salvage.rows.items() if t.startswith(JOURNAL_PREFIX)},
            salvage_errors=tuple(salvage.errors),
            foreign_entries=len(layout_view.foreign_entries(layout_view.read_document(path))),
        )


# --- diagnosis ------------------------------------------------------------------------------------


def _diagnose(db_path: Path) -> str:
    marked = (db_path.parent / ".oxe-index-corrupt").exists()
    if not db_path.exists():
        return "missing"
    try:
        conn = sqlite3.connect(_ro_uri(db_path), uri=True, isolation_level=None)
    except sqlite3.Error:
        return "corrupt"
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "refs" not in tables:
            return "empty"
        if conn.execute("PRAGMA quick_check(1)").fetchone()[0] != "ok":
            return "corrupt"
    except sqlite3.Error:
        return "corrupt"
    finally:
        conn.close()
    return "marked corrupt" if marked else "healthy"


def _ro_uri(path: Path, *, immutable: bool = False) -> str:
    return "file:" + urllib.parse.quote(str(path)) + ("?mode=ro&immutable=1" if immutable else "?mode=ro")


def _forget_open_handles(root: Path) -> None:
    """Close this process's connections to the index about to be moved aside."""
    from ..engine.registry import LocalRegistry

    with LocalRegistry._instances_lock:
        registry = LocalRegistry._instances.get(root)
    if registry is not None:
        registry.close()
    shared_connections(root / DB_NAME).close()


def _aside_candidates(db_path: Path) -> list[Path]:
    return [db_path.with_name(db_path.name + s) for s in ("", "-wal", "-shm") if db_path.with_name(db_path.name + s).exists()]


def _move_aside(db_path: Path) -> list[Path]:
    target = db_path.with_name(f"{DB_NAME}.broken-{_stamp()}")
    moved = []
    for suffix in ("", "-wal", "-shm"):
        src = db_path.with_name(db_path.name + suffix)
        if src.exists():
            dst = target.with_name(target.name + suffix)
            os.rename(src, dst)
            moved.append(dst)
    return moved


# --- salvage ---------------------------------------------------------------------------------------


@dataclass
class _Salvage:
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    columns: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _salvage(db_file: Path) -> _Salvage:
    out = _Salvage()
    conn = None
    for uri in (_ro_uri(db_file), _ro_uri(db_file, immutable=True)):
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            conn.execute("SELECT name FROM sqlite_master").fetchall()
            break
        except sqlite3.Error as exc:
            out.errors.append(f"{db_file.name}: {exc}")
            if conn is not None:
                conn.close()
            conn = None
    if conn is None:
        return out
    try:
        try:
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        except sqlite3.Error as exc:
            out.errors.append(f"sqlite_master: {exc}")
            names = []
        journal = sorted(n for n in names if n.startswith(JOURNAL_PREFIX))
        for table in (*SALVAGED_TABLES, *journal):
            _salvage_table(conn, table, out)
    finally:
        conn.close()
    return out


def _salvage_table(conn: sqlite3.Connection, table: str, out: _Salvage) -> None:
    try:
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    except sqlite3.Error as exc:
        out.errors.append(f"{table}: {exc}")
        return
    if not columns:
        return
    rows: dict[int, tuple[Any, ...]] = {}
    for order in ("ASC", "DESC"):  # both ends of the b-tree, around a damaged page
        try:
            for row in conn.execute(f"SELECT rowid, * FROM {table} ORDER BY rowid {order}"):
                rows.setdefault(int(row[0]), tuple(row[1:]))
            break
        except sqlite3.Error as exc:
            if order == "ASC":
                out.errors.append(f"{table}: {exc} (rows on damaged pages are lost)")
    out.columns[table] = columns
    out.rows[table] = [rows[k] for k in sorted(rows)]


# --- planning -----------------------------------------------------------------------------------------


@dataclass
class _Plan:
    registry_id: str
    restored: list[RecoveredRef] = field(default_factory=list)
    skipped: list[RecoveredRef] = field(default_factory=list)
    updated_at: dict[str, str] = field(default_factory=dict)  # image name -> updated_at


def _plan(root: Path, salvage: _Salvage, adopt_unreferenced: bool) -> _Plan:
    document = layout_view.read_document(root)
    plan = _Plan(_registry_id(salvage, document))
    taken: dict[str, str] = {}
    blobs = root / "blobs" / "sha256"

    def offer(name: str, digest: str, source: str, updated_at: str | None, *, verify: bool) -> None:
        try:
            image = str(ImageName.parse(name))
        except InvalidInputError as exc:
            plan.skipped.append(RecoveredRef(name, digest, source, f"invalid name: {exc}"))
            return
        if image in taken:
            if taken[image] != digest:
                plan.skipped.append(RecoveredRef(image, digest, source, f"name already restored -> {taken[image]}"))
            return
        if not is_valid_digest(digest) or not (blobs / digest[7:]).is_file():
            plan.skipped.append(RecoveredRef(image, digest, source, "manifest blob missing"))
            return
        if verify:
            problem = _closure_problem(blobs, digest)
            if problem:
                plan.skipped.append(RecoveredRef(image, digest, source, problem))
                return
        taken[image] = digest
        plan.restored.append(RecoveredRef(image, digest, source))
        plan.updated_at[image] = updated_at or _mtime_timestamp(blobs / digest[7:])

    columns = salvage.columns.get("refs", [])
    for row in salvage.rows.get("refs", []):
        rec = dict(zip(columns, row, strict=False))
        try:
            name = str(ImageName.from_row(str(rec["name"]), str(rec["reference"])))
        except (InvalidInputError, KeyError):
            plan.skipped.append(RecoveredRef(f"{rec.get('name')}:{rec.get('reference')}", str(rec.get("manifest_digest")),
                                             "salvaged", "invalid name"))
            continue
        offer(name, str(rec["manifest_digest"]), "salvaged", str(rec.get("updated_at") or "") or None, verify=False)
    for entry in (document or {}).get("manifests", []):
        marks = entry.get("annotations") if isinstance(entry, dict) else None
        if not isinstance(marks, dict):
            continue
        ref, target = marks.get(layout_view.REF_NAME), entry.get("digest")
        ours = layout_view.VIEW_MARK in marks
        if isinstance(ref, str) and isinstance(target, str) and (ours or _is_ommx_manifest(blobs, target)):
            offer(ref, target, "index.json", None, verify=True)
    columns = salvage.columns.get("oxe_journal_sessions", [])
    requested_of: dict[str, str] = {}
    for row in salvage.rows.get("oxe_journal_sessions", []):
        rec = dict(zip(columns, row, strict=False))
        requested_of[str(rec.get("session_id"))] = str(rec.get("requested_name"))
        if rec.get("pin_digest"):  # the single pin of a journal written before per-writer pins
            with contextlib.suppress(InvalidInputError):
                pin = pin_name(plan.registry_id, ImageName.parse(str(rec["requested_name"])))
                offer(str(pin), str(rec["pin_digest"]), "journal pin", None, verify=True)
    columns = salvage.columns.get("oxe_journal_writers", [])
    for row in salvage.rows.get("oxe_journal_writers", []):
        rec = dict(zip(columns, row, strict=False))
        requested = requested_of.get(str(rec.get("session_id")))
        if rec.get("pin_digest") and requested is not None:
            with contextlib.suppress(InvalidInputError):
                image = ImageName.parse(requested)
                pin = writer_pin_name(plan.registry_id, image, str(rec["session_id"]), str(rec["writer_id"]))
                offer(str(pin), str(rec["pin_digest"]), "journal pin", None, verify=True)
    _plan_unreferenced(root, plan, taken, offer, adopt_unreferenced)
    return plan


def _plan_unreferenced(root: Path, plan: _Plan, taken: dict[str, str], offer: Any, adopt: bool) -> None:
    blobs = root / "blobs" / "sha256"
    manifests = _scan_ommx_manifests(blobs)
    reachable: set[str] = set()
    for digest in set(taken.values()):
        reachable |= _chain(blobs, digest, manifests)
    subjects = {links.subject for links in manifests.values() if links.subject}
    try:
        view_mtime = (root / layout_view.INDEX_JSON).stat().st_mtime
    except FileNotFoundError:
        view_mtime = float("-inf")
    drafts: dict[str, tuple[float, str]] = {}
    for digest, links in sorted(manifests.items()):
        if digest in reachable or digest in subjects:
            continue
        mtime = (blobs / digest[7:]).stat().st_mtime
        hexpart = digest[7:23]
        if links.artifact_type == mt.EXPERIMENT_ARTIFACT_TYPE:
            config = _config(blobs, links.config_digest)
            if config is not None and config.status == "draft" and config.requested_image_name:
                if mtime < view_mtime or config.requested_image_name in taken:
                    continue  # superseded before the last view write, or its experiment was committed
                current = drafts.get(config.requested_image_name)
                if current is None or current[0] < mtime:
                    drafts[config.requested_image_name] = (mtime, digest)
                continue
            kind = "experiment"
        elif links.annotations:
            kind = "artifact"
        else:
            plan.skipped.append(RecoveredRef("-", digest, "unreferenced", "generic artifact without annotations "
                                             "(a checkpoint pin or an unnamed draft): not adopted"))
            continue
        name = f"{RECOVERED_HOST}/{kind}:{hexpart}"
        if mtime < view_mtime:
            plan.skipped.append(RecoveredRef(name, digest, "unreferenced", "older than index.json and not in it "
                                             "(its ref was removed before the last view write)"))
        elif not adopt:
            plan.skipped.append(RecoveredRef(name, digest, "unreferenced", "not adopted (adopt_unreferenced=False)"))
        else:
            offer(name, digest, "unreferenced", None, verify=True)
    for requested, (_, digest) in sorted(drafts.items()):
        try:
            slot = checkpoint_name(plan.registry_id, ImageName.parse(requested))
        except InvalidInputError:
            continue
        if str(slot) not in taken:
            offer(str(slot), digest, "checkpoint draft", None, verify=True)


def _registry_id(salvage: _Salvage, document: dict[str, Any] | None) -> str:
    columns = salvage.columns.get("ommx_local_registry_metadata", [])
    for row in salvage.rows.get("ommx_local_registry_metadata", []):
        rec = dict(zip(columns, row, strict=False))
        if rec.get("key") == "registry_id" and _is_hex32(rec.get("value")):
            return str(rec["value"])
    annotations = (document or {}).get("annotations")  # written by an earlier version of ours
    if isinstance(annotations, dict) and _is_hex32(annotations.get("org.ommx-experiment.registry-id")):
        return str(annotations["org.ommx-experiment.registry-id"])
    for entry in (document or {}).get("manifests", []):
        name = ((entry or {}).get("annotations") or {}).get(layout_view.REF_NAME, "") if isinstance(entry, dict) else ""
        host = str(name).split("/", 1)[0]
        if host.endswith(".ommx.local") and _is_hex(host[:8]) and len(host) == 8 + len(".ommx.local"):
            return host[:8] + uuid.uuid4().hex[8:]
    return uuid.uuid4().hex


def _is_hex(value: object) -> bool:
    return isinstance(value, str) and value != "" and all(c in "0123456789abcdef" for c in value)


def _is_hex32(value: object) -> bool:
    return _is_hex(value) and len(str(value)) == 32


def _read_small(path: Path) -> bytes | None:
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        return path.read_bytes()
    except OSError:
        return None


def _links(blobs: Path, digest: str) -> Any:
    data = _read_small(blobs / digest[7:])
    if data is None or not data.startswith(b"{"):
        return None
    try:
        return parse_manifest_links(data, digest, CLOSURE)
    except (OmmxExperimentError, ValueError):
        return None


def _is_ommx_manifest(blobs: Path, digest: str) -> bool:
    links = _links(blobs, digest) if is_valid_digest(digest) else None
    return links is not None and links.artifact_type.startswith("application/org.ommx.v1.")


def _scan_ommx_manifests(blobs: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    try:
        entries = list(os.scandir(blobs))
    except FileNotFoundError:
        return found
    for entry in entries:
        if len(entry.name) != 64 or not _is_hex(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        digest = "sha256:" + entry.name
        links = _links(blobs, digest)
        if links is not None and links.artifact_type in mt.OMMX_ARTIFACT_TYPES:
            found[digest] = links
    return found


def _chain(blobs: Path, digest: str, known: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    current: str | None = digest
    while current is not None and current not in out:
        out.add(current)
        links = known.get(current) or _links(blobs, current)
        current = links.subject if links is not None else None
    return out


def _closure_problem(blobs: Path, digest: str) -> str | None:
    seen: set[str] = set()
    current: str | None = digest
    while current is not None and current not in seen:
        seen.add(current)
        links = _links(blobs, current)
        if links is None:
            return f"manifest {current} unreadable"
        for blob, size in ((links.config_digest, links.config_size), *links.layers):
            try:
                if (blobs / blob[7:]).stat().st_size != size:
                    return f"blob {blob} has the wrong size"
            except FileNotFoundError:
                return f"blob {blob} missing"
        current = links.subject if links.subject and (blobs / links.subject[7:]).is_file() else None
    return None


def _config(blobs: Path, digest: str) -> ExperimentConfig | None:
    data = _read_small(blobs / digest[7:])
    if data is None:
        return None
    try:
        return ExperimentConfig.parse(data)
    except Exception:  # noqa: BLE001 - any unparseable config just means "not a draft we can place"
        return None


def _mtime_timestamp(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat()


# --- rebuild --------------------------------------------------------------------------------------------


def _install(root: Path, salvage: _Salvage, plan: _Plan) -> list[Path]:
    """Build the new index under a temp name, move the old files aside, rename the new one into place.

    A kill before the rename leaves the old state (and a temp file that the next
    GC removes); after it, the complete new index.
    """
    from ..engine.registry import LocalRegistry

    db_path = root / DB_NAME
    temp = root / atomic.temp_name("recover-")
    try:
        _build(root, temp, salvage, plan)
        moved = _move_aside(db_path)
        os.rename(temp, db_path)
        atomic.fsync_dir(root)
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(temp) + suffix)
    clear_corruption(db_path)
    if not plan.restored and layout_view.our_entries(layout_view.read_document(root)):
        # Nothing could be restored: the old view is moved aside (kept), a fresh one is written.
        backup = root / f"{layout_view.INDEX_JSON}.broken-{_stamp()}"
        os.rename(root / layout_view.INDEX_JSON, backup)
        moved.append(backup)
    LocalRegistry.at(root).sync()
    return moved


def _build(root: Path, temp: Path, salvage: _Salvage, plan: _Plan) -> None:
    from ..engine.registry import insert_recovered_ref

    db = Database(root, path=temp)
    blobs = BlobStore(root)
    try:
        db.initialise(rebuild=True)
        with db.write("recover: registry metadata and journal") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO ommx_local_registry_metadata(key, value) VALUES ('registry_id', ?)",
                (plan.registry_id,),
            )
            columns = salvage.columns.get("ommx_local_registry_metadata", [])
            for row in salvage.rows.get("ommx_local_registry_metadata", []):
                rec = dict(zip(columns, row, strict=False))
                if rec.get("key") != "registry_id" and isinstance(rec.get("key"), str):
                    conn.execute(
                        "INSERT OR IGNORE INTO ommx_local_registry_metadata(key, value) VALUES (?, ?)",
                        (rec["key"], str(rec.get("value", ""))),
                    )
            for table, rows in salvage.rows.items():
                if not table.startswith(JOURNAL_PREFIX):
                    continue
                present = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
                if not present:
                    continue  # a journal table this version does not have
                columns = salvage.columns.get(table, [])
                keep = [i for i, c in enumerate(columns) if c in present]
                names = ", ".join(columns[i] for i in keep)
                marks = ", ".join("?" for _ in keep)
                for row in rows:
                    conn.execute(f"INSERT OR IGNORE INTO {table}({names}) VALUES ({marks})", [row[i] for i in keep])
        for ref in list(plan.restored):
            try:
                insert_recovered_ref(db, blobs, ImageName.parse(ref.image_name), ref.manifest_digest,
                                     plan.updated_at[ref.image_name])
            except OmmxExperimentError as exc:
                plan.restored.remove(ref)
                plan.skipped.append(RecoveredRef(ref.image_name, ref.manifest_digest, ref.source, str(exc)))
        db.checkpoint()  # every frame into the file about to be renamed (closing ours never checkpoints)
    finally:
        db.close()


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


__all__ = ["RecoveredRef", "RecoveryReport", "recover"]
