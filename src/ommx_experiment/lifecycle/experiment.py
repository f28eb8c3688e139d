"""``Experiment``: the OMMX 3 ``ommx.experiment.Experiment`` API over our Local Registry.

Lifecycle states (spec/experiment.md): ``unsealed`` (new, forked, restored;
mutable), ``sealed`` (committed, loaded, imported; read-only), ``failed``
(a failed/interrupted checkpoint published by the context manager, read-only;
or a commit that failed permanently). All mutations of one session run under
one ``threading.RLock``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from .. import media_types as mt
from ..engine.clock import parse_timestamp
from ..engine.digest import sha256_digest
from ..engine.names import ImageName, anonymous_experiment_name
from ..engine.oci import Descriptor, FrozenMap
from ..engine.registry import LocalRegistry
from ..engine.text import check_annotation_text
from ..errors import (
    BlobNotFoundError,
    ExperimentBusyError,
    InvalidArgumentTypeError,
    InvalidInputError,
    LifecycleError,
    RefConflictError,
)
from ..format import run_params as rp
from ..format.codec import CHECKPOINT_STATUSES, FINISHED
from ..format.journal import checkpoint_ref, checkpoint_updated_at, has_journal, journal_head, settle
from ..format.journal_sweep import SWEEP_LATER_RUNS
from .attachments import AttachmentReader, AttachmentWriter
from .autosave import AutosavePolicy
from .run import INLINE_MAX_BYTES, Run, SealedRun, SealedRuns
from .session import SealedState, Session, failure_outcome, gc_paused

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from types import TracebackType

    import pandas as pd

    from ..engine.blobstore import BlobStore
    from .artifact import Artifact
    from .sweep import SweepSummary

__all__ = ["AutosavePolicy", "Experiment"]

log = logging.getLogger(__name__)

_UNSEALED, _SEALED, _CHECKPOINT, _COMMIT_FAILED = "unsealed", "sealed", "checkpoint", "commit_failed"
DERIVED_DIR = ".oxe-derived"


def _artifact(registry: LocalRegistry, image: ImageName, digest: str, holder: Any, parsed: Any = None) -> Artifact:
    from .artifact import Artifact

    return Artifact._open(registry, image, digest, keep_alive=holder, parsed=parsed)


def _slot_wins(slot: tuple[str, str], journal: Any) -> bool:
    """The OMMX-format slot is restored instead of the journal only when someone else wrote it later.

    A slot our writers published from this journal (``slot_digest``) is a copy of
    an older state of it: the journal, which every writer appends to, wins.
    """
    if journal.slot_digest == slot[0]:
        return False
    return parse_timestamp(slot[1]) > parse_timestamp(journal.updated_at)


class Experiment(AttachmentWriter, AttachmentReader):
    """An optimisation experiment: runs, parameters and attachments, committed as one OCI artifact.

    Drop-in for ``ommx.experiment.Experiment`` (OMMX 3). Differences, all
    documented in spec/experiment.md: the default autosave policy is
    ``AutosavePolicy.min_interval(60.0)`` (every Run close is durable through the
    journal anyway); a ref conflict at commit leaves the session usable for
    ``rename`` and a retry; committed artifacts carry one more layer after the
    MessagePack run-parameter layer, the same table as Parquet.
    """

    _attachment_owner = "Experiment"
    _run_views: tuple[Any, list[SealedRun]] | None = None  # (session view, its SealedRun views): unsealed ``runs``
    _params_frame: tuple[Any, pd.DataFrame] | None = None  # (session view, its frame): unsealed ``run_parameters_df``

    # --- construction ----------------------------------------------------------------------

    def __init__(self, image_name: str | None = None, *, store_trace: bool = False) -> None:
        image = None if image_name is None else ImageName.parse(image_name)
        self._init_unsealed(LocalRegistry.default(), image, holder=None, store_trace=store_trace)

    def _init_unsealed(
        self,
        registry: LocalRegistry,
        image: ImageName | None,
        *,
        holder: Any,
        store_trace: bool,
        annotations: Mapping[str, str] | None = None,
        subject: Descriptor | None = None,
        journal_session_id: str | None = None,
        join: bool = False,
    ) -> Session:
        if store_trace:
            from .tracing import require_trace_support

            require_trace_support()  # fail here, not at the first Run enter
        requested = image if image is not None else anonymous_experiment_name(registry.registry_id)
        self._holder = holder
        self._state = _UNSEALED
        self._sealed: SealedState | None = None
        self._commit_error: str | None = None
        self._session: Session | None = Session(
            registry,
            requested,
            holder=holder,
            store_trace=bool(store_trace),
            annotations=dict(annotations or {}),
            subject=subject,
            journal_session_id=journal_session_id,
            join=join,
        )
        return self._session

    @classmethod
    def _new_unsealed(cls, registry: LocalRegistry, image: ImageName | None, **kwargs: Any) -> tuple[Experiment, Session]:
        self = cls.__new__(cls)
        session = self._init_unsealed(registry, image, **kwargs)
        return self, session

    @classmethod
    def _from_sealed(cls, sealed: SealedState) -> Experiment:
        self = cls.__new__(cls)
        self._holder = sealed.holder
        self._state = _SEALED
        self._sealed = sealed
        self._session = None
        self._commit_error = None
        return self

    @classmethod
    def with_temp_local_registry(cls, image_name: str | None = None, *, store_trace: bool = False) -> Experiment:
        """A new unsealed session in a fresh temporary registry, deleted when the last derived object dies."""
        from ..engine.temp_registry import TempRegistryHolder

        image = None if image_name is None else ImageName.parse(image_name)
        holder = TempRegistryHolder()
        self, _ = cls._new_unsealed(holder.registry, image, holder=holder, store_trace=store_trace)
        return self

    @classmethod
    @gc_paused()
    def load(cls, image_name: str) -> Experiment:
        """Open a committed Experiment (finished/failed/interrupted) from the default registry."""
        from .artifact import Artifact

        # Artifact.load has just checked every layer's size (its closure): not stat'ed a second time
        return cls._from_artifact(Artifact.load(image_name), layers_checked=True)

    @classmethod
    @gc_paused()
    def from_artifact(cls, artifact: Artifact) -> Experiment:
        """Interpret an open ``Artifact`` handle as a sealed Experiment (generic artifacts rejected)."""
        return cls._from_artifact(artifact, layers_checked=False)

    @classmethod
    def _from_artifact(cls, artifact: Artifact, *, layers_checked: bool) -> Experiment:
        from .artifact import Artifact

        if not isinstance(artifact, Artifact):
            raise InvalidArgumentTypeError(f"Expected an Artifact, got {type(artifact).__name__}")
        image = ImageName.parse(artifact.image_name)
        sealed = SealedState.open(
            artifact.registry, image, artifact.manifest_digest, artifact._keep_alive, manifest=artifact.manifest,
            layers_checked=layers_checked,
        )
        return cls._from_sealed(sealed)

    @classmethod
    @gc_paused()
    def import_archive(cls, path: str | os.PathLike[str]) -> Experiment:
        """Import a ``.ommx`` archive or OCI layout directory, then open it as a sealed Experiment."""
        from ..format.archive import Received, import_path

        registry = LocalRegistry.default()
        received = Received()
        image, digest = import_path(registry, path, received=received)
        return cls._from_sealed(
            SealedState.open(registry, image, digest, manifest=received.manifest, received=received.experiment)
        )

    @classmethod
    @gc_paused()
    def join(cls, image_name: str, *, store_trace: bool = False) -> Experiment:
        """Join the shared unsealed experiment ``image_name``, creating it when none exists.

        Any number of processes on the same registry root may join one name and
        add runs and attachments to it at once: run ids are unique across all of
        them, every closed Run is visible to all of them at once, and a commit
        from any of them publishes every closed run of every writer (it refuses
        while another live process holds an open Run). Runs left open by a killed
        process come back as ``interrupted`` runs at the next join, restore or
        commit. ``Experiment(name)`` keeps OMMX's meaning: a new session.

        Raises ``LifecycleError`` when ``image_name`` is already committed and no
        draft of it exists.
        """
        requested = ImageName.parse(image_name)
        registry = LocalRegistry.default()
        settle(registry, requested)
        if not has_journal(registry, requested):
            committed = registry.resolve(requested)
            if committed is not None:
                raise LifecycleError(f"Experiment {requested} is already committed as {committed}; it cannot be joined")
            slot = checkpoint_updated_at(registry, requested)
            if slot is not None:  # an OMMX-format checkpoint and no journal: continue from it
                self = cls._restore_slot(registry, requested, slot[0], store_trace=store_trace)
                self._session_or_raise().start()
                return self
        self, session = cls._new_unsealed(registry, requested, holder=None, store_trace=store_trace, join=True)
        session.start()
        session.recover()
        return self

    @classmethod
    @gc_paused()
    def restore_from_checkpoint(cls, image_name: str) -> Experiment:
        """An unsealed session from the newest of our journal and OMMX's checkpoint slot for ``image_name``.

        From the journal, the session joins it (other live writers keep writing);
        runs left open by dead processes come back as ``interrupted``, and with no
        other writer left, run ids continue at the highest closed id + 1 (OMMX).
        """
        requested = ImageName.parse(image_name)
        registry = LocalRegistry.default()
        settle(registry, requested)
        journal = journal_head(registry, requested)
        slot = checkpoint_updated_at(registry, requested)
        if journal is None and slot is None:
            raise LifecycleError(
                f"No Experiment checkpoint found for requested image {requested} at "
                f"{checkpoint_ref(registry, requested)}: no checkpoint ref and no journal"
            )
        if slot is not None and (journal is None or _slot_wins(slot, journal)):
            return cls._restore_slot(registry, requested, slot[0])
        assert journal is not None
        self, session = cls._new_unsealed(
            registry, requested, holder=None, store_trace=False, journal_session_id=journal.session_id
        )
        session.start()
        session.recover()
        session.journal.compact_ids()
        return self

    @classmethod
    def _restore_slot(
        cls, registry: LocalRegistry, requested: ImageName, digest: str, *, store_trace: bool = False
    ) -> Experiment:
        ref = checkpoint_ref(registry, requested)
        sealed = SealedState.open(registry, ref, digest, allowed=CHECKPOINT_STATUSES)
        if sealed.config.requested_image_name != str(requested):
            raise LifecycleError(
                f"Checkpoint {ref} was written for {sealed.config.requested_image_name}, not {requested}"
            )
        size = registry.blobs.size(digest)
        self, session = cls._new_unsealed(
            registry,
            requested,
            holder=None,
            store_trace=store_trace,
            annotations=dict(sealed.manifest.annotations),
            subject=Descriptor(mt.OCI_MANIFEST, digest, size),
        )
        params = sealed.params_by_run()
        session.carry(
            [(r, params.get(r.run_id, {})) for r in sealed.content.runs], sealed.content.attachments, session.subject
        )
        return self

    # --- state checks --------------------------------------------------------------------------

    def _read_only_error(self) -> LifecycleError:
        if self._state == _SEALED:
            return LifecycleError("Sealed Experiment is read-only")
        if self._state == _CHECKPOINT:
            return LifecycleError("Checkpointed Experiment is read-only")
        return LifecycleError(f"Experiment commit has failed: {self._commit_error}")

    def _check_unsealed(self) -> None:
        if self._state != _UNSEALED:
            raise self._read_only_error()

    def _session_or_raise(self) -> Session:
        self._check_unsealed()
        assert self._session is not None
        return self._session

    def _committed(self) -> SealedState:
        if self._state == _COMMIT_FAILED:
            raise self._read_only_error()
        if self._sealed is None:
            raise LifecycleError("Experiment must be committed before accessing this view")
        return self._sealed

    @property
    def _registry(self) -> LocalRegistry:
        return self._session.registry if self._session is not None else self._committed().registry

    # --- properties ---------------------------------------------------------------------------------

    @property
    def image_name(self) -> str:
        """Requested name (unsealed, failed), or the ref name of the sealed artifact."""
        if self._state == _SEALED:
            assert self._sealed is not None
            return str(self._sealed.image_name)
        assert self._session is not None
        return str(self._session.requested)

    @property
    def annotations(self) -> dict[str, str]:
        if self._sealed is not None:
            return dict(self._sealed.manifest.annotations)
        assert self._session is not None
        return dict(self._session.view().annotations)

    @property
    def attachment_names(self) -> list[str]:
        _, descriptors, _ = self._attachment_view()
        return sorted(descriptors)

    @property
    @gc_paused()
    def runs(self) -> list[SealedRun]:
        """Closed runs by ascending run id (open runs are not listed)."""
        if self._sealed is not None:
            sealed = self._sealed  # lazy views: each maps its config record on first use
            views = SealedRuns(sealed.registry.blobs, self._holder, sealed.manifest, sealed.manifest_digest)
            return views.views(sealed.run_records())
        assert self._session is not None
        view = self._session.view()
        cached = self._run_views
        if cached is None or cached[0] is not view:  # the views are read-only: reused while nothing changed
            cached = self._run_views = (view, SealedRuns(self._session.registry.blobs, self._holder).content_views(view.runs.values()))
        return list(cached[1])

    @property
    def status(self) -> str | None:
        return self._sealed.status if self._sealed is not None else None

    @property
    def lifecycle_reason(self) -> str | None:
        return self._sealed.reason if self._sealed is not None else None

    @property
    def artifact(self) -> Artifact:
        """The committed artifact (or the checkpoint artifact in the failed-checkpoint state)."""
        sealed = self._committed()
        return _artifact(sealed.registry, sealed.image_name, sealed.manifest_digest, self._holder)

    def __repr__(self) -> str:
        state = {_UNSEALED: "unsealed", _SEALED: "sealed"}.get(self._state, "failed")
        open_runs = self._session.open_runs if self._session is not None else 0
        return f"Experiment(image_name='{self.image_name}', state='{state}', open_runs={open_runs})"

    # --- attachments --------------------------------------------------------------------------------

    def _attachment_view(self) -> tuple[BlobStore, Mapping[str, Descriptor], Mapping[str, str]]:
        if self._sealed is not None:
            table = self._sealed.content.attachments
            return self._sealed.registry.blobs, table.descriptors, table.filenames
        assert self._session is not None
        view = self._session.view()
        blobs = self._session.registry.blobs
        if view.inline:  # small attachments still in the journal rows
            from ..engine.blobstore import InlineBlobs

            blobs = cast("BlobStore", InlineBlobs(blobs, view.inline))
        return blobs, view.attachments, view.filenames

    def _attachment_blobs(self) -> BlobStore:
        return self._session_or_raise().registry.blobs

    def _check_writable(self) -> None:
        self._check_unsealed()

    def _reserve_attachment(self, name: str) -> None:
        self._session_or_raise().reserve_attachment(name)

    def _add_attachment(self, name: str, desc: Descriptor, filename: str | None = None) -> None:
        session = self._session_or_raise()
        with session.lock:
            self._check_unsealed()
            session.add_attachment(name, desc, filename)

    def _store(self, name: str, media_type: str, data: bytes, annotations: Mapping[str, str], filename: str | None = None) -> None:
        """A small in-memory attachment is kept *inline* in its journal row (spec/experiment.md,
        "Inline attachments"): one journal transaction, no blob, pin or fsync now; a commit or an
        OMMX-format checkpoint stores it. Larger ones are stored and pinned now."""
        if len(data) > INLINE_MAX_BYTES:
            super()._store(name, media_type, data, annotations, filename)
            return
        self._reserve_attachment(name)
        desc = Descriptor(media_type, sha256_digest(data), len(data), FrozenMap(annotations))
        session = self._session_or_raise()
        with session.lock:
            self._check_unsealed()
            session.add_attachment(name, desc, filename, bytes(data))

    @contextlib.contextmanager
    def _store_window(self) -> Iterator[object]:
        # The session lock first, then the window: the order every commit and checkpoint takes.
        session = self._session_or_raise()
        with session.lock, session.registry.publish_window():
            yield None

    def _publish_attachment(self, name: str, desc: Descriptor, filename: str | None, reput: Callable[[], str]) -> None:
        # The blob was written outside any lock; inside the publish window (no deleting GC, ours or
        # OMMX's) it is checked, written again if a GC collected it meanwhile, and pinned.
        session = self._session_or_raise()
        with session.lock, session.registry.publish_window():
            self._check_unsealed()
            if not session.registry.blobs.exists(desc.digest) and reput() != desc.digest:
                raise BlobNotFoundError(
                    f"Failed to read blob {desc.digest}: attachment `{name}` of {session.requested} was collected "
                    "before it was pinned, and its source changed meanwhile; it was not attached"
                )
            session.add_attachment(name, desc, filename)

    # --- mutation -------------------------------------------------------------------------------------

    def set_annotation(self, key: str, value: str) -> None:
        """Set a manifest annotation (keys under ``org.ommx.v1.`` are reserved: ValueError)."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArgumentTypeError("Annotation key and value must be str")
        if key.startswith(mt.RESERVED_ANNOTATION_PREFIX):
            raise InvalidInputError(f"Annotation key `{key}` is reserved for OMMX metadata")
        check_annotation_text(key, value)
        session = self._session_or_raise()
        with session.lock:
            self._check_unsealed()
            session.set_annotation(key, value)

    def set_autosave_policy(self, policy: AutosavePolicy) -> None:
        """Choose when Run closes publish OMMX-format draft checkpoints; resets the schedule."""
        if not isinstance(policy, AutosavePolicy):
            raise InvalidArgumentTypeError(f"Expected an AutosavePolicy, got {type(policy).__name__}")
        self._session_or_raise().set_policy(policy)

    def run(self) -> Run:
        """A new Run; its id is allocated now and never reused."""
        session = self._session_or_raise()
        with session.lock:
            self._check_unsealed()
            return Run(self, session.allocate_run())

    def sweep(self, fn: Any, parameters: Any, *, executor: Any = None, resume: bool = False) -> SweepSummary:
        """One Run per parameter dict: ``fn(recorder, params)`` on ``executor``, recorded here; see ``lifecycle.sweep``."""
        from .sweep import sweep

        return sweep(self, fn, parameters, executor=executor, resume=resume)

    # --- commit -----------------------------------------------------------------------------------------

    def commit(self) -> Artifact:
        """Publish the experiment (publish semantics) and seal this object; returns the Artifact.

        A shared experiment is committed with every closed run of every writer;
        runs left open by dead processes are recorded as ``interrupted`` first.
        Refuses (``ExperimentBusyError``) while another live process holds an open
        Run, and (``JournalWriteError``) while a run of this process is not yet
        durable; nothing is published then and the experiment stays unsealed.
        """
        session = self._session_or_raise()
        # No GC between the blob writes and the ref; no cyclic collections either (they free nothing here and
        # walk every live object, e.g. all of pandas when it is imported): ``gc_paused``.
        with session.lock, gc_paused(), session.registry.publish_window():
            self._check_unsealed()
            if session.open_runs:
                raise LifecycleError(
                    f"Cannot commit Experiment while {session.open_runs} Run handle(s) are still open"
                )
            # Deferred closes are not written as rows first: the commit's view holds them (and stores
            # their inline bytes in this window); once it is published they are dropped (no batch, no pin).
            session.flush_pending(deferred=False)
            if not session.journal.started:
                built = self._build_for_commit(session, None)
                self._publish(session, built)
            else:
                built = self._commit_shared(session)
            self._seal(session, built)
            self._cleanup_checkpoints(
                session, built.manifest_digest if session.journal.started else None, len(built.content.runs)
            )
            session.release()
        sealed = self._committed()  # the manifest just built: not read back nor parsed again
        return _artifact(sealed.registry, sealed.image_name, sealed.manifest_digest, self._holder,
                         (built.manifest, built.manifest_bytes))

    def _commit_shared(self, session: Session) -> Any:
        journal = session.journal
        session.recover()
        holders = journal.live_open_runs()
        if holders:
            count = sum(len(h.run_ids) for h in holders)
            who = "; ".join(f"{h.writer.describe()} (run {', '.join(map(str, h.run_ids))})" for h in holders)
            raise ExperimentBusyError(
                f"Cannot commit Experiment {session.requested} while {count} Run(s) are open in other processes: {who}. "
                "Close them, or stop those processes (their open runs are then recorded as interrupted)"
            )
        journal.seal("")
        try:
            journal.quiesce_writers()  # their deferred closes are final now: the view below holds them
            with gc_paused():
                built = self._build_for_commit(session, session.view())
            journal.seal(built.manifest_digest)  # a committer killed after this is finished by the next reader
            with _checkpoint_after_release(session, len(built.content.runs)):
                self._publish(session, built)
            journal.forget_committed_deferred()
        except BaseException:
            with contextlib.suppress(Exception):
                journal.unseal()
            raise
        return built

    def _build_for_commit(self, session: Session, view: Any) -> Any:
        try:
            return session.build(FINISHED, parquet=True, view=view, provenance=self._provenance)
        except rp.MixedParameterTypesError as exc:
            self._fail_commit(str(exc))
            raise LifecycleError(str(exc)) from exc

    @staticmethod
    def _publish(session: Session, built: Any) -> None:
        requested = session.requested
        try:
            # The checkpoint slot goes in the same transaction: one durable ref write per commit.
            session.registry.publish(
                requested,
                built.manifest_digest,
                config_bytes=built.config_bytes,
                manifest_bytes=built.manifest_bytes,
                drop=checkpoint_ref(session.registry, session.requested),
            )
        except RefConflictError as exc:
            current = session.registry.resolve(requested)
            raise RefConflictError(
                f"Local registry ref {requested} already points to {current}; "
                f"experiment manifest {built.manifest_digest} was not published"
            ) from exc

    def discard_run(self, run_id: int) -> None:
        """Drop the closed run ``run_id`` from this unsealed experiment, for every writer.

        The way out of a bad run: its parameters no longer count for the column
        types, and commit no longer includes it. ``RunNotFoundError`` (a KeyError)
        when no closed run has that id. Not in OMMX.
        """
        if isinstance(run_id, bool) or not isinstance(run_id, int):
            raise InvalidArgumentTypeError(f"argument 'run_id': expected int, got {type(run_id).__name__}")
        session = self._session_or_raise()
        with session.lock:
            self._check_unsealed()
            session.discard_run(run_id)

    def _fail_commit(self, reason: str) -> None:
        self._state = _COMMIT_FAILED
        self._commit_error = reason
        assert self._session is not None
        self._session.writable = False

    def _seal(self, session: Session, built: Any) -> None:
        session.writable = False
        self._sealed = SealedState(
            session.registry,
            self._holder,
            session.requested,
            built.manifest_digest,
            built.manifest,
            built.config,
            built.content,
        )
        self._state = _SEALED

    @staticmethod
    def _cleanup_checkpoints(session: Session, manifest_digest: str | None, runs: int) -> None:
        """After the ref is published: the journal (with a tombstone).

        The OMMX-format slot went in the ref's own transaction (``publish(drop=…)``).
        A kill before this leaves the journal marked as sealing to a published
        digest; the next join, restore or commit of the name finishes this cleanup,
        and listings never show such a journal as a draft.
        """
        try:
            if manifest_digest is not None:
                # A large session's run rows (and the WAL checkpoint) go to a helper thread after release.
                session.journal.discard(manifest_digest, sweep_later=runs >= SWEEP_LATER_RUNS)
        except Exception as exc:  # the ref is published; a later reader finishes the cleanup
            log.warning("Checkpoint of %s not removed after commit: %s", session.requested, exc)

    # --- context manager -------------------------------------------------------------------------------------

    def __enter__(self) -> Experiment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> Literal[False]:
        if self._state != _UNSEALED:
            return False
        if exc_type is None:
            self.commit()
            return False
        self._publish_failure(exc_type, exc_value)
        return False

    def _publish_failure(self, exc_type: type[BaseException], exc_value: BaseException | None) -> None:
        session = self._session
        assert session is not None
        status, reason = failure_outcome(exc_type, exc_value)
        with session.lock:
            if session.open_runs:
                log.warning(
                    "%d open Run(s) of %s are not included in the %s checkpoint", session.open_runs, session.requested, status
                )
            session.writable = False
            digest = session.try_checkpoint(status, reason)
            session.release()
            self._state = _CHECKPOINT
            self._commit_error = reason
            if digest is None:
                return
            try:
                self._sealed = SealedState.open(
                    session.registry, checkpoint_ref(session.registry, session.requested), digest, self._holder,
                    allowed=CHECKPOINT_STATUSES,
                )
            except Exception as exc:
                log.warning("Checkpoint %s of %s could not be reopened: %s", digest, session.requested, exc)

    # --- fork / rename / save / push ----------------------------------------------------------------------------

    @gc_paused()
    def fork(self, image_name: str | None = None, *, store_trace: bool = False) -> Experiment:
        """A new unsealed child whose ``subject`` is this manifest; everything carried by descriptor."""
        image = None if image_name is None else ImageName.parse(image_name)
        sealed = self._committed()
        size = sealed.registry.blobs.size(sealed.manifest_digest)
        child, session = Experiment._new_unsealed(
            sealed.registry,
            image,
            holder=self._holder,
            store_trace=store_trace,
            subject=Descriptor(mt.OCI_MANIFEST, sealed.manifest_digest, size),
        )
        params = sealed.params_by_run()
        from .analysis import timed_runs  # run timing rides along (our runs.parquet layer)

        session.carry([(r, params.get(r.run_id, {})) for r in timed_runs(sealed)], sealed.content.attachments, session.subject)
        return child

    def rename(self, image_name: str) -> None:
        """Unsealed: change the name commit publishes (moving checkpoints). Sealed: publish an alias."""
        image = ImageName.parse(image_name)
        if self._state == _UNSEALED:
            self._rename_unsealed(image)
            return
        sealed = self._committed()
        sealed.registry.alias(image, sealed.manifest_digest)
        sealed.image_name = image
        if self._session is not None:
            self._session.requested = image

    def _rename_unsealed(self, image: ImageName) -> None:
        session = self._session_or_raise()
        with session.lock:
            old = session.requested
            if old == image:
                return
            had_checkpoint = checkpoint_updated_at(session.registry, old) is not None
            session.journal.move(image)
            if had_checkpoint:
                try:
                    session.registry.remove(checkpoint_ref(session.registry, old))
                except Exception as exc:
                    log.warning("Checkpoint of %s not removed on rename: %s", old, exc)
                success = session.try_checkpoint("draft") is not None
                session.schedule.attempted(session.closed, success)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the committed (or checkpoint) artifact as a ``.ommx`` archive; fails if ``path`` exists."""
        from ..format.archive import write_archive

        sealed = self._committed()
        write_archive(sealed.registry, sealed.manifest_digest, str(sealed.image_name), path, manifest=sealed.manifest)

    def push(self) -> None:
        """Push the committed artifact to the remote registry named by its image name."""
        self.artifact.push()

    # --- run parameters ------------------------------------------------------------------------------------------

    @gc_paused()
    def run_parameters_df(self) -> pd.DataFrame:
        """Wide table of run parameters (index ``run_id``; nullable dtypes; §1.4)."""
        if self._sealed is not None:
            sealed = self._sealed
            layer = sealed.parquet_layer()
            if layer is not None:
                return rp.decode_parquet(sealed.registry.blobs.path(layer.digest))
            return rp.table_to_dataframe(sealed.table(), sealed.run_ids())
        assert self._session is not None
        view = self._session.view()
        cached = self._params_frame
        if cached is None or cached[0] is not view:  # built once per view; each call gets its own copy
            cached = self._params_frame = (view, rp.params_to_dataframe(view.params, list(view.runs)))
        return cached[1].copy(deep=True)

    @property
    def run_parameters_parquet(self) -> Path:
        """Path of the Parquet run-parameter table (committed experiments only).

        Our artifacts: the Parquet layer's blob file in the CAS (never modify it).
        Others (e.g. written by OMMX 3): a file derived once from the MessagePack
        layer under ``<root>/.oxe-derived/<manifest hex>.parquet``.
        """
        sealed = self._committed()
        layer = sealed.parquet_layer()
        if layer is not None:
            return sealed.registry.blobs.path(layer.digest)
        target = sealed.registry.root / DERIVED_DIR / f"{sealed.manifest_digest.split(':', 1)[1]}.parquet"
        if not target.exists():
            from ..engine.atomic import atomic_write_bytes

            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, rp.encode_parquet(sealed.table(), sealed.run_ids()))
        return target

    # --- analysis views (lifecycle.analysis, lifecycle.report) --------------------------------------------------

    _provenance = True  # class default; set_provenance() overrides it per experiment

    def set_provenance(self, enabled: bool) -> None:
        """Record (default) or leave out the provenance layer at commit (``OMMX_EXPERIMENT_PROVENANCE=0``: never)."""
        if not isinstance(enabled, bool):
            raise InvalidArgumentTypeError(f"enabled must be a bool, got {type(enabled).__name__}")
        self._provenance = enabled

    def _analysis_source(self) -> Any:
        if self._sealed is not None:
            return self._sealed
        if self._session is None:
            raise self._read_only_error()
        return self._session

    @gc_paused()
    def runs_df(self) -> pd.DataFrame:
        """One row per closed run (index ``run_id``): ``status``, ``lifecycle_reason``, ``started_at``,
        ``finished_at``, ``duration_s``, ``solves``, ``samplings``, then every parameter under its own name."""
        from .analysis import runs_frame

        return runs_frame(self._analysis_source())

    @gc_paused()
    def solves_df(self) -> pd.DataFrame:
        """One row per Solve and Sampling: run, adapter, status, objective, feasibility, sense, time, parameters."""
        from .analysis import solves_frame

        return solves_frame(self._analysis_source())

    @property
    def provenance(self) -> dict[str, Any] | None:
        """What was recorded at commit (time, versions, host, git commit), or None (unsealed, or none recorded)."""
        if self._sealed is None:
            return None
        from .analysis import provenance

        return provenance(self._sealed)

    def report(self, path: str | os.PathLike[str]) -> Path:
        """Write a self-contained HTML report (summary, run table, plots, lineage, provenance) to ``path``."""
        from .report import experiment_report

        return experiment_report(self, Path(path))

    def _repr_html_(self) -> str:
        from .report import experiment_card

        return experiment_card(self)


def _checkpoint_after_release(session: Session, runs: int) -> contextlib.AbstractContextManager[None]:
    """A large shared session's commit: no WAL checkpoint by its ref writes (``Database.checkpoint_later``);
    the helper thread its release starts does it (``format.journal_sweep``)."""
    if session.journal.started and runs >= SWEEP_LATER_RUNS:
        return session.registry.db.checkpoint_later()
    return contextlib.nullcontext()
