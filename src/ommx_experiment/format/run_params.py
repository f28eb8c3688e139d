"""The run-parameter table: OMMX's MessagePack layer (§2.5), our Parquet layer, pandas frames.

A *table* is the typed, promoted form of the per-run parameters: one
:class:`ParameterColumn` per name (sorted by name), each with one type out of
``bool``/``int64``/``float64``/``string`` and a ``run_id -> value`` map sorted by
run id. :func:`build_table` derives it from raw ``run_id -> {name: value}``
parameters with OMMX's promotion rules (§1.8).

Three encodings of the same table:

* MessagePack (``application/org.ommx.v1.experiment.run-parameters+msgpack``):
  byte-identical to OMMX; :func:`decode_msgpack` is as strict as OMMX's reader.
* Parquet (our extra layer): column 0 is the run id (int64, named ``run_id``
  unless a parameter already has that name, then underscores are prepended),
  then one nullable column per parameter in DataFrame column order; one row
  per run. Written by our small writer (:mod:`~ommx_experiment.format.parquet`, no pyarrow),
  read back without pyarrow when the file has our writer's layout (:mod:`~ommx_experiment.format.parquet_read`),
  else with pyarrow; bytes are deterministic for a given table and libzstd.
* pandas: :func:`table_to_dataframe` gives exactly OMMX's ``run_parameters_df()``.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..engine.oci import EMPTY_MAP, FrozenMap
from ..errors import InvalidArtifactError, InvalidInputError, OmmxExperimentError

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Collection, Iterable, Sequence

    import pandas as pd

    from .parquet import EncodedColumn

ParamValue = bool | int | float | str

BOOL = "bool"
INT64 = "int64"
FLOAT64 = "float64"
STRING = "string"
COLUMN_TYPES = (BOOL, INT64, FLOAT64, STRING)

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_U64_MAX = 2**64 - 1
RUN_ID_COLUMN = "run_id"


class MixedParameterTypesError(OmmxExperimentError, RuntimeError):
    """A parameter has incompatible types across runs (OMMX: RuntimeError at commit)."""

    def __init__(self, name: str, existing: str, incoming: str) -> None:
        super().__init__(f"Run parameter `{name}` has mixed column types: existing {existing}, incoming {incoming}")
        self.name = name
        self.existing = existing
        self.incoming = incoming


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParameterColumn:
    """One parameter: its name, its column type and ``run_id -> value`` sorted by run id."""

    name: str
    type: str
    values: Mapping[int, ParamValue] = field(default=EMPTY_MAP)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", FrozenMap(dict(sorted(self.values.items()))))

    @classmethod
    def _presorted(cls, name: str, kind: str, values: dict[int, ParamValue]) -> ParameterColumn:
        """Trusted constructor for ``values`` already in ascending run-id order (skips the sort); takes
        ``values`` over (``FrozenMap.wrapping``, no copy): the caller built it and never changes it."""
        column = object.__new__(cls)
        object.__setattr__(column, "name", name)
        object.__setattr__(column, "type", kind)
        object.__setattr__(column, "values", FrozenMap.wrapping(values))
        return column


@dataclass(frozen=True, slots=True)
class ParameterTable:
    """All parameters of an experiment, columns sorted by name (code point = byte order)."""

    columns: tuple[ParameterColumn, ...] = ()
    _run_ids: frozenset[int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(sorted(self.columns, key=lambda c: c.name)))

    def run_ids(self) -> frozenset[int]:
        """Every run id that has at least one value (computed once: a commit asks three times)."""
        if self._run_ids is None:
            object.__setattr__(self, "_run_ids", frozenset().union(*(_as_dict(column.values) for column in self.columns)))
        assert self._run_ids is not None
        return self._run_ids


def value_type(value: object) -> str:
    """Column type of one parameter value (§1.8 order: bool, int, float, str).

    Raises ``InvalidArgumentTypeError``-compatible ``TypeError`` for other kinds and
    ``ParameterOverflowError`` for ints outside int64 (OMMX's messages).
    """
    from ..errors import InvalidArgumentTypeError, ParameterOverflowError

    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        if not _I64_MIN <= value <= _I64_MAX:
            raise ParameterOverflowError("Run parameter int value must fit in int64")
        return INT64
    if isinstance(value, float):
        return FLOAT64
    if isinstance(value, str):
        return STRING
    raise InvalidArgumentTypeError("argument 'value': Run parameter value must be bool, int, float, or str")


_EXACT_KIND: dict[type, str] = {bool: BOOL, int: INT64, float: FLOAT64, str: STRING}


# Subclasses (numpy.float64, IntEnum, str subclasses) are stored as their builtin value.
_CONVERT: dict[str, Callable[[Any], ParamValue]] = {BOOL: bool, INT64: int, FLOAT64: float, STRING: str.__str__}


def normalise_param(value: object) -> ParamValue:
    """``value`` as the builtin bool/int/float/str it is stored as; :func:`value_type`'s errors.

    numpy scalars (``np.int64``, ``np.float32``, ``np.bool_``, ``np.str_``, …) are
    taken as their Python values (``.item()``): a superset of what OMMX accepts.
    """
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    return _CONVERT[value_type(value)](value)


def build_table(params: Mapping[int, Mapping[str, ParamValue]], run_ids: Iterable[int]) -> ParameterTable:
    """Promote raw per-run parameters into a typed table (§1.8).

    Only runs in ``run_ids`` (the closed runs) are included. Runs are visited by
    ascending id; the first value fixes a column's type; int then float turns the
    whole column into float64, float then int casts the int; any other mix raises
    :class:`MixedParameterTypesError`.
    """
    ids = sorted(set(run_ids))
    fast = _uniform_table(params, ids)
    if fast is not None:
        return fast
    types: dict[str, str] = {}
    values: dict[str, dict[int, ParamValue]] = {}
    exact = _EXACT_KIND
    for run_id in ids:
        row = params.get(run_id)
        if not row:
            continue
        for name, raw in row.items():
            kind = exact.get(type(raw))  # builtin values (what Run.log_parameter stores): no conversion
            if kind is None or (kind is INT64 and not _I64_MIN <= raw <= _I64_MAX):  # type: ignore[operator]
                kind = value_type(raw)
                value = _CONVERT[kind](raw)
            else:
                value = raw
            column = values.get(name)
            if column is None:
                types[name] = kind
                column = values[name] = {}
            elif types[name] != kind:
                kind, value = _promote(name, types[name], kind, value, column)
                types[name] = kind
            column[run_id] = value
    # values were filled in ascending run-id order
    return ParameterTable(tuple(ParameterColumn._presorted(name, types[name], values[name]) for name in types))


def _uniform_table(params: Mapping[int, Mapping[str, ParamValue]], ids: list[int]) -> ParameterTable | None:
    """:func:`build_table` when the runs with parameters (nearly) all have the same names and each
    column one builtin type: columns are gathered at C speed (``map``/``itemgetter``). Runs whose
    names differ from the first run's (at most one in eight, e.g. one run of a fork) are added cell
    by cell. None otherwise (the general path decides, promotions and errors included)."""
    rows: list[Any] = list(map(params.get, ids))
    row_ids = ids
    if None in rows or {} in rows:  # runs without parameters have no row
        kept = [(run_id, row) for run_id, row in zip(ids, rows, strict=True) if row]
        row_ids = [run_id for run_id, _ in kept]
        rows = [row for _, row in kept]
    if not rows:
        return ParameterTable()
    names = tuple(rows[0])
    if set(map(len, rows)) == {len(names)}:
        try:  # every row has len(names) names and each of these: the same names
            gathered = [tuple(map(operator.itemgetter(name), rows)) for name in names]
        except KeyError:
            pass
        else:
            return dense_table(row_ids, names, gathered)
    return _mostly_uniform_table(row_ids, rows)


def _mostly_uniform_table(row_ids: list[int], rows: list[Any]) -> ParameterTable | None:
    """The table of ``rows`` (non-empty dicts, ascending ``row_ids``) when at most one in eight has
    other names than the first: the others' columns are gathered at C speed. None otherwise."""
    keys = rows[0].keys()
    odd = [i for i, row in enumerate(rows) if row.keys() != keys]
    if len(odd) * 8 > len(rows):
        return None
    skip = set(odd)
    same = [i for i in range(len(rows)) if i not in skip]
    same_rows = [rows[i] for i in same]
    same_ids = [row_ids[i] for i in same]
    columns = {name: dict(zip(same_ids, map(operator.itemgetter(name), same_rows), strict=True)) for name in keys}
    touched: set[str] = set()
    for i in odd:
        for name, value in rows[i].items():
            columns.setdefault(name, {})[row_ids[i]] = value
            touched.add(name)
    if odd and row_ids[odd[0]] < same_ids[-1]:  # an odd run before others: its cells are out of order
        for name in touched:
            columns[name] = dict(sorted(columns[name].items()))
    built = []
    for name, cells in columns.items():
        kind = _single_kind(cells.values())
        if kind is None:
            return None
        built.append(ParameterColumn._presorted(name, kind, cells))
    return ParameterTable(tuple(built))


def _single_kind(cells: Collection[Any]) -> str | None:
    """The column type of ``cells`` when they all have one builtin type (ints in int64), else None."""
    kinds = set(map(type, cells))
    kind = _EXACT_KIND.get(kinds.pop()) if len(kinds) == 1 else None
    if kind is INT64 and not (min(cells) >= _I64_MIN and max(cells) <= _I64_MAX):
        return None
    return kind


def dense_table(ids: list[int], names: Sequence[str], columns: Sequence[Sequence[Any]]) -> ParameterTable | None:
    """The table where every run of ``ids`` (ascending, distinct) has every name: ``columns[i]`` holds
    the cells of ``names[i]`` in ``ids`` order. None unless each column has one builtin type (ints in int64)."""
    built = []
    for name, cells in zip(names, columns, strict=True):
        kind = _single_kind(cells)
        if kind is None:
            return None
        built.append(ParameterColumn._presorted(name, kind, dict(zip(ids, cells, strict=True))))
    table = ParameterTable(tuple(built))
    object.__setattr__(table, "_run_ids", frozenset(ids))  # every column has every row: no union needed
    return table


def _promote(
    name: str, existing: str, incoming: str, value: ParamValue, column: dict[int, ParamValue]
) -> tuple[str, ParamValue]:
    if existing == INT64 and incoming == FLOAT64:
        for run_id, old in column.items():
            column[run_id] = float(old)
        return FLOAT64, value
    if existing == FLOAT64 and incoming == INT64:
        return FLOAT64, float(value)
    raise MixedParameterTypesError(name, existing, incoming)


# --- MessagePack ----------------------------------------------------------------------------------


def table_to_msgpack(table: ParameterTable) -> bytes:
    """OMMX's exact run-parameter layer bytes for ``table``."""
    import msgpack

    columns = {c.name: {"type": c.type, "values": _as_dict(c.values)} for c in table.columns}
    return msgpack.packb({"columns": columns}, use_bin_type=True)


def _as_dict(values: Mapping[int, ParamValue]) -> dict[int, ParamValue]:
    """``values`` as a dict for a read-only pass: a column's own dict, not a copy (never mutate it)."""
    return values.shared_dict() if isinstance(values, FrozenMap) else dict(values)


def encode_msgpack(params: Mapping[int, Mapping[str, ParamValue]], run_ids: Iterable[int]) -> bytes:
    """``table_to_msgpack(build_table(params, run_ids))``; raises ``MixedParameterTypesError``."""
    return table_to_msgpack(build_table(params, run_ids))


class _Reader:
    """A strict reader for the msgpack subset the run-parameter layer may contain."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, message: str) -> InvalidArtifactError:
        return InvalidArtifactError(f"Invalid run-parameter layer at byte {self.pos}: {message}")

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise self.fail("unexpected end of data")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def map_len(self, what: str) -> int:
        tag = self.byte()
        if 0x80 <= tag <= 0x8F:
            return tag & 0x0F
        if tag in (0xDE, 0xDF):
            return self.uint(2 if tag == 0xDE else 4)
        self.pos -= 1
        raise self.fail(f"{what} must be a map, found type byte 0x{tag:02x}")

    def str_body(self, tag: int) -> str | None:
        if 0xA0 <= tag <= 0xBF:
            size = tag & 0x1F
        elif tag in (0xD9, 0xDA, 0xDB):
            size = self.uint({0xD9: 1, 0xDA: 2, 0xDB: 4}[tag])
        else:
            return None
        raw = self.take(size)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail("string is not valid UTF-8") from exc

    def string(self, what: str) -> str:
        tag = self.byte()
        text = self.str_body(tag)
        if text is None:
            self.pos -= 1
            raise self.fail(f"{what} must be a string, found type byte 0x{tag:02x}")
        return text

    def int_body(self, tag: int) -> int | None:
        if tag <= 0x7F:
            return tag
        if tag >= 0xE0:
            return tag - 0x100
        if 0xCC <= tag <= 0xCF:
            return self.uint(1 << (tag - 0xCC))
        if 0xD0 <= tag <= 0xD3:
            return int.from_bytes(self.take(1 << (tag - 0xD0)), "big", signed=True)
        return None

    def run_id(self) -> int:
        tag = self.byte()
        value = self.int_body(tag)
        if value is None or not 0 <= value <= _U64_MAX:
            self.pos -= 1
            raise self.fail("run id keys must be unsigned integers")
        return value

    def scalar(self) -> tuple[str, ParamValue]:
        tag = self.byte()
        if tag in (0xC2, 0xC3):
            return BOOL, tag == 0xC3
        if tag == 0xCB:
            return FLOAT64, struct.unpack(">d", self.take(8))[0]
        as_int = self.int_body(tag)
        if as_int is not None:
            return INT64, as_int
        text = self.str_body(tag)
        if text is not None:
            return STRING, text
        self.pos -= 1
        if tag == 0xCA:
            raise self.fail("float32 values are not allowed, only float64")
        raise self.fail(f"unsupported value type byte 0x{tag:02x}")


def _read_values(reader: _Reader, column: str) -> list[tuple[int, str, ParamValue]]:
    cells: list[tuple[int, str, ParamValue]] = []
    seen: set[int] = set()
    for _ in range(reader.map_len(f"values of `{column}`")):
        run_id = reader.run_id()
        if run_id in seen:
            raise reader.fail(f"duplicate run id {run_id} in `{column}`")
        seen.add(run_id)
        kind, value = reader.scalar()
        cells.append((run_id, kind, value))
    return cells


def _read_column(reader: _Reader, name: str) -> ParameterColumn:
    kind: str | None = None
    cells: list[tuple[int, str, ParamValue]] | None = None
    for _ in range(reader.map_len(f"column `{name}`")):
        key = reader.string(f"key of column `{name}`")
        if key == "type" and kind is None:
            kind = reader.string(f"type of `{name}`")
            if kind not in COLUMN_TYPES:
                raise reader.fail(f"unknown column type {kind!r} for `{name}`")
        elif key == "values" and cells is None:
            cells = _read_values(reader, name)
        else:
            raise reader.fail(f"unexpected or duplicate key {key!r} in column `{name}`")
    if kind is None or cells is None:
        raise reader.fail(f"column `{name}` must have exactly the keys `type` and `values`")
    return ParameterColumn(name, kind, _typed_values(reader, name, kind, cells))


def _typed_values(
    reader: _Reader, name: str, kind: str, cells: list[tuple[int, str, ParamValue]]
) -> dict[int, ParamValue]:
    values: dict[int, ParamValue] = {}
    for run_id, cell_kind, value in cells:
        if cell_kind != kind:
            raise reader.fail(f"value for run {run_id} in `{name}` is {cell_kind}, column type is {kind}")
        if kind == INT64 and not _I64_MIN <= value <= _I64_MAX:  # type: ignore[operator]
            raise reader.fail(f"value for run {run_id} in `{name}` does not fit in int64")
        values[run_id] = value
    return values


def decode_msgpack(data: bytes, valid_run_ids: Collection[int]) -> ParameterTable:
    """Strictly decode an OMMX run-parameter layer.

    Rejects (``InvalidArtifactError``): anything but ``{"columns": {name: {"type",
    "values"}}}``, unknown or duplicate keys, duplicate columns or run ids, unknown
    types, values not matching their column type (float32 included), ints outside
    int64, trailing bytes, and run ids not in ``valid_run_ids``.
    """
    table = _decode_canonical(data)
    if table is None:  # not in the canonical form OMMX and we write: the strict reader names the defect
        table = _decode_strict(data)
    valid = valid_run_ids if isinstance(valid_run_ids, (set, frozenset)) else set(valid_run_ids)
    unknown = set() if all(valid.issuperset(c.values) for c in table.columns) else table.run_ids() - valid
    if unknown:
        raise InvalidArtifactError(f"Run-parameter layer refers to unknown run ids {sorted(unknown)}")
    return table


_PY_TYPE: dict[str, type] = {BOOL: bool, INT64: int, FLOAT64: float, STRING: str}


def _decode_canonical(data: bytes) -> ParameterTable | None:
    """The fast path of :func:`decode_msgpack`: msgpack's C decoder, then plain type checks.

    Only a layer that re-encodes to exactly its own bytes is accepted here: that rules out
    what a decoded object can no longer show (duplicate keys, float32 values, non-minimal
    encodings, trailing bytes). Anything else returns None and goes to the strict reader,
    which accepts the same layers and names the first defect of the others.
    """
    import msgpack

    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # msgpack raises a zoo of types for corrupt input
        return None
    if type(obj) is not dict or len(obj) != 1 or type(obj.get("columns")) is not dict:
        return None
    columns = []
    for name, column in obj["columns"].items():
        if type(name) is not str or type(column) is not dict or len(column) != 2:
            return None
        kind, values = column.get("type"), column.get("values")
        if type(kind) is not str or kind not in _PY_TYPE or type(values) is not dict:
            return None
        if values:
            if not all(type(k) is int for k in values) or min(values) < 0 or max(values) > _U64_MAX:
                return None
            expected = _PY_TYPE[kind]
            if not all(type(v) is expected for v in values.values()):
                return None
            if kind == INT64 and (min(values.values()) < _I64_MIN or max(values.values()) > _I64_MAX):
                return None
        keys = list(values)
        presorted = keys == sorted(keys)  # as written: ascending run ids (timsort checks that in one pass)
        columns.append(ParameterColumn._presorted(name, kind, values) if presorted else ParameterColumn(name, kind, values))
    try:
        if msgpack.packb(obj, use_bin_type=True) != data:
            return None
    except Exception:
        return None
    return ParameterTable(tuple(columns))


def _decode_strict(data: bytes) -> ParameterTable:
    reader = _Reader(bytes(data))
    if reader.map_len("the top level") != 1 or reader.string("the top-level key") != "columns":
        raise reader.fail("the top level must be a map with exactly one key `columns`")
    columns: dict[str, ParameterColumn] = {}
    for _ in range(reader.map_len("`columns`")):
        name = reader.string("a column name")
        if name in columns:
            raise reader.fail(f"duplicate column `{name}`")
        columns[name] = _read_column(reader, name)
    if reader.pos != len(reader.data):
        raise reader.fail(f"{len(reader.data) - reader.pos} trailing bytes")
    return ParameterTable(tuple(columns.values()))


# --- pandas -------------------------------------------------------------------------------------------


def column_order(table: ParameterTable, run_ids: Iterable[int]) -> list[str]:
    """DataFrame column order (§1.4): walk runs ascending, add each run's names sorted; then leftovers.

    Computed as: columns with values sorted by (first run id, name), then the
    columns without any value by name. ``run_ids`` does not change the order.
    """
    del run_ids  # runs without parameters add no names
    first: list[tuple[int, str]] = []
    empty: list[str] = []
    for column in table.columns:  # already sorted by name; values sorted by run id
        values = column.values
        if values:
            first.append((next(iter(values)), column.name))
        else:
            empty.append(column.name)
    first.sort()
    return [name for _, name in first] + empty


def _extension_array(column: ParameterColumn, index: Sequence[int]) -> Any:
    import numpy as np
    import pandas as pd

    present = column.values
    mask = np.array([run_id not in present for run_id in index], dtype=bool)
    if column.type == STRING:
        return pd.array([present.get(r, pd.NA) for r in index], dtype=pd.StringDtype("python"))
    numpy_type, array_cls = {
        BOOL: (np.bool_, pd.arrays.BooleanArray),
        INT64: (np.int64, pd.arrays.IntegerArray),
        FLOAT64: (np.float64, pd.arrays.FloatingArray),
    }[column.type]
    data: np.ndarray[Any, Any] = np.array([present.get(r, 0) for r in index], dtype=numpy_type)
    return array_cls(data, mask)


def _frame(index: Sequence[int], columns: list[tuple[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(
        {i: array for i, (_, array) in enumerate(columns)},
        index=pd.Index(list(index), dtype="int64", name=RUN_ID_COLUMN),
    )
    frame.columns = pd.Index([name for name, _ in columns], dtype=object)
    return frame


def frame_index(table: ParameterTable, run_ids: Iterable[int]) -> list[int]:
    """Row index: every given run id plus every run id present in the table, ascending."""
    return sorted(set(run_ids) | table.run_ids())


def table_to_dataframe(table: ParameterTable, run_ids: Iterable[int]) -> pd.DataFrame:
    """OMMX's ``run_parameters_df()``: index ``run_id`` (int64), nullable dtypes, §1.4 column order."""
    run_ids = list(run_ids)
    index = frame_index(table, run_ids)
    by_name = {c.name: c for c in table.columns}
    return _frame(index, [(name, _extension_array(by_name[name], index)) for name in column_order(table, run_ids)])


def params_to_dataframe(params: Mapping[int, Mapping[str, ParamValue]], run_ids: Iterable[int]) -> pd.DataFrame:
    """Live ``run_parameters_df()`` of a session; mixed types raise ``InvalidInputError`` (a ValueError)."""
    run_ids = list(run_ids)
    try:
        table = build_table(params, run_ids)
    except MixedParameterTypesError as exc:
        raise InvalidInputError(
            f"Run parameter has mixed column types: existing {exc.existing}, incoming {exc.incoming}"
        ) from exc
    return table_to_dataframe(table, run_ids)


# --- Parquet ---------------------------------------------------------------------------------------------


def _run_id_column_name(names: Collection[str]) -> str:
    name = RUN_ID_COLUMN
    while name in names:
        name = "_" + name
    return name


def encode_parquet(
    table: ParameterTable,
    run_ids: Iterable[int],
    metadata: Mapping[str, str] | None = None,
    *,
    encoded: Sequence[EncodedColumn] | None = None,
    index: list[int] | None = None,
) -> bytes:
    """Parquet bytes: run id column then one nullable column per parameter, one row per run.

    Written by :func:`~ommx_experiment.format.parquet.write_parquet` (no pyarrow:
    importing it is the largest single cost of a commit), with min/max statistics
    and the footer key-value ``metadata``. Deterministic for equal input and the
    same ``zstandard`` (libzstd) version. ``encoded``: :func:`encode_param_columns`
    of the same table and run ids, and ``index`` their :func:`frame_index`, when the
    caller has them already.
    """
    from .parquet import Column, write_parquet

    run_ids = list(run_ids)
    if index is None:
        index = frame_index(table, run_ids)
    names = column_order(table, run_ids)
    params = encoded if encoded is not None else encode_param_columns(table, index)
    return write_parquet([Column(_run_id_column_name(names), INT64, index, required=True), *params], len(index), metadata)


def encode_param_columns(table: ParameterTable, index: Sequence[int]) -> list[EncodedColumn]:
    """The parameter columns of ``table`` over the rows ``index`` (:func:`frame_index`), encoded
    once for every Parquet file that carries them, in :func:`column_order`."""
    from .parquet import Column, encode_column

    by_name = {c.name: c for c in table.columns}
    return [encode_column(Column(name, by_name[name].type, column_cells(by_name[name], index))) for name in column_order(table, index)]


def column_cells(column: ParameterColumn, index: Sequence[int]) -> list[ParamValue | None]:
    """The column's value for each run id of ``index`` (ascending, a superset of the column's), None where absent."""
    values = _as_dict(column.values)
    if len(values) == len(index):  # every run has a value: both are the same ascending ids
        return list(values.values())
    get = values.get
    return [get(r) for r in index]


def _from_arrow(chunked: Any, column_name: str) -> Any:
    import pandas as pd
    import pyarrow as pa

    arrow_type = chunked.type
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype().__from_arrow__(chunked)
    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype().__from_arrow__(chunked.cast(pa.int64()))
    if pa.types.is_floating(arrow_type):
        return pd.Float64Dtype().__from_arrow__(chunked.cast(pa.float64()))
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.array(chunked.to_pylist(), dtype=pd.StringDtype("python"))
    raise InvalidArtifactError(f"Parquet run-parameter column `{column_name}` has unsupported type {arrow_type}")


def decode_parquet(source: bytes | bytearray | memoryview | str | os.PathLike[str]) -> pd.DataFrame:
    """Read our Parquet run-parameter layer into the same frame as :func:`table_to_dataframe`.

    A file in our writer's layout is read without pyarrow (:mod:`.parquet_read`; its import is
    a quarter of a fresh process's ``load`` + ``run_parameters_df()``); any other falls back to pyarrow.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        with open(source, "rb") as fh:
            data = fh.read()
    from .parquet_read import UnsupportedParquetError, read_table

    try:
        columns = read_table(data)
    except UnsupportedParquetError:
        return _decode_parquet_arrow(data)
    return _frame_of_columns(columns)


def _frame_of_columns(columns: list[tuple[str, int, list[Any]]]) -> pd.DataFrame:
    from .parquet_read import INT64

    if not columns or columns[0][1] != INT64:
        raise InvalidArtifactError("Invalid Parquet run-parameter layer: column 0 must be the integer run id")
    run_ids = columns[0][2]
    if None in run_ids:
        raise InvalidArtifactError("Invalid Parquet run-parameter layer: null run id")
    return _frame(run_ids, [(name, _masked_array(physical, values, name)) for name, physical, values in columns[1:]])


def _masked_array(physical: int, values: list[Any], column_name: str) -> Any:
    """The pandas nullable array pyarrow's path gives: a null is NA, a NaN stays a float value."""
    import numpy as np
    import pandas as pd

    from .parquet_read import BOOLEAN, BYTE_ARRAY, DOUBLE, INT64

    if physical == BYTE_ARRAY:
        return pd.array(values, dtype=pd.StringDtype("python"))
    kinds = {INT64: (np.int64, 0, pd.arrays.IntegerArray), DOUBLE: (np.float64, 0.0, pd.arrays.FloatingArray),
             BOOLEAN: (np.bool_, False, pd.arrays.BooleanArray)}
    if physical not in kinds:
        raise InvalidArtifactError(f"Parquet run-parameter column `{column_name}` has unsupported physical type {physical}")
    dtype, filler, array_type = kinds[physical]
    mask = np.fromiter((v is None for v in values), dtype=np.bool_, count=len(values))
    filled = [filler if v is None else v for v in values] if mask.any() else values
    return array_type(np.array(filled, dtype=dtype), mask)


def _decode_parquet_arrow(data: bytes) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        arrow_table = pq.ParquetFile(pa.BufferReader(data)).read()
    except (pa.ArrowException, OSError) as exc:
        raise InvalidArtifactError(f"Invalid Parquet run-parameter layer: {exc}") from exc
    if arrow_table.num_columns == 0 or not pa.types.is_integer(arrow_table.schema.field(0).type):
        raise InvalidArtifactError("Invalid Parquet run-parameter layer: column 0 must be the integer run id")
    run_ids = arrow_table.column(0)
    if run_ids.null_count:
        raise InvalidArtifactError("Invalid Parquet run-parameter layer: null run id")
    names = arrow_table.schema.names[1:]
    columns = [(name, _from_arrow(arrow_table.column(i + 1), name)) for i, name in enumerate(names)]
    return _frame(run_ids.to_pylist(), columns)
