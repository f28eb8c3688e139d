"""Our analysis layers: run metadata, solve summaries and provenance (OMMX ignores all three).

They follow the run-parameter Parquet layer at the end of the manifest, never
referenced by the config (so every LayerRef, and the config bytes, equal what
OMMX 3 writes; OMMX tolerates unreferenced trailing layers and drops them on its
own fork). Each is found by its ``org.opencontainers.image.title``:

``runs.parquet`` (media type ``application/vnd.apache.parquet``)
    One row per closed run: ``run_id``, ``status``, ``lifecycle_reason``,
    ``started_at``/``finished_at`` (timestamp µs UTC; NULL when unknown),
    ``duration_s``, ``solves``, ``samplings``, then every run parameter under its
    own name (the run-parameter table's types). A metadata column whose name a
    parameter already uses gets underscores prepended (``_status``), as ``run_id``
    does in the run-parameter layer: parameters always keep their names.
``solves.parquet``
    One row per Solve and Sampling: ``run_id``, ``kind`` (``solve``/``sampling``),
    ``call_id``, ``adapter``, ``status``, ``objective``, ``feasible``,
    ``optimality``, ``sense``, ``solver_time_s`` (only when the result carries
    start and end times), ``samples``, ``feasible_samples`` (samplings), and
    ``adapter_options`` (the JSON string OMMX stores). For a sampling,
    ``objective`` is the best feasible sample's (NULL when none is feasible).
``provenance.json`` (``application/json``)
    Who and what made the artifact: see :mod:`ommx_experiment.lifecycle.provenance`.

Every Parquet layer carries footer key-value metadata (:func:`layer_metadata`):
the table name, the schema version, the image name it was committed as and the
parent (``subject``) digest. The manifest digest cannot be inside a layer of the
same manifest (the digest covers the layer); files derived for artifacts without
these layers (written by OMMX, or before this schema) carry it.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from .. import media_types as mt
from .parquet import BOOL, FLOAT64, INT64, STRING, TIMESTAMP, Column, EncodedColumn, write_parquet
from .run_params import column_order, encode_param_columns, frame_index

if TYPE_CHECKING:
    import pandas as pd

    from ..engine.oci import Descriptor, Manifest
    from .content import RunContent, SolveContent
    from .run_params import ParameterTable

SCHEMA_VERSION = "1"
RUNS_TABLE, SOLVES_TABLE, RUN_PARAMETERS_TABLE = "runs", "solves", "run_parameters"
META_KEY_PREFIX = "ommx_experiment."

RUN_META_COLUMNS = ("status", "lifecycle_reason", "started_at", "finished_at", "duration_s", "solves", "samplings")
_RUN_META_KINDS = (STRING, STRING, TIMESTAMP, TIMESTAMP, FLOAT64, INT64, INT64)


# --- which trailing layers are ours ---------------------------------------------------------------


def trailing_layers(manifest: Manifest) -> dict[str, Descriptor]:
    """Our layers after the last run-parameter MessagePack layer, by title (read from the manifest only)."""
    found: dict[str, Descriptor] = {}
    for layer in reversed(manifest.layers):
        title = layer.annotations.get(mt.TITLE_ANNOTATION)
        if layer.media_type == mt.RUN_PARAMETERS or title not in mt.OUR_LAYER_TITLES:
            break
        found.setdefault(title, layer)
    return found


def layer_metadata(
    table: str, *, image_name: str | None, parent_digest: str | None, manifest_digest: str | None = None
) -> dict[str, str]:
    """Footer key-value metadata of one of our Parquet files (absent values are left out)."""
    values = {
        "table": table,
        "schema_version": SCHEMA_VERSION,
        "image_name": image_name,
        "parent_digest": parent_digest,
        "manifest_digest": manifest_digest,
    }
    return {META_KEY_PREFIX + k: v for k, v in values.items() if v is not None}


# --- runs --------------------------------------------------------------------------------------------


def displaced(name: str, taken: Sequence[str] | set[str]) -> str:
    """``name``, with underscores prepended until no parameter uses it."""
    while name in taken:
        name = "_" + name
    return name


def meta_column_names(parameter_names: Sequence[str]) -> dict[str, str]:
    """``{metadata column: its name in this table}`` (``run_id`` included) for these parameters."""
    taken = set(parameter_names)
    return {name: displaced(name, taken) for name in ("run_id", *RUN_META_COLUMNS)}


def run_meta_row(run: RunContent) -> list[Any]:
    """The metadata cells of one run, in :data:`RUN_META_COLUMNS` order (timestamps in µs)."""
    started = None if run.started_ns is None else run.started_ns // 1000
    finished = None if run.finished_ns is None else run.finished_ns // 1000
    duration = None if started is None or finished is None else (finished - started) / 1e6  # from the stored µs
    reason = run.reason if run.status != "finished" else None
    return [run.status, reason, started, finished, duration, len(run.solves), len(run.samplings)]


def _meta_cells(ordered: list[RunContent | None], gaps: bool) -> list[Sequence[Any]]:
    """The metadata columns (:data:`RUN_META_COLUMNS` order) of these rows, as :func:`run_meta_row` gives them.

    ``gaps``: some row is None (a run id with parameters but no run). Told, not searched:
    ``None in rows`` would call the dataclass ``__eq__`` once per run.
    """
    reasons = [] if gaps else list(map(_REASON, ordered))
    if gaps or (
        reasons.count(None) != len(reasons) and any(r.status == "finished" and r.reason is not None for r in ordered)  # type: ignore[union-attr]
    ):
        empty = [None] * len(RUN_META_COLUMNS)
        rows = [run_meta_row(r) if r is not None else empty for r in ordered]
        return list(zip(*rows, strict=True)) if rows else [() for _ in RUN_META_COLUMNS]
    runs: list[RunContent] = ordered  # type: ignore[assignment]
    started = [None if ns is None else ns // 1000 for ns in map(_STARTED, runs)]
    finished = [None if ns is None else ns // 1000 for ns in map(_FINISHED, runs)]
    duration = [None if s is None or f is None else (f - s) / 1e6 for s, f in zip(started, finished, strict=True)]
    return [
        list(map(_STATUS, runs)),
        reasons,
        started,
        finished,
        duration,
        list(map(len, map(_SOLVES, runs))),
        list(map(len, map(_SAMPLINGS, runs))),
    ]


_STATUS, _REASON, _STARTED, _FINISHED, _SOLVES, _SAMPLINGS = (
    operator.attrgetter(name) for name in ("status", "reason", "started_ns", "finished_ns", "solves", "samplings")
)


def runs_columns(
    runs: Sequence[RunContent],
    table: ParameterTable,
    *,
    encoded: Sequence[EncodedColumn] | None = None,
    index: list[int] | None = None,
) -> list[Column | EncodedColumn]:
    """The ``runs.parquet`` columns: metadata, then parameters in ``run_parameters_df()`` order
    (``encoded``: ``encode_param_columns`` of ``table`` over these runs, when the caller has them;
    ``index``: their ``frame_index``, likewise)."""
    if index is None:
        index = frame_index(table, [run.run_id for run in runs])
    names = column_order(table, index)
    renamed = meta_column_names(names)
    if len(index) == len(runs):  # index ⊇ the runs' ids, ascending: these are the runs, in order
        ordered: list[RunContent | None] = sorted(runs, key=_RUN_ID) if not _ascending(runs) else list(runs)
        gaps = False
    else:
        by_id = {run.run_id: run for run in runs}
        ordered, gaps = list(map(by_id.get, index)), True
    cells = _meta_cells(ordered, gaps=gaps)
    columns: list[Column | EncodedColumn] = [Column(renamed["run_id"], INT64, index, required=True)]
    for name, kind, values in zip(RUN_META_COLUMNS, _RUN_META_KINDS, cells, strict=True):
        columns.append(Column(renamed[name], kind, list(values)))
    columns.extend(encoded if encoded is not None else encode_param_columns(table, index))
    return columns


_RUN_ID = operator.attrgetter("run_id")


def _ascending(runs: Sequence[RunContent]) -> bool:
    ids = list(map(_RUN_ID, runs))
    return all(map(operator.lt, ids, ids[1:]))


def encode_runs(
    runs: Sequence[RunContent],
    table: ParameterTable,
    metadata: Mapping[str, str],
    *,
    encoded: Sequence[EncodedColumn] | None = None,
    index: list[int] | None = None,
) -> bytes:
    """``runs.parquet`` bytes (``encoded``/``index``: see :func:`runs_columns`)."""
    columns = runs_columns(runs, table, encoded=encoded, index=index)
    return write_parquet(columns, columns[0].num_rows if isinstance(columns[0], EncodedColumn) else len(columns[0].values), metadata)


# --- solves ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallSummary:
    """What ``solves.parquet`` says about one Solve or Sampling."""

    run_id: int
    kind: str
    call_id: int
    adapter: str
    status: str
    objective: float | None = None
    feasible: bool | None = None
    optimality: str | None = None
    sense: str | None = None
    solver_time_s: float | None = None
    samples: int | None = None
    feasible_samples: int | None = None
    adapter_options: str = "{}"


SOLVE_COLUMNS = tuple(f.name for f in fields(CallSummary))
_SOLVE_KINDS = (INT64, STRING, INT64, STRING, STRING, FLOAT64, BOOL, STRING, STRING, FLOAT64, INT64, INT64, STRING)


def _enum_name(value: Any, names: Mapping[int, str], prefix: str) -> str | None:
    if value is None:
        return None
    name = getattr(value, "name", None)
    if isinstance(name, str):
        text = name.lower()
        return text.removeprefix(prefix) or None
    try:
        return names.get(int(value))
    except (TypeError, ValueError):
        return str(value).lower()


_SENSES = {1: "minimize", 2: "maximize"}
_OPTIMALITY = {1: "optimal", 2: "not_optimal"}


def _seconds(start: Any, end: Any) -> float | None:
    if start is None or end is None:
        return None
    try:
        return float((end - start).total_seconds())
    except (AttributeError, TypeError):
        return None


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if not math.isnan(number) else None


def summarize_solution(solution: Any) -> dict[str, Any]:
    """Objective, feasibility, optimality, sense and solver time of an ``ommx`` Solution."""
    return {
        "objective": _finite(getattr(solution, "objective", None)),
        "feasible": bool(solution.feasible) if getattr(solution, "feasible", None) is not None else None,
        "optimality": _enum_name(getattr(solution, "optimality", None), _OPTIMALITY, "optimality_"),
        "sense": _enum_name(getattr(solution, "sense", None), _SENSES, "sense_"),
        "solver_time_s": _seconds(getattr(solution, "start", None), getattr(solution, "end", None)),
    }


def summarize_sample_set(sample_set: Any) -> dict[str, Any]:
    """Best feasible objective, any feasible, sample counts, sense and time of an ``ommx`` SampleSet."""
    objectives = dict(sample_set.objectives)
    feasible = dict(sample_set.feasible)
    sense = _enum_name(getattr(sample_set, "sense", None), _SENSES, "sense_")
    good = [objectives[i] for i, ok in feasible.items() if ok and i in objectives]
    best = (max(good) if sense == "maximize" else min(good)) if good else None
    return {
        "objective": _finite(best),
        "feasible": bool(good),
        "sense": sense,
        "solver_time_s": _seconds(getattr(sample_set, "start", None), getattr(sample_set, "end", None)),
        "samples": len(objectives),
        "feasible_samples": len(good),
    }


def summarize_call(run_id: int, kind: str, call: SolveContent, output: Any | None) -> CallSummary:
    """One summary row; ``output`` is the decoded Solution/SampleSet, or None (failed, or unreadable)."""
    extra: dict[str, Any] = {}
    if output is not None:
        extra = summarize_sample_set(output) if kind == "sampling" else summarize_solution(output)
    return CallSummary(
        run_id, kind, call.call_id, call.adapter, call.status, adapter_options=call.adapter_options, **extra
    )


def encode_solves(rows: Sequence[CallSummary], metadata: Mapping[str, str]) -> bytes:
    """``solves.parquet`` bytes (rows in the given order)."""
    columns = [
        Column(name, kind, [getattr(row, name) for row in rows], required=name in ("run_id", "kind", "call_id"))
        for name, kind in zip(SOLVE_COLUMNS, _SOLVE_KINDS, strict=True)
    ]
    return write_parquet(columns, len(rows), metadata)


# --- provenance -------------------------------------------------------------------------------------


def encode_provenance(record: Mapping[str, Any]) -> bytes:
    """``provenance.json`` bytes: compact, keys sorted, UTF-8."""
    return json.dumps(dict(record), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_provenance(data: bytes) -> dict[str, Any]:
    """The provenance record; an unreadable one reads as ``{}`` (it is informational)."""
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --- reading our Parquet files back ------------------------------------------------------------------


def read_frame(source: Any) -> pd.DataFrame:
    """A Parquet file (bytes or path) as pandas with nullable dtypes (``Int64``, ``Float64``,
    ``boolean``, ``string``, ``datetime64[us, UTC]``)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(source, (bytes, bytearray, memoryview)):
        source = pa.BufferReader(bytes(source))
    table = pq.ParquetFile(source).read()
    data: dict[str, Any] = {}
    for name, column in zip(table.schema.names, table.columns, strict=True):
        kind = column.type
        if pa.types.is_timestamp(kind):
            data[name] = pd.Series(column.to_pandas(), dtype="datetime64[us, UTC]")
        elif pa.types.is_boolean(kind):
            data[name] = pd.BooleanDtype().__from_arrow__(column)
        elif pa.types.is_integer(kind):
            data[name] = pd.Int64Dtype().__from_arrow__(column.cast(pa.int64()))
        elif pa.types.is_floating(kind):
            data[name] = pd.Float64Dtype().__from_arrow__(column.cast(pa.float64()))
        elif pa.types.is_null(kind):
            data[name] = pd.array([pd.NA] * len(column), dtype="object")
        else:
            data[name] = pd.array(column.to_pylist(), dtype=pd.StringDtype("python"))
    frame = pd.DataFrame({i: v for i, v in enumerate(data.values())}, index=pd.RangeIndex(table.num_rows))
    frame.columns = pd.Index(list(data), dtype=object)
    return frame
