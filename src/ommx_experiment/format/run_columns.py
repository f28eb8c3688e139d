"""This writer's run parameters kept in close order while its runs close (the commit's parameter table).

A 10,000-run commit built its :class:`~ommx_experiment.format.run_params.ParameterTable`
by gathering every cell from one dict per run, allocated one by one during the sweep
among everything else it allocated: that walk missed the CPU cache at nearly every
cell (~3x slower than over compact data). :class:`OwnColumns` keeps, at each close,
the run's values as one tuple (the names once); the commit transposes those compact
rows into columns and checks their types there (``run_params.dense_table``).

It holds only while every run of this writer has the same parameter names in the
same order, in ascending run ids; anything else breaks it for good. The table is
used only when the runs being committed are exactly the run objects added here (the
journal reader hands back this writer's cached objects only while their rows are
unchanged) and each column has one builtin type (:meth:`OwnColumns.table_for`):
otherwise (runs of other writers, recovered, carried, discarded or rewritten ones,
``int`` then ``float``) the commit derives it from every run's parameters as before
(``run_params.build_table``).
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .run_params import ParameterTable, ParamValue, dense_table

if TYPE_CHECKING:
    from .content import RunContent

__all__ = ["OwnColumns"]


class OwnColumns:
    """The parameters of this writer's closed runs, one tuple per run (see the module docstring)."""

    __slots__ = ("_last", "_names", "_rows", "_runs", "broken", "ids")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.broken = False
        self._names: tuple[str, ...] | None = None
        self._rows: list[tuple[Any, ...]] = []
        self._runs: list[RunContent] = []
        self._last = -1

    def add(self, run: RunContent, params: Mapping[str, ParamValue]) -> None:
        """Append one closed run (after it was recorded); breaks the columns when it does not fit."""
        if self.broken:
            return
        names = tuple(params)
        if self._names is None:
            self._names = names
        if run.run_id <= self._last or names != self._names or not names:
            self.broken = True
            self._rows, self._runs = [], []
            return
        self._rows.append(tuple(params.values()))
        self._runs.append(run)
        self.ids.append(run.run_id)
        self._last = run.run_id

    def replaced(self, old: RunContent, new: RunContent) -> None:
        """``new`` stands for ``old`` from now on (a deferred run whose inline bytes were stored)."""
        if self.broken:
            return
        pos = bisect.bisect_left(self.ids, old.run_id)
        if pos < len(self.ids) and self._runs[pos] is old:
            self._runs[pos] = new

    def table_for(self, runs: Sequence[RunContent]) -> ParameterTable | None:
        """The table of exactly these runs (ascending ids), or None.

        Each must be the very run object added here: the journal reader hands back this
        writer's cached objects only while their rows are unchanged, so a row rewritten in
        the index (by anyone) makes the commit derive the table from what the journal says.
        """
        if self.broken or self._names is None or len(runs) != len(self.ids) or not self.ids:
            return None
        if not all(map(operator.is_, runs, self._runs)):
            return None
        return dense_table(self.ids, self._names, list(zip(*self._rows, strict=True)))
