"""OwnColumns: a writer's parameters kept as columns while its runs close (format/run_columns.py)."""

from __future__ import annotations

import pytest

from ommx_experiment.format import run_params as rp
from ommx_experiment.format.content import RunContent
from ommx_experiment.format.run_columns import OwnColumns

_RUNS = {i: RunContent(i) for i in range(100)}


def _runs(ids: list[int]) -> list[RunContent]:
    return [_RUNS.get(i) or RunContent(i) for i in ids]


def _rows(n: int) -> dict[int, dict[str, rp.ParamValue]]:
    return {i: {"seed": i, "w": i + 0.5, "flag": i % 2 == 0, "name": f"r{i % 3}", "big": 2**63 - 1 - i} for i in range(n)}


def _columns(rows: dict[int, dict[str, rp.ParamValue]]) -> OwnColumns:
    cols = OwnColumns()
    for run_id, params in rows.items():
        cols.add(_RUNS[run_id], params)
    return cols


def test_the_table_equals_the_derived_one_byte_for_byte() -> None:
    rows = _rows(50)
    table = _columns(rows).table_for(_runs(list(rows)))
    assert table is not None
    derived = rp.build_table(rows, rows)
    assert table == derived
    assert rp.table_to_msgpack(table) == rp.table_to_msgpack(derived)
    assert rp.encode_parquet(table, list(rows)) == rp.encode_parquet(derived, list(rows))
    assert table.run_ids() == frozenset(rows)


def test_only_exactly_the_added_runs_get_a_table() -> None:
    rows = _rows(5)
    cols = _columns(rows)
    assert cols.table_for(_runs([0, 1, 2, 3])) is None  # a run discarded
    assert cols.table_for(_runs([0, 1, 2, 3, 4, 5])) is None  # a run of another writer, or recovered
    assert cols.table_for(_runs([0, 1, 2, 3, 5])) is None
    assert cols.table_for([*_runs([0, 1, 2, 3]), RunContent(4)]) is None  # run 4 read back from a rewritten row
    assert cols.table_for(_runs([0, 1, 2, 3, 4])) is not None
    assert OwnColumns().table_for([]) is None


@pytest.mark.parametrize(
    "late",
    [
        {"seed": 9, "w": 9.5},  # a name missing
        {"seed": 9, "w": 9.5, "flag": True, "name": "x", "big": 1, "new": 1},  # a name more
        {"w": 9.5, "seed": 9, "flag": True, "name": "x", "big": 1},  # another order
    ],
)
def test_a_run_with_other_names_breaks_the_columns_for_good(late: dict[str, rp.ParamValue]) -> None:
    rows = _rows(3)
    cols = _columns(rows)
    cols.add(_RUNS[3], late)
    assert cols.broken
    cols.add(_RUNS[4], rows[0])
    assert cols.table_for(_runs([0, 1, 2, 3, 4])) is None and cols.table_for(_runs([0, 1, 2])) is None


@pytest.mark.parametrize(
    "late",
    [
        {"seed": 9, "w": 9, "flag": True, "name": "x", "big": 1},  # int in a float column (OMMX casts it)
        {"seed": True, "w": 9.5, "flag": True, "name": "x", "big": 1},  # bool in an int column
        {"seed": 9.0, "w": 9.5, "flag": True, "name": "x", "big": 1},  # float after int: the column widens
        {"seed": 9, "w": 9.5, "flag": 1, "name": "x", "big": 1},  # int in a bool column
    ],
)
def test_a_column_of_mixed_types_leaves_the_table_to_the_derived_path(late: dict[str, rp.ParamValue]) -> None:
    rows = {**_rows(3), 3: late}
    assert _columns(rows).table_for(_runs(list(rows))) is None
    if late["seed"] is not True and late["flag"] is True:  # OMMX's promotions: the derived table has them
        assert rp.build_table(rows, rows).columns


def test_descending_ids_and_unsupported_values_leave_no_table() -> None:
    cols = _columns(_rows(3))
    cols.add(_RUNS[1], _rows(3)[1])
    assert cols.broken
    first = OwnColumns()
    first.add(_RUNS[0], {})  # a run without parameters: the derived table decides
    assert first.broken
    odd = OwnColumns()
    odd.add(_RUNS[0], {"x": 2**64})  # never logged (value_type refuses it), refused here too
    assert odd.table_for(_runs([0])) is None
