"""Our own Parquet writer (``format.parquet.write_parquet`` via ``run_params.encode_parquet``) against real readers.

Property: for random parameter tables, the bytes we write are read by pyarrow,
DuckDB and pandas exactly as the same data written (or built) by pyarrow itself:
same schema types and nullability, same values (NaN positions, ``-0.0``, int64
extremes, unicode), sane footer metadata, deterministic bytes.
"""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ommx_experiment.format import run_params as rp

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_ARROW_TYPES = {rp.BOOL: pa.bool_(), rp.INT64: pa.int64(), rp.FLOAT64: pa.float64(), rp.STRING: pa.string()}

_names = st.sampled_from(["", "run_id", "_run_id", "a", "A", "é", "名前", "x y", "\x00", "🙂"]) | st.text(
    max_size=6
)
_floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [float("nan"), -float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 5e-324, 1.7976931348623157e308]
)
_values: dict[str, st.SearchStrategy[Any]] = {
    rp.BOOL: st.booleans(),
    rp.INT64: st.integers(_I64_MIN, _I64_MAX) | st.sampled_from([_I64_MIN, _I64_MAX, 0, -1]),
    rp.FLOAT64: _floats,
    rp.STRING: st.text(max_size=8) | st.sampled_from(["", "\x00", "é", "名前", "🙂" * 3]),
}


@st.composite
def tables(draw: st.DrawFn) -> tuple[rp.ParameterTable, list[int]]:
    """A typed table of 0..12 columns over 0..300 runs (nulls anywhere, all-null columns too)."""
    n_rows = draw(st.integers(0, 300))
    run_ids = sorted(draw(st.sets(st.integers(0, _I64_MAX), min_size=n_rows, max_size=n_rows)))
    kinds = draw(st.dictionaries(_names, st.sampled_from(rp.COLUMN_TYPES), max_size=12))
    columns = []
    for name, kind in kinds.items():
        density = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
        present = [r for r in run_ids if draw(st.floats(0, 1)) < density] if 0 < density < 1 else (
            run_ids if density == 1.0 else []
        )
        values = draw(st.lists(_values[kind], min_size=len(present), max_size=len(present)))
        columns.append(rp.ParameterColumn(name, kind, dict(zip(present, values))))
    return rp.ParameterTable(tuple(columns)), run_ids


def _expected_arrow(table: rp.ParameterTable, run_ids: list[int]) -> pa.Table:
    """What pyarrow builds from the same data: run id REQUIRED int64, parameters nullable."""
    index = rp.frame_index(table, run_ids)
    names = rp.column_order(table, run_ids)
    by_name = {c.name: c for c in table.columns}
    fields = [pa.field(rp._run_id_column_name(names), pa.int64(), nullable=False)]
    arrays = [pa.array(index, type=pa.int64())]
    for name in names:
        column = by_name[name]
        fields.append(pa.field(name, _ARROW_TYPES[column.type], nullable=True))
        arrays.append(pa.array([column.values.get(r) for r in index], type=_ARROW_TYPES[column.type]))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _same(a: Any, b: Any) -> bool:
    """Equal values, with floats compared bit for bit (NaN payload/sign and -0.0 included)."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return type(a) is type(b) and a == b


def _same_loose(a: Any, b: Any) -> bool:
    """As :func:`_same`, but any NaN equals any NaN (readers may canonicalise NaN bits)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return _same(a, b)


def _assert_columns_equal(got: pa.Table, expected: pa.Table) -> None:
    assert got.num_rows == expected.num_rows
    for i in range(expected.num_columns):
        left, right = got.column(i).to_pylist(), expected.column(i).to_pylist()
        bad = [(r, x, y) for r, (x, y) in enumerate(zip(left, right)) if not _same(x, y)]
        assert not bad, f"column {i} ({expected.schema.names[i]!r}) differs at rows {bad[:5]}"


def _check_pyarrow(data: bytes, expected: pa.Table) -> None:
    got = pq.read_table(pa.BufferReader(data))
    assert got.schema.equals(expected.schema), f"{got.schema}\n!=\n{expected.schema}"
    assert [f.nullable for f in got.schema] == [f.nullable for f in expected.schema]
    _assert_columns_equal(got, expected)
    # The same data written by pyarrow itself reads back identically.
    buffer = io.BytesIO()
    pq.write_table(expected, buffer)
    _assert_columns_equal(pq.read_table(pa.BufferReader(buffer.getvalue())), got)


def _check_duckdb(path: Path, expected: pa.Table) -> None:
    con = duckdb.connect()
    try:
        rows = con.read_parquet(str(path)).fetchall()
    finally:
        con.close()
    columns = [expected.column(i).to_pylist() for i in range(expected.num_columns)]
    assert len(rows) == expected.num_rows
    for r, row in enumerate(rows):
        assert len(row) == len(columns)
        for c, value in enumerate(row):
            assert _same_loose(value, columns[c][r]), f"duckdb row {r} column {c}: {value!r} != {columns[c][r]!r}"


def _check_pandas(path: Path, data: bytes, table: rp.ParameterTable, run_ids: list[int], expected: pa.Table) -> None:
    pd.testing.assert_frame_equal(pd.read_parquet(path), expected.to_pandas())
    pd.testing.assert_frame_equal(rp.decode_parquet(data), rp.table_to_dataframe(table, run_ids))
    pd.testing.assert_frame_equal(rp.decode_parquet(path), rp.table_to_dataframe(table, run_ids))


def _check_metadata(path: Path, table: rp.ParameterTable, run_ids: list[int], expected: pa.Table) -> None:
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == expected.num_rows
    assert meta.num_columns == expected.num_columns == len(table.columns) + 1
    assert meta.num_row_groups == (1 if expected.num_rows else 0)
    assert meta.created_by
    if expected.num_rows:
        group = meta.row_group(0)
        assert group.num_rows == expected.num_rows and group.num_columns == expected.num_columns
        for i in range(expected.num_columns):
            chunk = group.column(i)
            assert chunk.num_values == expected.num_rows
            assert chunk.path_in_schema == expected.schema.names[i]
            assert chunk.compression == "ZSTD"
            assert chunk.statistics is None or chunk.statistics.null_count == expected.column(i).null_count


def _check_read_modes(path: Path, expected: pa.Table) -> None:
    for memory_map in (False, True):
        got = pq.ParquetFile(path, memory_map=memory_map).read(use_threads=False)
        assert got.schema.equals(expected.schema)
        _assert_columns_equal(got, expected)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(tables())
def test_written_parquet_reads_like_pyarrows_own(tmp_path: Path, case: tuple[rp.ParameterTable, list[int]]) -> None:
    table, run_ids = case
    data = rp.encode_parquet(table, run_ids)
    assert data == rp.encode_parquet(table, list(run_ids))  # (d) deterministic
    assert data == rp.encode_parquet(rp.decode_msgpack(rp.table_to_msgpack(table), run_ids), run_ids)
    path = tmp_path / "params.parquet"
    path.write_bytes(data)
    expected = _expected_arrow(table, run_ids)
    _check_pyarrow(data, expected)  # (a)
    _check_duckdb(path, expected)  # (b)
    _check_pandas(path, data, table, run_ids, expected)  # (c)
    _check_metadata(path, table, run_ids, expected)  # (e)
    _check_read_modes(path, expected)  # (f)


def test_run_id_parameter_shifts_the_index_column_name(tmp_path: Path) -> None:
    table = rp.ParameterTable((rp.ParameterColumn("run_id", rp.STRING, {0: "x"}),))
    data = rp.encode_parquet(table, [0, 1])
    got = pq.read_table(pa.BufferReader(data))
    assert got.schema.names == ["_run_id", "run_id"]
    assert got.column(0).to_pylist() == [0, 1] and got.column(1).to_pylist() == ["x", None]


@pytest.mark.parametrize("n_rows", [0, 1, 7, 8, 9, 300])
def test_null_patterns_at_bit_packing_boundaries(tmp_path: Path, n_rows: int) -> None:
    run_ids = list(range(n_rows))
    columns = (
        rp.ParameterColumn("every_other", rp.FLOAT64, {r: float(r) for r in run_ids if r % 2}),
        rp.ParameterColumn("all", rp.BOOL, {r: r % 3 == 0 for r in run_ids}),
        rp.ParameterColumn("none", rp.INT64, {}),
    )
    table = rp.ParameterTable(columns)
    expected = _expected_arrow(table, run_ids)
    data = rp.encode_parquet(table, run_ids)
    path = tmp_path / "p.parquet"
    path.write_bytes(data)
    _check_pyarrow(data, expected)
    _check_duckdb(path, expected)
    _check_metadata(path, table, run_ids, expected)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tables())
def test_parameter_columns_encoded_once_give_the_same_files(case: tuple[rp.ParameterTable, list[int]]) -> None:
    """A commit encodes the parameter columns once for both tables: the bytes equal separate encodings."""
    from ommx_experiment.format import run_meta as rm
    from ommx_experiment.format.content import RunContent

    table, run_ids = case
    index = rp.frame_index(table, run_ids)
    shared = rp.encode_param_columns(table, index)
    assert [c.name for c in shared] == rp.column_order(table, run_ids)
    assert rp.encode_parquet(table, run_ids, {"k": "v"}, encoded=shared) == rp.encode_parquet(table, run_ids, {"k": "v"})
    runs = [RunContent(run_id, started_ns=1_000 * (run_id % 10**9), finished_ns=2_000 * (run_id % 10**9)) for run_id in index]
    assert rm.encode_runs(runs, table, {}, encoded=shared) == rm.encode_runs(runs, table, {})
    frame = pq.read_table(io.BytesIO(rm.encode_runs(runs, table, {}, encoded=shared))).to_pandas()
    assert list(frame.columns[1 + len(rm.RUN_META_COLUMNS):]) == [c.name for c in shared]


def test_runs_table_rows_for_parameter_ids_without_a_run_have_null_metadata() -> None:
    """An OMMX artifact's parameter layer may name a run id its config lacks: that row keeps its parameters."""
    from ommx_experiment.format import run_meta as rm
    from ommx_experiment.format.content import RunContent

    table = rp.build_table({1: {"x": 1}, 2: {"x": 2}, 3: {"x": 3}}, [1, 2, 3])
    runs = [RunContent(1, started_ns=5_000, finished_ns=9_000), RunContent(3, "failed", "boom")]
    frame = pq.read_table(io.BytesIO(rm.encode_runs(runs, table, {}))).to_pandas()
    assert list(frame.iloc[:, 0]) == [1, 2, 3]
    assert list(frame["x"]) == [1, 2, 3]
    assert list(frame["status"].fillna("-")) == ["finished", "-", "failed"]
    assert list(frame["lifecycle_reason"].fillna("-")) == ["-", "-", "boom"]
    assert frame["duration_s"].iloc[0] == pytest.approx(0.004 / 1000)


# --- the hand-laid structs of the hot path equal the generic Thrift encoder's -------------------------


def _reference_parquet(columns: list[Any], num_rows: int, metadata: dict[str, str] | None) -> bytes:
    """``write_parquet`` spelled with the generic compact-protocol encoder ``_struct`` only."""
    from ommx_experiment.format import parquet as pqw

    s = pqw._struct
    out, chunks, total = bytearray(b"PAR1"), [], 0
    schema = [s((4, pqw._T_BINARY, "schema"), (5, pqw._T_I32, len(columns)))]
    for column in columns:
        col = column if isinstance(column, pqw.EncodedColumn) else pqw.encode_column(column)
        header = s(
            (1, pqw._T_I32, pqw._DATA_PAGE), (2, pqw._T_I32, col.raw_size), (3, pqw._T_I32, len(col.page)),
            (5, pqw._T_STRUCT, pqw._data_page_header(num_rows)),
        )
        offset = len(out)
        out += header + col.page
        total += len(header) + col.raw_size
        meta = s(
            (1, pqw._T_I32, pqw._PHYSICAL[col.kind]), (2, pqw._T_LIST, (pqw._T_I32, [pqw._PLAIN, pqw._RLE])),
            (3, pqw._T_LIST, (pqw._T_BINARY, [col.name])), (4, pqw._T_I32, pqw._ZSTD), (5, pqw._T_I64, num_rows),
            (6, pqw._T_I64, len(header) + col.raw_size), (7, pqw._T_I64, len(header) + len(col.page)),
            (9, pqw._T_I64, offset), (12, pqw._T_STRUCT, col.statistics),
        )
        chunks.append(s((2, pqw._T_I64, offset), (3, pqw._T_STRUCT, meta)))
        schema.append(s(
            (1, pqw._T_I32, pqw._PHYSICAL[col.kind]), (3, pqw._T_I32, pqw._REQUIRED if col.required else pqw._OPTIONAL),
            (4, pqw._T_BINARY, col.name), (6, pqw._T_I32, pqw._CONVERTED.get(col.kind)),
            (10, pqw._T_STRUCT, pqw._LOGICAL.get(col.kind)),
        ))
    row_group = s((1, pqw._T_LIST, (pqw._T_STRUCT, chunks)), (2, pqw._T_I64, total), (3, pqw._T_I64, num_rows))
    pairs = sorted((metadata or {}).items())
    footer = s(
        (1, pqw._T_I32, 1), (2, pqw._T_LIST, (pqw._T_STRUCT, schema)), (3, pqw._T_I64, num_rows),
        (4, pqw._T_LIST, (pqw._T_STRUCT, [row_group] if num_rows else [])),
        (5, pqw._T_LIST, (pqw._T_STRUCT, [s((1, pqw._T_BINARY, k), (2, pqw._T_BINARY, v)) for k, v in pairs]) if pairs else None),
        (6, pqw._T_BINARY, "ommx-experiment"), (7, pqw._T_LIST, (pqw._T_STRUCT, [pqw._TYPE_DEFINED_ORDER] * len(columns))),
    )
    return bytes(out + footer + len(footer).to_bytes(4, "little") + b"PAR1")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tables(), st.dictionaries(st.text(max_size=5), st.text(max_size=300), max_size=3))
def test_laid_out_structs_equal_the_generic_encoder(case: tuple[rp.ParameterTable, list[int]], metadata: dict[str, str]) -> None:
    from ommx_experiment.format.parquet import INT64, Column, write_parquet

    table, run_ids = case
    index = rp.frame_index(table, run_ids)
    columns = [Column("run_id", INT64, index, required=True), *rp.encode_param_columns(table, index)]
    assert write_parquet(columns, len(index), metadata) == _reference_parquet(columns, len(index), metadata)


def test_short_columns_are_memoised_by_value_but_never_doubles() -> None:
    from ommx_experiment.format.parquet import FLOAT64, INT64, STRING, Column, encode_column

    first = encode_column(Column("status", STRING, ["finished"]))
    assert encode_column(Column("status", STRING, ["finished"])) is first
    assert encode_column(Column("status", STRING, ["failed"])).page != first.page
    assert encode_column(Column("n", INT64, [True])) == encode_column(Column("n", INT64, [1]))
    assert encode_column(Column("z", FLOAT64, [0.0])).page != encode_column(Column("z", FLOAT64, [-0.0])).page
