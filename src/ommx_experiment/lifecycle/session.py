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

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import media_types as mt
from ..engine.oci import Descriptor, FrozenMap, Manifest
from ..errors import BlobNotFoundError, LifecycleError
from ..format import run_params as rp
from ..format.codec import (
    FAILED,
    INTERRUPTED,
    SEALED_STATUSES,
    ExperimentConfig,
    check_experiment_manifest,
    validate_experiment,
)
from ..format.content import (
    AttachmentContent,
    ExperimentContent,
    RunContent,
    build_experiment,
    content_from_artifact,
)
from ..format.journal import Journal, JournalHeader, checkpoint_ref, run_blobs
from .autosave import DEFAULT_POLICY, AutosavePolicy, AutosaveSchedule
from .reason import lifecycle_reason

if TYPE_CHECKING:
    from collections.abc import Sequence

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
    ) -> None:
        self.registry = registry
        self.holder = holder
        self.image_name = image_name
        self.manifest_digest = manifest_digest
        self.manifest = manifest
        self._config = config
        self._content = content
        self._allowed = tuple(allowed)
        self._table: rp.ParameterTable | None = None

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
    ) -> SealedState:
        """Open the artifact ``digest`` stored in ``registry`` (§5 validation, see class doc).

        ``manifest``: the already parsed manifest of ``digest`` (an open ``Artifact``'s), not read again.
        """
        if manifest is None:
            manifest = Manifest.parse(registry.blobs.get(digest))
        check_experiment_manifest(manifest)
        for i, layer in enumerate(manifest.layers):
            size = registry.blobs.size(layer.digest)
            if size != layer.size:
                raise BlobNotFoundError(f"Failed to read blob {layer.digest} (layer {i}): {size} bytes, expected {layer.size}")
        state = cls(registry, holder, image_name, digest, manifest, allowed=allowed)
        if state.parquet_layer() is None:
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
        return [run.run_id for run in self.content.runs]

    def table(self) -> rp.ParameterTable:
        if self._table is None:
            data = self.registry.blobs.get(self.content.run_parameters.digest)
            self._table = rp.decode_msgpack(data, set(self.run_ids()))
        return self._table

    def params_by_run(self) -> dict[int, dict[str, ParamValue]]:
        out: dict[int, dict[str, ParamValue]] = {}
        for column in self.table().columns:
            for run_id, value in column.values.items():
                out.setdefault(run_id, {})[column.name] = value
        return out

    def parquet_layer(self) -> Descriptor | None:
        """Our Parquet run-parameter layer (always the last layer), if this artifact has one."""
        if not self.manifest.layers:
            return None
        layer = self.manifest.layers[-1]
        if layer.media_type == mt.PARQUET and layer.annotations.get(mt.TITLE_ANNOTATION) == mt.PARQUET_RUN_PARAMS_TITLE:
            return layer
        return None


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


class Session:
    """The mutable state of one unsealed Experiment session."""

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
    ) -> None:
        self.registry = registry
        self.holder = holder
        self.lock = threading.RLock()
        self.requested = requested
        self.store_trace = store_trace
        self.annotations: dict[str, str] = dict(annotations or {})
        self.subject = subject
        self.attachments: dict[str, Descriptor] = {}
        self.filenames: dict[str, str] = {}
        self.runs: dict[int, RunContent] = {}
        self.params: dict[int, dict[str, ParamValue]] = {}
        self.next_run_id = 0
        self.open_runs = 0
        self.schedule = AutosaveSchedule(DEFAULT_POLICY, 0)
        self.journal = Journal(registry, requested, journal_session_id)
        self.writable = True  # cleared by the owner when the session leaves the unsealed state

    # --- carried content (fork / restore) -------------------------------------------------

    def carry(self, content_runs: Sequence[tuple[RunContent, dict[str, ParamValue]]], attachments: AttachmentContent) -> None:
        """Adopt runs and attachments from a parent or checkpoint (descriptors only, no copies)."""
        for run, params in content_runs:
            self.runs[run.run_id] = run
            if params:
                self.params[run.run_id] = dict(params)
        self.attachments.update(attachments.descriptors)
        self.filenames.update(attachments.filenames)
        self.next_run_id = max(self.runs, default=-1) + 1
        self.schedule = AutosaveSchedule(DEFAULT_POLICY, len(self.runs))

    # --- runs -----------------------------------------------------------------------------

    def allocate_run(self) -> int:
        with self.lock:
            run_id = self.next_run_id
            self.next_run_id += 1
            self.open_runs += 1
            return run_id

    def release_run(self) -> None:
        """An open Run handle went away without being recorded (abandoned or late close)."""
        with self.lock:
            self.open_runs = max(0, self.open_runs - 1)

    def close_run(self, run: RunContent, params: dict[str, ParamValue]) -> None:
        """Record a closed run: memory, journal (O(1)), then the autosave policy."""
        with self.lock:
            self.open_runs = max(0, self.open_runs - 1)
            if not self.writable:
                return
            self.runs[run.run_id] = run
            if params:
                self.params[run.run_id] = params  # the closed Run never mutates it again
            blobs = run_blobs(run)
            if blobs or not self.journal.started:
                self._journal(runs=[(run, params)], new_blobs=blobs)
            else:  # O(1) fast path: one INSERT (the header is written when it changes)
                try:
                    self.journal.append_run(run, params)
                except Exception as exc:
                    log.warning("Checkpoint journal of %s not updated: %s", self.requested, exc)
            if self.schedule.due(len(self.runs)):
                self._autosave()

    def record_closed_runs(self, runs: Sequence[tuple[RunContent, dict[str, ParamValue]]]) -> None:
        """Record runs closed elsewhere (an ``Experiment.sweep`` batch; ids from :meth:`allocate_ids`):
        memory, then one journal write for the whole batch, then the autosave policy."""
        with self.lock:
            if not self.writable:
                raise LifecycleError(f"Experiment {self.requested} is no longer unsealed; {len(runs)} sweep run(s) not recorded")
            for run, params in runs:
                self.runs[run.run_id] = run
                if params:
                    self.params[run.run_id] = params
            self._journal(runs=runs, new_blobs=[blob for run, _ in runs for blob in run_blobs(run)])
            if self.schedule.due(len(self.runs)):
                self._autosave()

    def allocate_ids(self, count: int) -> range:
        """``count`` fresh run ids for :meth:`record_closed_runs` (never reused, like ``allocate_run``)."""
        with self.lock:
            start = self.next_run_id
            self.next_run_id += count
            return range(start, start + count)

    # --- attachments ----------------------------------------------------------------------

    def reserve_attachment(self, name: str) -> None:
        with self.lock:
            if name in self.attachments:
                raise LifecycleError(f"Attachment `{name}` already exists")

    def add_attachment(self, name: str, desc: Descriptor, filename: str | None) -> None:
        with self.lock:
            self.reserve_attachment(name)
            self.attachments[name] = desc
            if filename is not None:
                self.filenames[name] = filename
            self._journal(attachments=[(name, desc, filename)], new_blobs=[desc])

    def set_annotation(self, key: str, value: str) -> None:
        with self.lock:
            self.annotations[key] = value
            if self.journal.started:
                self._journal()

    # --- journal --------------------------------------------------------------------------

    def header(self) -> JournalHeader:
        return JournalHeader(FrozenMap(self.annotations), self.subject, self.next_run_id)

    def _journal(
        self,
        *,
        runs: Sequence[tuple[RunContent, dict[str, ParamValue]]] = (),
        attachments: Sequence[tuple[str, Descriptor, str | None]] = (),
        new_blobs: Sequence[Descriptor] = (),
    ) -> None:
        if not self.journal.started:  # first durable write: everything carried so far, once
            runs = [(r, self.params.get(r.run_id, {})) for r in self.runs.values()]
            attachments = [(n, d, self.filenames.get(n)) for n, d in self.attachments.items()]
            new_blobs = [*self.attachments.values(), *(b for r in self.runs.values() for b in run_blobs(r))]
        try:
            self.journal.record(self.header(), runs=runs, attachments=attachments, new_blobs=new_blobs)
        except Exception as exc:  # durability is best effort; the session itself stays usable
            log.warning("Checkpoint journal of %s not updated: %s", self.requested, exc)

    # --- autosave ---------------------------------------------------------------------------

    def set_policy(self, policy: AutosavePolicy) -> None:
        with self.lock:
            self.schedule = AutosaveSchedule(policy, len(self.runs))

    def _autosave(self) -> None:
        n_closed = len(self.runs)
        success = self.try_checkpoint("draft") is not None
        self.schedule.attempted(n_closed, success)

    def try_checkpoint(self, status: str, reason: str | None = None) -> str | None:
        """Publish an OMMX-format checkpoint; failures are logged and give None."""
        try:
            return self.publish_checkpoint(status, reason)
        except Exception as exc:
            log.warning("Experiment checkpoint (%s) of %s not published: %s", status, self.requested, exc)
            return None

    def publish_checkpoint(self, status: str, reason: str | None = None) -> str:
        with self.lock:
            built = self.build(status, reason=reason, requested=str(self.requested), parquet=False)
            self.registry.replace(checkpoint_ref(self.registry, self.requested), built.manifest_digest, config_bytes=built.config_bytes)
            return built.manifest_digest

    # --- building ---------------------------------------------------------------------------

    def table(self) -> rp.ParameterTable:
        return rp.build_table(self.params, self.runs.keys())

    def build(self, status: str, *, reason: str | None = None, requested: str | None = None, parquet: bool) -> BuiltArtifact:
        """Store every non-payload blob of the artifact and return it (no ref written).

        Raises ``MixedParameterTypesError`` before anything is stored.
        """
        with self.lock:
            table = self.table()
            blobs = self.registry.blobs
            msgpack_blob = blobs.put_bytes(rp.table_to_msgpack(table))
            extra: tuple[Descriptor, ...] = ()
            if parquet:
                pq = blobs.put_bytes(rp.encode_parquet(table, self.runs.keys()))
                extra = (Descriptor(mt.PARQUET, pq.digest, pq.size, FrozenMap({mt.TITLE_ANNOTATION: mt.PARQUET_RUN_PARAMS_TITLE})),)
            content = ExperimentContent(
                AttachmentContent(self.attachments, self.filenames),
                tuple(self.runs[k] for k in sorted(self.runs)),
                Descriptor(mt.RUN_PARAMETERS, msgpack_blob.digest, msgpack_blob.size),
                extra,
            )
            layers, config = build_experiment(content, status=status, reason=reason, requested_image_name=requested)
            config_bytes = config.to_bytes()
            stored_config = blobs.put_bytes(config_bytes)
            manifest = Manifest(
                mt.EXPERIMENT_ARTIFACT_TYPE,
                Descriptor(mt.EXPERIMENT_CONFIG, stored_config.digest, stored_config.size),
                layers,
                self.subject,
                FrozenMap(self.annotations),
            )
            manifest_bytes = manifest.to_bytes()
            stored = blobs.put_bytes(manifest_bytes)
            return BuiltArtifact(manifest, manifest_bytes, stored.digest, config, config_bytes, content)


def failure_status(exc_type: type[BaseException] | None) -> str:
    """``interrupted`` for KeyboardInterrupt subclasses, else ``failed``."""
    return INTERRUPTED if exc_type is not None and issubclass(exc_type, KeyboardInterrupt) else FAILED


def failure_outcome(exc_type: type[BaseException], exc_value: BaseException | None) -> tuple[str, str]:
    """``(status, reason)`` recorded when a context body exits with ``exc_type``/``exc_value``.

    The reason is :func:`~ommx_experiment.lifecycle.reason.lifecycle_reason` of the exception
    (of a fresh ``exc_type()`` when ``__exit__`` got no instance).
    """
    return failure_status(exc_type), lifecycle_reason(exc_value if exc_value is not None else exc_type())
