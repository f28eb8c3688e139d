"""Experiment *content*: the config tree holding descriptors instead of LayerRefs (§2.4).

A session holds an experiment in memory as :class:`ExperimentContent` (with
:class:`AttachmentContent`, :class:`RunContent`, :class:`SolveContent`).
:func:`build_experiment` lays it out as manifest ``layers`` plus an
:class:`~ommx_experiment.format.codec.ExperimentConfig`, walking in OMMX's exact order
without de-duplication; :func:`content_from_artifact` is the inverse used on
load, fork and restore. The config records, their bytes and the §5 checks live
in :mod:`ommx_experiment.format.codec`.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from ..engine.oci import EMPTY_MAP, FrozenMap, layer_json
from ..errors import InvalidInputError
from .codec import (
    EMPTY_TABLE,
    EXPERIMENT_STATUSES,
    FINISHED,
    RUN_ID_KEY,
    AttachmentTable,
    ExperimentConfig,
    RunRecord,
    SamplingRecord,
    SolveRecord,
    layer_for_ref,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from ..engine.oci import Descriptor, Manifest

__all__ = [
    "AttachmentContent",
    "ExperimentContent",
    "LayoutMemo",
    "RunContent",
    "SolveContent",
    "build_experiment",
    "content_from_artifact",
    "run_content",
]


@dataclass(frozen=True, slots=True)
class AttachmentContent:
    """One attachment namespace holding descriptors: ``name -> Descriptor``, ``name -> filename``."""

    descriptors: Mapping[str, Descriptor] = field(default=EMPTY_MAP)
    filenames: Mapping[str, str] = field(default=EMPTY_MAP)
    inline: Mapping[str, bytes] | None = field(default=None, compare=False, repr=False)
    """Bytes of attachments not in the blob store yet (digest -> bytes): an unsealed
    experiment's small attachments, kept in its journal rows until a commit or checkpoint stores them."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "descriptors", FrozenMap(self.descriptors))
        object.__setattr__(self, "filenames", FrozenMap(self.filenames))

    @classmethod
    def of(cls, descriptors: dict[str, Descriptor], filenames: Mapping[str, str]) -> AttachmentContent:
        """``AttachmentContent(descriptors, filenames)`` taking ``descriptors`` over (a dict the caller
        has just built and never changes: ``FrozenMap.wrapping``, no copy)."""
        content = _new(cls)
        _set(content, "descriptors", FrozenMap.wrapping(descriptors))
        _set(content, "filenames", filenames if type(filenames) is FrozenMap else FrozenMap(filenames))
        _set(content, "inline", None)
        return content

    def sorted_names(self) -> list[str]:
        """Attachment names in byte (code point) order."""
        return sorted(self.descriptors)


EMPTY_ATTACHMENTS = AttachmentContent()


@dataclass(frozen=True, slots=True)
class SolveContent:
    """A solve (or, in :class:`RunContent.samplings`, a sampling) holding descriptors."""

    call_id: int
    status: str
    input: Descriptor
    output: Descriptor | None
    adapter: str
    adapter_options: str = "{}"
    diagnostics: Descriptor | None = None


@dataclass(frozen=True, slots=True)
class RunContent:
    """A closed Run holding descriptors.

    ``started_ns``/``finished_ns`` (``time.time_ns()`` at ``Experiment.run()`` and at
    close) are ours: the config has no place for them (:mod:`~ommx_experiment.format.run_meta`
    writes them to the ``runs.parquet`` layer); None when unknown (runs written by OMMX).
    """

    run_id: int
    status: str = FINISHED
    reason: str | None = None
    attachments: AttachmentContent = field(default_factory=AttachmentContent)
    trace: Descriptor | None = None
    solves: tuple[SolveContent, ...] = ()
    samplings: tuple[SolveContent, ...] = ()
    started_ns: int | None = field(default=None, compare=False)
    """When the Run was allocated (``time.time_ns()``); not in OMMX's config, kept by our journal."""
    finished_ns: int | None = field(default=None, compare=False)
    """When the Run was closed; not in OMMX's config, kept by our journal."""
    inline: Mapping[str, bytes] | None = field(default=None, compare=False, repr=False)
    """Bytes of small attachments not in the blob store yet (digest -> bytes): a deferred
    close carries them in its writer's open-run log until its batch is flushed
    (spec/experiment.md, "Inline attachments"); None once they are stored."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "solves", tuple(self.solves))
        object.__setattr__(self, "samplings", tuple(self.samplings))

    @classmethod
    def bare(
        cls,
        run_id: int,
        status: str,
        reason: str | None,
        started_ns: int | None = None,
        finished_ns: int | None = None,
        *,
        attachments: AttachmentContent = EMPTY_ATTACHMENTS,
    ) -> RunContent:
        """A run without trace or calls (a params-only run, or one with ``attachments`` only), built
        about 1.5x as fast as through the dataclass ``__init__`` (reading a journal builds one per run)."""
        run = _new(cls)
        _set(run, "run_id", run_id)
        _set(run, "status", status)
        _set(run, "reason", reason)
        _set(run, "attachments", attachments)
        _set(run, "trace", None)
        _set(run, "solves", ())
        _set(run, "samplings", ())
        _set(run, "started_ns", started_ns)
        _set(run, "finished_ns", finished_ns)
        _set(run, "inline", None)
        return run

    def timed(self, started_ns: int | None, finished_ns: int | None) -> RunContent:
        """This run with other ``started_ns``/``finished_ns`` (``dataclasses.replace`` without its
        ``__init__`` pass: a fork gives every carried run its stored times)."""
        run = _new(RunContent)
        for name in _RUN_FIELDS:
            _set(run, name, getattr(self, name))
        _set(run, "started_ns", started_ns)
        _set(run, "finished_ns", finished_ns)
        return run


_new = object.__new__
_set = object.__setattr__  # frozen dataclasses' own way to set a field
_RUN_FIELDS = ("run_id", "status", "reason", "attachments", "trace", "solves", "samplings", "inline")


@dataclass(frozen=True, slots=True)
class ExperimentContent:
    """Everything a committed or checkpointed experiment references.

    ``extra_layers`` are appended after the run-parameter layer (e.g. our Parquet
    table); on :func:`content_from_artifact` they are the manifest layers that the
    config does not reference, in manifest order.
    """

    attachments: AttachmentContent
    runs: tuple[RunContent, ...]
    run_parameters: Descriptor
    extra_layers: tuple[Descriptor, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(self.runs))
        object.__setattr__(self, "extra_layers", tuple(self.extra_layers))


class _LayerList:
    def __init__(self) -> None:
        self.layers: list[Descriptor] = []

    def add(self, desc: Descriptor) -> int:
        self.layers.append(desc)
        return len(self.layers) - 1

    def add_opt(self, desc: Descriptor | None) -> int | None:
        return None if desc is None else self.add(desc)

    def table(self, content: AttachmentContent, where: str) -> AttachmentTable:
        descriptors, filenames = content.descriptors, content.filenames
        if filenames:
            unknown = set(filenames) - set(descriptors)
            if unknown:
                raise InvalidInputError(f"{where}: filenames given for unknown attachments {sorted(unknown)!r}")
        add = self.add
        entries = {name: add(descriptors[name]) for name in sorted(descriptors)}
        return AttachmentTable(entries, filenames)

    def call_fields(self, call: SolveContent) -> dict[str, Any]:
        return {
            "status": call.status,
            "input": self.add(call.input),
            "output": self.add_opt(call.output),
            "adapter": call.adapter,
            "adapter_options": call.adapter_options,
            "diagnostics": self.add_opt(call.diagnostics),
        }

    def run(self, run: RunContent) -> RunRecord:
        given = run.attachments
        if (
            (given is EMPTY_ATTACHMENTS or not (given.descriptors or given.filenames))
            and run.trace is None
            and not run.solves
            and not run.samplings
        ):
            return RunRecord.bare(run.run_id, run.status, run.reason)  # a params-only run: nothing to lay out
        where = f"run {run.run_id}"
        if run.trace is None and not run.solves and not run.samplings:  # attachments only: no calls to sort
            return RunRecord.bare(run.run_id, run.status, run.reason, self.table(given, where))
        attachments = self.table(run.attachments, where)
        trace = self.add_opt(run.trace)
        solves = [SolveRecord(c.call_id, **self.call_fields(c)) for c in _sorted_calls(run.solves, where)]
        samplings = [SamplingRecord(c.call_id, **self.call_fields(c)) for c in _sorted_calls(run.samplings, where)]
        return RunRecord(run.run_id, run.status, run.reason, attachments, trace, tuple(solves), tuple(samplings))




def _sorted_calls(calls: Iterable[SolveContent], where: str) -> list[SolveContent]:
    ordered = sorted(calls, key=lambda c: c.call_id)
    _reject_duplicates([c.call_id for c in ordered], f"{where}: duplicate solve/sampling id")
    return ordered


def _reject_duplicates(ids: Sequence[int], message: str) -> None:
    """``ids`` is ascending: raise naming the first id that repeats."""
    if len(set(ids)) == len(ids):
        return
    for prev, cur in pairwise(ids):
        if prev == cur:
            raise InvalidInputError(f"{message} {cur}")


class LayoutMemo:
    """One build's layout of its runs, kept for the next build of the very same runs.

    An autosave draft lays out every run (manifest layers, config records), renders
    them (the layers' JSON, the config's ``runs`` text) and encodes the run-parameter
    table; a commit that follows with no run changed (a fork + one run + commit)
    takes all of it from here instead of doing it again. Reused only when the runs
    are the same objects (runs are immutable; a changed run is a new object) and the
    experiment attachments and every run's parameters compare equal, so the bytes are
    exactly those a fresh build writes. Not thread-safe: the session builds under its lock.
    """

    __slots__ = (
        "_attachments", "_layer_texts", "_layers", "_param_rows", "_param_runs", "_param_value", "_records", "_runs",
        "_runs_json", "_table",
    )

    def __init__(self) -> None:
        self._runs: Sequence[RunContent] = ()
        self._attachments: AttachmentContent | None = None
        self._layers: tuple[Descriptor, ...] = ()
        self._records: tuple[RunRecord, ...] = ()
        self._table: AttachmentTable = EMPTY_TABLE
        self._layer_texts: list[str] | None = None
        self._runs_json: tuple[tuple[RunRecord, ...], str] | None = None
        self._param_runs: Sequence[RunContent] = ()
        self._param_rows: list[Any] = []
        self._param_value: Any = None

    def _same_runs(self, kept: Sequence[RunContent], runs: Sequence[RunContent]) -> bool:
        return len(kept) == len(runs) and all(map(operator.is_, kept, runs))

    def layout(
        self, attachments: AttachmentContent, runs: Sequence[RunContent]
    ) -> tuple[list[Descriptor], AttachmentTable, tuple[RunRecord, ...]] | None:
        """The kept layers (experiment attachments, then the runs'), attachment table and run records, or None."""
        if self._attachments is None or not self._same_runs(self._runs, runs) or self._attachments != attachments:
            return None
        return list(self._layers), self._table, self._records

    def keep_layout(
        self, attachments: AttachmentContent, runs: Sequence[RunContent], layers: Sequence[Descriptor],
        table: AttachmentTable, records: tuple[RunRecord, ...],
    ) -> None:
        self._attachments, self._runs, self._layers, self._table, self._records = attachments, runs, tuple(layers), table, records
        self._layer_texts = None

    def layer_texts(self, layers: Sequence[Descriptor]) -> list[str]:
        """``layer_json`` of each of ``layers``; the kept layout's layers (a prefix of them) rendered once."""
        kept = len(self._layers)
        if not (kept and len(layers) >= kept and all(map(operator.is_, layers[:kept], self._layers))):
            return list(map(layer_json, layers))
        if self._layer_texts is None:
            self._layer_texts = list(map(layer_json, self._layers))
        return [*self._layer_texts, *map(layer_json, layers[kept:])]

    def config_bytes(self, config: ExperimentConfig) -> bytes:
        """``config.to_bytes()``, the ``runs`` text rendered once for the same records."""
        kept = self._runs_json
        if kept is None or kept[0] is not config.runs:
            kept = self._runs_json = (config.runs, config.runs_json())
        return config.to_bytes(runs_json=kept[1])

    def parameters(self, runs: Sequence[RunContent], params: Sequence[Any]) -> Any:
        """What :meth:`keep_parameters` kept for these very runs with equal parameters (``params[i]``
        of ``runs[i]``), else None. (The journal hands back the same run objects only while their rows,
        parameters included, are unchanged; the parameters are compared all the same.)"""
        if self._param_runs and self._same_runs(self._param_runs, runs) and self._param_rows == params:
            return self._param_value
        return None

    def keep_parameters(self, runs: Sequence[RunContent], params: list[Any], value: Any) -> None:
        self._param_runs, self._param_rows, self._param_value = runs, params, value


def build_experiment(
    content: ExperimentContent,
    *,
    status: str,
    reason: str | None = None,
    requested_image_name: str | None = None,
    memo: LayoutMemo | None = None,
) -> tuple[tuple[Descriptor, ...], ExperimentConfig]:
    """Manifest layers and config for ``content``, in OMMX's exact order (§2.4).

    Order: experiment attachments by name; per run (ascending ``run_id``) its
    attachments by name, its trace, each solve's input/output/diagnostics, each
    sampling's input/output/diagnostics; then the run-parameter layer; then
    ``content.extra_layers``. No de-duplication. ``memo``: the layout of the previous
    build, taken when its runs are these (and kept for the next build otherwise).
    """
    if status not in EXPERIMENT_STATUSES:
        raise InvalidInputError(f"Unknown experiment status {status!r}")
    layers = _LayerList()
    runs = sorted(content.runs, key=RUN_ID_KEY)
    kept = None if memo is None else memo.layout(content.attachments, runs)
    if kept is not None:
        layers.layers, attachments, records = kept
    else:
        attachments = layers.table(content.attachments, "experiment")
        _reject_duplicates([r.run_id for r in runs], "duplicate run id")
        records = tuple(layers.run(run) for run in runs)
        if memo is not None:
            memo.keep_layout(content.attachments, runs, layers.layers, attachments, records)
    run_parameters = layers.add(content.run_parameters)
    for extra in content.extra_layers:
        layers.add(extra)
    config = ExperimentConfig(status, reason, requested_image_name, attachments, records, run_parameters)
    return tuple(layers.layers), config


class _RefResolver:
    def __init__(self, manifest: Manifest) -> None:
        self.layers = manifest.layers
        self.used: set[int] = set()

    def get(self, ref: int, what: str) -> Descriptor:
        desc = layer_for_ref(self.layers, ref, what)
        self.used.add(ref)
        return desc

    def opt(self, ref: int | None, what: str) -> Descriptor | None:
        return None if ref is None else self.get(ref, what)

    def table(self, table: AttachmentTable, where: str) -> AttachmentContent:
        layers, count = self.layers, len(self.layers)
        refs = table.entries.values()
        if refs and max(refs) >= count:  # name the first attachment out of range (only then: no message per name)
            for name, ref in table.entries.items():
                self.get(ref, f"{where} attachment {name!r}")
        self.used.update(refs)
        descriptors = {name: layers[ref] for name, ref in table.entries.items()}
        return AttachmentContent.of(descriptors, table.filenames)

    def call(self, call_id: int, rec: SolveRecord | SamplingRecord, what: str) -> SolveContent:
        return SolveContent(
            call_id=call_id,
            status=rec.status,
            input=self.get(rec.input, f"{what} input"),
            output=self.opt(rec.output, f"{what} output"),
            adapter=rec.adapter,
            adapter_options=rec.adapter_options,
            diagnostics=self.opt(rec.diagnostics, f"{what} diagnostics"),
        )

    def run(self, run: RunRecord) -> RunContent:
        if run.trace is None and not run.solves and not run.samplings:
            if run.attachments is EMPTY_TABLE:
                return RunContent.bare(run.run_id, run.status, run.reason)  # the common case, shared parts
            # attachments only (the next most common): no calls to map
            return RunContent.bare(
                run.run_id, run.status, run.reason, attachments=self.table(run.attachments, f"run {run.run_id}")
            )
        where = f"run {run.run_id}"
        return RunContent(
            run_id=run.run_id,
            status=run.status,
            reason=run.reason,
            attachments=self.table(run.attachments, where),
            trace=self.opt(run.trace, f"{where} trace"),
            solves=tuple(self.call(s.solve_id, s, f"{where} solve {s.solve_id}") for s in run.solves),
            samplings=tuple(
                self.call(s.sampling_id, s, f"{where} sampling {s.sampling_id}") for s in run.samplings
            ),
        )

    def unused(self) -> Iterator[Descriptor]:
        return (desc for i, desc in enumerate(self.layers) if i not in self.used)


def content_from_artifact(manifest: Manifest, config: ExperimentConfig) -> ExperimentContent:
    """Map the config's LayerRefs back to the manifest's descriptors.

    Runs are returned in ascending ``run_id`` order. Raises ``InvalidArtifactError``
    for a LayerRef out of range.
    """
    resolver = _RefResolver(manifest)
    attachments = resolver.table(config.attachments, "experiment")
    runs = tuple(resolver.run(run) for run in sorted(config.runs, key=lambda r: r.run_id))
    run_parameters = resolver.get(config.run_parameters, "run parameters")
    return ExperimentContent(attachments, runs, run_parameters, tuple(resolver.unused()))


def run_content(manifest: Manifest, run: RunRecord) -> RunContent:
    """One run of :func:`content_from_artifact`, resolved alone (a lazy ``SealedRun`` view's content).

    Raises ``InvalidArtifactError`` for a LayerRef out of range, as the whole mapping does.
    """
    return _RefResolver(manifest).run(run)
