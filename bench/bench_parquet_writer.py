"""Commit-time cost of our Parquet layers: our small writer (``format.parquet``) against pyarrow.

At commit we write three Parquet layers (run parameters, runs, solves) with min/max
statistics and key-value metadata. Each case runs in a fresh process that has
already imported ``ommx_experiment`` and built the tables (as a sweep process has at
commit) but not pyarrow, then times *import + encode* of the three layers:

- ``ours``: ``run_params.encode_parquet``, ``run_meta.encode_runs``, ``run_meta.encode_solves``;
- ``pyarrow``: the same columns as ``pa.table`` written by ``pq.write_table`` (zstd,
  statistics on, the same key-value metadata), pyarrow imported inside the timing.

Median over ``REPEATS`` processes, for 100 and 10,000 runs with 10 parameters.
"""

from __future__ import annotations

import statistics

from _common import REPO_ROOT, run_python

REPEATS = 5
SIZES = (100, 10_000)

_SETUP = """
import json, sys, time
from ommx_experiment.format import run_params as rp, run_meta as rm
from ommx_experiment.format.content import RunContent
N = {n}
params = {{r: {{f"p{{k}}": (r * k if k % 3 else float(r) / 7 if k % 2 else f"s{{r % 13}}") for k in range(10)}} for r in range(N)}}
runs = [RunContent(run_id=r, started_ns=1_700_000_000_000_000_000 + r * 10**9, finished_ns=1_700_000_000_500_000_000 + r * 10**9)
        for r in range(N)]
table = rp.build_table(params, range(N))
meta = rm.layer_metadata("runs", image_name="example.com/bench/p:v1", parent_digest=None)
assert "pyarrow" not in sys.modules
"""

_OURS = _SETUP + """
t0 = time.perf_counter()
sizes = [len(rp.encode_parquet(table, range(N), meta)), len(rm.encode_runs(runs, table, meta)), len(rm.encode_solves([], meta))]
seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds, "bytes": sum(sizes), "pandas": "pandas" in sys.modules}}))
"""

_PYARROW = _SETUP + """
t0 = time.perf_counter()
import io
import pyarrow as pa, pyarrow.parquet as pq
def write(columns):
    t = pa.table(columns).replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(t, buf, compression="zstd", write_statistics=True)
    return len(buf.getvalue())
def col(kind, values):
    return pa.array(values, type={{"bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64(), "string": pa.string(),
                                   "timestamp": pa.timestamp("us", tz="UTC")}}[kind])
index = list(range(N))
by_name = {{c.name: c for c in table.columns}}
names = rp.column_order(table, index)
param_cols = {{n: col(by_name[n].type, [by_name[n].values.get(r) for r in index]) for n in names}}
sizes = [write({{"run_id": col("int64", index), **param_cols}})]
runs_cols = {{"run_id": col("int64", index)}}
rows = [rm.run_meta_row(r) for r in runs]
for i, (name, kind) in enumerate(zip(rm.RUN_META_COLUMNS, rm._RUN_META_KINDS)):
    runs_cols[name] = col(kind, [row[i] for row in rows])
sizes.append(write({{**runs_cols, **param_cols}}))
sizes.append(write({{name: col(kind, []) for name, kind in zip(rm.SOLVE_COLUMNS, rm._SOLVE_KINDS)}}))
seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds, "bytes": sum(sizes), "pandas": "pandas" in sys.modules}}))
"""


def run() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for n in SIZES:
        for impl, code in (("ours", _OURS), ("pyarrow", _PYARROW)):
            env = {"PYTHONPATH": str(REPO_ROOT / "src")}  # this checkout, not whatever the venv installed
            results = [run_python(code.format(n=n), env=env).data for _ in range(REPEATS)]
            rows.append({
                "benchmark": "parquet_layers",
                "case": f"{n} runs x 10 params, 3 layers",
                "impl": impl,
                "ms": round(statistics.median(r["seconds"] for r in results) * 1000, 1),
                "note": f"{results[0]['bytes']} bytes; pandas imported: {results[0]['pandas']}",
            })
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
