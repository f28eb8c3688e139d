"""O(1) durability for unsealed sessions: the checkpoint journal, pins, OMMX-format checkpoints.

Three mechanisms (spec/experiment.md, "Checkpoints"):

journal
    SQLite rows in ``index.sqlite3`` (our ``oxe_journal_*`` tables), one per closed
    run (parameters, status, reason, close time; attachment descriptors, filenames,
    solves, samplings, trace when present). A Run close that stored no blobs and
    brings no new column type is *group-committed*: it appends an ``f`` record to
    the writer's open-run log (which survives SIGKILL) and its row is written with
    the next batch (every :data:`GROUP_COMMIT_RUNS` closes, :data:`GROUP_COMMIT_SECONDS`
    after the first of a batch, at commit, at exit). Readers merge the ``f``
    records of every writer's log; a committer quiesces the writers first
    (:func:`run_log.quiesce`). A close that stored blobs or establishes a column
    type is one short ``BEGIN IMMEDIATE`` transaction (pin, columns, row). Cost
    independent of the number of runs already closed.
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

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import media_types as mt
from ..engine import index_db
from ..engine.clock import now_timestamp, parse_timestamp
from ..engine.names import ImageName, checkpoint_name
from ..engine.oci import Descriptor, FrozenMap, Manifest, parse_descriptor
from ..engine.writers import WriterIdentity, WriterLock, claim_if_dead, is_alive, log_path
from ..engine.writers import remove_files as remove_writer_files
from ..errors import (
    BlobNotFoundError,
    ExperimentBusyError,
    InvalidArtifactError,
    JournalWriteError,
    LifecycleError,
    OmmxExperimentError,
    ParameterTypeError,
    RegistryError,
    RunBlobsLostError,
    RunNotFoundError,
    RunNotRecordedError,
)
from .content import AttachmentContent, ExperimentContent, RunContent, SolveContent, build_experiment
from .journal_sweep import sweep_orphan_runs_later
from .run_columns import OwnColumns
from .run_log import CLOSED, OPEN, PENDING, LogTail, OpenRun, RunLog, quiesce, read_log, read_log_state

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    from ..engine.registry import LocalRegistry
    from .codec import ExperimentConfig
    from .run_params import ParamValue

log = logging.getLogger(__name__)

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


def call_to_obj(call: SolveContent) -> dict[str, Any]:
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
_ROW_V3 = 3
_PARAM_TYPES = (bool, int, float, str)


def _run_extras(run: RunContent) -> dict[str, Any] | None:
    if not (run.attachments.descriptors or run.trace is not None or run.solves or run.samplings):
        return None
    return {
        "attachments": {k: d.to_dict() for k, d in run.attachments.descriptors.items()},
        "filenames": dict(run.attachments.filenames),
        "trace": _desc_obj(run.trace),
        "solves": [call_to_obj(c) for c in run.solves],
        "samplings": [call_to_obj(c) for c in run.samplings],
    }


def run_body(run: RunContent, params: Mapping[str, ParamValue], closed_ns: int | None = None) -> str:
    """The journal row of one closed run (format v3).

    ``[3, run_id, status, reason, params, closed_ns, extras, started_ns]``: ``params``
    is a JSON object of the values themselves (JSON keeps bool/int/float/str apart,
    and Python writes floats with the shortest repr that reads back bit-exact,
    NaN/inf as ``NaN``/``Infinity``); ``closed_ns`` is the close time
    (``time.time_ns()``), which makes the row its own ``updated_at``; ``extras``
    holds attachment descriptors, filenames, trace, solves and samplings, or
    ``null`` for a run without any; ``started_ns`` is when the run was allocated
    (null when unknown). v2 rows are the same without ``started_ns``.
    """
    values = params if type(params) is dict else dict(params)
    stamp = run.finished_ns or (time.time_ns() if closed_ns is None else closed_ns)
    extras = _attachments_only_extras(run)
    if extras is None:
        return _dumps_row([_ROW_V3, run.run_id, run.status, run.reason, values, stamp, _run_extras(run), run.started_ns])
    # the row with ``null`` extras, then the extras text in their place: the last ", null, " of the row
    # (only ``started_ns`` follows it, an int or null)
    text = _dumps_row([_ROW_V3, run.run_id, run.status, run.reason, values, stamp, None, run.started_ns])
    at = text.rindex(", null, ")
    return f"{text[:at]}, {extras}{text[at + 6:]}"


_EXTRAS_TEMPLATES: dict[tuple[Any, ...], str] = {}


def _attachments_only_extras(run: RunContent) -> str | None:
    """``_dumps_row(_run_extras(run))`` of a run with attachments only (no trace, no calls), each
    without annotations or artifact type, from a template per (names, media types, filenames):
    a fork writes one row per carried run. None for any other run."""
    descriptors = run.attachments.descriptors
    if not descriptors or run.trace is not None or run.solves or run.samplings:
        return None
    shape = []
    cells: list[str | int] = []
    for name, desc in descriptors.items():
        if desc.annotations or desc.artifact_type is not None:
            return None
        shape.append((name, desc.media_type))
        cells.append(desc.digest)
        cells.append(desc.size)
    filenames = run.attachments.filenames
    key = (*shape, None, *filenames.items()) if filenames else tuple(shape)
    template = _EXTRAS_TEMPLATES.get(key)
    if template is None:
        if len(_EXTRAS_TEMPLATES) >= 256:
            _EXTRAS_TEMPLATES.clear()
        template = _EXTRAS_TEMPLATES[key] = _extras_template(shape, dict(filenames))
    return template % tuple(cells)


def _extras_template(shape: list[tuple[str, str]], filenames: dict[str, str]) -> str:
    def text(value: Any) -> str:  # a fixed part, as the row encoder writes it, safe for %-formatting
        return _dumps_row(value).replace("%", "%%")

    parts = [f'{text(name)}: {{"mediaType": {text(media_type)}, "digest": "%s", "size": %d, "annotations": {{}}}}'
             for name, media_type in shape]
    return '{"attachments": {' + ", ".join(parts) + '}, "filenames": ' + text(filenames) + ', "trace": null, "solves": [], "samplings": []}'


def _not_serializable(obj: object) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _row_encoder() -> Callable[[Any], str]:
    """``json.dumps`` with its defaults, without building an encoder per call (a third of a row's cost).

    The C encoder that ``json.dumps`` itself uses, made once; no circular-reference
    check (a row is built here from plain values). Falls back to ``json.dumps``
    where the C accelerator is missing.
    """
    from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]

    if c_make_encoder is None:
        return json.dumps
    encode = c_make_encoder(None, _not_serializable, encode_basestring_ascii, None, ": ", ", ", False, False, True)
    return lambda obj: "".join(encode(obj, 0))


_dumps_row = _row_encoder()


def _parse_row(text: str) -> tuple[RunContent, dict[str, ParamValue], int | None]:
    obj = json.loads(text)
    if isinstance(obj, dict):  # v1 rows (written before the compact format)
        return (*_parse_v1(obj), None)
    version = obj[0]
    if version == _ROW_V3:
        _, run_id, status, reason, values, closed_ns, extras, started_ns = obj
    elif version == _ROW_V2:
        _, run_id, status, reason, values, closed_ns, extras = obj
        started_ns = None
    else:
        raise ValueError(f"unsupported journal run row {text[:80]!r}")
    if not isinstance(values, dict) or not isinstance(closed_ns, int):
        raise ValueError(f"unsupported journal run row {text[:80]!r}")
    for value in values.values():
        if type(value) not in _PARAM_TYPES:
            raise TypeError(f"journal parameter value {value!r} is not bool/int/float/str")
    started = started_ns if isinstance(started_ns, int) else None
    if type(run_id) is int and type(status) is str and (reason is None or type(reason) is str):
        if extras is None:
            return RunContent.bare(run_id, status, reason, started, closed_ns), values, closed_ns  # a params-only run
        if (
            type(extras) is dict
            and extras.get("trace") is None
            and extras.get("solves", _NO_CALLS) == _NO_CALLS
            and extras.get("samplings", _NO_CALLS) == _NO_CALLS
        ):
            attachments = _attachments_of(extras)  # attachments only: no calls to decode
            return RunContent.bare(run_id, status, reason, started, closed_ns, attachments=attachments), values, closed_ns
    return _run_content(run_id, status, reason, extras or {}, started, closed_ns), values, closed_ns


def _parse_v1(obj: dict[str, Any]) -> tuple[RunContent, dict[str, ParamValue]]:
    if "attachments" not in obj:  # required in v1 rows
        raise KeyError("attachments")
    run = _run_content(obj["run_id"], obj["status"], obj.get("reason"), obj)
    params = {str(cell[0]): decode_param(cell[1:]) for cell in obj.get("params", [])}
    return run, params


_NO_CALLS: list[Any] = []


def _attachments_of(extras: dict[str, Any]) -> AttachmentContent:
    return AttachmentContent(
        {k: parse_descriptor(v, f"journal run attachment {k!r}") for k, v in extras.get("attachments", {}).items()},
        extras.get("filenames") or {},
    )


def _run_content(
    run_id: Any, status: Any, reason: Any, extras: dict[str, Any], started_ns: int | None = None, finished_ns: int | None = None
) -> RunContent:
    """A run from its row fields; ``extras`` holds attachments/filenames/trace/solves/samplings (v1: the row)."""
    return RunContent(
        run_id=int(run_id),
        status=str(status),
        reason=None if reason is None else str(reason),
        attachments=_attachments_of(extras),
        trace=_desc(extras.get("trace"), "journal trace"),
        solves=tuple(_call(c) for c in extras.get("solves", [])),
        samplings=tuple(_call(c) for c in extras.get("samplings", [])),
        started_ns=started_ns,
        finished_ns=finished_ns,
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
#
# Tables (engine.index_db.MIGRATIONS steps 2 and 3), all keyed by the session id of one unsealed
# experiment, which every writer of that experiment shares:
#   oxe_journal_sessions   requested_name (PK) -> session_id, header (annotations, subject),
#                          pin_digest (legacy single-writer pin), updated_at, next_run_id (the shared
#                          run-id counter), columns (established parameter types), sealing (a commit in
#                          progress: "<writer id> <manifest digest>")
#   oxe_journal_runs       closed runs of every writer (one row each, O(1) to append)
#   oxe_journal_attachments  experiment-level attachments of every writer
#   oxe_journal_writers    writer_id (PK) -> session_id, pid, host, started_at, pin_digest
#   oxe_journal_sealed     tombstones: session_id -> requested_name, manifest digest, sealed_at


@dataclass(frozen=True, slots=True)
class JournalHeader:
    """Session facts other than runs (annotations, subject): O(1) to rewrite."""

    annotations: Mapping[str, str]
    subject: Descriptor | None
    next_run_id: int = 0  # legacy copy; the shared counter is the sessions.next_run_id column

    def to_json(self) -> str:
        return json.dumps(
            {"annotations": dict(self.annotations), "subject": _desc_obj(self.subject), "next_run_id": self.next_run_id},
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def parse(cls, text: str) -> JournalHeader:
        obj = json.loads(text)
        return cls(FrozenMap(obj.get("annotations") or {}), _desc(obj.get("subject"), "journal subject"), int(obj.get("next_run_id", 0)))


@dataclass(frozen=True, slots=True)
class JournalSnapshot:
    """Everything a journal holds for one requested name, every writer's closed runs included."""

    session_id: str
    header: JournalHeader
    attachments: AttachmentContent
    runs: tuple[tuple[RunContent, dict[str, ParamValue]], ...]
    updated_at: str
    next_run_id: int = 0
    columns: Mapping[str, str] = field(default_factory=dict)
    slot_digest: str | None = None
    """The OMMX-format checkpoint our writers last published from this journal (never newer than it)."""


@dataclass(frozen=True, slots=True)
class OpenRunHolder:
    """A live writer that still holds open runs (for commit's refusal message)."""

    writer: WriterIdentity
    run_ids: tuple[int, ...]


INTERRUPTED_REASON = "process exited while the run was open"
GROUP_COMMIT_RUNS = 512
"""A writer's deferred closes are written to the journal after this many (or at the other triggers)."""
GROUP_COMMIT_SECONDS = 0.2
GROUP_COMMIT_BYTES = 8 << 20
"""... or once the deferred closes carry this many bytes of inline attachments."""
"""... or this long after the first close of a batch (``Session``'s flush timer)."""
QUIESCE_TIMEOUT_S = 90.0
_SEAL_KEEP_DAYS = 30
_MAX_BLOCK = 256


class Journal:
    """One writer's handle on the shared journal of one requested name.

    Created unstarted; :meth:`start` registers this process as a writer (a lock
    file, an open-run log, a ``oxe_journal_writers`` row) and creates or adopts the
    session. Run ids come from the shared counter in blocks reserved by one short
    transaction; a Run close is one ``INSERT`` that checks the session is neither
    sealed nor being sealed, so no close can slip past a commit.
    """

    def __init__(self, registry: LocalRegistry, requested: ImageName, session_id: str | None = None) -> None:
        self.registry = registry
        self.requested = requested
        self.session_id = session_id
        self.identity = WriterIdentity.new()
        self.started = False
        self.pin_digest: str | None = None
        self.columns: dict[str, str] = {}
        self.log: RunLog | None = None
        self._lock: WriterLock | None = None
        self._ids: list[int] = []
        self._block = 1
        self._parsed: dict[int, tuple[str, RunContent, dict[str, ParamValue]]] = {}  # run rows already decoded
        self.deferred: dict[int, tuple[RunContent, dict[str, ParamValue]]] = {}  # closed, row not written yet
        self.deferred_bytes = 0  # of the deferred closes' inline attachments
        self._no_open = True  # no run of this writer is open: a flush may reset the log
        self.opened_ns = 0  # when the last run id was allocated
        self._dropped: list[str] = []  # sessions this handle dropped: their pins go once the transaction is done
        self._reader: SessionReader | None = None  # the cached view of the session (snapshot)
        self._sweep_due = False  # a commit left this session's run rows: swept once this writer is released
        self._session_dropped = False  # discard() deleted the session row and every writer row of it
        self.own_columns = OwnColumns()  # this writer's closed runs' parameters, as columns (the commit's table)

    # --- joining ---------------------------------------------------------------------------------

    def start(
        self,
        header: JournalHeader,
        *,
        join: bool,
        runs: Iterable[tuple[RunContent, Mapping[str, ParamValue]]] = (),
        attachments: Iterable[tuple[str, Descriptor, str | None]] = (),
        new_blobs: Iterable[Descriptor] = (),
        source: Descriptor | None = None,
        reserve: bool = False,
    ) -> None:
        """Register this writer and create or adopt the session of ``requested``.

        ``reserve``: a Run is being started; a new session then hands this writer its first
        run-id block in the same transaction (one write transaction less per small experiment).

        ``join``: adopt the session the name has (or this handle's ``session_id``),
        creating it when there is none. Otherwise create a new session with the
        carried ``runs``/``attachments``, replacing an older journal of the name
        unless a live writer still writes to it (``LifecycleError``).
        ``source``: the stored manifest every carried blob is reachable from (a fork's
        parent, a restored checkpoint); pinned by reference instead of blob by blob.
        """
        if self.started:
            return
        self._session_dropped = False
        self._lock = WriterLock(self.registry.root, self.identity)
        self.log = RunLog(log_path(self.registry.root, self.identity.writer_id))
        try:
            carried_runs = list(runs)
            blobs = _unique(new_blobs)
            if source is not None:
                pin: str | None = self._pin_source(source, blobs)
            else:
                pin = self._publish_pin(blobs) if blobs else None
            with journal_write(self.registry, f"journal start {self.requested}") as conn:
                written, reserved = self._start_in(conn, header, join, carried_runs, list(attachments), pin, reserve)
                self.registry.registry_id_in(conn)  # the commit names its checkpoint slot with it: no write of its own then
        except BaseException:
            self._abandon()
            raise
        if reserved:
            self._ids = reserved
            self._block = min(self._block * 2, _MAX_BLOCK)
        self.pin_digest = pin
        self.started = True
        for body, run, params in written:  # the carried rows, decoded already: views never parse them
            self._parsed[run.run_id] = (body, run, params)
        self._forget_dropped()

    def _start_in(
        self,
        conn: sqlite3.Connection,
        header: JournalHeader,
        join: bool,
        runs: list[tuple[RunContent, Mapping[str, ParamValue]]],
        attachments: list[tuple[str, Descriptor, str | None]],
        pin: str | None,
        reserve: bool = False,
    ) -> tuple[list[tuple[str, RunContent, dict[str, ParamValue]]], list[int]]:
        """The transaction of :meth:`start`; returns the carried rows it wrote ``(body, run as read back, params)``
        and the run ids it reserved for this writer (``reserve`` and a new session; else none), in pop order."""
        name = str(self.requested)
        reserved: list[int] = []
        written: list[tuple[str, RunContent, dict[str, ParamValue]]] = []
        row = conn.execute(
            "SELECT session_id, columns, sealing FROM oxe_journal_sessions WHERE requested_name = ?", (name,)
        ).fetchone()
        adopt = row is not None and (join or row[0] == self.session_id)
        if adopt:
            self.session_id = str(row[0])
            self.columns = dict(json.loads(row[1] or "{}"))
            if not self.columns:  # a journal written before column types were kept: derive them once
                bodies = conn.execute("SELECT body FROM oxe_journal_runs WHERE session_id = ?", (self.session_id,)).fetchall()
                self.columns = _columns_of((_parse_run_row(str(b))[1] for (b,) in bodies), {})
                if self.columns:
                    conn.execute(
                        "UPDATE oxe_journal_sessions SET columns = ? WHERE session_id = ?",
                        (json.dumps(self.columns), self.session_id),
                    )
            if row[2] is not None and not _sealer_dead(self.registry.root, str(row[2])):
                raise LifecycleError(f"Experiment {name} is being committed by another process; it cannot be joined now")
        else:
            if row is not None:  # a new session replaces the draft of the name, as in OMMX
                self._dropped += _replace_journal(conn, self.registry.root, self.requested)
            self.session_id = self.session_id if (self.session_id and not join) else uuid.uuid4().hex
            next_id = max((r.run_id for r, _ in runs), default=-1) + 1
            if reserve and not self._ids:  # as _reserve would, right after this transaction
                reserved = _id_block(next_id, self._block)
            self.columns = _columns_of((p for _, p in runs), {})
            conn.execute(
                "INSERT INTO oxe_journal_sessions(requested_name, session_id, header, pin_digest, updated_at, "
                "next_run_id, columns) VALUES (?, ?, ?, NULL, ?, ?, ?)",
                (name, self.session_id, header.to_json(), now_timestamp(), next_id + len(reserved), json.dumps(self.columns)),
            )
            now_ns = time.time_ns()
            for r, p in runs:  # a row states its close time: a carried run without one reads back with now_ns
                written.append((run_body(r, p, now_ns), r if r.finished_ns else dataclasses.replace(r, finished_ns=now_ns), dict(p)))
            conn.executemany(_INSERT_RUN, [(self.session_id, r.run_id, body) for body, r, _ in written])
            conn.executemany(
                "INSERT OR REPLACE INTO oxe_journal_attachments VALUES (?, ?, ?)",
                [(self.session_id, n, _attachment_body(d, f)) for n, d, f in attachments],
            )
        conn.execute(
            "INSERT INTO oxe_journal_writers(writer_id, session_id, pid, host, started_at, pin_digest) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (self.identity.writer_id, self.session_id, self.identity.pid, self.identity.host, now_timestamp(), pin),
        )
        return written, reserved

    # --- run ids -----------------------------------------------------------------------------------

    def allocate_run_id(self) -> int:
        """A run id no writer was or will be given; logged as opened at once."""
        if not self._ids:
            self._reserve()
        run_id = self._ids.pop()
        assert self.log is not None
        self._no_open = False
        self.opened_ns = time.time_ns()  # the Run's started_ns: its deferred close reads it back from the log
        self.log.append((OPEN, run_id, self.opened_ns))
        return run_id

    def _reserve(self) -> None:
        count = self._block
        with journal_write(self.registry, f"journal {self.requested}: reserve run ids") as conn:
            row = conn.execute(
                "UPDATE oxe_journal_sessions SET next_run_id = next_run_id + ? WHERE session_id = ? "
                "AND sealing IS NULL RETURNING next_run_id",
                (count, self.session_id),
            ).fetchone()
            if row is None:
                raise LifecycleError(self._gone_message(conn, "no new Run can be started"))
        self._ids = _id_block(int(row[0]) - count, count)
        self._block = min(self._block * 2, _MAX_BLOCK)

    def give_back_ids(self) -> None:
        """Return the unused reserved ids when no other writer reserved after us (keeps ids dense)."""
        if not self._ids or not self.started:
            return
        low, high = min(self._ids), max(self._ids)
        with (
            contextlib.suppress(sqlite3.Error, OmmxExperimentError),
            journal_write(self.registry, f"journal {self.requested}: return run ids") as conn,
        ):
                conn.execute(
                    "UPDATE oxe_journal_sessions SET next_run_id = ? WHERE session_id = ? AND next_run_id = ?",
                    (low, self.session_id, high + 1),
                )
        self._ids = []

    # --- parameter types -----------------------------------------------------------------------------

    def check_param(self, name: str, value: ParamValue) -> None:
        """``ParameterTypeError`` (a ValueError) when ``value`` cannot join column ``name``.

        The column types are those the closed runs of every writer established;
        an unknown name or an apparent conflict is checked against the journal
        (another writer may have established or widened it meanwhile).
        """
        kind = _KIND[type(value)]
        established = self.columns.get(name)
        if established is not None and (established == kind or _widens(established, kind)):
            return
        if self.started:
            self._refresh_columns()
            established = self.columns.get(name)
        if established is not None and established != kind and not _widens(established, kind):
            raise ParameterTypeError(name, established, kind, value)

    def _refresh_columns(self) -> None:
        rows = self.registry.db.query("SELECT columns FROM oxe_journal_sessions WHERE session_id = ?", (self.session_id,))
        if rows:
            self.columns = dict(json.loads(str(rows[0][0]) or "{}"))

    # --- closing runs ---------------------------------------------------------------------------------

    def append_run(
        self,
        run: RunContent,
        params: Mapping[str, ParamValue],
        new_blobs: Iterable[Descriptor] = (),
        *,
        columns_checked: bool = False,
    ) -> bool:
        """Record a closed run of this writer: it survives SIGKILL and is visible to every writer when this returns.

        Returns True when the close was deferred (group commit: an ``f`` record in
        the open-run log; the row follows with :meth:`flush`), False when the row
        was written now. Raises ``ParameterTypeError`` (nothing recorded) when
        another writer established a different type for one of its parameters
        meanwhile, and ``RunNotRecordedError`` when the experiment was committed or
        replaced first (the run is then kept in a new draft of the same name, as
        the message says). ``columns_checked``: every value is known to have exactly
        the type its column has in :attr:`columns` (no new or widened column).
        """
        blobs = _unique(new_blobs)
        inline = run.inline
        stored = [d for d in blobs if d.digest not in inline] if inline else blobs  # inline ones go with the batch
        update = None if columns_checked else _column_update(self.columns, params)
        log = self.log
        if not stored and update is None and log is not None and not index_db.other_sqlite_loaded():
            log.close_lock()
            try:
                if not log.sealing():
                    log.append((PENDING, run.run_id, run.status, run.reason, run.finished_ns or time.time_ns()))
                    self.deferred[run.run_id] = (run, params if type(params) is dict else dict(params))
                    if inline:
                        self.deferred_bytes += sum(map(len, inline.values()))
                    self.own_columns.add(run, params)
                    return True
                # a committer quiesced this writer: the journal decides, under the close lock
                body = run_body(run, params)
                recorded = self._append_slow(run, params, body, blobs) if blobs else self._append_fast(run.run_id, body)
                if recorded:  # not being sealed (any more): a stale flag of a committer that gave up
                    log.clear_flag()
            finally:
                log.close_unlock()
        else:
            if self.deferred:  # OMMX 3's SQLite is in the process: no deferral, nothing left for a timer
                self.flush()
            body = run_body(run, params)
            recorded = self._append_slow(run, params, body, blobs)
        if not recorded:
            self._keep_late(run, params, blobs)
        if inline:
            run = dataclasses.replace(run, inline=None)  # stored now
        if recorded:
            self.own_columns.add(run, params)
        self._parsed[run.run_id] = (body, run, dict(params))
        assert self.log is not None
        self.log.append((CLOSED, run.run_id))
        return False

    def flush(self) -> None:
        """Write this writer's deferred closes in one transaction (group commit).

        While another process seals the session the runs stay deferred: the
        committer read them from this writer's log and includes them; once it
        committed (a tombstone) they are dropped here, once it gave up they are
        written by the next flush. A session discarded meanwhile keeps them in a
        ``-late-`` draft (``RunNotRecordedError``). A failed write raises
        ``JournalWriteError`` naming the runs, which stay deferred for a retry.
        """
        if not self.deferred:
            return
        runs = list(self.deferred.values())
        sid = self.session_id
        rows = [(sid, run.run_id, run_body(run, params)) for run, params in runs]
        committed = None
        inline: dict[str, bytes] = {}
        for run, _ in runs:
            if run.inline:
                inline.update(run.inline)
        try:
            # Inline attachments: stored side by side and pinned (one manifest, one folder fsync)
            # before the rows name them, as a close that stored blobs pins before its row.
            pin = self._publish_pin(_inline_blobs(runs), inline) if inline else self.pin_digest
            with journal_write(self.registry, f"journal {self.requested}: {len(runs)} closed run(s)") as conn:
                state = _session_state(conn, self.session_id)
                if state == "open":
                    conn.executemany("INSERT OR IGNORE INTO oxe_journal_runs VALUES (?, ?, ?)", rows)
                    if pin != self.pin_digest:
                        conn.execute(
                            "UPDATE oxe_journal_writers SET pin_digest = ? WHERE writer_id = ?", (pin, self.identity.writer_id)
                        )
                elif state == "sealing":
                    self.pin_digest = pin
                    return
                else:
                    committed = conn.execute(
                        "SELECT 1 FROM oxe_journal_sealed WHERE session_id = ?", (self.session_id,)
                    ).fetchone()
        except (RegistryError, OSError, sqlite3.Error) as exc:  # JournalWriteError, or a failed COMMIT
            ids = ", ".join(str(run.run_id) for run, _ in runs)
            raise JournalWriteError(
                f"Run(s) {ids} of {self.requested} were closed but not saved to the checkpoint journal "
                f"{self.registry.db.path}: {exc}; they stay in this writer's open-run log and are written by "
                "the next close, commit or exit once the cause is fixed"
            ) from exc
        self.pin_digest = pin
        for (run, params), (_, _, body) in zip(runs, rows, strict=True):
            self.deferred.pop(run.run_id, None)
            stored = run
            if run.inline is not None:  # the bytes are blobs now: the views read them from the store
                stored = dataclasses.replace(run, inline=None)
                self.own_columns.replaced(run, stored)
            self._parsed[run.run_id] = (body, stored, params)
        self.deferred_bytes = 0
        self._after_flush([run.run_id for run, _ in runs])
        if state == "gone" and committed is None:
            late: list[str] = []
            for run, params in runs:
                try:
                    self._keep_late(run, params, [d for d in run_blobs(run) if run.inline and d.digest in run.inline])
                except RunNotRecordedError as exc:
                    late.append(str(exc))
            raise RunNotRecordedError("; ".join(late))

    def forget_committed_deferred(self) -> None:
        """The commit just published holds this writer's deferred closes (its view read them): they are
        never written as rows, and their inline bytes are blobs of the commit. The log is reset (or
        marks them written); killed before this, the dead writer's ``f`` records belong to a committed
        session, like those of any quiesced writer."""
        if not self.deferred:
            return
        ids = list(self.deferred)
        self.deferred.clear()
        self.deferred_bytes = 0
        self._after_flush(ids)

    def _after_flush(self, run_ids: list[int]) -> None:
        assert self.log is not None
        if self._no_open and not self.deferred:
            self.log.reset()
        else:
            for run_id in run_ids:
                self.log.append((CLOSED, run_id))

    def _append_fast(self, run_id: int, body: str) -> bool:
        row = (self.session_id, run_id, body, self.session_id)
        started = time.monotonic()
        try:
            return self.registry.db.journal_execute(_INSERT_RUN_IF_OPEN, row) == 1  # autocommit: one implicit transaction
        except sqlite3.OperationalError as exc:
            # SQLITE_BUSY_SNAPSHOT and friends skip the busy handler: retry in a BEGIN IMMEDIATE,
            # unless the busy handler already waited its whole budget (a lock held for long).
            waited = time.monotonic() - started
            if ("locked" not in str(exc) and "busy" not in str(exc)) or waited >= 0.9 * index_db.BUSY_TIMEOUT_MS / 1000:
                raise JournalWriteError(self.unsaved_message(run_id, exc)) from exc
        with journal_write(self.registry, f"journal {self.requested} run {run_id}") as conn:
            return conn.execute(_INSERT_RUN_IF_OPEN, row).rowcount == 1

    def _append_slow(
        self, run: RunContent, params: Mapping[str, ParamValue], body: str, blobs: list[Descriptor]
    ) -> bool:
        pin = self._pin_run_blobs(run, params, blobs) if blobs else self.pin_digest
        with journal_write(self.registry, f"journal {self.requested} run {run.run_id}") as conn:
            columns = _session_columns(conn, self.session_id)
            update = _column_update(columns, params)  # raises ParameterTypeError on a conflict
            if conn.execute(_INSERT_RUN_IF_OPEN, (self.session_id, run.run_id, body, self.session_id)).rowcount != 1:
                return False
            if update is not None:
                columns.update(update)
                conn.execute(
                    "UPDATE oxe_journal_sessions SET columns = ? WHERE session_id = ?", (json.dumps(columns), self.session_id)
                )
            if pin != self.pin_digest:
                conn.execute("UPDATE oxe_journal_writers SET pin_digest = ? WHERE writer_id = ?", (pin, self.identity.writer_id))
        self.columns = columns
        self.pin_digest = pin
        return True

    def _pin_run_blobs(self, run: RunContent, params: Mapping[str, ParamValue], blobs: list[Descriptor]) -> str:
        """Pin a closing run's blobs; ``RunBlobsLostError`` (the run cannot be recorded) when some are gone."""
        try:
            return self._publish_pin(blobs, run.inline)
        except BlobNotFoundError as exc:
            lost = [d for d in blobs if not self.registry.blobs.exists(d.digest)]
            if not lost:
                raise
            raise RunBlobsLostError(_lost_blobs_message(self.requested, self.registry.root, run, params, lost)) from exc

    def take_run_ids(self, count: int) -> list[int]:
        """``count`` run ids for :meth:`append_closed_runs`: never open, so not in the open-run log."""
        ids: list[int] = []
        while len(ids) < count:
            if not self._ids:
                self._reserve()
            ids.append(self._ids.pop())
        return ids

    def append_closed_runs(self, runs: Sequence[tuple[RunContent, Mapping[str, ParamValue]]]) -> None:
        """Record runs that were never open in this process (a sweep's batch): one pin move, one transaction.

        ``ParameterTypeError`` (nothing recorded) when a parameter conflicts with
        the established column types; ``RunNotRecordedError`` (nothing recorded)
        when the experiment was committed or replaced first.
        """
        blobs = _unique(blob for run, _ in runs for blob in run_blobs(run))
        pin = self._publish_pin(blobs) if blobs else self.pin_digest
        bodies = [run_body(run, params) for run, params in runs]
        rows = [(self.session_id, run.run_id, body, self.session_id) for (run, _), body in zip(runs, bodies, strict=True)]
        with journal_write(self.registry, f"journal {self.requested}: {len(rows)} sweep run(s)") as conn:
            columns = _session_columns(conn, self.session_id)
            before = dict(columns)
            for _, params in runs:
                columns.update(_column_update(columns, params) or {})  # raises ParameterTypeError on a conflict
            if sum(conn.execute(_INSERT_RUN_IF_OPEN, row).rowcount for row in rows) != len(rows):
                raise RunNotRecordedError(self._gone_message(conn, f"{len(rows)} sweep run(s) were not recorded"))
            if columns != before:
                conn.execute("UPDATE oxe_journal_sessions SET columns = ? WHERE session_id = ?", (json.dumps(columns), self.session_id))
            if pin != self.pin_digest:
                conn.execute("UPDATE oxe_journal_writers SET pin_digest = ? WHERE writer_id = ?", (pin, self.identity.writer_id))
        self.columns = columns
        self.pin_digest = pin
        for (run, params), body in zip(runs, bodies, strict=True):
            self._parsed[run.run_id] = (body, run, dict(params))

    def unsaved_message(self, run_id: int, exc: BaseException) -> str:
        return (
            f"Run {run_id} of {self.requested} was not saved to the checkpoint journal {self.registry.db.path}: {exc}; "
            "it stays in this session (close it again, or commit, once the cause is fixed)"
        )

    def _keep_late(self, run: RunContent, params: Mapping[str, ParamValue], blobs: list[Descriptor]) -> None:
        """The session was sealed or replaced before this close: keep the run in a draft of its own.

        The draft is named after the requested name with ``-late-<session id[:8]>``
        appended to its tag; its subject is the committed manifest when there is one.
        Every late run of the same session lands in the same draft.
        """
        late = late_name(self.requested, str(self.session_id))
        with journal_write(self.registry, f"journal {self.requested}: late run {run.run_id}") as conn:
            why = self._gone_message(conn, f"run {run.run_id} closed too late to be part of it")
            sealed = conn.execute(
                "SELECT manifest_digest FROM oxe_journal_sealed WHERE session_id = ?", (self.session_id,)
            ).fetchone()
            row = conn.execute("SELECT session_id FROM oxe_journal_sessions WHERE requested_name = ?", (str(late),)).fetchone()
            if row is not None:
                target = str(row[0])
            else:
                target = uuid.uuid4().hex
                subject = None
                if sealed is not None and self.registry.blobs.exists(str(sealed[0])):
                    digest = str(sealed[0])
                    subject = Descriptor(mt.OCI_MANIFEST, digest, self.registry.blobs.size(digest))
                conn.execute(
                    "INSERT INTO oxe_journal_sessions(requested_name, session_id, header, pin_digest, updated_at, "
                    "next_run_id, columns) VALUES (?, ?, ?, NULL, ?, 0, '{}')",
                    (str(late), target, JournalHeader(FrozenMap(), subject).to_json(), now_timestamp()),
                )
            conn.execute(_INSERT_RUN, (target, run.run_id, run_body(run, params)))
            conn.execute(
                "UPDATE oxe_journal_sessions SET next_run_id = MAX(next_run_id, ?) WHERE session_id = ?",
                (run.run_id + 1, target),
            )
        if blobs:
            old, self.requested = self.requested, late
            try:
                self._publish_pin(blobs, run.inline)
            finally:
                self.requested = old
        raise RunNotRecordedError(
            f"{why}; the run was kept as run {run.run_id} of the draft {late}: "
            f"Experiment.restore_from_checkpoint({str(late)!r}) returns it"
        )

    def _gone_message(self, conn: sqlite3.Connection, what: str) -> str:
        sealed = conn.execute(
            "SELECT manifest_digest FROM oxe_journal_sealed WHERE session_id = ?", (self.session_id,)
        ).fetchone()
        if sealed is not None:
            return f"Experiment {self.requested} was committed as {sealed[0]} by another writer; {what}"
        sealing = conn.execute(
            "SELECT sealing FROM oxe_journal_sessions WHERE session_id = ?", (self.session_id,)
        ).fetchone()
        if sealing is not None and sealing[0] is not None:
            return f"Experiment {self.requested} is being committed by another writer; {what}"
        return f"Experiment {self.requested} was replaced or discarded by another session; {what}"

    # --- run-level logs of open runs ----------------------------------------------------------------

    def log_append(self) -> Callable[[tuple[Any, ...]], None]:
        """The append of this writer's open-run log (a no-op once the writer left)."""
        return self.log.append if self.log is not None else _ignore

    def log_open(self, record: tuple[Any, ...]) -> None:
        """Append a record about an open run to this writer's open-run log (started journals only)."""
        if self.log is not None:
            self.log.append(record)

    def no_open_runs(self) -> None:
        """Every run of this writer is closed or abandoned: the open-run log may start over (after a flush)."""
        self._no_open = True
        if self.log is not None and not self.deferred:
            self.log.reset()

    # --- experiment-level state -------------------------------------------------------------------------

    def add_attachment(self, name: str, desc: Descriptor, filename: str | None, inline: bytes | None = None) -> None:
        """Record an experiment-level attachment. A stored blob is pinned first; ``inline`` bytes
        (a small attachment, spec/experiment.md "Inline attachments") stay in the row until a
        commit or an OMMX-format checkpoint stores them, so nothing is pinned now."""
        pin = self._publish_pin([desc]) if inline is None else self.pin_digest
        with journal_write(self.registry, f"journal {self.requested} attachment {name!r}") as conn:
            if _session_state(conn, self.session_id) != "open":
                raise LifecycleError(self._gone_message(conn, f"attachment `{name}` was not added"))
            try:
                conn.execute(
                    "INSERT INTO oxe_journal_attachments VALUES (?, ?, ?)",
                    (self.session_id, name, _attachment_body(desc, filename, inline)),
                )
            except sqlite3.IntegrityError:
                raise LifecycleError(f"Attachment `{name}` already exists") from None
            if pin != self.pin_digest:
                conn.execute("UPDATE oxe_journal_writers SET pin_digest = ? WHERE writer_id = ?", (pin, self.identity.writer_id))
        self.pin_digest = pin

    def note_checkpoint_in(self, conn: sqlite3.Connection, manifest_digest: str | None) -> None:
        """Remember that the OMMX-format slot holds ``manifest_digest``, an autosave copy of this journal
        (None: not a copy); inside the slot's own ref transaction (``conn``): both or neither."""
        conn.execute("UPDATE oxe_journal_sessions SET slot_digest = ? WHERE session_id = ?", (manifest_digest, self.session_id))

    def set_annotation(self, key: str, value: str) -> Mapping[str, str]:
        """Set one annotation of the shared session (others' keys kept); returns all annotations."""
        with journal_write(self.registry, f"journal {self.requested} annotation {key!r}") as conn:
            row = conn.execute("SELECT header FROM oxe_journal_sessions WHERE session_id = ?", (self.session_id,)).fetchone()
            if row is None:
                raise LifecycleError(self._gone_message(conn, f"annotation {key!r} was not set"))
            header = JournalHeader.parse(str(row[0]))
            annotations = {**header.annotations, key: value}
            conn.execute(
                "UPDATE oxe_journal_sessions SET header = ?, updated_at = ? WHERE session_id = ?",
                (JournalHeader(FrozenMap(annotations), header.subject).to_json(), now_timestamp(), self.session_id),
            )
        return annotations

    def discard_run(self, run_id: int) -> None:
        """Drop a closed run from the shared journal; column types are derived again from the rest.

        A run whose close another writer deferred is waited for (its writer's next
        flush, at most :data:`GROUP_COMMIT_SECONDS` after its close while that writer lives).
        """
        self.flush()
        deadline = time.monotonic() + 10 * GROUP_COMMIT_SECONDS + 5
        while True:
            deferred = logged_deferred(self.registry, str(self.session_id))
            with journal_write(self.registry, f"journal {self.requested}: discard run {run_id}") as conn:
                if _session_state(conn, self.session_id) != "open":
                    raise LifecycleError(self._gone_message(conn, f"run {run_id} was not discarded"))
                if conn.execute(
                    "DELETE FROM oxe_journal_runs WHERE session_id = ? AND run_id = ?", (self.session_id, run_id)
                ).rowcount == 1:
                    bodies = conn.execute(
                        "SELECT body FROM oxe_journal_runs WHERE session_id = ?", (self.session_id,)
                    ).fetchall()
                    columns = _columns_of(
                        [*(_parse_run_row(str(b))[1] for (b,) in bodies), *(p for r, p in deferred if r.run_id != run_id)],
                        {},
                    )
                    conn.execute(
                        "UPDATE oxe_journal_sessions SET columns = ?, updated_at = ? WHERE session_id = ?",
                        (json.dumps(columns), now_timestamp(), self.session_id),
                    )
                    break
            if all(r.run_id != run_id for r, _ in deferred) or time.monotonic() > deadline:
                raise RunNotFoundError(f"Experiment {self.requested} has no closed run {run_id} to discard")
            time.sleep(GROUP_COMMIT_SECONDS / 4)
        self.columns = columns

    def has_attachment(self, name: str) -> bool:
        """True when some writer already added the experiment-level attachment ``name``."""
        rows = self.registry.db.query(
            "SELECT 1 FROM oxe_journal_attachments WHERE session_id = ? AND name = ?", (self.session_id, name)
        )
        return bool(rows)

    def header_and_count(self) -> tuple[JournalHeader, int] | None:
        """The session's header and its number of closed runs, without reading the runs."""
        with self.registry.db.read() as conn:
            row = conn.execute("SELECT header FROM oxe_journal_sessions WHERE session_id = ?", (self.session_id,)).fetchone()
            if row is None:
                return None
            count = conn.execute("SELECT count(*) FROM oxe_journal_runs WHERE session_id = ?", (self.session_id,)).fetchone()
        return JournalHeader.parse(str(row[0])), int(count[0])

    def snapshot(self) -> JournalSnapshot | None:
        """Every writer's closed runs and attachments, in one consistent read.

        Cached (:class:`SessionReader`): the same object comes back until some writer
        changed the session, and a change is read incrementally.
        """
        if not self.session_id:
            return None
        reader = self._reader
        if reader is None or reader.session_id != self.session_id:
            if reader is not None:
                reader.close()
            reader = self._reader = SessionReader(self.registry, self.session_id, self.identity.writer_id)
        return reader.snapshot(self.deferred, self._parsed)

    # --- recovery and commit --------------------------------------------------------------------------------

    def recover(self) -> list[int]:
        """Turn the open runs of dead writers into ``interrupted`` runs; returns their ids.

        Also finishes or undoes a commit whose committer died (see :meth:`seal`).
        """
        if self.session_id is None:
            return []
        recovered: list[int] = []
        rows = self.registry.db.query(
            "SELECT writer_id FROM oxe_journal_writers WHERE session_id = ? AND writer_id != ?",
            (self.session_id, self.identity.writer_id),
        )
        for (writer_id,) in rows:
            with claim_if_dead(self.registry.root, str(writer_id)) as dead:
                if dead:
                    recovered += self._recover_writer(str(writer_id))
        self._clear_dead_sealing()
        return recovered

    def _recover_writer(self, writer_id: str) -> list[int]:
        open_runs, pending = read_log_state(log_path(self.registry.root, writer_id))
        runs: list[tuple[RunContent, dict[str, ParamValue]]] = []
        blobs: list[Descriptor] = []
        for record in [*pending.values(), *open_runs.values()]:  # deferred closes come back as closed runs
            run, params = _interrupted_run(record)
            runs.append((run, params))
            blobs += run_blobs(run)
        with self.registry.publish_window():  # what is present now stays so until the pin holds it
            for run, _ in runs:  # inline attachments: stored now, pinned below
                for digest, data in (run.inline or {}).items():
                    self.registry.blobs.put_bytes(data, expected_digest=digest)
            present = [d for d in _unique(blobs) if self.registry.blobs.exists(d.digest)]
            if len(present) != len(_unique(blobs)):
                log.warning("Recovered runs of %s reference blobs that are gone; those attachments are dropped", self.requested)
                runs = [(_without_missing(r, self.registry), p) for r, p in runs]
            pin = self._publish_pin(present) if present else None
        done: list[int] = []
        with journal_write(self.registry, f"journal {self.requested}: recover writer {writer_id}") as conn:
            columns = _session_columns(conn, self.session_id)
            for run, params in runs:
                kept = _drop_conflicting(columns, params, run.run_id)
                columns.update(_column_update(columns, kept) or {})
                if conn.execute(
                    "INSERT OR IGNORE INTO oxe_journal_runs VALUES (?, ?, ?)",
                    (self.session_id, run.run_id, run_body(run, kept)),
                ).rowcount:
                    done.append(run.run_id)
            conn.execute("UPDATE oxe_journal_sessions SET columns = ? WHERE session_id = ?", (json.dumps(columns), self.session_id))
            if pin is not None:
                conn.execute(
                    "UPDATE oxe_journal_writers SET pin_digest = ? WHERE writer_id = ?", (pin, self.identity.writer_id)
                )
            conn.execute("DELETE FROM oxe_journal_writers WHERE writer_id = ?", (writer_id,))
        if pin is not None:
            self.pin_digest = pin
        self.columns = columns
        remove_writer_files(self.registry.root, writer_id)
        return done

    def _clear_dead_sealing(self) -> None:
        rows = self.registry.db.query(
            "SELECT sealing FROM oxe_journal_sessions WHERE session_id = ? AND sealing IS NOT NULL", (self.session_id,)
        )
        if not rows or not _sealer_dead(self.registry.root, str(rows[0][0])):
            return
        _, _, digest = str(rows[0][0]).partition(" ")
        if self.registry.resolve(self.requested) == digest:  # the dead committer published: finish its cleanup
            self.discard(digest)
            return
        with journal_write(self.registry, f"journal {self.requested}: undo a dead commit") as conn:
            conn.execute("UPDATE oxe_journal_sessions SET sealing = NULL WHERE session_id = ?", (self.session_id,))

    def compact_ids(self) -> None:
        """With no other writer registered, continue run ids at max(closed) + 1 (OMMX's restore)."""
        with journal_write(self.registry, f"journal {self.requested}: compact run ids") as conn:
            others = conn.execute(
                "SELECT 1 FROM oxe_journal_writers WHERE session_id = ? AND writer_id != ?",
                (self.session_id, self.identity.writer_id),
            ).fetchone()
            if others is None and not self._ids:
                conn.execute(
                    "UPDATE oxe_journal_sessions SET next_run_id = (SELECT COALESCE(MAX(run_id), -1) + 1 "
                    "FROM oxe_journal_runs WHERE session_id = ?) WHERE session_id = ?",
                    (self.session_id, self.session_id),
                )

    def live_open_runs(self) -> list[OpenRunHolder]:
        """Other live writers of this session that hold open runs."""
        rows = self.registry.db.query(
            "SELECT writer_id, pid, host FROM oxe_journal_writers WHERE session_id = ? AND writer_id != ?",
            (self.session_id, self.identity.writer_id),
        )
        out: list[OpenRunHolder] = []
        for writer_id, pid, host in rows:
            wid = str(writer_id)
            if not is_alive(self.registry.root, wid):
                continue
            open_ids = tuple(sorted(read_log(log_path(self.registry.root, wid))))
            if open_ids:
                out.append(OpenRunHolder(WriterIdentity(wid, int(str(pid)), str(host)), open_ids))
        return out

    def seal(self, manifest_digest: str) -> None:
        """Mark the session as being committed to ``manifest_digest``: closes fail from now on.

        Raises ``LifecycleError`` when another live writer is committing it.
        """
        mark = f"{self.identity.writer_id} {manifest_digest}"
        with journal_write(self.registry, f"journal {self.requested}: seal") as conn:
            row = conn.execute("SELECT sealing FROM oxe_journal_sessions WHERE session_id = ?", (self.session_id,)).fetchone()
            if row is None:
                raise LifecycleError(self._gone_message(conn, "it cannot be committed again"))
            sealer = None if row[0] is None else str(row[0]).partition(" ")[0]
            if sealer not in (None, self.identity.writer_id) and not _sealer_dead(self.registry.root, str(row[0])):
                raise LifecycleError(f"Experiment {self.requested} is being committed by another process")
            conn.execute("UPDATE oxe_journal_sessions SET sealing = ? WHERE session_id = ?", (mark, self.session_id))

    def quiesce_writers(self) -> None:
        """After :meth:`seal`: make every other writer's deferred closes final (see ``run_log.quiesce``).

        From then on their closes go to the journal, which refuses them while the
        session is sealed; the deferred ones already in their logs are read by
        :meth:`snapshot` and so are part of the commit. ``ExperimentBusyError``
        when a writer held its close lock for :data:`QUIESCE_TIMEOUT_S`.
        """
        rows = self.registry.db.query(
            "SELECT writer_id FROM oxe_journal_writers WHERE session_id = ? AND writer_id != ?",
            (self.session_id, self.identity.writer_id),
        )
        for (writer_id,) in rows:
            try:
                quiesce(log_path(self.registry.root, str(writer_id)), QUIESCE_TIMEOUT_S)
            except (TimeoutError, OSError) as exc:
                raise ExperimentBusyError(f"Cannot commit Experiment {self.requested}: {exc}") from exc

    def unseal(self) -> None:
        """Undo :meth:`seal` after a failed publish: writers may close runs again."""
        with journal_write(self.registry, f"journal {self.requested}: unseal") as conn:
            conn.execute(
                "UPDATE oxe_journal_sessions SET sealing = NULL WHERE session_id = ? AND sealing LIKE ?",
                (self.session_id, f"{self.identity.writer_id} %"),
            )

    def discard(self, manifest_digest: str | None = None, *, sweep_later: bool = False) -> None:
        """Drop the session's rows, writers and pins; with ``manifest_digest``, leave a commit tombstone.

        ``sweep_later`` (a commit): the session's run rows are left as orphans and deleted
        by a helper thread once this writer is released (:mod:`.journal_sweep`).
        """
        name = str(self.requested)
        runs = not sweep_later
        with journal_write(self.registry, f"journal discard {name}") as conn:
            if manifest_digest is not None and self.session_id is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO oxe_journal_sealed VALUES (?, ?, ?, ?)",
                    (self.session_id, name, manifest_digest, now_timestamp()),
                )
                conn.execute(
                    "DELETE FROM oxe_journal_sealed WHERE sealed_at < ?",
                    (datetime.fromtimestamp(time.time() - _SEAL_KEEP_DAYS * 86400, UTC).isoformat(),),
                )
            if self.session_id is None:  # not joined: whatever session the name has
                self._dropped += _drop_journal(conn, name, runs=runs)
            else:  # ours (only ours: a later session of the name is another's to drop)
                _drop_session(conn, self.session_id, runs=runs)
                conn.execute("DELETE FROM oxe_journal_sessions WHERE session_id = ?", (self.session_id,))
                self._dropped.append(self.session_id)
        self._sweep_due = self._sweep_due or sweep_later
        self._session_dropped = self._session_dropped or self.session_id is not None
        self._forget_dropped()

    def move(self, new_name: ImageName) -> None:
        """Rename: the session and its pins follow to ``new_name`` (an older journal there is replaced)."""
        old = self.requested
        self.requested = new_name
        if not self.started:
            return
        with journal_write(self.registry, f"journal rename {old} -> {new_name}") as conn:
            other = conn.execute(
                "SELECT session_id FROM oxe_journal_sessions WHERE requested_name = ?", (str(new_name),)
            ).fetchone()
            if other is not None and other[0] != self.session_id:
                dropped = _replace_journal(conn, self.registry.root, new_name)
            else:
                dropped = []
            conn.execute(
                "UPDATE oxe_journal_sessions SET requested_name = ?, updated_at = ? WHERE session_id = ?",
                (str(new_name), now_timestamp(), self.session_id),
            )
        for session_id in dropped:
            _remove_pins(self.registry, new_name, session_id)
        _move_pins(self.registry, old, new_name, str(self.session_id))

    # --- leaving ---------------------------------------------------------------------------------------

    def release(self) -> None:
        """This writer is done (its Experiment sealed or the process exits): return ids, drop its files.

        A writer that still has open runs keeps its log and row, so that the next
        join, restore or commit records those runs as interrupted.
        """
        if not self.started:
            return
        dropped = self._session_dropped  # discarded (committed): the session, its writers and their ids are gone
        if not dropped:
            self.give_back_ids()
        try:
            self.flush()
        except OmmxExperimentError as exc:  # the log keeps them: the next join, restore or commit records them
            log.warning("Closed runs of %s not written at exit: %s", self.requested, exc)
        open_left = bool(self.deferred) or bool(self.log is not None and read_log(self.log.path))
        if not open_left and not dropped:
            with (
                contextlib.suppress(sqlite3.Error, OmmxExperimentError),
                journal_write(self.registry, f"journal {self.requested}: writer exit") as conn,
            ):
                conn.execute("DELETE FROM oxe_journal_writers WHERE writer_id = ?", (self.identity.writer_id,))
        if self.log is not None:
            self.log.close()
            self.log = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._lock is not None:
            self._lock.release(remove=not open_left)
            self._lock = None
        self.started = False
        if self._sweep_due:
            self._sweep_due = False
            sweep_orphan_runs_later(self.registry)

    def _abandon(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None
        if self._lock is not None:
            self._lock.release(remove=True)
            self._lock = None

    # --- pins ----------------------------------------------------------------------------------------------

    def _publish_pin(self, blobs: list[Descriptor], inline: Mapping[str, bytes] | None = None) -> str:
        """Move this writer's pin to a manifest over ``blobs`` whose subject is its previous pin.

        ``inline``: bytes of some of ``blobs`` (digest -> bytes) stored here first, in the
        same publish window (their fsyncs side by side, one folder fsync before the ref).

        A previous pin that vanished (OMMX's GC between our writes) is not chained:
        the new pin then covers only ``blobs``; journal rows still name every blob,
        and our GC keeps them (see :func:`~ommx_experiment.format.journal_roots.journal_blob_digests`).
        """
        store = self.registry.blobs
        pin = writer_pin_name(self.registry.registry_id, self.requested, str(self.session_id), self.identity.writer_id)
        # One publish window from the pin's manifest write to its ref: no deleting GC (ours or
        # OMMX's, which takes the same lock) can collect the new manifest or its config in between.
        with self.registry.publish_window():
            if inline:
                for desc in blobs:
                    data = inline.get(desc.digest)
                    if data is not None:
                        store.put_bytes(data, expected_digest=desc.digest)
            # The empty config is stored once; the ref write below checks and touches it (and
            # every other blob of the closure) inside this window, so it is not verified here too.
            config = _EMPTY_CONFIG
            if not store.holds(config.digest, mt.OCI_EMPTY_CONFIG_BYTES):
                store.put_bytes(mt.OCI_EMPTY_CONFIG_BYTES)  # missing or damaged: stored (repaired) under the lock
            subject = None
            if self.pin_digest is not None:
                with contextlib.suppress(BlobNotFoundError):
                    subject = Descriptor(mt.OCI_MANIFEST, self.pin_digest, store.size(self.pin_digest))
            manifest = Manifest(mt.GENERIC_ARTIFACT_TYPE, config, tuple(blobs), subject)
            manifest_bytes = manifest.to_bytes()
            stored = store.put_bytes(manifest_bytes)
            self.registry.replace(pin, stored.digest, manifest_bytes=manifest_bytes)
        return stored.digest

    def _pin_source(self, source: Descriptor, blobs: list[Descriptor]) -> str:
        """This writer's first pin over carried content: ``subject`` = ``source``, layers = ``blobs`` (or the empty blob).

        O(1) in the number of carried runs: both GCs (OMMX's and ours) mark a pinned
        manifest's subject with its config and layers, so everything the source holds
        stays reachable through this writer's pin chain (later pins have it as subject).
        """
        store = self.registry.blobs
        pin = writer_pin_name(self.registry.registry_id, self.requested, str(self.session_id), self.identity.writer_id)
        with self.registry.publish_window():
            store.put_bytes(mt.OCI_EMPTY_CONFIG_BYTES)
            manifest = Manifest(mt.GENERIC_ARTIFACT_TYPE, _EMPTY_CONFIG, tuple(blobs) or (_EMPTY_CONFIG,), source)
            stored = store.put_bytes(manifest.to_bytes())
            self.registry.replace(pin, stored.digest, strict_subject=True)
        return stored.digest

    def _forget_dropped(self) -> None:
        """Remove the pins of sessions this handle dropped (their rows are gone, so are their claims)."""
        dropped, self._dropped = self._dropped, []
        for session_id in dropped:
            _remove_pins(self.registry, self.requested, session_id)


def _lost_blobs_message(
    requested: ImageName, root: Path, run: RunContent, params: Mapping[str, ParamValue], lost: list[Descriptor]
) -> str:
    labels = {d.digest: f"attachment `{name}`" for name, d in run.attachments.descriptors.items()}
    if run.trace is not None:
        labels.setdefault(run.trace.digest, "trace")
    for kind, calls in (("solve", run.solves), ("sampling", run.samplings)):
        for call in calls:
            for role, d in (("input", call.input), ("output", call.output), ("diagnostics", call.diagnostics)):
                if d is not None:
                    labels.setdefault(d.digest, f"{kind} {role}")
    named = ", ".join(f"{labels.get(d.digest, 'blob')} ({d.digest}, {d.size} bytes)" for d in lost)
    return (
        f"Failed to read blob: run {run.run_id} of {requested} was not recorded: {named} vanished from "
        f"{root / 'blobs' / 'sha256'} before the close could pin it (a deleting GC that does not honour our "
        f"leases, such as OMMX 3's gc with a grace period shorter than the run was open); "
        f"its logged parameters were {dict(params)!r}; log the run again"
    )


def _ignore(record: tuple[Any, ...]) -> None:
    return None


_INSERT_RUN = "INSERT OR REPLACE INTO oxe_journal_runs VALUES (?, ?, ?)"
_INSERT_RUN_IF_OPEN = (
    "INSERT INTO oxe_journal_runs SELECT ?, ?, ? WHERE EXISTS "
    "(SELECT 1 FROM oxe_journal_sessions WHERE session_id = ? AND sealing IS NULL)"
)
PARAM_KIND: dict[type, str] = {bool: "bool", int: "int64", float: "float64", str: "string"}
"""Column type of each stored parameter value type (the names of ``format.run_params``)."""
_KIND = PARAM_KIND


def _widens(established: str, incoming: str) -> bool:
    return established in ("int64", "float64") and incoming in ("int64", "float64")


def _column_update(columns: Mapping[str, str], params: Mapping[str, ParamValue]) -> dict[str, str] | None:
    """New or widened column types this run's parameters bring; ``ParameterTypeError`` on a conflict."""
    update: dict[str, str] | None = None
    for name, value in params.items():
        kind = _KIND[type(value)]
        established = columns.get(name)
        if established == kind:
            continue
        if established is None:
            (update := update or {})[name] = kind
        elif _widens(established, kind):
            if established == "int64":
                (update := update or {})[name] = "float64"
        else:
            raise ParameterTypeError(name, established, kind, value)
    return update


def _columns_of(rows: Iterable[Mapping[str, ParamValue]], columns: dict[str, str]) -> dict[str, str]:
    out = dict(columns)
    for params in rows:
        for name, value in params.items():
            kind = _KIND[type(value)]
            established = out.get(name)
            if established is None or (established == "int64" and kind == "float64"):
                out[name] = kind
    return out


def _drop_conflicting(columns: Mapping[str, str], params: dict[str, ParamValue], run_id: int) -> dict[str, ParamValue]:
    kept: dict[str, ParamValue] = {}
    for name, value in params.items():
        established, kind = columns.get(name), _KIND[type(value)]
        if established is None or established == kind or _widens(established, kind):
            kept[name] = value
        else:
            log.warning("Recovered run %d: parameter %r (%s) conflicts with column type %s; dropped", run_id, name, kind, established)
    return kept


def _session_columns(conn: sqlite3.Connection, session_id: str | None) -> dict[str, str]:
    row = conn.execute("SELECT columns FROM oxe_journal_sessions WHERE session_id = ?", (session_id,)).fetchone()
    return dict(json.loads(row[0] or "{}")) if row else {}


def _session_state(conn: sqlite3.Connection, session_id: str | None) -> str:
    row = conn.execute("SELECT sealing FROM oxe_journal_sessions WHERE session_id = ?", (session_id,)).fetchone()
    if row is None:
        return "gone"
    return "open" if row[0] is None else "sealing"


def _sealer_dead(root: Path, sealing: str) -> bool:
    writer_id = sealing.partition(" ")[0]
    return not is_alive(root, writer_id)


def _interrupted_run(record: OpenRun) -> tuple[RunContent, dict[str, ParamValue]]:
    """The run an open-run log shows: ``interrupted`` when it was open, as closed when it has an ``f`` record."""
    attachments = {
        name: parse_descriptor(desc, f"open-run log attachment {name!r}") for name, (desc, _) in record.attachments.items()
    }
    filenames = {name: str(fn) for name, (_, fn) in record.attachments.items() if fn is not None}
    status, reason, finished_ns = record.closed or ("interrupted", INTERRUPTED_REASON, None)
    run = RunContent(
        run_id=record.run_id,
        status=status,
        reason=reason,
        attachments=AttachmentContent(attachments, filenames),
        trace=_desc(record.trace, "open-run log trace"),
        solves=tuple(_call(c) for c in record.solves),
        samplings=tuple(_call(c) for c in record.samplings),
        started_ns=record.started_ns,
        finished_ns=finished_ns,
        inline=record.inline or None,
    )
    params = {str(k): v for k, v in record.params.items() if type(v) in _PARAM_TYPES}
    return run, params


def _inline_blobs(runs: Iterable[tuple[RunContent, Any]]) -> list[Descriptor]:
    """The descriptors of the runs' inline attachments (each digest once)."""
    out: dict[str, Descriptor] = {}
    for run, _ in runs:
        inline = run.inline
        if inline:
            for desc in run_blobs(run):
                if desc.digest in inline:
                    out.setdefault(desc.digest, desc)
    return list(out.values())


def _without_missing(run: RunContent, registry: LocalRegistry) -> RunContent:
    present = registry.blobs.exists
    attachments = {k: d for k, d in run.attachments.descriptors.items() if present(d.digest)}
    filenames = {k: v for k, v in run.attachments.filenames.items() if k in attachments}
    calls = [c for c in (*run.solves, *run.samplings) if all(d is None or present(d.digest) for d in (c.input, c.output, c.diagnostics))]
    return dataclasses.replace(
        run,
        attachments=AttachmentContent(attachments, filenames),
        trace=run.trace if run.trace is None or present(run.trace.digest) else None,
        solves=tuple(c for c in run.solves if c in calls),
        samplings=tuple(c for c in run.samplings if c in calls),
    )


@contextlib.contextmanager
def journal_write(registry: LocalRegistry, step: str) -> Iterator[sqlite3.Connection]:
    """A ``BEGIN IMMEDIATE`` transaction on the registry's *journal* connection.

    Same database and transaction discipline as ``Database.write``, but the
    connection runs with ``PRAGMA synchronous = NORMAL``: in WAL mode a commit
    then reaches the OS (so it survives SIGKILL of this process) without an
    fsync per Run close; a power loss can drop the last few journal rows,
    never corrupt the database. Ref writes keep the registry's own connection.
    Any SQLite failure is raised as ``JournalWriteError`` naming ``step``.
    """
    try:
        registry.blobs.sync_links()  # a row may name blobs just stored: their names are durable first
    except RegistryError as exc:
        raise JournalWriteError(f"Failed to write the checkpoint journal {registry.db.path} ({step}): {exc}") from exc
    try:
        with registry.db.journal_write(step) as conn:
            yield conn
    except sqlite3.Error as exc:
        raise JournalWriteError(f"Failed to write the checkpoint journal {registry.db.path} ({step}): {exc}") from exc


def _attachment_body(desc: Descriptor, filename: str | None, inline: bytes | None = None) -> str:
    obj: dict[str, Any] = {"descriptor": desc.to_dict(), "filename": filename}
    if inline is not None:
        obj["inline"] = base64.b64encode(inline).decode("ascii")
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _id_block(first: int, count: int) -> list[int]:
    """Run ids ``first .. first + count - 1`` in pop order (popped from the end: ascending)."""
    return list(range(first + count - 1, first - 1, -1))


def _unique(descs: Iterable[Descriptor]) -> list[Descriptor]:
    seen: dict[str, Descriptor] = {}
    for desc in descs:
        seen.setdefault(desc.digest, desc)
    return list(seen.values())


def _drop_session(conn: Any, session_id: str, *, runs: bool = True) -> None:
    """Delete the session's attachments and writers, and (``runs``) its run rows; else they are orphans
    once the session row goes (:mod:`.journal_sweep`)."""
    for table in ("oxe_journal_runs", "oxe_journal_attachments", "oxe_journal_writers")[0 if runs else 1 :]:
        conn.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))


def _drop_journal(conn: Any, name: str, *, runs: bool = True) -> list[str]:
    """Delete the session of ``name`` and its rows; returns the dropped session ids (their pins are the caller's)."""
    row = conn.execute("SELECT session_id FROM oxe_journal_sessions WHERE requested_name = ?", (name,)).fetchone()
    if row is None:
        return []
    _drop_session(conn, str(row[0]), runs=runs)
    conn.execute("DELETE FROM oxe_journal_sessions WHERE requested_name = ?", (name,))
    return [str(row[0])]


def _replace_journal(conn: Any, root: Path, requested: ImageName) -> list[str]:
    """Make room for a new session of ``requested``; returns the session ids dropped.

    The old session is dropped when no live writer has it (OMMX overwrites its slot);
    with live writers it is detached under ``<name>-late-<session id[:8]>`` so that they
    keep writing (and may still commit under the name, OMMX's ref-conflict rules deciding).
    """
    name = str(requested)
    row = conn.execute("SELECT session_id FROM oxe_journal_sessions WHERE requested_name = ?", (name,)).fetchone()
    if row is None:
        return []
    session_id = str(row[0])
    writers = conn.execute("SELECT writer_id FROM oxe_journal_writers WHERE session_id = ?", (session_id,)).fetchall()
    if any(is_alive(root, str(w)) for (w,) in writers):
        detached = str(late_name(requested, session_id))
        dropped = _drop_journal(conn, detached)
        conn.execute("UPDATE oxe_journal_sessions SET requested_name = ? WHERE session_id = ?", (detached, session_id))
        return dropped
    return _drop_journal(conn, name)


def late_name(requested: ImageName, session_id: str) -> ImageName:
    """Where runs that closed after their session was committed or replaced are kept."""
    suffix = f"-late-{session_id[:8]}"
    return requested.with_tag((requested.reference if _is_tag(requested.reference) else "latest")[: 128 - len(suffix)] + suffix)


def _is_tag(reference: str) -> bool:
    return ":" not in reference


_EMPTY_CONFIG = Descriptor(mt.OCI_EMPTY_CONFIG, mt.OCI_EMPTY_CONFIG_DIGEST, len(mt.OCI_EMPTY_CONFIG_BYTES))


def writer_pin_name(registry_id: str, requested: ImageName, session_id: str, writer_id: str) -> ImageName:
    """``…/checkpoint:pin-<sha256(name)>-<session id[:8]>-<writer id[:16]>``: one chain per writer, hidden from listings."""
    return pin_name(registry_id, requested).with_tag(f"pin-{name_hash(requested)}-{session_id[:8]}-{writer_id[:16]}")


def pin_refs(
    registry: LocalRegistry, requested: ImageName, session_id: str | None = None, *, legacy: bool | None = None
) -> list[ImageName]:
    """The pin refs of ``requested``: of one session, or (None) every session's; with ``legacy``
    (default: without a session) also the name's single pin of a session started before per-session pins."""
    base = pin_name(registry.registry_id, requested)
    pattern = base.reference + ("-%" if session_id is None else f"-{session_id[:8]}-%")
    if legacy if legacy is not None else session_id is None:
        rows = registry.db.query(
            "SELECT reference FROM refs WHERE name = ? AND (reference = ? OR reference LIKE ?)",
            (base.repository, base.reference, pattern),
        )
    else:
        rows = registry.db.query("SELECT reference FROM refs WHERE name = ? AND reference LIKE ?", (base.repository, pattern))
    return [base.with_tag(str(ref)) for (ref,) in rows]


def _remove_pins(registry: LocalRegistry, requested: ImageName, session_id: str | None = None) -> None:
    # one query, and no ref write (nor view check) when there is none (no attachment was pinned)
    for ref in pin_refs(registry, requested, session_id, legacy=True):
        registry.remove(ref)


def _move_pins(registry: LocalRegistry, old: ImageName, new: ImageName, session_id: str) -> None:
    old_hash, new_hash = name_hash(old), name_hash(new)
    new_base = pin_name(registry.registry_id, new)
    for ref in [*pin_refs(registry, old, session_id), pin_name(registry.registry_id, old)]:
        digest = registry.resolve(ref)
        if digest is None:
            continue
        target = new_base.with_tag(ref.reference.replace(old_hash, new_hash, 1))
        registry.replace(target, digest)
        registry.remove(ref, expected_digest=digest)


def settle(registry: LocalRegistry, requested: ImageName) -> None:
    """Finish or undo a commit of ``requested`` whose committer died midway (before anyone reads the journal).

    The committer marks the session ``sealing`` with the manifest digest before it
    publishes the ref. Dead with the ref at that digest: the commit happened, only
    its cleanup is left, so the journal is dropped (with a tombstone). Dead before
    that: the mark is cleared and the experiment is unsealed again.
    """
    rows = registry.db.query(
        "SELECT session_id, sealing FROM oxe_journal_sessions WHERE requested_name = ? AND sealing IS NOT NULL",
        (str(requested),),
    )
    if not rows or not _sealer_dead(registry.root, str(rows[0][1])):
        return
    session_id, (_, _, digest) = str(rows[0][0]), str(rows[0][1]).partition(" ")
    journal = Journal(registry, requested, session_id)
    if digest and registry.resolve(requested) == digest:
        with contextlib.suppress(Exception):  # the OMMX-format slot, as commit would
            registry.remove(checkpoint_ref(registry, requested))
        journal.discard(digest)
        return
    with journal_write(registry, f"journal {requested}: undo a dead commit") as conn:
        conn.execute(
            "UPDATE oxe_journal_sessions SET sealing = NULL WHERE session_id = ? AND sealing = ?", (session_id, rows[0][1])
        )


def discard_journal(registry: LocalRegistry, requested: ImageName) -> None:
    """Drop the journal of ``requested`` whoever wrote it (and its pins)."""
    with journal_write(registry, f"journal discard {requested}") as conn:
        dropped = _drop_journal(conn, str(requested))
    for session_id in dropped:
        _remove_pins(registry, requested, session_id)


def logged_deferred(registry: LocalRegistry, session_id: str) -> list[tuple[RunContent, dict[str, ParamValue]]]:
    """Closed runs of the session's writers (live or dead) whose rows are not written yet: their ``f`` records."""
    rows = registry.db.query("SELECT writer_id FROM oxe_journal_writers WHERE session_id = ?", (session_id,))
    out: list[tuple[RunContent, dict[str, ParamValue]]] = []
    for (writer_id,) in rows:
        for record in read_log_state(log_path(registry.root, str(writer_id)))[1].values():
            out.append(_interrupted_run(record))
    return out


def _decode_rows(
    rows: list[Any], cache: dict[int, tuple[str, RunContent, dict[str, ParamValue]]] | None
) -> list[tuple[RunContent, dict[str, ParamValue], int | None]]:
    if cache is None:
        return [_parse_run_row(str(body)) for _, body in rows]
    out: list[tuple[RunContent, dict[str, ParamValue], int | None]] = []
    seen: set[int] = set()
    for run_id, body in rows:
        text = str(body)
        hit = cache.get(run_id)
        if hit is not None and hit[0] == text:
            out.append((hit[1], hit[2], hit[1].finished_ns))
        else:
            run, params, closed_ns = _parse_run_row(text)
            cache[run_id] = (text, run, params)
            out.append((run, params, closed_ns))
        seen.add(run_id)
    for stale in set(cache) - seen:
        del cache[stale]
    return out


_Parsed = dict[int, tuple[str, RunContent, dict[str, "ParamValue"]]]


class SessionReader:
    """A cached, incremental :func:`_read_session` of one session for one writer (``Journal.snapshot``).

    What may change a session, and how a read notices it:

    - rows (closes of any writer, recovery, ``discard_run``, a commit dropping the
      session, annotations, attachments): ``Database.change_token`` (SQLite's
      ``data_version`` plus the main connection's own commits) differs; then the
      session row, the attachments and the ``(run_id, rowid)`` pairs are read in one
      transaction and only rows with a new pair are fetched and decoded;
    - deferred closes of other writers (their open-run logs): each log is a
      :class:`~ommx_experiment.format.run_log.LogTail`, parsed only where it changed;
    - this writer's deferred closes: ``Journal.deferred``, in memory.

    Logs are read before rows, as in :func:`_read_session`: a batch written (and its
    log reset) in between is then in the rows. An unchanged session gives back the
    same :class:`JournalSnapshot` object.
    """

    def __init__(self, registry: LocalRegistry, session_id: str, writer_id: str) -> None:
        self.registry = registry
        self.session_id = session_id
        self.writer_id = writer_id
        self._token: tuple[object, int, int] | None = None
        self._tails: dict[str, LogTail] = {}
        self._session: tuple[Any, ...] | None = None
        self._rows: dict[int, tuple[RunContent, dict[str, ParamValue]]] = {}  # run id -> decoded row, in run-id order
        self._id_sum = 0  # of the cached run ids
        self._length_sum = 0  # of the cached rows' body lengths (characters, as SQLite's length())
        self._max_rowid = 0
        self._newest_ns = 0  # newest close time among the rows
        self._attachments = AttachmentContent({}, {})
        self._key: tuple[Any, ...] | None = None
        self._snapshot: JournalSnapshot | None = None

    def snapshot(self, own_deferred: Mapping[int, tuple[RunContent, dict[str, ParamValue]]], parsed: _Parsed) -> JournalSnapshot | None:
        own = dict(own_deferred)  # before the rows: a flush in between is then in them
        for tail in self._tails.values():
            tail.refresh()
        token = self.registry.db.change_token()
        db_changed = token != self._token
        if db_changed:
            self._refresh_writers()
            token = self.registry.db.change_token()
            self._read_rows(parsed)
            self._token = token
        if self._session is None:
            self._snapshot = self._key = None
            return None
        key = (token, tuple(own), tuple(t.version() for t in self._tails.values()))
        if key != self._key or self._snapshot is None:
            self._snapshot = self._build(own)
            self._key = key
        return self._snapshot

    def _refresh_writers(self) -> None:
        rows = self.registry.db.query("SELECT writer_id FROM oxe_journal_writers WHERE session_id = ?", (self.session_id,))
        current = {str(w) for (w,) in rows} - {self.writer_id}
        for gone in set(self._tails) - current:
            self._tails.pop(gone).close()
        for writer_id in sorted(current - set(self._tails)):
            tail = self._tails[writer_id] = LogTail(log_path(self.registry.root, writer_id))
            tail.refresh()

    def _read_rows(self, parsed: _Parsed) -> None:
        """Session row, attachments and the run rows that changed, in one read transaction.

        Rows appended since the last read have larger rowids: only those are read,
        with their bodies only when another writer wrote them (this writer's own are
        decoded in ``parsed`` already). The session's ``count(*)``, ``total(run_id)``
        and ``total(length(body))`` must then be what the cached rows plus the appended
        ones give, and the session's ``updated_at`` must be unchanged (``discard_run``
        rewrites it in the transaction that deletes the row); otherwise every row is
        read again, as an uncached read would.
        """
        sid = self.session_id
        before = self._session
        with self.registry.db.read() as conn:
            self._session = conn.execute(
                "SELECT header, updated_at, next_run_id, columns, slot_digest FROM oxe_journal_sessions WHERE session_id = ?",
                (sid,),
            ).fetchone()
            if self._session is None:
                return
            att_rows = conn.execute("SELECT name, body FROM oxe_journal_attachments WHERE session_id = ?", (sid,)).fetchall()
            count, id_sum, length_sum = conn.execute(
                "SELECT count(*), total(run_id), total(length(body)) FROM oxe_journal_runs WHERE session_id = ?", (sid,)
            ).fetchone()
            appended = conn.execute(
                "SELECT run_id, rowid FROM oxe_journal_runs WHERE session_id = ? AND rowid > ?", (sid, self._max_rowid)
            ).fetchall()
            foreign = [run_id for run_id, _ in appended if run_id not in parsed]
            bodies = (
                dict(conn.execute(
                    "SELECT run_id, body FROM oxe_journal_runs WHERE session_id = ? AND rowid > ? AND run_id >= ?",
                    (sid, self._max_rowid, min(foreign)),
                ).fetchall())
                if foreign
                else {}
            )
            fresh = self._apply([(run_id, rowid, bodies.get(run_id)) for run_id, rowid in appended], parsed)
            same_stamp = before is None or before[1] == self._session[1]  # updated_at
            if not (fresh and same_stamp and self._agrees(count, id_sum, length_sum)):
                self._reset()
                every = conn.execute("SELECT run_id, rowid, body FROM oxe_journal_runs WHERE session_id = ?", (sid,))
                self._apply(every.fetchall(), parsed)
        self._attachments = _attachment_content(att_rows)

    def _apply(self, rows: list[Any], parsed: _Parsed) -> bool:
        """Add rows ``(run_id, rowid, body or None for one of ours)``; False if one replaces a cached run."""
        cached = self._rows
        last = next(reversed(cached)) if cached else -1
        in_order = True
        id_sum, length_sum, max_rowid, newest = self._id_sum, self._length_sum, self._max_rowid, self._newest_ns
        try:
            for run_id, rowid, body in rows:
                if run_id in cached:
                    return False
                hit = parsed.get(run_id)
                if body is None:
                    text, run, params = hit  # type: ignore[misc]
                else:
                    text = str(body)
                    if hit is not None and hit[0] == text:
                        run, params = hit[1], hit[2]
                    else:
                        run, params, _ = _parse_run_row(text)
                cached[run_id] = (run, params)
                id_sum += run_id
                length_sum += len(text)
                if run_id < last:
                    in_order = False
                else:
                    last = run_id
                if rowid > max_rowid:
                    max_rowid = rowid
                finished = run.finished_ns
                if finished is not None and finished > newest:
                    newest = finished
        finally:
            self._id_sum, self._length_sum, self._max_rowid, self._newest_ns = id_sum, length_sum, max_rowid, newest
            if not in_order:
                self._rows = dict(sorted(cached.items()))
        return True

    def _agrees(self, count: int, id_sum: float, length_sum: float) -> bool:
        return count == len(self._rows) and id_sum == self._id_sum and length_sum == self._length_sum

    def _reset(self) -> None:
        self._rows = {}
        self._id_sum = self._length_sum = self._max_rowid = self._newest_ns = 0

    def _build(self, own: Mapping[int, tuple[RunContent, dict[str, ParamValue]]]) -> JournalSnapshot:
        assert self._session is not None
        header, updated_at, next_run_id, columns, slot_digest = self._session
        rows = self._rows
        newest_ns = self._newest_ns
        extra = [*own.values(), *(_interrupted_run(r) for t in self._tails.values() for r in t.state.pending.values())]
        extra = [item for item in extra if item[0].run_id not in rows]
        if extra:
            merged = dict(rows)
            for run, params in extra:
                merged.setdefault(run.run_id, (run, params))
                newest_ns = max(newest_ns, run.finished_ns or 0)
            ordered = tuple(merged[k] for k in sorted(merged))
        else:
            ordered = tuple(rows.values())
        return _snapshot(
            self.session_id, (header, updated_at, next_run_id, columns, slot_digest), self._attachments, ordered, newest_ns or None
        )

    def close(self) -> None:
        for tail in self._tails.values():
            tail.close()
        self._tails.clear()


def _attachment_content(att_rows: list[Any]) -> AttachmentContent:
    descriptors: dict[str, Descriptor] = {}
    filenames: dict[str, str] = {}
    inline: dict[str, bytes] = {}
    for name, body in att_rows:
        obj = json.loads(body)
        desc = descriptors[str(name)] = parse_descriptor(obj["descriptor"], f"journal attachment {name!r}")
        if obj.get("filename") is not None:
            filenames[str(name)] = str(obj["filename"])
        if isinstance(obj.get("inline"), str):
            inline[desc.digest] = base64.b64decode(obj["inline"])
    return AttachmentContent(descriptors, filenames, inline or None)


@dataclass(frozen=True, slots=True)
class JournalHead:
    """What restore needs to choose between the journal and an OMMX-format slot (no rows decoded)."""

    session_id: str
    updated_at: str
    slot_digest: str | None


def journal_head(registry: LocalRegistry, requested: ImageName) -> JournalHead | None:
    """The journal of ``requested``: session id, ``updated_at`` (newest close included), our last slot digest."""
    with registry.db.read() as conn:
        row = conn.execute(
            "SELECT session_id, updated_at, slot_digest FROM oxe_journal_sessions WHERE requested_name = ?",
            (str(requested),),
        ).fetchone()
        if row is None:
            return None
        newest = conn.execute(
            "SELECT MAX(CASE WHEN json_valid(body) AND substr(body, 1, 1) = '[' THEN json_extract(body, '$[5]') END) "
            "FROM oxe_journal_runs WHERE session_id = ?",
            (row[0],),
        ).fetchone()[0]
        # SQLite's JSON rejects NaN/Infinity, which Python writes for non-finite parameters: decode those rows here
        odd = conn.execute(
            "SELECT body FROM oxe_journal_runs WHERE session_id = ? AND NOT json_valid(body)", (row[0],)
        ).fetchall()
    for (body,) in odd:
        closed_ns = _parse_run_row(str(body))[2]
        if closed_ns is not None and (not isinstance(newest, int) or closed_ns > newest):
            newest = closed_ns
    updated_at = _later_of(str(row[1]), newest if isinstance(newest, int) else None)
    return JournalHead(str(row[0]), updated_at, None if row[2] is None else str(row[2]))


def has_journal(registry: LocalRegistry, requested: ImageName) -> bool:
    """True when ``requested`` has a journal (an unsealed draft), without reading it."""
    return bool(registry.db.query("SELECT 1 FROM oxe_journal_sessions WHERE requested_name = ?", (str(requested),)))


def read_journal(registry: LocalRegistry, requested: ImageName) -> JournalSnapshot | None:
    """The journal of ``requested`` in one consistent snapshot, or None."""
    return _read_session(registry, requested=requested)


def _read_session(
    registry: LocalRegistry,
    *,
    requested: ImageName | None = None,
    session_id: str | None = None,
    cache: dict[int, tuple[str, RunContent, dict[str, ParamValue]]] | None = None,
) -> JournalSnapshot | None:
    """One session's snapshot; ``cache`` (run id → body, decoded row) spares decoding rows seen before.

    Closes deferred by group commit are read from the writers' open-run logs
    *before* the rows: a batch written (and its log reset) in between is then in the rows.
    """
    if session_id is None:
        found = registry.db.query(
            "SELECT session_id FROM oxe_journal_sessions WHERE requested_name = ?", (str(requested),)
        )
        if not found:
            return None
        session_id = str(found[0][0])
    deferred = logged_deferred(registry, session_id)
    with registry.db.read() as conn:
        row = conn.execute(
            "SELECT session_id, header, updated_at, next_run_id, columns, slot_digest FROM oxe_journal_sessions "
            "WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        if row is None:
            return None
        sid = str(row[0])
        run_rows = conn.execute(
            "SELECT run_id, body FROM oxe_journal_runs WHERE session_id = ? ORDER BY run_id", (sid,)
        ).fetchall()
        att_rows = conn.execute("SELECT name, body FROM oxe_journal_attachments WHERE session_id = ?", (sid,)).fetchall()
    attachments = _attachment_content(att_rows)
    parsed = _decode_rows(run_rows, cache)
    if deferred:
        written = {run.run_id for run, _, _ in parsed}
        extra = [(run, params, run.finished_ns) for run, params in deferred if run.run_id not in written]
        if extra:
            parsed = sorted([*parsed, *extra], key=lambda item: item[0].run_id)
    newest_ns = max((ns for _, _, ns in parsed if ns is not None), default=None)
    return _snapshot(sid, row[1:6], attachments, tuple((run, params) for run, params, _ in parsed), newest_ns)


def _snapshot(
    session_id: str,
    session: Sequence[Any],
    attachments: AttachmentContent,
    runs: tuple[tuple[RunContent, dict[str, ParamValue]], ...],
    newest_ns: int | None,
) -> JournalSnapshot:
    """A snapshot from the session row's ``(header, updated_at, next_run_id, columns, slot_digest)``."""
    header, updated_at, next_run_id, columns, slot_digest = session
    return JournalSnapshot(
        session_id=session_id,
        header=JournalHeader.parse(str(header)),
        attachments=attachments,
        runs=runs,
        updated_at=_later_of(str(updated_at), newest_ns),
        next_run_id=int(next_run_id),
        columns=dict(json.loads(str(columns) or "{}")),
        slot_digest=None if slot_digest is None else str(slot_digest),
    )


def _later_of(updated_at: str, newest_ns: int | None) -> str:
    """The session's ``updated_at``, or the newest run close if later (run rows carry their own close time)."""
    if newest_ns is None:
        return updated_at
    closed = datetime.fromtimestamp(newest_ns / 1e9, UTC)
    return closed.isoformat() if closed > parse_timestamp(updated_at) else updated_at


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


# --- the journal seen by listings (GC: format.journal_roots) ---------------------------------------------

# The config names layers by index, never by digest: any well-formed descriptor stands in
# for the run-parameter layer when only the config is wanted.
_PARAMS_PLACEHOLDER = Descriptor(mt.RUN_PARAMETERS, "sha256:" + "0" * 64, 0)


def draft_config(snapshot: JournalSnapshot, requested: ImageName) -> ExperimentConfig:
    """The config a ``draft`` checkpoint of this journal would carry (byte-identical), built without I/O."""
    content = ExperimentContent(snapshot.attachments, tuple(run for run, _ in snapshot.runs), _PARAMS_PLACEHOLDER)
    return build_experiment(content, status="draft", requested_image_name=str(requested))[1]
