"""This writer's run parameters kept as columns while its runs close (the commit's parameter table).

A 10,000-run commit built its :class:`~ommx_experiment.format.run_params.ParameterTable`
from one dict per run, allocated one by one during the sweep among everything else
the sweep allocated: gathering 100,000 cells from there, and packing them again,
missed the CPU cache at nearly every cell (build and MessagePack ~3x slower than on
compact data). :class:`OwnColumns` appends each closed run's values at close time,
while they are hot, ints and floats unboxed (``array('q')``/``array('d')``); the
commit then builds the table from compact columns.

It holds only while every run of this writer has the same parameter names, each
value exactly its column's builtin type, in ascending run ids; anything else (a new
name, a missing one, ``int`` then ``float``, a bool in an int column) drops it for
good and the commit derives the table as before (``run_params.build_table``). The
table is used only when the runs being committed are exactly the runs added here
(:meth:`OwnColumns.table_for`): runs of other writers, recovered, carried or
discarded ones make the commit derive it from every run's parameters instead.
"""

from __future__ import annotations

import operator
from array import array
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import Any

from .run_params import BOOL, FLOAT64, INT64, STRING, ParameterTable, ParamValue, dense_table

__all__ = ["OwnColumns"]

_CALL = operator.call
_KINDS: dict[type, str] = {bool: BOOL, int: INT64, float: FLOAT64, str: STRING}  # exact builtin types only


def _store(kind: str) -> Any:
    """An empty column for ``kind``: unboxed for numbers, a list for bools and strings."""
    if kind == INT64:
        return array("q")
    if kind == FLOAT64:
        return array("d")
    return []


class OwnColumns:
    """The parameter columns of this writer's closed runs, in close order (see the module docstring)."""

    __slots__ = ("_appends", "_columns", "_kinds", "_last", "_names", "_types", "broken", "ids")

    def __init__(self) -> None:
        self.ids: array[int] = array("q")
        self.broken = False
        self._names: tuple[str, ...] | None = None
        self._types: tuple[type, ...] = ()
        self._kinds: tuple[str, ...] = ()
        self._columns: list[Any] = []
        self._appends: list[Callable[[Any], None]] = []
        self._last = -1

    def add(self, run_id: int, params: Mapping[str, ParamValue]) -> None:
        """Append one closed run (after it was recorded); breaks the columns when it does not fit."""
        if self.broken:
            return
        if self._names is None:
            self._start(params)
        if (
            run_id <= self._last
            or tuple(params) != self._names
            or tuple(map(type, params.values())) != self._types
        ):
            self.broken = True
            return
        try:
            deque(map(_CALL, self._appends, params.values()), 0)  # one append per column, at C speed
        except OverflowError:  # an int outside int64: value_type refused it already; be safe
            self.broken = True
            return
        self.ids.append(run_id)
        self._last = run_id

    def _start(self, params: Mapping[str, ParamValue]) -> None:
        types = tuple(map(type, params.values()))
        kinds = tuple(_KINDS.get(t, "") for t in types)
        if "" in kinds or not params:
            self.broken = True
            return
        self._names = tuple(params)
        self._types = types
        self._kinds = kinds
        self._columns = [_store(kind) for kind in kinds]
        self._appends = [column.append for column in self._columns]

    def table_for(self, run_ids: Collection[int]) -> ParameterTable | None:
        """The table of exactly these runs (ascending ids, every one added here), or None."""
        if self.broken or self._names is None or len(run_ids) != len(self.ids) or not self.ids:
            return None
        if array("q", run_ids) != self.ids:
            return None
        cells = (stored.tolist() if isinstance(stored, array) else stored for stored in self._columns)
        return dense_table(self.ids.tolist(), zip(self._names, self._kinds, cells, strict=True))
