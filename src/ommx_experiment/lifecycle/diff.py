"""``diff(a, b)``: what changed between two experiments, run by run (DVC's ``exp diff``, for studies).

Runs are matched by ``run_id`` (a fork keeps its parent's run ids). A run only
in ``b`` is *added*, only in ``a`` *removed*; a run in both is *changed* when its
parameters, status, lifecycle reason or objectives differ. The *objectives* of a
run are those of its Solves and Samplings, in order (``solves.parquet``). When
``b`` is a fork of ``a`` (its ``subject`` is ``a``'s manifest), ``added`` are the
runs the fork added to its parent (and the other way round).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

_COMPARED = ("status", "lifecycle_reason")


@dataclass(frozen=True, slots=True)
class RunChange:
    """One run present on both sides: ``{field: (in a, in b)}`` for each field that differs."""

    run_id: int
    changes: dict[str, tuple[Any, Any]]


@dataclass(frozen=True, slots=True)
class ExperimentDiff:
    """The result of :func:`diff`."""

    a: str
    b: str
    a_digest: str
    b_digest: str
    relation: str | None  # "b forks a", "a forks b" or None
    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    changed: list[RunChange] = field(default_factory=list)
    unchanged: int = 0

    @property
    def identical(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "a_digest": self.a_digest, "b_digest": self.b_digest,
            "relation": self.relation, "added": self.added, "removed": self.removed,
            "changed": [{"run_id": c.run_id, "changes": {k: list(v) for k, v in c.changes.items()}} for c in self.changed],
            "unchanged": self.unchanged,
        }

    def __str__(self) -> str:
        lines = [f"--- a {self.a} ({self.a_digest[:19]})", f"+++ b {self.b} ({self.b_digest[:19]})"]
        if self.relation:
            lines.append(f"relation: {self.relation}")
        lines.append(
            f"runs: {len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed, "
            f"{self.unchanged} unchanged"
        )
        lines += [f"+ run {r}" for r in self.added]
        lines += [f"- run {r}" for r in self.removed]
        for change in self.changed:
            detail = ", ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in change.changes.items())
            lines.append(f"~ run {change.run_id}: {detail}")
        return "\n".join(lines)


def _show(value: Any) -> str:
    if value is None:
        return "<none>"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _cell(value: Any) -> Any:
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return None
    return value.item() if hasattr(value, "item") else value  # a logged NaN stays a value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return (a is None and b is None) or (type(a) is type(b) and bool(a == b))


def _objectives(calls: pd.DataFrame) -> dict[int, tuple[Any, ...]]:
    out: dict[int, list[Any]] = {}
    run_col, obj_col = calls.columns[0], calls.columns[5]
    for run_id, objective in zip(calls[run_col], calls[obj_col], strict=True):
        out.setdefault(int(run_id), []).append(_cell(objective))
    return {k: tuple(v) for k, v in out.items()}


def diff_frames(
    runs_a: pd.DataFrame, runs_b: pd.DataFrame, calls_a: pd.DataFrame, calls_b: pd.DataFrame
) -> tuple[list[int], list[int], list[RunChange], int]:
    """``(added, removed, changed, unchanged)`` from two runs frames (index ``run_id``) and solves tables."""
    from ..format.run_meta import RUN_META_COLUMNS

    n_meta = len(RUN_META_COLUMNS)
    ids_a, ids_b = set(runs_a.index), set(runs_b.index)
    params = sorted({str(c) for c in runs_a.columns[n_meta:]} | {str(c) for c in runs_b.columns[n_meta:]})
    meta_a = dict(zip(RUN_META_COLUMNS, runs_a.columns[:n_meta], strict=True))
    meta_b = dict(zip(RUN_META_COLUMNS, runs_b.columns[:n_meta], strict=True))
    obj_a, obj_b = _objectives(calls_a), _objectives(calls_b)
    changed, unchanged = [], 0
    for run_id in sorted(ids_a & ids_b):
        row_a, row_b = runs_a.loc[run_id], runs_b.loc[run_id]
        changes: dict[str, tuple[Any, Any]] = {}
        for name in _COMPARED:
            va, vb = _cell(row_a[meta_a[name]]), _cell(row_b[meta_b[name]])
            if not _same(va, vb):
                changes[name] = (va, vb)
        for name in params:
            va = _cell(row_a[name]) if name in row_a.index[n_meta:] else None
            vb = _cell(row_b[name]) if name in row_b.index[n_meta:] else None
            if not _same(va, vb):
                changes[name] = (va, vb)
        oa, ob = obj_a.get(int(run_id), ()), obj_b.get(int(run_id), ())
        if len(oa) != len(ob) or not all(_same(x, y) for x, y in zip(oa, ob, strict=False)):
            changes["objective"] = (oa, ob)
        if changes:
            changed.append(RunChange(int(run_id), changes))
        else:
            unchanged += 1
    return sorted(int(r) for r in ids_b - ids_a), sorted(int(r) for r in ids_a - ids_b), changed, unchanged


def diff(a: Any, b: Any) -> ExperimentDiff:
    """Compare two committed experiments (``Experiment`` objects or image names in the default registry)."""
    from ..engine.names import ImageName
    from ..engine.registry import LocalRegistry
    from ..errors import RefNotFoundError
    from ..format import run_meta as rm
    from .analysis import runs_frame, sealed_table_path
    from .session import SealedState

    def opened(x: Any) -> SealedState:
        if isinstance(x, str):
            registry = LocalRegistry.default()
            image = ImageName.parse(x)
            digest = registry.resolve(image)
            if digest is None:
                raise RefNotFoundError(f"{image} is not in the Local Registry at {registry.root}")
            return SealedState.open(registry, image, digest)
        sealed = getattr(x, "_sealed", None)
        if sealed is None:
            raise TypeError("diff needs committed experiments (an Experiment after commit, or an image name)")
        return sealed

    sa, sb = opened(a), opened(b)
    relation = None
    if sb.manifest.subject is not None and sb.manifest.subject.digest == sa.manifest_digest:
        relation = "b forks a"
    elif sa.manifest.subject is not None and sa.manifest.subject.digest == sb.manifest_digest:
        relation = "a forks b"
    added, removed, changed, unchanged = diff_frames(
        runs_frame(sa), runs_frame(sb),
        rm.read_frame(sealed_table_path(sa, rm.SOLVES_TABLE)), rm.read_frame(sealed_table_path(sb, rm.SOLVES_TABLE)),
    )
    return ExperimentDiff(
        str(sa.image_name), str(sb.image_name), sa.manifest_digest, sb.manifest_digest, relation,
        added, removed, changed, unchanged,
    )
