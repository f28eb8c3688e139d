"""Analysis tables of one experiment: the layers written at commit, and ``runs_df``/``solves_df``.

At commit (:func:`analysis_layers`) an experiment gets, after OMMX's layers,
``run_parameters.parquet``, ``runs.parquet``, ``solves.parquet`` and (unless
switched off) ``provenance.json``: see :mod:`ommx_experiment.format.run_meta`.

Reading: a committed experiment of ours reads its layers; one without them
(written by OMMX 3, or before these layers existed) gets the same tables
derived once from its config, MessagePack table and result payloads, cached
under ``<root>/.oxe-derived/<manifest hex>.<table>.parquet`` (atomic writes;
content addressed by the manifest digest, so never stale). Timing is NULL there:
OMMX records none. An unsealed experiment builds the tables from its session.
Both routes go through the same Parquet bytes, so dtypes agree everywhere.

*sealed* below is a ``lifecycle.session.SealedState`` and *session* a ``Session``
(duck-typed: ``session`` imports this module to build its commit).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import media_types as mt
from ..engine.oci import Descriptor, FrozenMap
from ..errors import InvalidInputError
from ..format import parquet_read
from ..format import run_meta as rm
from ..format import run_params as rp

if TYPE_CHECKING:
    import pandas as pd

    from ..engine.blobstore import BlobStore
    from ..engine.registry import LocalRegistry
    from ..format.content import RunContent

log = logging.getLogger(__name__)

DERIVED_DIR = ".oxe-derived"


# --- commit ------------------------------------------------------------------------------------------


def _put(blobs: BlobStore, media_type: str, data: bytes, title: str) -> Descriptor:
    stored = blobs.put_bytes(data)
    return Descriptor(media_type, stored.digest, stored.size, FrozenMap({mt.TITLE_ANNOTATION: title}))


def analysis_layers(
    blobs: BlobStore,
    table: rp.ParameterTable,
    runs: Sequence[RunContent],
    *,
    image_name: str,
    subject: Descriptor | None,
    provenance: bool,
) -> tuple[Descriptor, ...]:
    """Store our trailing layers of a commit and return their descriptors (manifest order)."""
    from .provenance import collect, enabled_by_environment

    record = None
    if provenance and enabled_by_environment():
        # Read first (HEAD files, host name): no system call of ours after the first blob is handed
        # to a batch helper, which would then hold the GIL we wait for.
        record = collect({call.adapter for run in runs for call in (*run.solves, *run.samplings)})
    parent = subject.digest if subject is not None else None

    def meta(name: str) -> dict[str, str]:
        return rm.layer_metadata(name, image_name=image_name, parent_digest=parent)

    run_ids = [run.run_id for run in runs]
    index = rp.frame_index(table, run_ids)
    params = rp.encode_param_columns(table, index)  # both tables carry them
    layers = [
        _put(
            blobs,
            mt.PARQUET,
            rp.encode_parquet(table, run_ids, meta(rm.RUN_PARAMETERS_TABLE), encoded=params, index=index),
            mt.PARQUET_RUN_PARAMS_TITLE,
        ),
        _put(
            blobs, mt.PARQUET, rm.encode_runs(runs, table, meta(rm.RUNS_TABLE), encoded=params, index=index), mt.RUNS_TITLE
        ),
        _put(blobs, mt.PARQUET, rm.encode_solves(call_summaries(blobs, runs), meta(rm.SOLVES_TABLE)), mt.SOLVES_TITLE),
    ]
    if record is not None:
        layers.append(_put(blobs, mt.JSON, rm.encode_provenance(record), mt.PROVENANCE_TITLE))
    return tuple(layers)


def call_summaries(blobs: BlobStore, runs: Iterable[RunContent]) -> list[rm.CallSummary]:
    """One summary per Solve and Sampling, by run then kind then id (results decoded best effort)."""
    out: list[rm.CallSummary] = []
    for run in sorted((r for r in runs if r.solves or r.samplings), key=lambda r: r.run_id):
        for kind, calls in (("solve", run.solves), ("sampling", run.samplings)):
            for call in sorted(calls, key=lambda c: c.call_id):
                output = _decode_output(blobs, kind, call.output) if call.output is not None else None
                out.append(rm.summarize_call(run.run_id, kind, call, output))
    return out


def _decode_output(blobs: BlobStore, kind: str, desc: Descriptor) -> Any:
    from ..format.payload import decode_typed, decompress, logical_media_type

    try:
        data = decompress(desc, blobs.get(desc.digest))
        return decode_typed("sample_set" if kind == "sampling" else "solution", logical_media_type(desc), data, {})
    except Exception as exc:  # noqa: BLE001 - a summary never fails a commit or a view
        log.debug("result %s not summarised: %s", desc.digest, exc)
        return None


# --- sealed experiments: layers or derived files -------------------------------------------------------


def derived_path(registry: LocalRegistry, manifest_digest: str, table: str) -> Path:
    return registry.root / DERIVED_DIR / f"{manifest_digest.split(':', 1)[1]}.{table}.parquet"


def _derive(registry: LocalRegistry, target: Path, build: Any) -> Path:
    if not target.exists():
        from ..engine.atomic import atomic_write_bytes

        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, build())
    return target


def sealed_table_path(sealed: Any, table: str) -> Path:
    """The Parquet file of ``table`` (``runs``/``solves``) for a stored experiment: its layer, or a derived file."""
    title = {rm.RUNS_TABLE: mt.RUNS_TITLE, rm.SOLVES_TABLE: mt.SOLVES_TITLE}[table]
    layer = rm.trailing_layers(sealed.manifest).get(title)
    if layer is not None:
        return sealed.registry.blobs.path(layer.digest)
    meta = rm.layer_metadata(
        table,
        image_name=str(sealed.image_name),
        parent_digest=sealed.manifest.subject.digest if sealed.manifest.subject is not None else None,
        manifest_digest=sealed.manifest_digest,
    )
    target = derived_path(sealed.registry, sealed.manifest_digest, table)
    if table == rm.RUNS_TABLE:
        return _derive(sealed.registry, target, lambda: rm.encode_runs(sealed.content.runs, sealed.table(), meta))
    return _derive(
        sealed.registry, target, lambda: rm.encode_solves(call_summaries(sealed.registry.blobs, sealed.content.runs), meta)
    )


def timed_runs(sealed: Any) -> list[RunContent]:
    """The stored runs with ``started_ns``/``finished_ns`` filled from our ``runs.parquet`` layer (fork carries them)."""
    runs = list(sealed.content.runs)
    layer = rm.trailing_layers(sealed.manifest).get(mt.RUNS_TITLE)
    if layer is None:
        return runs
    try:
        times = _times(sealed.registry.blobs.path(layer.digest))
    except Exception as exc:  # noqa: BLE001 - timing is informational
        log.warning("run timing of %s not carried: %s", sealed.manifest_digest, exc)
        return runs
    return [run.timed(*times[run.run_id]) if run.run_id in times else run for run in runs]


def _times(path: Path) -> dict[int, tuple[int | None, int | None]]:
    """run id → (started, finished) in ns, from a ``runs.parquet`` layer: our own reader first
    (no pyarrow import), pyarrow for a file of another shape."""
    data = path.read_bytes()
    try:
        names = parquet_read.column_names(data)
        cols = rm.meta_column_names(names[1 + len(rm.RUN_META_COLUMNS):])
        got = parquet_read.read_columns(data, [names[0], cols["started_at"], cols["finished_at"]])
        ids, started, finished = got[names[0]], got[cols["started_at"]], got[cols["finished_at"]]
    except parquet_read.UnsupportedParquetError:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.ParquetFile(pa.BufferReader(data)).read()
        cols = rm.meta_column_names(table.schema.names[1 + len(rm.RUN_META_COLUMNS):])
        ids = table.column(0).to_pylist()
        started = table.column(cols["started_at"]).cast("int64").to_pylist()
        finished = table.column(cols["finished_at"]).cast("int64").to_pylist()

    def ns(raw: list[int | None]) -> list[int | None]:
        return [None if v is None else v * 1000 for v in raw]

    return dict(zip(ids, zip(ns(started), ns(finished), strict=True), strict=True))


def provenance(sealed: Any) -> dict[str, Any] | None:
    """The provenance record of a stored experiment, or None when it has none."""
    layer = rm.trailing_layers(sealed.manifest).get(mt.PROVENANCE_TITLE)
    if layer is None:
        return None
    return rm.decode_provenance(sealed.registry.blobs.get(layer.digest))


# --- frames ----------------------------------------------------------------------------------------------


def _session_table(session: Any) -> tuple[list[RunContent], rp.ParameterTable]:
    view = session.view()  # every writer's closed runs (a shared session)
    runs = [view.runs[k] for k in sorted(view.runs)]
    params = {k: dict(v) for k, v in view.params.items()}
    try:
        table = rp.build_table(params, [r.run_id for r in runs])
    except rp.MixedParameterTypesError as exc:
        raise InvalidInputError(f"Run parameter has mixed column types: existing {exc.existing}, incoming {exc.incoming}") from exc
    return runs, table


def runs_frame(source: Any) -> pd.DataFrame:
    """One row per closed run: metadata then parameters; index ``run_id`` (see :mod:`..format.run_meta`)."""
    if _is_sealed(source):
        frame = rm.read_frame(sealed_table_path(source, rm.RUNS_TABLE))
    else:
        runs, table = _session_table(source)
        frame = rm.read_frame(rm.encode_runs(runs, table, {}))
    return _index_by_run(frame)


def _is_sealed(source: Any) -> bool:
    return hasattr(source, "manifest_digest")


def _index_by_run(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    index = pd.Index(frame.iloc[:, 0].astype("int64").to_numpy(), dtype="int64", name="run_id")
    out = frame.iloc[:, 1:].copy()
    out.index = index
    return out


def solves_frame(source: Any) -> pd.DataFrame:
    """One row per Solve and Sampling, with the run's parameters (metadata names displaced on collision)."""
    if _is_sealed(source):
        calls = rm.read_frame(sealed_table_path(source, rm.SOLVES_TABLE))
    else:
        runs, _ = _session_table(source)
        calls = rm.read_frame(rm.encode_solves(call_summaries(source.registry.blobs, runs), {}))
    return join_parameters(calls, runs_frame(source))


def join_parameters(calls: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``calls`` (``solves.parquet`` columns) with each run's parameters appended; parameters keep their names."""
    import pandas as pd

    params = [str(c) for c in runs.columns[len(rm.RUN_META_COLUMNS):]]
    renamed = {name: rm.displaced(name, set(params)) for name in calls.columns}
    calls = calls.rename(columns=renamed)
    key = renamed["run_id"]
    right = runs[params].reset_index(drop=True)
    right.insert(0, key, pd.array(runs.index.to_numpy(), dtype="Int64"))
    merged = calls.merge(right, how="left", on=key, sort=False)
    merged.index = range(len(merged))
    return merged


def counts(frame: pd.DataFrame) -> Mapping[str, int]:
    """``{status: n}`` of a runs frame (metadata ``status`` column)."""
    column = frame.columns[0]
    return {str(k): int(v) for k, v in frame[column].value_counts().items()}
