"""Tables across a Local Registry: ``runs_df``, ``solves_df``, ``experiments`` and DuckDB ``sql``.

Every committed experiment whose name starts with ``prefix`` (and whose
manifest annotations include every ``annotations`` pair) contributes its
``runs.parquet`` / ``solves.parquet`` (:mod:`.analysis`: our layers where they
are, files derived once for experiments written by OMMX). Frames are
concatenated with ``image_name`` and ``manifest_digest`` in front; as in one
experiment's frames, parameters keep their own names and a metadata column a
parameter already uses gets underscores prepended.

``sql(query)`` runs DuckDB (the optional extra ``ommx-experiment[analysis]``)
over three views of the whole registry: ``experiments`` (one row per committed
experiment), ``runs`` and ``solves`` (``read_parquet`` of those files, union by
column name).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..edges.catalog import ExperimentRef, list_experiments
from ..engine.names import ImageName, checkpoint_repository
from ..errors import InvalidInputError
from ..format import run_meta as rm
from .analysis import join_parameters, provenance, runs_frame, sealed_table_path
from .session import SealedState

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from ..engine.registry import LocalRegistry

ANALYSIS_EXTRA = "ommx-experiment[analysis]"


def missing_extra(module: str, extra: str) -> ImportError:
    """The ImportError for an optional dependency, naming the extra that brings it."""
    return ImportError(f"{module} is not installed; install it with: pip install '{extra}'")


@dataclass(frozen=True, slots=True)
class StoredExperiment:
    """One committed experiment of a registry, opened for reading."""

    ref: ExperimentRef
    sealed: SealedState

    @property
    def image_name(self) -> str:
        return self.ref.image_name

    @property
    def manifest_digest(self) -> str:
        return self.ref.manifest_digest


def _open_registry(root: str | Path | None) -> LocalRegistry:
    from ..engine.registry import LocalRegistry

    return LocalRegistry.default() if root is None else LocalRegistry.at(root)


def _check_annotations(annotations: Mapping[str, str] | None) -> dict[str, str]:
    if annotations is None:
        return {}
    if not isinstance(annotations, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise InvalidInputError(f"annotations must map str to str, got {annotations!r}")
    return dict(annotations)


def select(
    prefix: str | None = None, *, annotations: Mapping[str, str] | None = None, root: str | Path | None = None
) -> list[StoredExperiment]:
    """Committed experiments matching ``prefix`` and every ``annotations`` pair, sorted by name."""
    wanted = _check_annotations(annotations)
    registry = _open_registry(root)
    out = []
    for ref in list_experiments(prefix, root=registry.root):
        if any(ref.annotations.get(k) != v for k, v in wanted.items()):
            continue
        sealed = SealedState.open(registry, ImageName.parse(ref.image_name), ref.manifest_digest)
        out.append(StoredExperiment(ref, sealed))
    return out


def parent_name(registry: LocalRegistry, digest: str | None) -> str | None:
    """A local ref name pointing at ``digest`` (checkpoints last), or None."""
    if digest is None:
        return None
    internal = checkpoint_repository(registry.registry_id)
    names = [r.image_name for r in registry.list_refs() if r.manifest_digest == digest]
    names.sort(key=lambda n: (n.repository == internal, str(n)))
    return str(names[0]) if names else None


def _front(frame: pd.DataFrame, columns: Mapping[str, Any]) -> pd.DataFrame:
    """``frame`` with ``columns`` inserted first (names displaced if a parameter uses them)."""
    out = frame.copy()
    taken = {str(c) for c in out.columns}
    for position, (name, value) in enumerate(columns.items()):
        out.insert(position, rm.displaced(name, taken), value)
    return out


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    if not frames:
        return pd.DataFrame({"image_name": pd.array([], dtype="string"), "manifest_digest": pd.array([], dtype="string")})
    return pd.concat(frames, ignore_index=True, sort=False)


def runs_df(
    prefix: str | None = None, *, annotations: Mapping[str, str] | None = None, root: str | Path | None = None
) -> pd.DataFrame:
    """One row per run of every selected experiment: ``image_name``, ``manifest_digest``, ``run_id``, metadata, parameters."""
    import pandas as pd

    frames = []
    for exp in select(prefix, annotations=annotations, root=root):
        frame = runs_frame(exp.sealed)
        params = {str(c) for c in frame.columns}
        frame = frame.reset_index(names=rm.displaced("run_id", params))
        n = len(frame)
        frames.append(_front(frame, {
            "image_name": pd.array([exp.image_name] * n, dtype="string"),
            "manifest_digest": pd.array([exp.manifest_digest] * n, dtype="string"),
        }))
    return _concat(frames)


def solves_df(
    prefix: str | None = None, *, annotations: Mapping[str, str] | None = None, root: str | Path | None = None
) -> pd.DataFrame:
    """One row per Solve and Sampling of every selected experiment, with ``image_name``, ``manifest_digest`` and parameters."""
    import pandas as pd

    frames = []
    for exp in select(prefix, annotations=annotations, root=root):
        calls = rm.read_frame(sealed_table_path(exp.sealed, rm.SOLVES_TABLE))
        frame = join_parameters(calls, runs_frame(exp.sealed))
        n = len(frame)
        frames.append(_front(frame, {
            "image_name": pd.array([exp.image_name] * n, dtype="string"),
            "manifest_digest": pd.array([exp.manifest_digest] * n, dtype="string"),
        }))
    return _concat(frames)


def experiments_frame(experiments: list[StoredExperiment]) -> pd.DataFrame:
    """One row per experiment: name, digest, status, reason, counts, updated/created, parent, annotations."""
    import pandas as pd

    rows = []
    for exp in experiments:
        subject = exp.sealed.manifest.subject
        record = provenance(exp.sealed) or {}
        rows.append({
            "image_name": exp.image_name,
            "manifest_digest": exp.manifest_digest,
            "status": exp.ref.status,
            "lifecycle_reason": exp.sealed.reason,
            "runs": exp.ref.run_count,
            "solves": exp.ref.solve_count,
            "samplings": exp.ref.sampling_count,
            "updated_at": exp.ref.updated_at,
            "created_at": record.get("created_at"),
            "parent_digest": subject.digest if subject is not None else None,
            "parent_name": parent_name(exp.sealed.registry, subject.digest if subject is not None else None),
            "annotations": json.dumps(dict(exp.ref.annotations), sort_keys=True, ensure_ascii=False),
        })
    strings = ("image_name", "manifest_digest", "status", "lifecycle_reason", "parent_digest", "parent_name", "annotations")
    data: dict[str, Any] = {}
    for name in ("image_name", "manifest_digest", "status", "lifecycle_reason", "runs", "solves", "samplings",
                 "updated_at", "created_at", "parent_digest", "parent_name", "annotations"):
        values = [row[name] for row in rows]
        if name in strings:
            data[name] = pd.array(values, dtype="string")
        elif name in ("updated_at", "created_at"):
            data[name] = pd.to_datetime(pd.Series(values, dtype="object"), utc=True, format="ISO8601")
        else:
            data[name] = pd.array(values, dtype="Int64")
    return pd.DataFrame(data)


# --- DuckDB ----------------------------------------------------------------------------------------------

_EMPTY_RUNS = "SELECT NULL::VARCHAR AS image_name, NULL::VARCHAR AS manifest_digest, NULL::BIGINT AS run_id WHERE false"
_EMPTY_SOLVES = (
    "SELECT NULL::VARCHAR AS image_name, NULL::VARCHAR AS manifest_digest, NULL::BIGINT AS run_id, "
    "NULL::VARCHAR AS kind, NULL::BIGINT AS call_id, NULL::DOUBLE AS objective WHERE false"
)


def _duckdb() -> Any:
    try:
        import duckdb
    except ModuleNotFoundError as exc:
        if exc.name != "duckdb":
            raise
        raise missing_extra("duckdb", ANALYSIS_EXTRA) from None
    return duckdb


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb_connection(
    prefix: str | None = None, *, annotations: Mapping[str, str] | None = None, root: str | Path | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views ``experiments``, ``runs`` and ``solves`` over the registry."""
    import pandas as pd

    duckdb = _duckdb()
    experiments = select(prefix, annotations=annotations, root=root)
    con = duckdb.connect()
    con.register("experiments_frame", experiments_frame(experiments))
    con.execute("CREATE VIEW experiments AS SELECT * FROM experiments_frame")
    for view, table, empty in (("runs", rm.RUNS_TABLE, _EMPTY_RUNS), ("solves", rm.SOLVES_TABLE, _EMPTY_SOLVES)):
        files = [(str(sealed_table_path(e.sealed, table)), e.image_name, e.manifest_digest) for e in experiments]
        if not files:
            con.execute(f"CREATE VIEW {view} AS {empty}")
            continue
        index = pd.DataFrame(files, columns=["path", "image_name", "manifest_digest"])
        con.register(f"{view}_files", index)
        paths = ", ".join(_quote(path) for path, _, _ in files)
        con.execute(
            f"CREATE VIEW {view} AS SELECT f.image_name, f.manifest_digest, t.* EXCLUDE (filename) "
            f"FROM read_parquet([{paths}], union_by_name = true, filename = true) t "
            f"JOIN {view}_files f ON t.filename = f.path"
        )
    return con


def sql(query: str, *, root: str | Path | None = None) -> pd.DataFrame:
    """Run ``query`` in DuckDB over the views ``experiments``, ``runs`` and ``solves`` of the registry."""
    if not isinstance(query, str):
        raise InvalidInputError(f"query must be a string, got {type(query).__name__}")
    con = duckdb_connection(root=root)
    duckdb = _duckdb()
    try:
        try:
            result = con.sql(query)
        except duckdb.Error as exc:
            raise InvalidInputError(f"SQL query failed: {exc}") from exc
        if result is None:
            import pandas as pd

            return pd.DataFrame()
        return result.df()
    finally:
        con.close()
