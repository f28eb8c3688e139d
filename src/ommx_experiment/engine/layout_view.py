"""The OCI Image Layout *view* of a registry root: ``oci-layout`` and ``index.json``.

``index.json`` is never a source of truth: it lists OMMX's ``refs`` table (rows
whose manifest blob is missing, or whose digest is invalid, are skipped), so
``skopeo inspect --raw oci:ROOT:NAME`` reads the root as it is.

Keeping it current costs O(1) per ref write, whatever the number of refs
(spec/registry.md §5):

- The file is laid out for patching in place. Each entry sits in a *slot*
  (a separator, the compact JSON descriptor and :data:`SLOT_PAD` spaces) that
  never crosses a 4 KiB page; after the last slot a *reservoir* of spaces
  precedes the closing ``]}``. JSON allows whitespace between tokens, so every
  state below is a valid OCI index.
- A trigger-fed log (``oxe_refs_log``, written by SQLite triggers on ``refs``,
  also on OMMX's writes) names each ``(name, reference)`` changed since the
  view was last planned; the slot table ``oxe_view_slots`` records where each
  entry lives; ``oxe_meta.view_state`` the file's identity (random nonce and
  generation, repeated in the file's top-level annotation), size, reservoir
  and boot id.
- A ref write plans the view change *inside its own transaction* (read the
  log, compute the patches, update the slot table and state, empty the log),
  and applies it after COMMIT while still holding ``.oxe-index.lock``: one
  ``pwrite`` per changed entry (a new entry goes into the reservoir, a removed
  one is overwritten with spaces, a changed one is rewritten in its slot),
  then the new generation into the header. Each ``pwrite`` stays inside one
  page, so a SIGKILL never leaves half of one.
- Whenever the file does not match the recorded state (the header's
  generation is behind after a writer was killed between COMMIT and its
  writes; a foreign tool rewrote it; the machine rebooted since the state was
  recorded, so a power loss may have torn a page that was never fsynced), or
  the reservoir is used up, or holes outweigh the entries, the file is
  regenerated from ``refs`` and replaced atomically (temp, fsync, rename, fsync
  the folder). That costs O(refs), at most once per O(refs) appends, and once
  per boot.

Other tools write here too (``skopeo copy``, ``oras``: the root is a plain OCI
Image Layout). Every entry we write carries the annotation
``org.ommx-experiment.view: "1"`` and the header carries
``org.ommx-experiment.marks: "1"`` (skopeo keeps both). When the view is
regenerated, an unmarked entry of a marked file is *foreign*: it is carried over
verbatim in a slot of its own (name :data:`FOREIGN`), never erased, and its
manifest is a root of our GC. :meth:`LocalRegistry._adopt_foreign` adopts one
that is a complete OMMX artifact as a ref, which drops the foreign copy. A name
that ``refs`` already has keeps the ``refs`` target. An unmarked file was written
by an older version: its entries are ours.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from json.encoder import encode_basestring as _quote
from pathlib import Path
from typing import Any

from ..errors import RegistryError, RegistryIndexLostError
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
VIEW_ANNOTATION = "org.ommx-experiment.index-view"
"""Top-level annotation of ``index.json``: ``<nonce>.<generation>`` of the view state it matches."""
MARKS_ANNOTATION = "org.ommx-experiment.marks"
"""Top-level annotation: every entry we write in this file carries :data:`VIEW_MARK`."""
VIEW_MARK = "org.ommx-experiment.view"
"""Per-entry annotation of the entries we write; an unmarked entry of a marked file is foreign."""
FOREIGN = "\x00foreign"
"""``oxe_view_slots.name`` of a carried foreign entry (its ``reference`` is ``[ref name, digest]`` as JSON)."""

PAGE = 4096
SLOT_PAD = 16  # room for a changed entry of the same ref (size digits, artifactType) to stay in its slot
MIN_RESERVOIR = 16 * 1024  # ~50 new entries; a small registry's view is regenerated (cheaply) after those
TAIL = b"]}\n"
STATE_KEY = "view_state"
MAX_PATCHED_REFS = 512  # more changes than this at once: regenerating is as cheap

_HEAD = (
    '{"schemaVersion":2,"mediaType":"' + INDEX_MEDIA_TYPE + '","annotations":{"' + VIEW_ANNOTATION + '":"'
).encode()
_GEN_DIGITS = 16


def ensure_oci_layout(root: Path) -> None:
    """Write ``oci-layout`` once (never rewritten once present)."""
    path = root / OCI_LAYOUT
    if not path.exists():
        try:
            atomic.create_new_bytes(path, OCI_LAYOUT_BYTES)
        except FileExistsError:
            pass


# --- the recorded state ---------------------------------------------------------------------------


@dataclass(slots=True)
class ViewState:
    """What ``index.json`` holds, as recorded in ``oxe_meta`` (JSON under :data:`STATE_KEY`)."""

    nonce: str
    gen: int
    size: int  # file size (constant between regenerations: the reservoir is preallocated)
    boot: str
    append: int  # first byte after the last slot ever appended
    close: int  # offset of the closing "]}"
    live: int  # number of slots
    live_bytes: int  # bytes of all slots
    start: int  # offset of the first slot (end of the header)

    def header(self) -> bytes:
        return header_bytes(self.nonce, self.gen)

    def to_json(self) -> str:
        return json.dumps({key: getattr(self, key) for key in _STATE_FIELDS}, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str) -> ViewState | None:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None


_STATE_FIELDS = tuple(f.name for f in fields(ViewState))


def header_bytes(nonce: str, gen: int) -> bytes:
    return _HEAD + f'{nonce}.{gen:0{_GEN_DIGITS}d}","{MARKS_ANNOTATION}":"1"}},"manifests":['.encode()


def _gen_offset(nonce: str) -> int:
    return len(_HEAD) + len(nonce) + 1


def _load_state(conn: sqlite3.Connection) -> ViewState | None:
    row = conn.execute("SELECT value FROM oxe_meta WHERE key = ?", (STATE_KEY,)).fetchone()
    return None if row is None else ViewState.parse(str(row[0]))


def _store_state(conn: sqlite3.Connection, state: ViewState) -> None:
    conn.execute(
        "INSERT INTO oxe_meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (STATE_KEY, state.to_json()),
    )


_BOOT_ID: str | None = None


def boot_id() -> str:
    """This boot's id (Linux), so a view written before a reboot (maybe torn by power loss) is redone."""
    global _BOOT_ID
    if _BOOT_ID is None:
        try:
            _BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            _BOOT_ID = ""
    return _BOOT_ID


def file_matches(root: Path, state: ViewState | None) -> bool:
    """True if ``index.json`` is the file ``state`` describes (header, size, tail, this boot)."""
    if state is None or state.boot != boot_id():
        return False
    try:
        fd = os.open(root / INDEX_JSON, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size != state.size:
            return False
        header = state.header()
        if os.pread(fd, len(header), 0) != header:
            return False
        return os.pread(fd, len(TAIL), state.close) == TAIL
    except OSError:
        return False
    finally:
        os.close(fd)


def is_stale(root: Path, db: Database) -> bool:
    """True if ``index.json`` may not list ``refs`` exactly: a foreign writer (OMMX) changed
    ``refs`` since our last view write, or the file is not the one we recorded."""
    with db.read() as conn:
        state = _load_state(conn)
        pending = conn.execute("SELECT EXISTS(SELECT 1 FROM oxe_refs_log)").fetchone()[0]
    return bool(pending) or not file_matches(root, state)


TORN_READ_RETRIES = 20
"""Reads of ``index.json`` that fail to parse are retried this many times (see :func:`_load`)."""


def _load(root: Path) -> Any:
    """``json.loads`` of ``index.json``, read again while it does not parse.

    Linux does not make a buffered read atomic against a concurrent ``pwrite`` of
    the same page, so a read that races one of our in-place patches can see a torn
    page (rare: spec/registry.md §5); the patch takes microseconds, and a read
    after it parses. A file that still does not parse is invalid for real.
    """
    path = root / INDEX_JSON
    for attempt in range(1, TORN_READ_RETRIES):
        try:
            return json.loads(path.read_bytes())
        except ValueError:
            time.sleep(0.0005 * attempt)
    return json.loads(path.read_bytes())  # the last attempt: a ValueError now means an invalid file


def read_index(root: Path) -> dict[str, str]:
    """Parse ``index.json`` into ``{ref name: manifest digest}`` of the entries written from ``refs``."""
    document = _load(root)
    foreign = {id(e) for e in foreign_entries(document)}
    return {m["annotations"][REF_NAME]: m["digest"] for m in document["manifests"] if id(m) not in foreign}


def read_document(root: Path) -> dict[str, Any] | None:
    """The parsed ``index.json`` (None if absent or not a JSON object with a ``manifests`` list)."""
    try:
        document = _load(root)
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("manifests"), list):
        return None
    return document


def foreign_entries(document: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Entries another tool wrote: the unmarked entries of a file whose header carries our marks."""
    if document is None or not _has_key(document, MARKS_ANNOTATION):
        return []
    return [e for e in document["manifests"] if isinstance(e, dict) and not _has_key(e, VIEW_MARK)]


def our_entries(document: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The entries we wrote (marked; in an unmarked file written by an older version, all of them)."""
    if document is None:
        return []
    if not _has_key(document, MARKS_ANNOTATION):
        return [e for e in document["manifests"] if isinstance(e, dict)]
    return [e for e in document["manifests"] if isinstance(e, dict) and _has_key(e, VIEW_MARK)]


def carried_foreign(db: Database) -> list[tuple[str, str]]:
    """``(ref name, manifest digest)`` of the foreign entries the view carries (one query, usually empty)."""
    out = []
    for (reference,) in db.query("SELECT reference FROM oxe_view_slots WHERE name = ?", (FOREIGN,)):
        with contextlib.suppress(ValueError, TypeError):
            name, digest = json.loads(str(reference))
            out.append((str(name), str(digest)))
    return out


def foreign_digests(root: Path, db: Database) -> set[str]:
    """Manifest digests of every foreign entry, carried or still only in the file, plus every
    digest written in a damaged copy kept by a regeneration (GC roots).

    ``RegistryError`` naming the file if ``index.json`` exists but is not a JSON object with
    a ``manifests`` list: the entries other tools wrote there cannot be read (GC refuses).
    """
    found = {digest for _, digest in carried_foreign(db)}
    document = read_document(root)
    if document is None and os.path.lexists(root / INDEX_JSON):
        raise RegistryError(
            f"{root / INDEX_JSON} is not a valid OCI image index (not a JSON object with a `manifests` "
            "array): the images other tools (skopeo, oras) listed there cannot be seen, and GC would "
            "collect their blobs. Restore the file, or remove it if no other tool wrote images into this root"
        )
    found.update(str(e.get("digest")) for e in foreign_entries(document))
    for kept in damaged_copies(root):
        found.update(_digests_in(kept))
    return {d for d in found if is_valid_digest(d)}


def forget_foreign(conn: sqlite3.Connection, name: str, digest: str) -> None:
    """Inside a ref transaction: have the view drop the carried foreign entry ``name → digest``."""
    conn.execute("INSERT INTO oxe_refs_log(name, reference) VALUES (?, ?)", (FOREIGN, _foreign_key(name, digest)))


def _foreign_key(name: str, digest: str) -> str:
    return json.dumps([name, digest], ensure_ascii=False, separators=(",", ":"))


def _has_key(obj: dict[str, Any], key: str) -> bool:
    annotations = obj.get("annotations")
    return isinstance(annotations, dict) and key in annotations


def _ref_name(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    name = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else None


# --- plans ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Plan:
    """File changes decided inside a ref transaction, applied after it commits."""

    rewrite: bytes | None = None  # the whole new file, or None for patches
    writes: list[tuple[int, bytes]] = field(default_factory=list)
    entries: int = 0
    set_aside: bool = False  # keep the current (damaged) file under a new name before the rewrite


class _Fallback(Exception):
    """The change cannot be patched in place: regenerate instead."""


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold ``.oxe-index.lock``: taken *before* the ref transaction, released after the view is applied."""
    with flock_exclusive(root / VIEW_LOCK):
        yield


def plan(conn: sqlite3.Connection, root: Path, *, full: bool = False) -> Plan | None:
    """Inside the caller's write transaction (under :func:`locked`): bring the recorded view
    state up to date with ``refs`` and return the file changes, or None if there are none.

    Runs in a SAVEPOINT: if anything fails, the recorded state is left as it was (the
    view is then stale and the next write or open redoes it) and the error propagates.
    """
    conn.execute("SAVEPOINT oxe_view")
    try:
        result = _plan(conn, root, full)
    except BaseException:
        conn.execute("ROLLBACK TO oxe_view")
        conn.execute("RELEASE oxe_view")
        raise
    conn.execute("RELEASE oxe_view")
    return result


def _plan(conn: sqlite3.Connection, root: Path, full: bool) -> Plan | None:
    state = _load_state(conn)
    pending = conn.execute("SELECT DISTINCT name, reference FROM oxe_refs_log").fetchall()
    result: Plan | None = None
    if not full and file_matches(root, state):
        assert state is not None
        if not pending:
            return None
        if len(pending) <= MAX_PATCHED_REFS:
            conn.execute("SAVEPOINT oxe_patch")
            try:
                result = _patch(conn, root, state, pending)
            except _Fallback:
                conn.execute("ROLLBACK TO oxe_patch")
            conn.execute("RELEASE oxe_patch")
        if result is None:
            result = _compact(conn, root, state, pending)
    if result is None:
        result = _regenerate(conn, root)
    conn.execute("DELETE FROM oxe_refs_log")
    return result


def apply(root: Path, result: Plan | None) -> None:
    """Write a plan's changes (after the transaction that recorded it committed)."""
    if result is None:
        return
    path = root / INDEX_JSON
    if result.rewrite is not None:
        if result.set_aside:
            _set_aside(path)
        atomic.atomic_write_bytes(path, result.rewrite)  # its folder fsync also makes the set-aside link durable
        return
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for i, (offset, data) in enumerate(result.writes):
            if i == len(result.writes) - 1 and not boot_id():
                os.fdatasync(fd)  # no boot id to detect a power loss: entries durable before the header
            if os.pwrite(fd, data, offset) != len(data):
                raise OSError(f"short write to {path} at {offset}")
        if not boot_id():
            os.fdatasync(fd)
    finally:
        os.close(fd)


# --- patching -----------------------------------------------------------------------------------------


def _patch(conn: sqlite3.Connection, root: Path, state: ViewState, pending: list[tuple[str, str]]) -> Plan:
    writes: list[tuple[int, bytes]] = []
    for name, reference in pending:
        row = conn.execute(
            "SELECT r.manifest_digest, m.artifact_type FROM refs r "
            "LEFT JOIN artifact_manifests m ON m.manifest_digest = r.manifest_digest "
            "WHERE r.name = ? AND r.reference = ?",
            (name, reference),
        ).fetchone()
        entry = None if row is None else _entry(root, name, reference, str(row[0]), row[1])
        slot = conn.execute(
            "SELECT pos, len FROM oxe_view_slots WHERE name = ? AND reference = ?", (name, reference)
        ).fetchone()
        if slot is None:
            if entry is not None:
                _append(conn, state, writes, name, reference, entry)
            continue
        pos, length = int(slot[0]), int(slot[1])
        if length > PAGE:
            raise _Fallback("slot larger than a page")
        if entry is not None and 1 + len(entry) <= length:  # same slot: one write
            sep = b"," if _has_slot_before(conn, pos) else b" "
            writes.append((pos, (sep + entry).ljust(length)))
            continue
        if entry is None:
            _remove(conn, state, writes, name, reference, pos, length)
            continue
        # Moved to a new slot, written first: a reader sees the old entry, then the new, never none.
        if not _has_slot_before(conn, pos):
            raise _Fallback("the first slot outgrew itself")
        new_pos, new_length = _place(state, writes, entry)
        writes.append((pos, b" " * length))
        conn.execute(
            "UPDATE oxe_view_slots SET pos = ?, len = ? WHERE name = ? AND reference = ?",
            (new_pos, new_length, name, reference),
        )
        state.live_bytes += new_length - length
    if state.append - state.start > 2 * state.live_bytes + MIN_RESERVOIR:
        raise _Fallback("holes outweigh the entries")
    state.gen += 1
    writes.append((_gen_offset(state.nonce), f"{state.gen:0{_GEN_DIGITS}d}".encode()))
    _store_state(conn, state)
    return Plan(writes=writes, entries=state.live)


def _has_slot_before(conn: sqlite3.Connection, pos: int) -> bool:
    return conn.execute("SELECT EXISTS(SELECT 1 FROM oxe_view_slots WHERE pos < ?)", (pos,)).fetchone()[0] == 1


def _place(state: ViewState, writes: list[tuple[int, bytes]], entry: bytes) -> tuple[int, int]:
    """Write ``entry`` into a new slot taken from the reservoir; returns ``(pos, len)``."""
    length = 1 + len(entry) + SLOT_PAD
    pos = state.append
    if length > PAGE:
        raise _Fallback("entry larger than a page")
    if pos // PAGE != (pos + length - 1) // PAGE:
        pos = (pos // PAGE + 1) * PAGE  # never straddle a page: the gap stays whitespace
    if pos + length > state.close:
        raise _Fallback("reservoir used up")
    sep = b"," if state.live else b" "
    writes.append((pos, (sep + entry).ljust(length)))
    state.append = pos + length
    return pos, length


def _append(
    conn: sqlite3.Connection, state: ViewState, writes: list[tuple[int, bytes]], name: str, reference: str, entry: bytes
) -> None:
    pos, length = _place(state, writes, entry)
    conn.execute(
        "INSERT INTO oxe_view_slots(name, reference, pos, len) VALUES (?, ?, ?, ?)", (name, reference, pos, length)
    )
    state.live += 1
    state.live_bytes += length


def _remove(
    conn: sqlite3.Connection,
    state: ViewState,
    writes: list[tuple[int, bytes]],
    name: str,
    reference: str,
    pos: int,
    length: int,
) -> None:
    end = pos + length
    if not _has_slot_before(conn, pos):
        # The first slot has no comma; the next one's comma must go with it, in the same write.
        nxt = conn.execute(
            "SELECT pos FROM oxe_view_slots WHERE pos > ? ORDER BY pos LIMIT 1", (pos,)
        ).fetchone()
        if nxt is not None:
            end = int(nxt[0]) + 1
            if pos // PAGE != (end - 1) // PAGE:
                raise _Fallback("first slot and its successor on different pages")
    writes.append((pos, b" " * (end - pos)))
    conn.execute("DELETE FROM oxe_view_slots WHERE name = ? AND reference = ?", (name, reference))
    state.live -= 1
    state.live_bytes -= length


# --- regeneration ---------------------------------------------------------------------------------


def _compact(conn: sqlite3.Connection, root: Path, state: ViewState, pending: list[tuple[str, str]]) -> Plan | None:
    """A fresh layout from the current (verified) file: unchanged entries are copied, only the
    ``pending`` refs are looked up again. None if a slot does not hold an entry."""
    try:
        data = (root / INDEX_JSON).read_bytes()
    except OSError:
        return None
    if len(data) != state.size:
        return None
    entries: dict[tuple[str, str], bytes] = {}
    for name, reference, pos, length in conn.execute("SELECT name, reference, pos, len FROM oxe_view_slots"):
        entry = data[int(pos) + 1 : int(pos) + int(length)].rstrip(b" ")
        if not (entry.startswith(b'{"mediaType":') and entry.endswith(b"}")):
            return None
        entries[(str(name), str(reference))] = entry
    for name, reference in pending:
        row = conn.execute(
            "SELECT r.manifest_digest, m.artifact_type FROM refs r "
            "LEFT JOIN artifact_manifests m ON m.manifest_digest = r.manifest_digest "
            "WHERE r.name = ? AND r.reference = ?",
            (name, reference),
        ).fetchone()
        fresh = None if row is None else _entry(root, name, reference, str(row[0]), row[1])
        if fresh is None:
            entries.pop((name, reference), None)
        else:
            entries[(name, reference)] = fresh
    return _layout(conn, [(n, r, entries[(n, r)]) for n, r in sorted(entries)])


def _regenerate(conn: sqlite3.Connection, root: Path) -> Plan:
    """A fresh layout from ``refs`` (O(refs) lookups: each manifest's size, each name checked),
    plus the foreign entries of the current file, carried over."""
    rows = conn.execute(
        "SELECT r.name, r.reference, r.manifest_digest, m.artifact_type "
        "FROM refs r LEFT JOIN artifact_manifests m ON m.manifest_digest = r.manifest_digest "
        "ORDER BY r.name, r.reference"
    ).fetchall()
    current = read_document(root)
    if not rows and _load_state(conn) is None and our_entries(current):
        raise RegistryIndexLostError(
            f"{root / 'index.sqlite3'} has no refs and never wrote {root / INDEX_JSON}, which lists "
            f"{len(our_entries(current))} refs written by ommx-experiment; index.json was not rewritten. "
            f"Run `{RECOVER_HINT} --root {root}`"
        )
    entries = []
    names: set[str] = set()
    for name, reference, digest, artifact_type in rows:
        entry = _entry(root, str(name), str(reference), str(digest), artifact_type)
        if entry is not None:
            entries.append((str(name), str(reference), entry))
            with contextlib.suppress(ValueError):
                names.add(str(ImageName.from_row(str(name), str(reference))))
    plan = _layout(conn, _foreign_slots(current, names) + entries)
    plan.set_aside = current is None and os.path.isfile(root / INDEX_JSON)
    return plan


DAMAGED_PREFIX = INDEX_JSON + ".damaged-"
"""A damaged ``index.json`` is kept as ``index.json.damaged-<UTC time>-<hex>`` when it is regenerated."""

_DIGEST_TEXT = re.compile(rb"sha256:[0-9a-f]{64}")


def _set_aside(path: Path) -> None:
    """Keep the damaged ``index.json`` (a hard link: the bytes as they are) beside the new one.

    The entries other tools wrote there cannot be parsed, so regeneration cannot carry them;
    the copy keeps them for the user, and :func:`foreign_digests` treats every digest
    written in it as a GC root until the copy is removed.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = path.with_name(f"{DAMAGED_PREFIX}{stamp}-{secrets.token_hex(3)}")
    try:
        os.link(path, kept)
    except FileNotFoundError:
        return  # replaced meanwhile: nothing damaged is left to keep
    log.warning("%s was not a valid OCI image index; kept as %s and regenerated from refs", path, kept)


def damaged_copies(root: Path) -> list[Path]:
    """The damaged ``index.json`` files kept by :func:`_set_aside`, oldest first."""
    with os.scandir(root) as entries:
        return sorted(Path(e.path) for e in entries if e.name.startswith(DAMAGED_PREFIX))


def _digests_in(path: Path) -> set[str]:
    return {m.decode() for m in _DIGEST_TEXT.findall(path.read_bytes())}


def _foreign_slots(current: dict[str, Any] | None, names: set[str]) -> list[tuple[str, str, bytes]]:
    """The foreign entries of ``current`` to carry (a name ``refs`` has, literally or canonically, is dropped)."""
    out: dict[str, bytes] = {}
    for entry in foreign_entries(current):
        name, digest = _ref_name(entry), entry.get("digest")
        if name is not None:
            canonical = name
            with contextlib.suppress(ValueError):
                canonical = str(ImageName.parse(name))
            if name in names or canonical in names:
                continue
        ordered = {"mediaType": entry.get("mediaType", MANIFEST_MEDIA_TYPE), **entry}
        data = json.dumps(ordered, ensure_ascii=False, separators=(",", ":")).encode()
        if len(data) + 1 + SLOT_PAD > PAGE:
            continue  # not an index entry we can carry (a page at most); never seen from skopeo/oras
        out.setdefault(_foreign_key(str(name or ""), str(digest)), data)
    return [(FOREIGN, key, data) for key, data in sorted(out.items())]


def _layout(conn: sqlite3.Connection, entries: list[tuple[str, str, bytes]]) -> Plan:
    """The whole file for ``entries`` (a new nonce, generation 0), recorded as the view state."""
    nonce = secrets.token_hex(8)
    head = header_bytes(nonce, 0)
    parts = [head]
    pos = len(head)
    slots: list[tuple[str, str, int, int]] = []
    live_bytes = 0
    for name, reference, entry in entries:
        length = 1 + len(entry) + SLOT_PAD
        if pos // PAGE != (pos + length - 1) // PAGE and length <= PAGE:
            gap = (pos // PAGE + 1) * PAGE - pos
            parts.append(b" " * gap)
            pos += gap
        parts.append(((b"," if slots else b" ") + entry).ljust(length))
        slots.append((name, reference, pos, length))
        pos += length
        live_bytes += length
    reservoir = max(MIN_RESERVOIR, live_bytes // 2)
    close = pos + reservoir
    close += (-close - len(TAIL)) % PAGE  # end the file on a page boundary
    parts.append(b" " * (close - pos))
    parts.append(TAIL)
    data = b"".join(parts)
    conn.execute("DELETE FROM oxe_view_slots")
    conn.executemany("INSERT INTO oxe_view_slots(name, reference, pos, len) VALUES (?, ?, ?, ?)", slots)
    state = ViewState(
        nonce=nonce, gen=0, size=len(data), boot=boot_id(), append=pos, close=close,
        live=len(slots), live_bytes=live_bytes, start=len(head),
    )
    _store_state(conn, state)
    return Plan(rewrite=data, entries=len(slots))


_ENTRY_HEAD = '{"mediaType":"' + MANIFEST_MEDIA_TYPE + '","digest":"'


def _entry(root: Path, name: str, reference: str, digest: str, artifact_type: object) -> bytes | None:
    """The compact JSON descriptor of one ref (as ``json.dumps(..., separators=(",", ":"),
    ensure_ascii=False)`` would write it), or None if its digest is invalid or its manifest
    blob or name is not usable."""
    if not is_valid_digest(digest):
        return None
    try:
        size = os.stat(f"{root}/blobs/sha256/{digest[7:]}").st_size
        ref_name = str(ImageName.from_row(name, reference))
    except (FileNotFoundError, ValueError):
        return None
    kind = f',"artifactType":{_quote(str(artifact_type))}' if artifact_type else ""
    return (
        f'{_ENTRY_HEAD}{digest}","size":{size}{kind},"annotations":{{"{REF_NAME}":{_quote(ref_name)},'
        f'"{VIEW_MARK}":"1"}}}}'
    ).encode()
