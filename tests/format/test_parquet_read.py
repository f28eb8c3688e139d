"""Our Parquet reader (``format.parquet_read``) against our writer and against pyarrow.

Properties: every file our writer produces reads back to the values written (nulls, NaN,
-0.0, int64 extremes, unicode, 0/1/7/8/9/300 rows at the bit-packing boundaries); a file of
another producer (pyarrow: dictionary pages, snappy, several row groups) and damaged bytes
raise ``UnsupportedParquetError`` (a ValueError) or read the same values, never wrong ones.
"""

from __future__ import annotations

import io
import math
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ommx_experiment.format import parquet as pw
from ommx_experiment.format.parquet_read import UnsupportedParquetError, column_names, read_columns

_I64 = st.integers(-(2**63), 2**63 - 1)
_VALUES: dict[str, st.SearchStrategy[Any]] = {
    pw.BOOL: st.booleans(),
    pw.INT64: _I64,
    pw.TIMESTAMP: st.integers(0, 2**62),
    pw.FLOAT64: st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-0.0, 5e-324]),
    pw.STRING: st.text(max_size=8) | st.sampled_from(["", "\x00", "名前", "🙂"]),
}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return type(a) is type(b) and a == b


@st.composite
def files(draw: st.DrawFn) -> tuple[list[pw.Column], int]:
    n = draw(st.sampled_from([0, 1, 7, 8, 9, 300]) | st.integers(0, 40))
    columns = []
    for k, kind in enumerate(draw(st.lists(st.sampled_from(pw.KINDS), min_size=1, max_size=6))):
        required = draw(st.booleans())
        density = 1.0 if required else draw(st.sampled_from([0.0, 0.5, 1.0]))
        values = [draw(_VALUES[kind]) if draw(st.floats(0, 1)) < density or density == 1.0 else None for _ in range(n)]
        if density == 0.0:
            values = [None] * n
        columns.append(pw.Column(f"c{k}-{kind}", kind, values, required))
    return columns, n


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(files())
def test_reads_back_what_our_writer_wrote(case: tuple[list[pw.Column], int]) -> None:
    columns, n = case
    data = pw.write_parquet(columns, n)
    assert column_names(data) == [c.name for c in columns]
    got = read_columns(data, [c.name for c in columns])
    for column in columns:
        assert len(got[column.name]) == n
        assert all(_same(a, b) or (a is None and b is None) for a, b in zip(got[column.name], column.values, strict=True)), column


def _pyarrow_file(**options: Any) -> tuple[bytes, pa.Table]:
    table = pa.table({
        "id": pa.array(range(50), pa.int64()),
        "t": pa.array([None if i % 3 else i * 1000 for i in range(50)], pa.int64()),
        "s": pa.array(["a", "b"] * 25),
    })
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue(), table


@pytest.mark.parametrize(
    "options",
    [{}, {"compression": "snappy"}, {"use_dictionary": False, "compression": "zstd", "row_group_size": 10},
     {"use_dictionary": False, "compression": "none", "data_page_version": "2.0"}],
    ids=["default", "snappy", "row-groups", "v2-pages"],
)
def test_a_file_of_another_producer_is_refused_or_read_right(options: dict[str, Any]) -> None:
    data, table = _pyarrow_file(**options)
    try:
        got = read_columns(data, ["id", "t", "s"])
    except UnsupportedParquetError:
        return
    assert got == {name: table.column(name).to_pylist() for name in ("id", "t", "s")}


@pytest.mark.parametrize("cut", [0, 4, 11, 20, -9, -5, -1])
def test_damaged_bytes_are_refused(cut: int) -> None:
    data = pw.write_parquet([pw.Column("id", pw.INT64, list(range(20)), True)], 20)
    damaged = data[:cut] if cut > 0 else data[:cut] if cut < 0 else b""
    with pytest.raises(UnsupportedParquetError):
        read_columns(damaged, ["id"])
    flipped = bytearray(data)
    flipped[len(flipped) - 9] ^= 0xFF  # the footer's last byte
    with pytest.raises(ValueError):
        read_columns(bytes(flipped), ["id"])


def test_an_unknown_column_is_refused() -> None:
    data = pw.write_parquet([pw.Column("id", pw.INT64, [1], True)], 1)
    with pytest.raises(UnsupportedParquetError):
        read_columns(data, ["nope"])
