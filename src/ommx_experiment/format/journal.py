"""O(1) durability for unsealed sessions: the checkpoint journal, pins, OMMX-format checkpoints.

Three mechanisms (spec/experiment.md, "Checkpoints"):

journal
    SQLite rows in ``index.sqlite3`` (our ``oxe_journal_*`` tables). A Run close
    that stored no blobs is one autocommit ``INSERT`` of that run's row
    (parameters, status, reason, close time; attachment descriptors, filenames,
    solves, samplings, trace when present); one that stored blobs is one short
    ``BEGIN IMMEDIATE`` transaction that also moves the pin and rewrites the
    session header. Cost independent of the number of runs already closed.
pins
    OMMX's GC keeps only what ``refs`` reaches. Every journal write that stored
    blobs also publishes a tiny generic artifact whose layers are those blobs and
    whose ``subject`` is the previous pin, and moves the ref
    ``<id8>.ommx.local/checkpoint:pin-<sha256(name)>`` to it (replace). OMMX's GC
    walks subject chains iteratively, so every journaled blob stays reachable.
OMMX-format checkpoints
    Full draft/failed/interrupted Experiment artifacts at
    ``<id8>.ommx.local/checkpoint:<sha256(name)>`` (§3), written by the autosave
    policy and on failed/interrupted context exits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import media_types as mt
from ..engine.clock import now_timestamp, parse_timestamp
from ..engine.names import ImageName, checkpoint_name
from ..engine.oci import Descriptor, FrozenMap, Manifest, parse_descriptor
from ..errors import InvalidArtifactError, LifecycleError
from .content import AttachmentContent, ExperimentContent, RunContent, SolveContent, build_experiment

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from ..engine.registry import LocalRegistry
    from .codec import ExperimentConfig
    from .run_params import ParamValue

# --- names ------------------------------------------------------------------------------------------


def name_hash(requested: ImageName) -> str:
    return hashlib.sha256(str(requested).encode("utf-8")).hexdigest()


def pin_name(registry_id: str, requested: ImageName) -> ImageName:
    """``<id8>.ommx.local/checkpoint:pin-<sha256(name)>``: hidden from OMMX listings (spec)."""
    slot = checkpoint_name(registry_id, requested)
    return slot.with_tag(f"pin-{name_hash(requested)}")


# --- JSON bodies ------------------------------------------------------------------------------------


def _desc_obj(desc: Descriptor | None) -> dict[str, Any] | None:
    return None if desc is None else desc.to_dict()


def _desc(value: Any, path: str) -> Descriptor | None:
    return None if value is None else parse_descriptor(value, path)


def decode_param(cell: list[Any]) -> ParamValue:
    """One parameter value of a v1 row (``["b"|"i"|"f"|"s", value]``, floats as ``float.hex``)."""
    kind, value = cell
    if kind == "f":
        return float.fromhex(value)
    return {"b": bool, "i": int, "s": str}[kind](value)


def _call_obj(call: SolveContent) -> dict[str, Any]:
    return {
        "id": call.call_id,
        "status": call.status,
        "input": _desc_obj(call.input),
        "output": _desc_obj(call.output),
        "adapter": call.adapter,
        "adapter_options": call.adapter_options,
        "diagnostics": _desc_obj(call.diagnostics),
    }


def _call(obj: dict[str, Any]) -> SolveContent:
    return SolveContent(
        call_id=int(obj["id"]),
        status=str(obj["status"]),
        input=parse_descriptor(obj["input"], "journal input"),
        output=_desc(obj.get("output"), "journal output"),
        adapter=str(obj["adapter"]),
        adapter_options=str(obj["adapter_options"]),
        diagnostics=_desc(obj.get("diagnostics"), "journal diagnostics"),
    )


_ROW_V2 = 2
_PARAM_TYPES = (bool, int, float, str)


def _run_extras(run: RunContent) -> dict[str, Any] | None:
    if not (run.attachments.descriptors or run.trace is not None or run.solves or run.samplings):
        return None
    return {
        "attachments": {k: d.to_dict() for k, d in run.attachments.descriptors.items()},
        "filenames": dict(run.attachments.filenames),
        "trace": _desc_obj(run.trace),
        "solves": [_call_obj(c) for c in run.solves],
        "samplings": [_call_obj(c) for c in run.samplings],
    }


def run_body(run: RunContent, params: Mapping[str, ParamValue], closed_ns: int | None = None) -> str:
    """The journal row of one closed run (format v2).

    ``[2, run_id, status, reason, params, closed_ns, extras]``: ``params`` is a JSON
    object of the values themselves (JSON keeps bool/int/float/str apart, and Python
    writes floats with the shortest repr that reads back bit-exact, NaN/inf as
    ``NaN``/``Infinity``); ``closed_ns`` is the close time (``time.time_ns()``), which
    makes the row its own ``updated_at``; ``extras`` holds attachment descriptors,
    filenames, trace, solves and samplings, or ``null`` for a run without any.
    """
    values = params if type(params) is dict else dict(params)
    stamp = time.time_ns() if closed_ns is None else closed_ns
    return json.dumps([_ROW_V2, run.run_id, run.status, run.reason, values, stamp, _run_extras(run)])


def _parse_row(text: str) -> tuple[RunContent, dict[str, ParamValue], int | None]:
    obj = json.loads(text)
    if isinstance(obj, dict):  # v1 rows (written before the compact format)
        return (*_parse_v1(obj), None)
    version, run_id, status, reason, values, closed_ns, extras = obj
    if version != _ROW_V2 or not isinstance(values, dict) or not isinstance(closed_ns, int):
        raise ValueError(f"unsupported journal run row {text[:80]!r}")
    for value in values.values():
        if type(value) not in _PARAM_TYPES:
            raise TypeError(f"journal parameter value {value!r} is not bool/int/float/str")
    return _run_content(run_id, status, reason, extras or {}), values, closed_ns


def _parse_v1(obj: dict[str, Any]) -> tuple[RunContent, dict[str, ParamValue]]:
    if "attachments" not in obj:  # required in v1 rows
        raise KeyError("attachments")
    run = _run_content(obj["run_id"], obj["status"], obj.get("reason"), obj)
    params = {str(cell[0]): decode_param(cell[1:]) for cell in obj.get("params", [])}
    return run, params


def _run_content(run_id: Any, status: Any, reason: Any, extras: dict[str, Any]) -> RunContent:
    """A run from its row fields; ``extras`` holds attachments/filenames/trace/solves/samplings (v1: the row)."""
    return RunContent(
        run_id=int(run_id),
        status=str(status),
        reason=None if reason is None else str(reason),
        attachments=AttachmentContent(
            {k: parse_descriptor(v, f"journal run attachment {k!r}") for k, v in extras.get("attachments", {}).items()},
            extras.get("filenames") or {},
        ),
        trace=_desc(extras.get("trace"), "journal trace"),
        solves=tuple(_call(c) for c in extras.get("solves", [])),
        samplings=tuple(_call(c) for c in extras.get("samplings", [])),
    )


def _parse_run_row(text: str) -> tuple[RunContent, dict[str, ParamValue], int | None]:
    try:
        return _parse_row(text)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise InvalidArtifactError(f"Invalid checkpoint journal run row: {exc!r}") from exc


def run_blobs(run: RunContent) -> list[Descriptor]:
    """Every payload descriptor a run references."""
    if not (run.attachments.descriptors or run.trace is not None or run.solves or run.samplings):
        return []
    out = list(run.attachments.descriptors.values())
    if run.trace is not None:
        out.append(run.trace)
    for call in (*run.solves, *run.samplings):
        out.extend(d for d in (call.input, call.output, call.diagnostics) if d is not None)
    return out


# --- the journal -------------------------------------------------------------------------------------

# Tables: oxe_journal_sessions / oxe_journal_runs / oxe_journal_attachments (index_db.MIGRATIONS step 2).


@dataclass(frozen=True, slots=True)
class JournalHeader:
    """Registry-independent session facts (no runs): O(1) to rewrite."""

    annotations: Mapping[str, str]
    subject: Descriptor | None
    next_run_id: int

    def to_json(self) -> str:
        return json.dumps(
            {"annotations": dict(self.annotations), "subject": _desc_obj(self.subject), "next_run_id": self.next_run_id},
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def parse(cls, text: str) -> JournalHeader:
        obj = json.loads(text)
        return cls(FrozenMap(obj.get("annotations") or {}), _desc(obj.get("subject"), "journal subject"), int(obj["next_run_id"]))


@dataclass(frozen=True, slots=True)
class JournalSnapshot:
    """Everything a journal holds for one requested name."""

    session_id: str
    header: JournalHeader
    attachments: AttachmentContent
    runs: tuple[tuple[RunContent, dict[str, ParamValue]], ...]
    updated_at: str


class Journal:
    """The journal of one session (one requested name at a time)."""

    def __init__(self, registry: LocalRegistry, requested: ImageName, session_id: str | None = None) -> None:
        self.registry = registry
        self.requested = requested
        self.session_id = session_id or uuid.uuid4().hex
        self.started = session_id is not None  # adopting an existing journal: already durable
        self.pin_digest: str | None = None
        if self.started:
            row = registry.db.query(
                "SELECT pin_digest FROM oxe_journal_sessions WHERE requested_name = ? AND session_id = ?",
                (str(requested), self.session_id),
            )
            self.pin_digest = str(row[0][0]) if row and row[0][0] else None

    # --- writes ------------------------------------------------------------------

    def record(
        self,
        header: JournalHeader,
        *,
        runs: Iterable[tuple[RunContent, Mapping[str, ParamValue]]] = (),
        attachments: Iterable[tuple[str, Descriptor, str | None]] = (),
        new_blobs: Iterable[Descriptor] = (),
    ) -> None:
        """One transaction: header upsert plus the given run/attachment rows; then move the pin.

        The first call of a session replaces any older journal of the same name.
        Pin first, rows second: a crash in between leaves extra pinned blobs, never
        a journal row whose blobs are unprotected.
        """
        blobs = _unique(new_blobs)
        pin = self._publish_pin(blobs) if blobs else self.pin_digest
        name = str(self.requested)
        now_ns = time.time_ns()
        run_rows = [(self.session_id, r.run_id, run_body(r, p, now_ns)) for r, p in runs]
        att_rows = [(self.session_id, n, _attachment_body(d, f)) for n, d, f in attachments]
        with journal_write(self.registry, f"journal {name}") as conn:
            if not self.started:
                _drop_journal(conn, name)
                _drop_orphans(conn)
            conn.execute(
                "INSERT INTO oxe_journal_sessions(requested_name, session_id, header, pin_digest, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(requested_name) DO UPDATE SET session_id = excluded.session_id, "
                "header = excluded.header, pin_digest = excluded.pin_digest, updated_at = excluded.updated_at",
                (name, self.session_id, header.to_json(), pin, now_timestamp()),
            )
            conn.executemany(_INSERT_RUN, run_rows)
            conn.executemany("INSERT OR REPLACE INTO oxe_journal_attachments VALUES (?, ?, ?)", att_rows)
        self.started = True
        self.pin_digest = pin

    def append_run(self, run: RunContent, params: Mapping[str, ParamValue]) -> None:
        """The O(1) fast path of a Run close: one ``INSERT`` of the run row, nothing else.

        Only for a started journal and a run that stored no blobs (so the pin does
        not move) and when the header did not change (``set_annotation`` writes it
        at once). The row carries its close time, so the session row's
        ``updated_at`` need not be rewritten (:func:`read_journal` takes the newest).
        """
        if not self.started:
            raise LifecycleError(f"journal of {self.requested} has not been started; use record()")
        row = (self.session_id, run.run_id, run_body(run, params))
        conn = _journal_conn(self.registry)
        try:
            conn.execute(_INSERT_RUN, row)  # autocommit: one implicit transaction
            return
        except sqlite3.OperationalError as exc:  # e.g. SQLITE_BUSY_SNAPSHOT, which skips the busy handler
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        with journal_write(self.registry, f"journal {self.requested} run {run.run_id}") as conn:
            conn.execute(_INSERT_RUN, row)

    def _publish_pin(self, blobs: list[Descriptor]) -> str:
        blobs_store = self.registry.blobs
        config = blobs_store.put_bytes(mt.OCI_EMPTY_CONFIG_BYTES)
        subject = None
        if self.pin_digest is not None and self.started:
            subject = Descriptor(mt.OCI_MANIFEST, self.pin_digest, blobs_store.size(self.pin_digest))
        manifest = Manifest(
            mt.GENERIC_ARTIFACT_TYPE,
            Descriptor(mt.OCI_EMPTY_CONFIG, config.digest, config.size),
            tuple(blobs),
            subject,
        )
        stored = blobs_store.put_bytes(manifest.to_bytes())
        self.registry.replace(pin_name(self.registry.registry_id, self.requested), stored.digest)
        return stored.digest

    def move(self, new_name: ImageName) -> None:
        """Rename: the journal rows and the pin ref follow the session to ``new_name``."""
        old = self.requested
        self.requested = new_name
        if not self.started:
            return
        with journal_write(self.registry, f"journal rename {old} -> {new_name}") as conn:
            _drop_journal(conn, str(new_name))
            conn.execute(
                "UPDATE oxe_journal_sessions SET requested_name = ?, updated_at = ? WHERE requested_name = ? "
                "AND session_id = ?",
                (str(new_name), now_timestamp(), str(old), self.session_id),
            )
        if self.pin_digest is not None:
            self.registry.replace(pin_name(self.registry.registry_id, new_name), self.pin_digest)
            self.registry.remove(pin_name(self.registry.registry_id, old), expected_digest=self.pin_digest)

    def discard(self) -> None:
        """After a successful commit: drop the rows and the pin ref of this name."""
        discard_journal(self.registry, self.requested)


_JOURNAL_CONNS = threading.local()


@contextlib.contextmanager
def journal_write(registry: LocalRegistry, step: str) -> Iterator[sqlite3.Connection]:
    """A ``BEGIN IMMEDIATE`` transaction on this thread's *journal* connection.

    Same database and transaction discipline as ``Database.write``, but the
    connection runs with ``PRAGMA synchronous = NORMAL``: in WAL mode a commit
    then reaches the OS (so it survives SIGKILL of this process) without an
    fsync per Run close; a power loss can drop the last few journal rows,
    never corrupt the database. Ref writes keep the registry's own connection.
    """
    from ..engine.index_db import write_transaction

    with write_transaction(_journal_conn(registry), registry.db.path, step) as conn:
        yield conn


_INSERT_RUN = "INSERT OR REPLACE INTO oxe_journal_runs VALUES (?, ?, ?)"
JOURNAL_WAL_AUTOCHECKPOINT_PAGES = 8192  # WAL up to ~32 MiB between checkpoints of journal writes


def _journal_conn(registry: LocalRegistry) -> sqlite3.Connection:
    """This thread's journal connection to ``registry``'s database (``synchronous = NORMAL``)."""
    conns: dict[str, sqlite3.Connection] | None = getattr(_JOURNAL_CONNS, "by_path", None)
    if conns is None:
        conns = _JOURNAL_CONNS.by_path = {}
    key = str(registry.db.path)
    conn = conns.get(key)
    if conn is None:
        from ..engine.index_db import connect

        conn = connect(key)
        conn.execute("PRAGMA synchronous = NORMAL")
        # Each Run close appends a page or two to the WAL; checkpointing (two fsyncs)
        # every 1,000 pages, SQLite's default, cost ~25 µs per close on this disk.
        conn.execute(f"PRAGMA wal_autocheckpoint = {JOURNAL_WAL_AUTOCHECKPOINT_PAGES}")
        conns[key] = conn
    return conn


def _attachment_body(desc: Descriptor, filename: str | None) -> str:
    return json.dumps({"descriptor": desc.to_dict(), "filename": filename}, ensure_ascii=False, separators=(",", ":"))


def _unique(descs: Iterable[Descriptor]) -> list[Descriptor]:
    seen: dict[str, Descriptor] = {}
    for desc in descs:
        seen.setdefault(desc.digest, desc)
    return list(seen.values())


def _drop_journal(conn: Any, name: str) -> None:
    row = conn.execute("SELECT session_id FROM oxe_journal_sessions WHERE requested_name = ?", (name,)).fetchone()
    if row is None:
        return
    conn.execute("DELETE FROM oxe_journal_runs WHERE session_id = ?", (row[0],))
    conn.execute("DELETE FROM oxe_journal_attachments WHERE session_id = ?", (row[0],))
    conn.execute("DELETE FROM oxe_journal_sessions WHERE requested_name = ?", (name,))


def _drop_orphans(conn: Any) -> None:
    # Run rows whose session lost its name to a newer session (Journal.append_run does
    # not re-check ownership) are unreachable; drop them once per session start.
    for table in ("oxe_journal_runs", "oxe_journal_attachments"):
        conn.execute(f"DELETE FROM {table} WHERE session_id NOT IN (SELECT session_id FROM oxe_journal_sessions)")


def discard_journal(registry: LocalRegistry, requested: ImageName) -> None:
    with journal_write(registry, f"journal discard {requested}") as conn:
        _drop_journal(conn, str(requested))
    registry.remove(pin_name(registry.registry_id, requested))


def read_journal(registry: LocalRegistry, requested: ImageName) -> JournalSnapshot | None:
    """The journal of ``requested`` in one consistent snapshot, or None."""
    with registry.db.read() as conn:
        row = conn.execute(
            "SELECT session_id, header, updated_at FROM oxe_journal_sessions WHERE requested_name = ?",
            (str(requested),),
        ).fetchone()
        if row is None:
            return None
        session_id = str(row[0])
        run_rows = conn.execute(
            "SELECT body FROM oxe_journal_runs WHERE session_id = ? ORDER BY run_id", (session_id,)
        ).fetchall()
        att_rows = conn.execute(
            "SELECT name, body FROM oxe_journal_attachments WHERE session_id = ?", (session_id,)
        ).fetchall()
    descriptors: dict[str, Descriptor] = {}
    filenames: dict[str, str] = {}
    for name, body in att_rows:
        obj = json.loads(body)
        descriptors[str(name)] = parse_descriptor(obj["descriptor"], f"journal attachment {name!r}")
        if obj.get("filename") is not None:
            filenames[str(name)] = str(obj["filename"])
    parsed = [_parse_run_row(str(body)) for (body,) in run_rows]
    updated_at = str(row[2])
    newest_ns = max((ns for _, _, ns in parsed if ns is not None), default=None)
    if newest_ns is not None:  # fast-path run rows carry their own time (Journal.append_run)
        closed = datetime.fromtimestamp(newest_ns / 1e9, UTC)
        if closed > parse_timestamp(updated_at):
            updated_at = closed.isoformat()
    return JournalSnapshot(
        session_id=session_id,
        header=JournalHeader.parse(str(row[1])),
        attachments=AttachmentContent(descriptors, filenames),
        runs=tuple((run, params) for run, params, _ in parsed),
        updated_at=updated_at,
    )


# --- OMMX-format checkpoint slots ------------------------------------------------------------------------


def checkpoint_ref(registry: LocalRegistry, requested: ImageName) -> ImageName:
    return checkpoint_name(registry.registry_id, requested)


def checkpoint_updated_at(registry: LocalRegistry, requested: ImageName) -> tuple[str, str] | None:
    """``(manifest digest, updated_at)`` of the OMMX-format checkpoint slot, or None."""
    ref = checkpoint_ref(registry, requested)
    rows = registry.db.query(
        "SELECT manifest_digest, updated_at FROM refs WHERE name = ? AND reference = ?",
        (ref.repository, ref.reference),
    )
    return (str(rows[0][0]), str(rows[0][1])) if rows else None


# --- the journal seen by listings and GC ---------------------------------------------------------------

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
# The config names layers by index, never by digest: any well-formed descriptor stands in
# for the run-parameter layer when only the config is wanted.
_PARAMS_PLACEHOLDER = Descriptor(mt.RUN_PARAMETERS, "sha256:" + "0" * 64, 0)


def draft_config(snapshot: JournalSnapshot, requested: ImageName) -> ExperimentConfig:
    """The config a ``draft`` checkpoint of this journal would carry (byte-identical), built without I/O."""
    content = ExperimentContent(snapshot.attachments, tuple(run for run, _ in snapshot.runs), _PARAMS_PLACEHOLDER)
    return build_experiment(content, status="draft", requested_image_name=str(requested))[1]


def journal_blob_digests(registry: LocalRegistry) -> set[str]:
    """Every digest the journal tables name: GC roots besides the pin refs (belt and braces).

    Found textually (``sha256:<64 hex>``) in session headers (subject), pin digests,
    run rows and attachment rows, whatever their format, orphan rows included: an
    unreadable row over-protects its blobs instead of losing them. A pin digest
    is a manifest, so GC walks its subject chain.
    """
    found: set[str] = set()
    with registry.db.read() as conn:
        for sql in (
            "SELECT header || ' ' || COALESCE(pin_digest, '') FROM oxe_journal_sessions",
            "SELECT body FROM oxe_journal_runs",
            "SELECT body FROM oxe_journal_attachments",
        ):
            for (text,) in conn.execute(sql):
                found.update(_DIGEST_RE.findall(str(text)))
    return found
