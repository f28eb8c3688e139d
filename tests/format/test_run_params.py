from __future__ import annotations

import math
import pathlib

import msgpack
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ommx_experiment.engine.digest import sha256_digest
from ommx_experiment.errors import (
    InvalidArgumentTypeError,
    InvalidArtifactError,
    OmmxExperimentError,
    ParameterOverflowError,
)
from ommx_experiment.format import run_params as rp

EMPTY = bytes.fromhex("81a7636f6c756d6e7380")
EMPTY_DIGEST = "sha256:a4594697ba8cb4d644259a9b5ff119d08547a9a3f10e7dc268e9e84d6d2bb5d7"
SEED_1 = bytes.fromhex("81a7636f6c756d6e7381a47365656482a474797065a5696e743634a676616c756573810001")
# Written by ommx 3.0.0b7 for run 0 {b: True, i: 3, f: nan, s: "é"}, run 1 {i: 2.5, z: 1}, run 2 {}.
OMMX_B7 = bytes.fromhex(
    "81a7636f6c756d6e7385a16282a474797065a4626f6f6ca676616c7565738100c3a16682a474797065a7666c6f61743634a676616c7565"
    "738100cb7ff8000000000000a16982a474797065a7666c6f61743634a676616c7565738200cb400800000000000001cb40040000000000"
    "00a17382a474797065a6737472696e67a676616c7565738100a2c3a9a17a82a474797065a5696e743634a676616c756573810101"
)
OMMX_B7_PARAMS: dict[int, dict[str, rp.ParamValue]] = {
    0: {"b": True, "i": 3, "f": float("nan"), "s": "é"},
    1: {"i": 2.5, "z": 1},
}


def p(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def mp_map(*pairs: tuple[bytes, bytes]) -> bytes:
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


def column(type_: bytes = p("int64"), values: bytes | None = None) -> bytes:
    return mp_map((p("type"), type_), (p("values"), mp_map((p(0), p(1))) if values is None else values))


def layer(*columns: tuple[bytes, bytes]) -> bytes:
    return mp_map((p("columns"), mp_map(*columns)))


# --- encoding ------------------------------------------------------------------------------------


def test_verified_empty_table() -> None:
    assert rp.encode_msgpack({}, []) == EMPTY
    assert rp.encode_msgpack({}, [0, 1, 2]) == EMPTY
    assert sha256_digest(EMPTY) == EMPTY_DIGEST


def test_verified_seed_example() -> None:
    assert rp.encode_msgpack({0: {"seed": 1}}, [0]) == SEED_1


def test_ommx_b7_bytes() -> None:
    assert rp.encode_msgpack(OMMX_B7_PARAMS, [0, 1, 2]) == OMMX_B7
    table = rp.decode_msgpack(OMMX_B7, [0, 1, 2])
    assert rp.table_to_msgpack(table) == OMMX_B7


def test_int_then_float_promotes_whole_column() -> None:
    table = rp.build_table({0: {"x": 1}, 1: {"x": 2.5}, 2: {"x": 3}}, [2, 0, 1])
    assert table.columns[0].type == rp.FLOAT64
    assert dict(table.columns[0].values) == {0: 1.0, 1: 2.5, 2: 3.0}
    assert all(isinstance(v, float) for v in table.columns[0].values.values())


@pytest.mark.parametrize(
    ("first", "second", "existing", "incoming"),
    [(1, "a", "int64", "string"), (True, 1, "bool", "int64"), (1.5, False, "float64", "bool"), ("a", 1.0, "string", "float64")],
)
def test_mixed_types_error(first: object, second: object, existing: str, incoming: str) -> None:
    # runs are visited by ascending id even if the mapping lists them in another order
    params = {5: {"name": second}, 2: {"name": first}}
    with pytest.raises(rp.MixedParameterTypesError) as info:
        rp.encode_msgpack(params, [5, 2])  # type: ignore[arg-type]
    message = f"Run parameter `name` has mixed column types: existing {existing}, incoming {incoming}"
    assert str(info.value) == message
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, OmmxExperimentError)
    with pytest.raises(ValueError, match=f"^Run parameter has mixed column types: existing {existing}, incoming {incoming}$"):
        rp.params_to_dataframe(params, [2, 5])  # type: ignore[arg-type]


def test_only_given_runs_are_encoded() -> None:
    assert rp.encode_msgpack({0: {"seed": 1}, 1: {"seed": "open run"}}, [0]) == SEED_1


def test_value_kinds() -> None:
    import enum

    class Colour(str, enum.Enum):
        RED = "red"

    table = rp.build_table({0: {"n": np.float64(1.5), "c": Colour.RED, "e": enum.IntEnum("E", "A").A}}, [0])  # type: ignore[attr-defined]
    values = {c.name: (c.type, c.values[0]) for c in table.columns}
    assert values == {"c": ("string", "red"), "e": ("int64", 1), "n": ("float64", 1.5)}
    assert type(values["c"][1]) is str and type(values["n"][1]) is float


@pytest.mark.parametrize("value", [None, np.int64(1), np.bool_(True), [1], b"x"])
def test_unsupported_values(value: object) -> None:
    with pytest.raises(InvalidArgumentTypeError, match="must be bool, int, float, or str") as info:
        rp.build_table({0: {"x": value}}, [0])  # type: ignore[dict-item]
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1])
def test_int64_overflow(value: int) -> None:
    with pytest.raises(ParameterOverflowError, match="int64") as info:
        rp.build_table({0: {"x": value}}, [0])
    assert isinstance(info.value, OverflowError)


# --- strict decoding ------------------------------------------------------------------------------------


def test_decoder_accepts_any_key_order_and_non_minimal_encodings() -> None:
    values = mp_map((b"\xcf" + (3).to_bytes(8, "big"), b"\xd3" + (5).to_bytes(8, "big", signed=True)))
    col = mp_map((p("values"), values), (p("type"), p("int64")))
    data = b"\xde\x00\x01" + p("columns") + b"\xdf\x00\x00\x00\x01" + b"\xd9\x01x" + col
    table = rp.decode_msgpack(data, [3])
    assert table.columns == (rp.ParameterColumn("x", "int64", {3: 5}),)


def test_decoder_extremes() -> None:
    values = mp_map((p(0), p(-(2**63))), (p(1), p(2**63 - 1)))
    table = rp.decode_msgpack(layer((p(""), column(values=values))), [0, 1])
    assert dict(table.columns[0].values) == {0: -(2**63), 1: 2**63 - 1}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (p([]), "the top level must be a map"),
        (mp_map((p("columns"), mp_map()), (p("extra"), mp_map())), "exactly one key `columns`"),
        (mp_map((p("rows"), mp_map())), "exactly one key `columns`"),
        (mp_map((p("columns"), p([]))), "`columns` must be a map"),
        (layer((p("x"), column()), (p("x"), column())), "duplicate column `x`"),
        (layer((p("x"), mp_map((p("type"), p("int64"))))), "exactly the keys `type` and `values`"),
        (layer((p("x"), mp_map((p("type"), p("int64")), (p("type"), p("int64")), (p("values"), mp_map())))), "duplicate key 'type'"),
        (layer((p("x"), mp_map((p("type"), p("int64")), (p("values"), mp_map()), (p("note"), p("x"))))), "unexpected or duplicate key 'note'"),
        (layer((p("x"), column(type_=p("int32")))), "unknown column type 'int32'"),
        (layer((p("x"), column(type_=p(1)))), "type of `x` must be a string"),
        (layer((p("x"), column(values=mp_map((p(0), p(1)), (p(0), p(2)))))), "duplicate run id 0"),
        (layer((p("x"), column(p("float64"), mp_map((p(0), b"\xca\x3f\x80\x00\x00"))))), "float32 values are not allowed"),
        (layer((p("x"), column(p("float64"), mp_map((p(0), p(1)))))), "is int64, column type is float64"),
        (layer((p("x"), column(p("int64"), mp_map((p(0), p(1.0)))))), "is float64, column type is int64"),
        (layer((p("x"), column(p("int64"), mp_map((p(0), p(True)))))), "is bool, column type is int64"),
        (layer((p("x"), column(p("bool"), mp_map((p(0), p(1)))))), "is int64, column type is bool"),
        (layer((p("x"), column(p("string"), mp_map((p(0), p(b"bin")))))), "unsupported value type byte 0xc4"),
        (layer((p("x"), column(p("int64"), mp_map((p(0), b"\xcf" + (2**63).to_bytes(8, "big")))))), "does not fit in int64"),
        (layer((p("x"), column(p("int64"), mp_map((p(0), p(None)))))), "unsupported value type byte 0xc0"),
        (layer((p("x"), column(p("int64"), mp_map((p(0), p([1])))))), "unsupported value type byte 0x91"),
        (layer((p("x"), column(values=mp_map((p(-1), p(1)))))), "run id keys must be unsigned integers"),
        (layer((p("x"), column(values=mp_map((p("0"), p(1)))))), "run id keys must be unsigned integers"),
        (layer((p("x"), column(values=mp_map((p(9), p(1)))))), r"unknown run ids \[9\]"),
        (layer((b"\xa2\xff\xfe", column())), "not valid UTF-8"),
        (layer((b"\xc4\x01x", column())), "a column name must be a string"),
        (EMPTY + b"\x00", "1 trailing bytes"),
        (SEED_1[:-1], "unexpected end of data"),
        (b"", "unexpected end of data"),
        (mp_map((p("columns"), b"\xdf\xff\xff\xff\xff")), "unexpected end of data"),
    ],
)
def test_decoder_rejects(data: bytes, match: str) -> None:
    with pytest.raises(InvalidArtifactError, match=match) as info:
        rp.decode_msgpack(data, [0, 1])
    assert isinstance(info.value, RuntimeError)


# --- DataFrame -------------------------------------------------------------------------------------------------


def test_dataframe_matches_ommx_reference_shape() -> None:
    params = {0: {"solver": "highs", "time_limit": 10}, 1: {"solver": "scip", "presolve": True}}
    frame = rp.params_to_dataframe(params, [0, 1, 2])
    assert list(frame.columns) == ["solver", "time_limit", "presolve"]
    assert frame.index.name == "run_id" and frame.index.dtype == np.int64 and list(frame.index) == [0, 1, 2]
    assert [str(t) for t in frame.dtypes] == ["string", "Int64", "boolean"]
    assert frame.dtypes["solver"] == pd.StringDtype("python")
    assert frame.loc[1, "time_limit"] is pd.NA and frame.loc[0, "presolve"] is pd.NA
    assert frame.loc[2].isna().all()


def test_float_column_keeps_nan_distinct_from_missing() -> None:
    frame = rp.params_to_dataframe({0: {"x": float("nan")}, 1: {"x": float("inf")}, 2: {"x": -math.inf}}, [0, 1, 2, 3])
    column = frame["x"]
    assert str(column.dtype) == "Float64"
    assert math.isnan(column.array._data[0]) and not column.array._mask[0]
    assert column[1] == math.inf and column[2] == -math.inf
    assert column[3] is pd.NA


def test_no_parameters_gives_empty_columns() -> None:
    frame = rp.params_to_dataframe({}, [0, 1, 2])
    assert frame.shape == (3, 0)
    assert list(frame.index) == [0, 1, 2]
    assert rp.params_to_dataframe({}, []).shape == (0, 0)


def test_column_order_walks_runs_then_leftovers() -> None:
    table = rp.ParameterTable(
        (
            rp.ParameterColumn("z", "int64", {0: 1}),
            rp.ParameterColumn("a", "int64", {1: 1}),
            rp.ParameterColumn("m", "int64", {0: 1, 1: 2}),
            rp.ParameterColumn("empty", "bool", {}),
        )
    )
    assert rp.column_order(table, [0, 1]) == ["m", "z", "a", "empty"]
    frame = rp.table_to_dataframe(table, [0, 1])
    assert frame["empty"].isna().all() and str(frame["empty"].dtype) == "boolean"


# --- Parquet -------------------------------------------------------------------------------------------------


def test_parquet_round_trip_and_determinism(tmp_path: pathlib.Path) -> None:
    table = rp.build_table(OMMX_B7_PARAMS, [0, 1, 2])
    data = rp.encode_parquet(table, [0, 1, 2])
    assert data == rp.encode_parquet(rp.decode_msgpack(OMMX_B7, [0, 1, 2]), [0, 1, 2])
    assert data[:4] == b"PAR1"
    expected = rp.table_to_dataframe(table, [0, 1, 2])
    pd.testing.assert_frame_equal(rp.decode_parquet(data), expected)
    path = tmp_path / "params.parquet"
    path.write_bytes(data)
    pd.testing.assert_frame_equal(rp.decode_parquet(path), expected)
    plain = pd.read_parquet(path)  # readable by ordinary tools; run_id is the first column
    assert list(plain.columns) == ["run_id", "b", "f", "i", "s", "z"]


def test_parquet_run_id_parameter_name_does_not_collide() -> None:
    table = rp.build_table({0: {"run_id": "x", "_run_id": 1}, 1: {"": 2.0}}, [0, 1])
    data = rp.encode_parquet(table, [0, 1])
    frame = rp.decode_parquet(data)
    assert list(frame.columns) == ["_run_id", "run_id", ""]
    pd.testing.assert_frame_equal(frame, rp.table_to_dataframe(table, [0, 1]))
    assert pd.read_parquet(__import__("io").BytesIO(data)).columns[0] == "__run_id"


def test_parquet_without_parameters_keeps_rows() -> None:
    frame = rp.decode_parquet(rp.encode_parquet(rp.ParameterTable(), [0, 4]))
    assert frame.shape == (2, 0) and list(frame.index) == [0, 4]


def test_a_parquet_file_of_another_producer_is_read_through_pyarrow() -> None:
    """Dictionary pages, a timestamp type and several row groups: not our writer's layout."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = rp.build_table({0: {"x": 1, "s": "a"}, 1: {"x": 2, "s": "a"}, 2: {"s": "é"}}, [0, 1, 2])
    expected = rp.table_to_dataframe(table, [0, 1, 2])
    arrow = pa.table({"run_id": [0, 1, 2], "s": ["a", "a", "é"], "x": pa.array([1, 2, None], pa.int64())})
    out = io.BytesIO()
    pq.write_table(arrow, out, use_dictionary=True, row_group_size=2)
    pd.testing.assert_frame_equal(rp.decode_parquet(out.getvalue()), expected)
    stamped = arrow.append_column("t", pa.array([0, 1, 2], pa.timestamp("ms")))
    out = io.BytesIO()
    pq.write_table(stamped, out)
    with pytest.raises(InvalidArtifactError, match="column `t` has unsupported type timestamp"):
        rp.decode_parquet(out.getvalue())


def test_loading_a_committed_experiments_parameters_does_not_import_pyarrow_parquet(tmp_path: pathlib.Path) -> None:
    """Our layer is read by our reader (pandas itself imports pyarrow's core when it is installed)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ommx_experiment import Experiment, AutosavePolicy\n"
        "e = Experiment('example.com/df/nopa:v1')\n"
        "e.set_autosave_policy(AutosavePolicy.disabled())\n"
        "for i in range(50):\n"
        "    with e.run() as run:\n"
        "        run.log_parameter('i', i)\n"
        "        run.log_parameter('f', float('nan') if i == 3 else i / 2)\n"
        "        if i % 2:\n            run.log_parameter('s', 'é%d' % i)\n"
        "e.commit()\n"
        "assert 'pyarrow.parquet' not in sys.modules, 'the commit imported pyarrow.parquet'\n"
    )
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(tmp_path / "registry"))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    read = (
        "import sys, json\n"
        "from ommx_experiment import Experiment\n"
        "df = Experiment.load('example.com/df/nopa:v1').run_parameters_df()\n"
        "print(json.dumps(['pyarrow.parquet' in sys.modules, [str(t) for t in df.dtypes], df.shape,\n"
        "                  str(df.loc[3, 'f']), str(df.loc[2, 's'])]))\n"
    )
    done = subprocess.run([sys.executable, "-c", read], env=env, check=True, timeout=120, capture_output=True, text=True)
    imported, dtypes, shape, nan, missing = __import__("json").loads(done.stdout)
    assert not imported
    assert sorted(dtypes) == ["Float64", "Int64", "string"] and shape == [50, 3]
    assert (nan, missing) == ("nan", "<NA>")  # a logged NaN stays a value; a parameter not logged is NA


@pytest.mark.parametrize("data", [b"", b"PAR1garbage", b"not parquet at all"])
def test_decode_parquet_rejects_garbage(data: bytes) -> None:
    with pytest.raises(InvalidArtifactError, match="Invalid Parquet run-parameter layer"):
        rp.decode_parquet(data)


def test_large_table_round_trips() -> None:
    runs = range(10_000)
    params = {r: {f"p{j}": (r * j if j % 2 else r * 0.5) for j in range(10) if (r + j) % 7} for r in runs}
    table = rp.build_table(params, runs)
    data = rp.table_to_msgpack(table)
    decoded = rp.decode_msgpack(data, runs)
    assert rp.table_to_msgpack(decoded) == data
    frame = rp.decode_parquet(rp.encode_parquet(decoded, runs))
    pd.testing.assert_frame_equal(frame, rp.table_to_dataframe(decoded, runs))
    assert frame.shape == (10_000, 10)


_names = st.sampled_from(["", "a", "b", "run_id", "é", "名前", "x y", "\x00"])
_values = {
    "bool": st.booleans(),
    "int64": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "float64": st.floats(allow_nan=True, allow_infinity=True),
    "string": st.text(max_size=5),
    "number": st.integers(min_value=-(2**53), max_value=2**53) | st.floats(),
}


@st.composite
def parameter_sets(draw: st.DrawFn) -> tuple[dict[int, dict[str, rp.ParamValue]], list[int]]:
    kinds = draw(st.dictionaries(_names, st.sampled_from(sorted(_values)), max_size=5))
    run_ids = draw(st.lists(st.integers(min_value=0, max_value=2**20), unique=True, max_size=8))
    params = {}
    for run_id in run_ids:
        names = draw(st.lists(st.sampled_from(sorted(kinds)), unique=True)) if kinds else []
        params[run_id] = {name: draw(_values[kinds[name]]) for name in names}
    return params, run_ids


@settings(max_examples=150, deadline=None)
@given(parameter_sets())
def test_msgpack_and_parquet_paths_agree(case: tuple[dict[int, dict[str, rp.ParamValue]], list[int]]) -> None:
    params, run_ids = case
    table = rp.build_table(params, run_ids)
    data = rp.table_to_msgpack(table)
    decoded = rp.decode_msgpack(data, run_ids)
    assert rp.table_to_msgpack(decoded) == data
    expected = rp.params_to_dataframe(params, run_ids)
    pd.testing.assert_frame_equal(rp.table_to_dataframe(decoded, run_ids), expected)
    parquet = rp.encode_parquet(decoded, run_ids)
    assert parquet == rp.encode_parquet(table, run_ids)
    pd.testing.assert_frame_equal(rp.decode_parquet(parquet), expected)  # our reader, no pyarrow
    pd.testing.assert_frame_equal(rp._decode_parquet_arrow(parquet), expected)  # the fallback reads the same
    assert list(expected.index) == sorted(run_ids)


@settings(max_examples=300, deadline=None)
@given(parameter_sets(), st.data())
def test_fast_decoder_never_accepts_what_the_strict_reader_rejects(
    case: tuple[dict[int, dict[str, rp.ParamValue]], list[int]], data: st.DataObject
) -> None:
    """The C-decoder fast path either declines (None) or returns exactly what the strict reader
    returns, on valid layers and on layers with bytes flipped, cut or appended."""
    params, run_ids = case
    layer_bytes = bytearray(rp.table_to_msgpack(rp.build_table(params, run_ids)))
    mutation = data.draw(st.sampled_from(["none", "flip", "cut", "append"]))
    if mutation == "flip" and layer_bytes:
        i = data.draw(st.integers(0, len(layer_bytes) - 1))
        layer_bytes[i] = data.draw(st.integers(0, 255))
    elif mutation == "cut":
        del layer_bytes[data.draw(st.integers(0, len(layer_bytes))) :]
    elif mutation == "append":
        layer_bytes += data.draw(st.binary(min_size=1, max_size=3))
    raw = bytes(layer_bytes)
    fast = rp._decode_canonical(raw)
    try:
        strict = rp._decode_strict(raw)
    except InvalidArtifactError:
        assert fast is None
        return
    same = lambda a, b: rp.table_to_msgpack(a) == rp.table_to_msgpack(b)  # noqa: E731 - NaN-safe equality
    assert fast is None or same(fast, strict)
    if mutation == "none":
        assert fast is not None and same(fast, strict)  # what we and OMMX write takes the fast path


@st.composite
def uniform_parameter_sets(draw: st.DrawFn) -> tuple[dict[int, dict[str, rp.ParamValue]], list[int]]:
    """Every run with parameters has the same names (in any order); some runs have none."""
    kinds = draw(st.dictionaries(_names, st.sampled_from(sorted(_values)), min_size=1, max_size=5))
    run_ids = draw(st.lists(st.integers(min_value=0, max_value=2**20), unique=True, min_size=1, max_size=8))
    params: dict[int, dict[str, rp.ParamValue]] = {}
    for run_id in run_ids:
        if draw(st.booleans()) and draw(st.booleans()):
            params[run_id] = {}
            continue
        names = draw(st.permutations(sorted(kinds)))
        params[run_id] = {name: draw(_values[kinds[name]]) for name in names}
    return params, run_ids


@st.composite
def mostly_uniform_parameter_sets(draw: st.DrawFn) -> tuple[dict[int, dict[str, rp.ParamValue]], list[int]]:
    """A uniform set where a few runs (one in eight at most, anywhere) have other names or kinds."""
    params, run_ids = draw(uniform_parameter_sets())
    odd = draw(st.lists(st.sampled_from(run_ids), unique=True, max_size=max(1, len(run_ids) // 8)))
    for run_id in odd:
        params[run_id] = draw(st.dictionaries(_names, st.one_of(*_values.values()), min_size=1, max_size=3))
    return params, run_ids


@settings(max_examples=150, deadline=None)
@given(st.one_of(uniform_parameter_sets(), mostly_uniform_parameter_sets(), parameter_sets()))
def test_the_uniform_fast_path_builds_the_general_paths_table(
    case: tuple[dict[int, dict[str, rp.ParamValue]], list[int]],
) -> None:
    params, run_ids = case
    ids = sorted(run_ids)
    fast = rp._uniform_table(params, ids)
    try:
        general = _general_table(params, run_ids)
    except rp.MixedParameterTypesError:
        assert fast is None  # a mix is never taken by the fast path
        return
    if fast is not None:
        assert fast == general
        assert rp.table_to_msgpack(fast) == rp.table_to_msgpack(general)
    assert rp.build_table(params, run_ids) == general


def _general_table(params: dict[int, dict[str, rp.ParamValue]], run_ids: list[int]) -> rp.ParameterTable:
    original = rp._uniform_table
    rp._uniform_table = lambda *_: None  # type: ignore[assignment]
    try:
        return rp.build_table(params, run_ids)
    finally:
        rp._uniform_table = original


def test_the_uniform_fast_path_takes_permuted_names_and_skips_runs_without_parameters() -> None:
    params: dict[int, dict[str, rp.ParamValue]] = {1: {"a": 1, "b": "x"}, 2: {}, 3: {"b": "y", "a": 2}}
    fast = rp._uniform_table(params, [1, 2, 3, 4])
    assert fast is not None
    assert {c.name: (c.type, dict(c.values)) for c in fast.columns} == {
        "a": (rp.INT64, {1: 1, 3: 2}),
        "b": (rp.STRING, {1: "x", 3: "y"}),
    }
    assert rp._uniform_table({1: {"a": 1}, 2: {"b": 1}}, [1, 2]) is None  # other names
    assert rp._uniform_table({1: {"a": 1}, 2: {"a": 1.5}}, [1, 2]) is None  # a promotion: the general path


def test_the_uniform_fast_path_takes_a_few_runs_with_other_names() -> None:
    """A fork's new run logging one of the parent's ten parameters: the table is still gathered by column."""
    params: dict[int, dict[str, rp.ParamValue]] = {i: {"a": i, "b": float(i), "c": "x"} for i in range(16)}
    params[3] = {"a": -1}
    params[16] = {"a": -2, "d": True}
    fast = rp._uniform_table(params, list(range(17)))
    assert fast is not None
    assert fast == _general_table(params, list(range(17)))
    assert rp.table_to_msgpack(fast) == rp.table_to_msgpack(_general_table(params, list(range(17))))
    assert list(fast.columns[0].values) == list(range(17))  # ascending run ids, the odd run in its place
    params[5] = {"z": 1}
    params[6] = {"z": 2}
    assert rp._uniform_table(params, list(range(17))) is None  # more than one run in eight: the general path
