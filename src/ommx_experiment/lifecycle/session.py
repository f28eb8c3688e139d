"""In-memory state of Experiment sessions: unsealed (:class:`Session`) and sealed (:class:`SealedState`).

A :class:`Session` holds descriptors, never payload bytes: attachments, closed
runs (as :class:`~ommx_experiment.format.content.RunContent`) and their raw parameters.
Every mutation happens under the session's ``RLock``. Run closes and
experiment-level attachments are journaled at once (O(1), see
:mod:`checkpoints`); full artifacts are built only by :meth:`Session.build`
(commit and OMMX-format checkpoints).

A :class:`SealedState` is a validated, stored Experiment artifact (committed,
loaded, imported, or a failed checkpoint).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from operator import attrgetter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .. import media_types as mt
from ..engine.index_db import other_sqlite_loaded
from ..engine.oci import Descriptor, FrozenMap, Manifest
from ..engine.text import is_utf8_text
from ..errors import (
    BlobNotFoundError,
    InvalidTextError,
    JournalWriteError,
    LifecycleError,
    OmmxExperimentError,
    ParameterTypeError,
    RunBlobsLostError,
    RunNotFoundError,
    RunNotRecordedError,
)
from ..format import run_log
from ..format import run_params as rp
from ..format.codec import (
    FAILED,
    INTERRUPTED,
    SEALED_STATUSES,
    ExperimentConfig,
    RunRecord,
    check_experiment_manifest,
    validate_experiment,
)
from ..format.content import (
    AttachmentContent,
    ExperimentContent,
    LayoutMemo,
    RunContent,
    build_experiment,
    content_from_artifact,
)
from ..format.journal import (
    GROUP_COMMIT_BYTES,
    GROUP_COMMIT_RUNS,
    GROUP_COMMIT_SECONDS,
    Journal,
    JournalHeader,
    checkpoint_ref,
    run_blobs,
)
from ..format.parquet_trust import our_parquet_layer, parquet_layer_agrees
from . import autosave
from .autosave import DEFAULT_POLICY, LATER, AutosavePolicy, AutosaveSchedule
from .reason import lifecycle_reason

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..engine.names import ImageName
    from ..engine.registry import LocalRegistry
    from ..format.run_params import ParamValue

log = logging.getLogger(__name__)


# --- sealed --------------------------------------------------------------------------------------


class SealedState:
    """A stored Experiment artifact; config and parameters are parsed on first use.

    An artifact carrying our Parquet run-parameter layer is validated lazily (the
    first access to ``config``/``content`` parses the config and runs the §5
    checks), so ``Experiment.load(...).run_parameters_df()`` reads only the
    manifest and the Parquet blob. Artifacts without it (written by OMMX) are
    validated at open, as OMMX does.
    """

    def __init__(
        self,
        registry: LocalRegistry,
        holder: Any,
        image_name: ImageName,
        manifest_digest: str,
        manifest: Manifest,
        config: ExperimentConfig | None = None,
        content: ExperimentContent | None = None,
        *,
        allowed: Sequence[str] = SEALED_STATUSES,
        table: rp.ParameterTable | None = None,
    ) -> None:
        self.registry = registry
        self.holder = holder
        self.image_name = image_name
        self.manifest_digest = manifest_digest
        self.manifest = manifest
        self._config = config
        self._content = content
        self._allowed = tuple(allowed)
        self._table: rp.ParameterTable | None = table
        self._records: tuple[RunRecord, ...] | None = None
        self._parquet_ok: bool | None = None

    @classmethod
    def open(
        cls,
        registry: LocalRegistry,
        image_name: ImageName,
        digest: str,
        holder: Any = None,
        *,
        allowed: Sequence[str] = SEALED_STATUSES,
        manifest: Manifest | None = None,
        received: tuple[ExperimentConfig, rp.ParameterTable] | None = None,
        layers_checked: bool = False,
    ) -> SealedState:
        """Open the artifact ``digest`` stored in ``registry`` (§5 validation, see class doc).

        ``manifest``: the already parsed manifest of ``digest`` (an open ``Artifact``'s), not read again.
        ``received``: its config and run-parameter table as the import that just stored it
        validated them (``format.archive.Received``); the statuses are checked again, nothing is re-read.
        ``layers_checked``: the caller has just checked that every layer is stored with its size
        (``Artifact.load``'s closure check): each layer blob is stat'ed once per load, not twice.
        """
        if manifest is None:
            manifest = Manifest.parse(registry.blobs.get(digest))
        check_experiment_manifest(manifest)
        if not layers_checked:
            for i, layer in enumerate(manifest.layers):
                size = registry.blobs.size(layer.digest)
                if size != layer.size:
                    raise BlobNotFoundError(
                        f"Failed to read blob {layer.digest} (layer {i}): {size} bytes, expected {layer.size}"
                    )
        if received is not None:
            config, table = received
            validate_experiment(manifest, config, allowed_statuses=allowed)
            state = cls(registry, holder, image_name, digest, manifest, config, allowed=allowed, table=table)
            state.run_records()  # ordered now, with the rest of the import's decoding (as OMMX's import)
            return state
        state = cls(registry, holder, image_name, digest, manifest, allowed=allowed)
        if our_parquet_layer(manifest) is None:
            state.table()  # parses and validates config and msgpack now, as OMMX does at load
        return state

    @property
    def config(self) -> ExperimentConfig:
        if self._config is None:
            config = ExperimentConfig.parse(self.registry.blobs.get(self.manifest.config.digest))
            validate_experiment(self.manifest, config, allowed_statuses=self._allowed)
            self._config = config
        return self._config

    @property
    def content(self) -> ExperimentContent:
        if self._content is None:
            self._content = content_from_artifact(self.manifest, self.config)
        return self._content

    @property
    def status(self) -> str:
        return self.config.status

    @property
    def reason(self) -> str | None:
        return self.config.reason

    def run_ids(self) -> list[int]:
        if self._content is None:
            return [run.run_id for run in self.run_records()]
        return [run.run_id for run in self._content.runs]

    def run_records(self) -> tuple[RunRecord, ...]:
        """The config's run records by ascending run id (what lazy ``SealedRun`` views hold)."""
        if self._records is None:
            runs = self.config.runs
            ordered = all(a.run_id < b.run_id for a, b in pairwise(runs))
            self._records = runs if ordered else tuple(sorted(runs, key=attrgetter("run_id")))
        return self._records

    def table(self) -> rp.ParameterTable:
        if self._table is None:
            data = self.registry.blobs.get(self.content.run_parameters.digest)
            self._table = rp.decode_msgpack(data, set(self.run_ids()))
        return self._table

    def params_by_run(self) -> dict[int, dict[str, ParamValue]]:
        columns = self.table().columns
        if columns and all(c.values.keys() == columns[0].values.keys() for c in columns):
            # every run has every parameter (values in ascending run-id order): one dict per row, by column
            names = [c.name for c in columns]
            rows = zip(*(c.values.values() for c in columns), strict=True)
            return {run_id: dict(zip(names, row, strict=True)) for run_id, row in zip(columns[0].values, rows, strict=True)}
        out: dict[int, dict[str, ParamValue]] = {}
        for column in columns:
            for run_id, value in column.values.items():
                out.setdefault(run_id, {})[column.name] = value
        return out

    def parquet_layer(self) -> Descriptor | None:
        """Our Parquet run-parameter layer (among our trailing layers), if this artifact has one that
        may be read (a received one is compared with the MessagePack table first: format.parquet_trust)."""
        if self._parquet_ok is None:
            self._parquet_ok = parquet_layer_agrees(
                self.registry.db, self.manifest, lambda: self.config, lambda d: self.registry.blobs.get(d.digest)
            )
        return our_parquet_layer(self.manifest) if self._parquet_ok else None


# --- unsealed --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuiltArtifact:
    """Stored blobs of a built Experiment artifact (ref not yet written)."""

    manifest: Manifest
    manifest_bytes: bytes
    manifest_digest: str
    config: ExperimentConfig
    config_bytes: bytes
    content: ExperimentContent


class _ParamsOfRuns(Mapping[int, "Mapping[str, ParamValue]"]):
    """``{run_id: parameters}`` of the snapshot's runs that have any, built on first use (read-only).

    A commit whose table comes from the writer's own columns never asks (a 10,000-entry dict less).
    """

    __slots__ = ("_data", "_pairs")

    def __init__(self, pairs: Sequence[tuple[RunContent, Mapping[str, ParamValue]]]) -> None:
        self._pairs = pairs
        self._data: dict[int, Mapping[str, ParamValue]] | None = None

    def _dict(self) -> dict[int, Mapping[str, ParamValue]]:
        if self._data is None:
            self._data = {run.run_id: p for run, p in self._pairs if p}
        return self._data

    def __getitem__(self, run_id: int) -> Mapping[str, ParamValue]:
        return self._dict()[run_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def get(self, run_id: int, default: Any = None) -> Any:  # dict speed (build_table maps it over every run)
        return self._dict().get(run_id, default)

    def items(self) -> Any:
        return self._dict().items()


@dataclass(frozen=True, slots=True)
class SessionView:
    """What an unsealed experiment holds now: every writer's closed runs and attachments.

    Read-only (the session hands the same view out again until something changed); ``runs`` is in run-id order.
    """

    attachments: Mapping[str, Descriptor]
    filenames: Mapping[str, str]
    runs: Mapping[int, RunContent]
    params: Mapping[int, Mapping[str, ParamValue]]
    annotations: Mapping[str, str]
    subject: Descriptor | None
    inline: Mapping[str, bytes] | None = None
    """Bytes of experiment-level attachments not in the blob store yet (digest -> bytes)."""


class Session:
    """One process's handle on an unsealed Experiment, which several processes may share.

    Until its journal starts (the first ``run()``, attachment or annotation, or
    at once for ``join``) a session holds carried content (fork, restore from an
    OMMX checkpoint) in memory. From then on the shared journal is the state:
    views and commit read every writer's closed runs from it, and this process
    keeps only what it has not journaled yet (runs whose close failed to write).
    """

    def __init__(
        self,
        registry: LocalRegistry,
        requested: ImageName,
        *,
        holder: Any = None,
        store_trace: bool = False,
        annotations: dict[str, str] | None = None,
        subject: Descriptor | None = None,
        journal_session_id: str | None = None,
        join: bool = False,
    ) -> None:
        self.registry = registry
        self.holder = holder
        self.lock = threading.RLock()
        self.store_trace = store_trace
        self.annotations: dict[str, str] = dict(annotations or {})
        self.subject = subject
        self.join = join or journal_session_id is not None
        self.carried_runs: dict[int, RunContent] = {}
        self.carried_params: dict[int, dict[str, ParamValue]] = {}
        self.carried_attachments: dict[str, Descriptor] = {}
        self.carried_filenames: dict[str, str] = {}
        self.carried_source: Descriptor | None = None  # the manifest holding every carried blob
        self.pending: dict[int, tuple[RunContent, dict[str, ParamValue]]] = {}
        self.open_runs = 0
        self.closed = 0
        self.schedule = AutosaveSchedule(DEFAULT_POLICY, 0)
        self.policy_chosen = False  # set_policy was called: every draft is published at the close that makes it due
        self._draft_later: object | None = None  # the token of the deferred first draft (:meth:`_after_close`)
        self.journal = Journal(registry, requested, journal_session_id)
        self.writable = True  # cleared by the owner when the session leaves the unsealed state
        self._flush_timer: threading.Timer | None = None
        self._view: tuple[object, SessionView] | None = None  # (journal snapshot, the view made of it)
        self._layout_memo = LayoutMemo()  # the last build's layout: a commit right after a draft reuses it
        # Open Runs, weakly (one cheap ``weakref.ref`` each): one dropped unclosed is abandoned
        # (:meth:`_run_dropped`); the ones still open when this session is finalized (interpreter
        # exit) are abandoned by ``_release_writer``.
        self._open_handles: dict[int, _RunHandle] = {}
        self._handle_gone = partial(_run_handle_gone, weakref.ref(self))
        self._exit_hook = weakref.finalize(self, _release_writer, self.journal, self._open_handles)

    @property
    def requested(self) -> ImageName:
        return self.journal.requested

    @requested.setter
    def requested(self, value: ImageName) -> None:
        self.journal.requested = value

    # --- carried content (fork / restore from an OMMX checkpoint) -----------------------------

    def carry(
        self,
        content_runs: Sequence[tuple[RunContent, dict[str, ParamValue]]],
        attachments: AttachmentContent,
        source: Descriptor | None = None,
    ) -> None:
        """Adopt runs and attachments from a parent or checkpoint (descriptors only, no copies).

        ``source``: the stored manifest that holds every carried blob (the parent, the
        checkpoint); the journal then pins it by reference (one small manifest) at start.
        """
        self.carried_source = source
        for run, params in content_runs:
            self.carried_runs[run.run_id] = run
            if params:
                self.carried_params[run.run_id] = dict(params)
        self.carried_attachments.update(attachments.descriptors)
        self.carried_filenames.update(attachments.filenames)
        self.closed = len(self.carried_runs)
        self.schedule = AutosaveSchedule(DEFAULT_POLICY, self.closed)

    # --- the shared journal -------------------------------------------------------------------

    def start(self, *, for_run: bool = False) -> None:
        """Join or create the shared journal (idempotent); carried content is written once.

        ``for_run``: a Run is being started (its id is reserved in the same transaction).
        """
        with self.lock:
            if self.journal.started:
                return
            runs = [(r, self.carried_params.get(r.run_id, {})) for r in self.carried_runs.values()]
            attachments = [(n, d, self.carried_filenames.get(n)) for n, d in self.carried_attachments.items()]
            source = self.carried_source if (self.carried_runs or self.carried_attachments) else None
            blobs = (
                []
                if source is not None
                else [*self.carried_attachments.values(), *(b for r in self.carried_runs.values() for b in run_blobs(r))]
            )
            header = JournalHeader(FrozenMap(self.annotations), self.subject)
            self.journal.start(
                header, join=self.join, runs=runs, attachments=attachments, new_blobs=blobs, source=source, reserve=for_run
            )
            self.carried_source = None
            self.carried_runs.clear()
            self.carried_params.clear()
            self.carried_attachments.clear()
            self.carried_filenames.clear()
            if self.join:
                found = self.journal.header_and_count()
                if found is not None:
                    header, self.closed = found
                    self.annotations = dict(header.annotations)
                    self.subject = header.subject
                    self.schedule = AutosaveSchedule(self.schedule.policy, self.closed)

    def recover(self) -> list[int]:
        """Record the open runs of dead writers as ``interrupted`` (and finish a dead committer's work)."""
        with self.lock:
            if not self.journal.started:
                return []
            return self.journal.recover()

    def view(self) -> SessionView:
        """Every writer's closed runs and attachments (one consistent read of the journal)."""
        with self.lock:
            if not self.journal.started:
                return SessionView(
                    dict(self.carried_attachments), dict(self.carried_filenames), dict(sorted(self.carried_runs.items())),
                    {k: dict(v) for k, v in self.carried_params.items()}, dict(self.annotations), self.subject,
                )
            snapshot = self.journal.snapshot()
            if snapshot is None:
                raise LifecycleError(f"The shared journal of {self.requested} is gone (committed or replaced by another session)")
            cached = self._view
            if cached is not None and cached[0] is snapshot:  # nothing changed since the last view
                return cached[1]
            runs = {run.run_id: run for run, _ in snapshot.runs}  # in run-id order
            view = SessionView(
                MappingProxyType(snapshot.attachments.descriptors), MappingProxyType(snapshot.attachments.filenames),
                MappingProxyType(runs), _ParamsOfRuns(snapshot.runs),
                MappingProxyType(dict(snapshot.header.annotations)), snapshot.header.subject,
                snapshot.attachments.inline,
            )
            self._view = (snapshot, view)
            return view

    # --- runs -----------------------------------------------------------------------------

    def allocate_run(self) -> int:
        with self.lock:
            self.start(for_run=True)
            run_id = self.journal.allocate_run_id()
            self.open_runs += 1
            return run_id

    def log_open(self, record: tuple[Any, ...]) -> None:
        """Append a record about one of this process's open runs to its open-run log."""
        self.journal.log_open(record)

    def check_param(self, name: str, value: ParamValue) -> None:
        self.journal.check_param(name, value)

    def track_run(self, run: object, run_id: int) -> None:
        """Abandon ``run_id`` (:meth:`abandon_run`) if ``run`` is garbage-collected before :meth:`untrack_run`."""
        handle = _RunHandle(run, self._handle_gone)
        handle.run_id = run_id
        self._open_handles[run_id] = handle

    def untrack_run(self, run_id: int) -> None:
        """The Run of ``run_id`` was closed (recorded or not): nothing to abandon any more."""
        self._open_handles.pop(run_id, None)

    def abandon_run(self, run_id: int) -> None:
        """An open Run handle went away without being recorded (abandoned)."""
        self._open_handles.pop(run_id, None)
        with self.lock:
            self.journal.log_open((run_log.DROPPED, run_id))
            self._one_less_open()

    def _run_dropped(self, handle: _RunHandle) -> None:
        if self._open_handles.get(handle.run_id) is handle:
            self.abandon_run(handle.run_id)

    def close_run(self, run: RunContent, params: dict[str, ParamValue], *, columns_checked: bool = False) -> None:
        """Record a closed run in the shared journal (O(1)), then apply the autosave policy.

        A close without blobs or new column types is deferred (group commit, see
        ``format.journal``); a batch is written when it is due or by the flush timer.
        ``ParameterTypeError``: nothing recorded, the run stays open (fix the value and
        close again). ``JournalWriteError``: the run is closed but not yet durable; it
        stays in this session (or this writer's log) and is written by the next close
        or by commit. ``columns_checked``: the caller knows every parameter matches the
        journal's cached column types (``Journal.append_run``).
        ``RunNotRecordedError``: the experiment was committed or replaced first; the
        run was kept in a new draft (see the message). ``RunBlobsLostError``: a blob the
        run logged was deleted before this close could pin it; the run is not recorded.
        """
        with self.lock:
            if not self.writable:
                self._one_less_open()
                return
            if self.pending:
                try:
                    self.flush_pending(deferred=False)
                except JournalWriteError as exc:
                    self.pending[run.run_id] = (run, params)
                    self._one_less_open()
                    raise JournalWriteError(self.journal.unsaved_message(run.run_id, exc)) from exc
            try:
                deferred = self.journal.append_run(run, params, run_blobs(run), columns_checked=columns_checked)
            except ParameterTypeError:
                raise
            except (RunNotRecordedError, RunBlobsLostError):  # nothing to retry: said, not kept pending
                self._one_less_open()
                raise
            except (OmmxExperimentError, OSError, sqlite3.Error) as exc:
                self.pending[run.run_id] = (run, params)
                self._one_less_open()
                raise JournalWriteError(self.journal.unsaved_message(run.run_id, exc)) from exc
            self._one_less_open()
            self.closed += 1
            if deferred:
                if len(self.journal.deferred) >= GROUP_COMMIT_RUNS or self.journal.deferred_bytes >= GROUP_COMMIT_BYTES:
                    self.journal.flush()
                elif self._flush_timer is None:
                    self._start_flush_timer()
            self._after_close()

    def _start_flush_timer(self) -> None:
        timer = threading.Timer(GROUP_COMMIT_SECONDS, _timed_flush, (weakref.ref(self),))
        timer.daemon = True
        self._flush_timer = timer
        timer.start()

    def flush_pending(self, *, deferred: bool = True) -> None:
        """Write runs whose close failed to reach the journal (and, with ``deferred``, the deferred closes).

        Raises ``JournalWriteError`` if it still fails.
        """
        if deferred and self.journal.deferred:
            self.journal.flush()
        while self.pending:
            run_id = min(self.pending)
            run, params = self.pending[run_id]
            try:
                self.journal.append_run(run, params, run_blobs(run))
            except (RunNotRecordedError, ParameterTypeError, RunBlobsLostError):
                del self.pending[run_id]
                raise
            except (OmmxExperimentError, OSError, sqlite3.Error) as exc:
                raise JournalWriteError(self.journal.unsaved_message(run_id, exc)) from exc
            del self.pending[run_id]
            self.closed += 1

    def record_closed_runs(
        self, count: int, build: Callable[[int], tuple[RunContent, dict[str, ParamValue]]]
    ) -> list[tuple[RunContent, dict[str, ParamValue]]]:
        """Record ``count`` runs closed elsewhere (an ``Experiment.sweep`` batch) with one journal write.

        ``build(run_id)`` makes each run once its id is taken; no run is ever open
        here, so a killed process leaves no half-recorded run. Returns what was recorded.
        """
        with self.lock:
            if not self.writable:
                raise LifecycleError(f"Experiment {self.requested} is no longer unsealed; {count} sweep run(s) not recorded")
            self.start()
            runs = [build(run_id) for run_id in self.journal.take_run_ids(count)]
            self.journal.append_closed_runs(runs)
            self.closed += len(runs)
            self._after_close()
            return runs

    def _one_less_open(self) -> None:
        self.open_runs = max(0, self.open_runs - 1)
        if self.open_runs == 0 and not self.pending:
            self.journal.no_open_runs()

    def discard_run(self, run_id: int) -> None:
        with self.lock:
            if run_id in self.pending:
                del self.pending[run_id]
                return
            if not self.journal.started:
                if self.carried_runs.pop(run_id, None) is None:
                    raise RunNotFoundError(f"Experiment {self.requested} has no closed run {run_id} to discard")
                self.carried_params.pop(run_id, None)
                return
            self.journal.discard_run(run_id)
            self.closed = max(0, self.closed - 1)

    # --- attachments ----------------------------------------------------------------------

    def reserve_attachment(self, name: str) -> None:
        with self.lock:
            taken = self.journal.has_attachment(name) if self.journal.started else name in self.carried_attachments
            if taken:
                raise LifecycleError(f"Attachment `{name}` already exists")

    def add_attachment(self, name: str, desc: Descriptor, filename: str | None, inline: bytes | None = None) -> None:
        with self.lock:
            self.start()
            self.journal.add_attachment(name, desc, filename, inline)

    def set_annotation(self, key: str, value: str) -> None:
        with self.lock:
            self.annotations[key] = value
            if self.journal.started:
                self.annotations = dict(self.journal.set_annotation(key, value))

    # --- autosave ---------------------------------------------------------------------------

    def set_policy(self, policy: AutosavePolicy) -> None:
        with self.lock:
            self._drop_deferred_draft()
            self.policy_chosen = True
            self.schedule = AutosaveSchedule(policy, self.closed)

    def _after_close(self) -> None:
        """Apply the autosave policy after a close (or a sweep batch); under ``self.lock``.

        The default policy's first draft is deferred (spec/experiment.md, "OMMX-format
        checkpoints"): published :data:`~.autosave.DEFERRED_DRAFT_SECONDS` later by
        :data:`~.autosave.LATER`'s thread (or at interpreter exit) with every run closed
        by then, and dropped if a commit, another checkpoint or a policy change comes
        first. So a small experiment committed at once writes no draft. A policy chosen
        with ``set_autosave_policy`` and a process where OMMX 3's SQLite is loaded publish
        at the close, as before. The journal already made the close durable.
        """
        if self._draft_later is not None:
            if LATER.pending(self) and not other_sqlite_loaded():
                return  # the deferred draft will hold this close too
            self._drop_deferred_draft()
            self._autosave()  # OMMX 3 got loaded meanwhile (or this is a forked child): publish it now
            return
        if not self.schedule.due(self.closed):
            return
        if self.policy_chosen or self.schedule.last_attempt is not None or other_sqlite_loaded():
            self._autosave()
            return
        token = self._draft_later = object()
        LATER.schedule(self, autosave.DEFERRED_DRAFT_SECONDS, partial(_deferred_draft, self, token))

    def _drop_deferred_draft(self) -> None:
        if self._draft_later is not None:
            self._draft_later = None
            LATER.cancel(self)

    def _autosave(self) -> None:
        success = self.try_checkpoint("draft", copy=True) is not None
        self.schedule.attempted(self.closed, success)

    def try_checkpoint(self, status: str, reason: str | None = None, *, copy: bool = False) -> str | None:
        """Publish an OMMX-format checkpoint; failures are logged and give None (the journal is the durable record).

        ``copy``: an autosave draft, a copy of the journal's state for OMMX 3; restore
        never prefers it over the journal that every writer keeps appending to.
        """
        try:
            return self.publish_checkpoint(status, reason, copy=copy)
        except Exception as exc:
            log.warning("Experiment checkpoint (%s) of %s not published: %s", status, self.requested, exc)
            return None

    def publish_checkpoint(self, status: str, reason: str | None = None, *, copy: bool = False) -> str:
        with self.lock, self.registry.publish_window():
            self._drop_deferred_draft()  # this checkpoint holds every run it would have held
            built = self.build(status, reason=reason, requested=str(self.requested), parquet=False)
            noted = built.manifest_digest if copy else None
            self.registry.replace(
                checkpoint_ref(self.registry, self.requested),
                built.manifest_digest,
                config_bytes=built.config_bytes,
                manifest_bytes=built.manifest_bytes,  # not read back (nor its batch flushed early) to be parsed
                # the journal notes what the slot holds in the slot's own transaction: both or neither
                also=(lambda conn: self.journal.note_checkpoint_in(conn, noted)) if self.journal.started else None,
            )
            return built.manifest_digest

    # --- building ---------------------------------------------------------------------------

    def build(
        self,
        status: str,
        *,
        reason: str | None = None,
        requested: str | None = None,
        parquet: bool,
        view: SessionView | None = None,
        provenance: bool = True,
    ) -> BuiltArtifact:
        """Store every non-payload blob of the artifact and return it (no ref written).

        ``parquet``: append our analysis layers (``lifecycle.analysis``; ``provenance``
        adds the provenance layer). Raises ``MixedParameterTypesError`` before anything is stored.
        """
        with gc_paused():
            state = view if view is not None else self.view()
        try:
            with gc_paused():
                return self._build(state, status, reason=reason, requested=requested, parquet=parquet, provenance=provenance)
        except InvalidTextError:
            raise
        except UnicodeEncodeError as exc:  # a string logged by an older version that did not check text
            raise _poison_error(state, exc) from None

    def _build(
        self, state: SessionView, status: str, *, reason: str | None, requested: str | None, parquet: bool, provenance: bool
    ) -> BuiltArtifact:
        runs = tuple(state.runs.values())  # in run-id order
        memo = self._layout_memo
        rows = list(map(state.params.get, state.runs.keys()))
        kept = memo.parameters(runs, rows)  # the draft's table when no run or parameter changed since
        if kept is None:
            table = self.journal.own_columns.table_for(runs) if self.journal.started else None
            if table is None:
                table = rp.build_table(state.params, state.runs.keys())
            msgpack_bytes = rp.table_to_msgpack(table)
            memo.keep_parameters(runs, rows, (table, msgpack_bytes))
        else:
            table, msgpack_bytes = kept
        blobs = self.registry.blobs
        # inline attachments (experiment-level ones, deferred closes'): stored in the caller's publish window
        for inline in (state.inline, *(run.inline for run in state.runs.values())):
            if inline:
                for digest, data in inline.items():
                    blobs.put_bytes(data, expected_digest=digest)
        extra: tuple[Descriptor, ...] = ()
        if parquet:  # first: it reads the provenance before any blob of its own is handed to a batch helper
            from .analysis import analysis_layers

            extra = analysis_layers(
                blobs, table, runs, image_name=str(self.requested), subject=state.subject, provenance=provenance
            )
        msgpack_blob = blobs.put_bytes(msgpack_bytes)
        content = ExperimentContent(
            AttachmentContent(state.attachments, state.filenames),
            runs,
            Descriptor(mt.RUN_PARAMETERS, msgpack_blob.digest, msgpack_blob.size),
            extra,
        )
        layers, config = build_experiment(content, status=status, reason=reason, requested_image_name=requested, memo=memo)
        config_bytes = memo.config_bytes(config)
        stored_config = blobs.put_bytes(config_bytes)
        manifest = Manifest(
            mt.EXPERIMENT_ARTIFACT_TYPE,
            Descriptor(mt.EXPERIMENT_CONFIG, stored_config.digest, stored_config.size),
            layers,
            state.subject,
            FrozenMap(state.annotations),
        )
        manifest_bytes = manifest.to_bytes(layer_texts=memo.layer_texts(layers))
        stored = blobs.put_bytes(manifest_bytes)
        return BuiltArtifact(manifest, manifest_bytes, stored.digest, config, config_bytes, content)

    # --- leaving ----------------------------------------------------------------------------

    def release(self) -> None:
        """This process stops writing (sealed here, or read-only): give the writer slot back.

        Runs still open stay open in the writer's log: the next join, restore or commit
        records them as interrupted (unlike at interpreter exit, where they are abandoned).
        """
        self._open_handles.clear()
        with self.lock:
            self._drop_deferred_draft()
        self._exit_hook()


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Any:
    """No cyclic garbage collection while building an artifact or a view (it frees nothing there).

    A 10,000-run build allocates a few hundred thousand containers, and a view of 5,000
    runs tens of thousands; the collections they trigger walk every live object (the
    session's decoded runs, all of pandas when it is imported) and cost about a fifth of
    a commit, and 40–80 ms of a first ``Experiment.runs`` of 5,000 runs in a process
    that imported pandas. Mercurial pauses its bulk parsers the same way (``util.nogc``).

    Pauses nest and overlap across threads: the first to enter records whether the
    collector was enabled, the last to leave restores that (cycles made meanwhile are
    collected by the next collection after it).
    """
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_was_enabled:
                gc.enable()


def _deferred_draft(session: Session, token: object, background: bool) -> None:
    """The deferred first draft (``LATER``'s thread, or ``run_all`` at exit); nothing if dropped meanwhile."""
    with session.lock:
        if session._draft_later is not token:
            return
        if background and other_sqlite_loaded():  # OMMX 3 may be using the index: the next close or exit publishes it
            LATER.schedule(session, math.inf, partial(_deferred_draft, session, token))
            return
        session._draft_later = None
        if session.writable and session.schedule.due(session.closed):
            session._autosave()


def _timed_flush(ref: weakref.ReferenceType[Session]) -> None:
    """The flush timer: write a batch of deferred closes that did not fill up (errors: the next close raises)."""
    session = ref()
    if session is None:
        return
    with session.lock:
        session._flush_timer = None
        if other_sqlite_loaded():  # OMMX 3 may be using the index right now: the next call of ours writes them
            return
        try:
            session.journal.flush()
        except Exception as exc:
            log.warning("Deferred run closes of %s not written yet: %s", session.requested, exc)


class _RunHandle(weakref.ref):
    """A weak reference to an open Run that knows the run's id."""

    __slots__ = ("run_id",)
    run_id: int


def _run_handle_gone(session_ref: weakref.ref[Session], handle: _RunHandle) -> None:
    session = session_ref()
    if session is not None:
        session._run_dropped(handle)


def _release_writer(journal: Journal, open_handles: dict[int, _RunHandle]) -> None:
    """The session's finalizer (its release, its collection, or interpreter exit)."""
    for run_id in list(open_handles):  # never closed: abandoned, as a Run collected while open is
        journal.log_open((run_log.DROPPED, run_id))
    open_handles.clear()
    try:
        journal.release()
    except Exception as exc:  # at interpreter exit: never raise, the log stays for recovery
        log.warning("Writer of %s not released cleanly: %s", journal.requested, exc)


def failure_status(exc_type: type[BaseException] | None) -> str:
    """``interrupted`` for KeyboardInterrupt subclasses, else ``failed``."""
    return INTERRUPTED if exc_type is not None and issubclass(exc_type, KeyboardInterrupt) else FAILED


def failure_outcome(exc_type: type[BaseException], exc_value: BaseException | None) -> tuple[str, str]:
    """``(status, reason)`` recorded when a context body exits with ``exc_type``/``exc_value``.

    The reason is :func:`~ommx_experiment.lifecycle.reason.lifecycle_reason` of the exception
    (of a fresh ``exc_type()`` when ``__exit__`` got no instance).
    """
    return failure_status(exc_type), lifecycle_reason(exc_value if exc_value is not None else exc_type())


def _poison_error(state: SessionView, exc: UnicodeEncodeError) -> InvalidTextError:
    """Name the first string of ``state`` that cannot be stored, and how to get rid of it."""

    def where() -> tuple[str, str] | None:
        for run_id in sorted(state.params):
            for key, value in state.params[run_id].items():
                for text in (key, value):
                    if isinstance(text, str) and not is_utf8_text(text):
                        return f"parameter {key!r} of run {run_id} (drop the run with discard_run({run_id}))", text
        for run_id in sorted(state.runs):
            run = state.runs[run_id]
            for name in (*run.attachments.descriptors, *run.attachments.filenames.values()):
                if not is_utf8_text(name):
                    return f"attachment of run {run_id} (drop the run with discard_run({run_id}))", name
        for name in (*state.attachments, *state.filenames.values()):
            if not is_utf8_text(name):
                return "experiment attachment name", name
        for key, value in state.annotations.items():
            for text in (key, value):
                if not is_utf8_text(text):
                    return "annotation (set it again with set_annotation)", text
        return None

    found = where()
    if found is None:
        return InvalidTextError("a string of the experiment", str(exc.object), exc.start, exc.end)
    what, text = found
    start = next(i for i, ch in enumerate(text) if not is_utf8_text(ch))
    return InvalidTextError(what, text, start, start + 1)

