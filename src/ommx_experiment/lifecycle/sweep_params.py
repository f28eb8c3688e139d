"""Parameter dicts of ``Experiment.sweep``: checks before any task runs, and resume matching.

:func:`check_parameters` normalises every dict and raises every problem up front.
:func:`param_key` is the equality resume uses; :func:`match_finished` finds, for each
dict, a ``finished`` run of the experiment that already covers it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentTypeError, InvalidInputError, ParameterOverflowError, ParameterTypeError
from ..format.codec import FINISHED
from ..format.run_params import FLOAT64, INT64, value_type
from .sweep_task import as_param

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ..format.run_params import ParamValue

__all__ = ["check_parameters", "match_finished", "param_key"]


def check_parameters(
    parameters: Iterable[Mapping[str, Any]], established: Callable[[str, ParamValue], None] | None = None
) -> list[dict[str, ParamValue]]:
    """Each dict normalised (numpy scalars → Python values); every problem raised before any task runs.

    Values must be bool, int64, float or str; within the sweep a column keeps one
    type (int then float widens to float, as on commit); ``established(name, value)``
    raises ``ParameterTypeError`` for a value the experiment's columns refuse.
    """
    if isinstance(parameters, Mapping | str | bytes):
        raise InvalidArgumentTypeError("parameters must be an iterable of dicts, e.g. [{'seed': 0}, {'seed': 1}]")
    kinds: dict[str, str] = {}
    out: list[dict[str, ParamValue]] = []
    for i, params in enumerate(parameters):
        if not isinstance(params, Mapping):
            raise InvalidArgumentTypeError(f"parameters[{i}]: expected a dict of parameters, got {type(params).__name__}")
        row: dict[str, ParamValue] = {}
        for name, raw in params.items():
            if not isinstance(name, str):
                raise InvalidArgumentTypeError(f"parameters[{i}]: parameter names must be str, got {name!r}")
            row[name] = value = _normalise(i, name, raw)
            if established is not None:
                try:
                    established(name, value)
                except ParameterTypeError as exc:
                    raise InvalidInputError(f"parameters[{i}][{name!r}]: {exc}") from exc
            kind, known = value_type(value), kinds.get(name)
            if known is None or known == kind or {known, kind} == {INT64, FLOAT64}:
                kinds[name] = FLOAT64 if {known, kind} == {INT64, FLOAT64} else kind
            else:
                raise InvalidInputError(
                    f"parameters[{i}][{name!r}]: a {kind} value, but earlier dicts made column {name!r} {known}"
                )
        out.append(row)
    return out


def _normalise(i: int, name: str, raw: object) -> ParamValue:
    try:
        return as_param(raw)
    except ParameterOverflowError as exc:
        raise ParameterOverflowError(f"parameters[{i}][{name!r}]: {exc}") from exc
    except TypeError as exc:
        raise InvalidArgumentTypeError(f"parameters[{i}][{name!r}]: {exc}") from exc


def param_key(params: Mapping[str, ParamValue]) -> str:
    """The canonical JSON that decides whether two parameter dicts are equal (resume).

    Names sorted; each value tagged by kind: booleans (``["b", true]``) never equal
    numbers, strings (``["s", "1"]``) never equal numbers, and numbers compare by
    value: ``1`` and ``1.0`` are equal (a column that widened int to float keeps
    matching), NaN equals NaN, ``-0.0`` equals ``0``.
    """
    return json.dumps([[name, *_tagged(params[name])] for name in sorted(params)], separators=(",", ":"), ensure_ascii=False)


def _tagged(value: object) -> tuple[str, Any]:
    if hasattr(value, "item") and not isinstance(value, bool | int | float | str):
        value = value.item()  # numpy scalar read back from a DataFrame
    if isinstance(value, bool):
        return "b", value
    if isinstance(value, int):
        return "n", value
    if isinstance(value, float):
        if math.isnan(value):
            return "n", "nan"
        if math.isinf(value):
            return "n", "inf" if value > 0 else "-inf"
        if value.is_integer():
            return "n", int(value)
        return "n", value
    return "s", str(value)


def match_finished(experiment: Any, dicts: list[dict[str, ParamValue]]) -> dict[int, int]:
    """``{dict index: run id}`` for dicts that a finished run of ``experiment`` already covers.

    A finished run covers a dict when it carries every name of the dict with an
    equal value (:func:`param_key`); each run covers at most one dict of a sweep
    that lists equal dicts several times (the lowest run ids first).
    """
    finished = [run.run_id for run in experiment.runs if run.status == FINISHED]
    if not finished or not dicts:
        return {}
    rows = _param_rows(experiment.run_parameters_df(), set(finished))
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, params in enumerate(dicts):
        groups.setdefault(tuple(sorted(params)), []).append(i)
    matched: dict[int, int] = {}
    for names, indices in groups.items():
        pool: dict[str, list[int]] = {}
        for run_id in finished:
            row = rows.get(run_id, {})
            if all(name in row for name in names):
                pool.setdefault(param_key({name: row[name] for name in names}), []).append(run_id)
        for i in indices:
            candidates = pool.get(param_key(dicts[i]))
            if candidates:
                matched[i] = candidates.pop(0)
    return matched


def _param_rows(frame: Any, wanted: set[int]) -> dict[int, dict[str, Any]]:
    """``{run id: {name: value}}`` from ``run_parameters_df()`` (missing values left out)."""
    import pandas as pd

    rows: dict[int, dict[str, Any]] = {run_id: {} for run_id in wanted}
    index = [int(run_id) for run_id in frame.index.tolist()]
    for column in frame.columns:
        for run_id, value in zip(index, frame[column].tolist(), strict=True):
            if run_id in wanted and value is not None and value is not pd.NA:
                rows[run_id][str(column)] = value
    return rows
