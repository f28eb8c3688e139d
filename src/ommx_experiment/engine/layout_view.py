"""The OCI Image Layout *view* of a registry root: ``oci-layout`` and ``index.json``.

``index.json`` is never a source of truth. It is regenerated from OMMX's
``refs`` table (rows whose manifest blob is missing are skipped) and replaced
atomically, so ``skopeo inspect --raw oci:ROOT:NAME`` reads the root as it is.
Regeneration runs under our own ``flock`` on ``.oxe-index.lock`` and reads the
refs *inside* that lock, so the last writer always writes a view at least as
new as every ref committed before it started; a reader only ever sees a
complete old or new file.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import atomic
from .digest import is_valid_digest
from .index_db import Database
from .locks import flock_exclusive
from .names import ImageName

OCI_LAYOUT = "oci-layout"
INDEX_JSON = "index.json"
VIEW_LOCK = ".oxe-index.lock"
OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


def ensure_oci_layout(root: Path) -> None:
    """Write ``oci-layout`` once (never rewritten once present)."""
    path = root / OCI_LAYOUT
    if not path.exists():
        try:
            atomic.create_new_bytes(path, OCI_LAYOUT_BYTES)
        except FileExistsError:
            pass


def regenerate(root: Path, db: Database) -> int:
    """Rewrite ``index.json`` from ``refs``; returns the number of entries written."""
    root.mkdir(parents=True, exist_ok=True)
    with flock_exclusive(root / VIEW_LOCK):
        with db.read() as conn:
            version = int(conn.execute("SELECT value FROM oxe_meta WHERE key = 'refs_version'").fetchone()[0])
            rows = conn.execute(
                "SELECT r.name, r.reference, r.manifest_digest, m.artifact_type "
                "FROM refs r LEFT JOIN artifact_manifests m ON m.manifest_digest = r.manifest_digest "
                "ORDER BY r.name, r.reference"
            ).fetchall()
        entries = [e for e in (_entry(root, *row) for row in rows) if e is not None]
        document = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": entries}
        data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        atomic.atomic_write_bytes(root / INDEX_JSON, data)
        _record_version(db, version)
    return len(entries)


def is_stale(db: Database) -> bool:
    """True if ``refs`` changed (by us or by OMMX) since ``index.json`` was last written."""
    rows = db.query("SELECT key, value FROM oxe_meta WHERE key IN ('refs_version', 'view_version')")
    values = {str(k): str(v) for k, v in rows}
    return values.get("refs_version") != values.get("view_version")


def read_index(root: Path) -> dict[str, str]:
    """Parse ``index.json`` into ``{ref name: manifest digest}`` (for tests and diagnostics)."""
    document = json.loads((root / INDEX_JSON).read_bytes())
    return {m["annotations"][REF_NAME]: m["digest"] for m in document["manifests"]}


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
    entry["annotations"] = {REF_NAME: ref_name}
    return entry


def _record_version(db: Database, version: int) -> None:
    with db.write("record index.json version") as conn:
        conn.execute(
            "INSERT INTO oxe_meta(key, value) VALUES ('view_version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (str(version),),
        )
