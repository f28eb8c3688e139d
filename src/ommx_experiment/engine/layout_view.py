"""The OCI Image Layout *view* of a registry root: ``oci-layout`` and ``index.json``.

``index.json`` is never a source of truth for our refs. It is regenerated from
OMMX's ``refs`` table (rows whose manifest blob is missing are skipped) and
replaced atomically, so ``skopeo inspect --raw oci:ROOT:NAME`` reads the root as
it is. Regeneration runs under our own ``flock`` on ``.oxe-index.lock`` and reads
the refs *inside* that lock, so the last writer always writes a view at least as
new as every ref committed before it started; a reader only ever sees a
complete old or new file.

Other tools write here too (``skopeo copy``, ``oras``: the root is a plain OCI
Image Layout). Every entry we write carries the annotation
``org.ommx-experiment.view: "1"`` and the document carries
``org.ommx-experiment.registry-id`` (skopeo keeps both when it adds an entry).
An entry without our mark in a document with it is *foreign*: the registry
adopts it as a ref when it is a complete OMMX artifact
(``LocalRegistry._adopt_foreign``), and :func:`regenerate` carries every other
foreign entry over verbatim, so it is never erased. A document without our
mark was written by an older version of ours: its unmarked entries are ours.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import RegistryIndexLostError
from . import atomic
from .digest import is_valid_digest
from .index_db import RECOVER_HINT, Database
from .locks import flock_exclusive
from .names import ImageName

log = logging.getLogger(__name__)

OCI_LAYOUT = "oci-layout"
INDEX_JSON = "index.json"
VIEW_LOCK = ".oxe-index.lock"
OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
VIEW_MARK = "org.ommx-experiment.view"
ALIAS_MARK = "org.ommx-experiment.alias-of"
REGISTRY_ID_MARK = "org.ommx-experiment.registry-id"
_ATTEMPTS = 5


def ensure_oci_layout(root: Path) -> None:
    """Write ``oci-layout`` once (never rewritten once present)."""
    path = root / OCI_LAYOUT
    if not path.exists():
        try:
            atomic.create_new_bytes(path, OCI_LAYOUT_BYTES)
        except FileExistsError:
            pass


def regenerate(root: Path, db: Database) -> int:
    """Rewrite ``index.json`` from ``refs`` plus the foreign entries it holds; returns the number of our entries.

    A foreign write that lands while the new document is being built (the file's
    inode, size or mtime changed) makes it start over, so the foreign entry is
    carried; the window left is the instant between that check and the rename.
    """
    root.mkdir(parents=True, exist_ok=True)
    with flock_exclusive(root / VIEW_LOCK):
        for _ in range(_ATTEMPTS):
            before = _stat_key(root / INDEX_JSON)
            current = _current_document(root, before)
            with db.read() as conn:
                version = int(conn.execute("SELECT value FROM oxe_meta WHERE key = 'refs_version'").fetchone()[0])
                viewed = conn.execute("SELECT value FROM oxe_meta WHERE key = 'view_version'").fetchone()
                row = conn.execute(
                    "SELECT value FROM ommx_local_registry_metadata WHERE key = 'registry_id'"
                ).fetchone()
                rows = conn.execute(
                    "SELECT r.name, r.reference, r.manifest_digest, m.artifact_type "
                    "FROM refs r LEFT JOIN artifact_manifests m ON m.manifest_digest = r.manifest_digest "
                    "ORDER BY r.name, r.reference"
                ).fetchall()
            if not rows and viewed is None and _our_entries(current):
                raise RegistryIndexLostError(
                    f"{db.path} has no refs and never wrote {root / INDEX_JSON}, which lists "
                    f"{len(_our_entries(current))} refs written by ommx-experiment; index.json was not rewritten. "
                    f"Run `{RECOVER_HINT} --root {root}`"
                )
            entries = [e for e in (_entry(root, *r) for r in rows) if e is not None]
            names = {_ref_name(e) for e in entries}
            refs = {(_ref_name(e), e["digest"]) for e in entries}
            aliases = [e for e in _alias_entries(current) if (e["annotations"][ALIAS_MARK], e["digest"]) in refs]
            carried = [
                _as_alias(e, refs) for e in foreign_entries(current) if _ref_name(e) is None or _ref_name(e) not in names
            ]
            carried = aliases + carried
            document: dict[str, Any] = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": entries + carried}
            document["annotations"] = {REGISTRY_ID_MARK: "" if row is None else str(row[0])}
            data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            if _stat_key(root / INDEX_JSON) == before:
                atomic.atomic_write_bytes(root / INDEX_JSON, data)
                _remember(root, document)
                break
        else:
            log.warning("index.json of %s kept changing under another writer; left as it is", root)
            return len(entries)
        _record_version(db, version)
    return len(entries)


# The last document this process wrote per root, keyed by the file's (inode, size, mtime):
# while the file is unchanged, no other tool wrote it, and it need not be parsed again.
_WRITTEN: dict[str, tuple[tuple[int, int, int] | None, dict[str, Any]]] = {}


def _remember(root: Path, document: dict[str, Any]) -> None:
    _WRITTEN[str(root)] = (_stat_key(root / INDEX_JSON), document)


def _current_document(root: Path, key: tuple[int, int, int] | None = None) -> dict[str, Any] | None:
    """``index.json`` as it is now: the document we wrote last if the file did not change since."""
    key = _stat_key(root / INDEX_JSON) if key is None else key
    cached = _WRITTEN.get(str(root))
    if cached is not None and key is not None and cached[0] == key:
        return cached[1]
    return read_document(root)


def read_document(root: Path) -> dict[str, Any] | None:
    """The parsed ``index.json`` (None if absent or not a JSON object with a ``manifests`` list)."""
    try:
        document = json.loads((root / INDEX_JSON).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("manifests"), list):
        return None
    return document


def foreign_entries(document: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Entries another tool wrote: unmarked entries of a document that carries our mark."""
    if document is None or not _marked(document):
        return []
    return [e for e in document["manifests"] if isinstance(e, dict) and not _marked(e, VIEW_MARK)]


def foreign_digests(root: Path) -> set[str]:
    """Manifest digests of the foreign entries of ``index.json`` (GC roots: never collected by us)."""
    return {
        str(e["digest"]) for e in foreign_entries(_current_document(root))
        if isinstance(e.get("digest"), str) and is_valid_digest(e["digest"])
    }


def foreign_refs(root: Path) -> list[tuple[str, str]]:
    """``(ref name, manifest digest)`` of the foreign entries that name a ref."""
    out = []
    for entry in foreign_entries(_current_document(root)):
        name, digest = _ref_name(entry), entry.get("digest")
        if name is not None and isinstance(digest, str) and is_valid_digest(digest):
            out.append((name, digest))
    return out


def _alias_entries(document: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Entries a foreign tool wrote under a non-canonical name of a ref we adopted (kept while the ref is)."""
    return [e for e in _our_entries(document) if isinstance(e["annotations"].get(ALIAS_MARK), str)]


def _as_alias(entry: dict[str, Any], refs: set[tuple[str | None, Any]]) -> dict[str, Any]:
    """A foreign entry whose name canonicalises to a ref with the same digest becomes our alias entry
    (so removing the ref removes it too, instead of the next write adopting it again)."""
    name = _ref_name(entry)
    if name is None:
        return entry
    try:
        canonical = str(ImageName.parse(name))
    except ValueError:
        return entry
    if (canonical, entry.get("digest")) not in refs:
        return entry
    return {**entry, "annotations": {**entry["annotations"], VIEW_MARK: "1", ALIAS_MARK: canonical}}


def _our_entries(document: dict[str, Any] | None) -> list[dict[str, Any]]:
    if document is None:
        return []
    return [e for e in document["manifests"] if isinstance(e, dict) and _marked(e, VIEW_MARK)]


def _marked(obj: dict[str, Any], key: str = REGISTRY_ID_MARK) -> bool:
    annotations = obj.get("annotations")
    return isinstance(annotations, dict) and key in annotations


def _ref_name(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    name = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else None


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def is_stale(db: Database) -> bool:
    """True if ``refs`` changed (by us or by OMMX) since ``index.json`` was last written."""
    rows = db.query("SELECT key, value FROM oxe_meta WHERE key IN ('refs_version', 'view_version')")
    values = {str(k): str(v) for k, v in rows}
    return values.get("refs_version") != values.get("view_version")


def read_index(root: Path) -> dict[str, str]:
    """Parse ``index.json`` into ``{ref name: manifest digest}`` of the entries written from ``refs``."""
    document = json.loads((root / INDEX_JSON).read_bytes())
    foreign = {id(e) for e in (*foreign_entries(document), *_alias_entries(document))}
    return {m["annotations"][REF_NAME]: m["digest"] for m in document["manifests"] if id(m) not in foreign}


def _entry(root: Path, name: str, reference: str, digest: str, artifact_type: str | None) -> dict[str, object] | None:
    if not is_valid_digest(digest):
        return None
    try:
        size = (root / "blobs" / "sha256" / digest[len("sha256:") :]).stat().st_size
        ref_name = str(ImageName.from_row(name, reference))
    except (FileNotFoundError, ValueError):
        return None
    entry: dict[str, object] = {"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": size}
    if artifact_type:
        entry["artifactType"] = artifact_type
    entry["annotations"] = {REF_NAME: ref_name, VIEW_MARK: "1"}
    return entry


def _record_version(db: Database, version: int) -> None:
    with db.write("record index.json version") as conn:
        conn.execute(
            "INSERT INTO oxe_meta(key, value) VALUES ('view_version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (str(version),),
        )
