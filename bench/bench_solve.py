"""Overhead of ``Run.log_solve`` over calling the adapter directly, ours against OMMX 3.0.0b7.

Same model for both: the 8-item 0/1 knapsack of ``make demo`` (capacity 25), solved
with HiGHS through each venv's ``OMMXHighsAdapter``. Each implementation runs in a
fresh process: 20 warm-up pairs, then 200 pairs of (direct ``OMMXHighsAdapter.solve``,
``run.log_solve``) inside one Run, alternating which goes first, so drift and cache
warmth hit both sides equally.

Metrics: median milliseconds of the direct call (``direct_ms``) and of ``log_solve``
(``ms``); ``overhead_ms`` = the median of the per-pair differences. What the
overhead buys: encoding and storing the input and the output in the CAS (the
same instance and solution every call, so after the first call each is an
existing blob: compared with the bytes in hand and touched under
``blobs/.lock``, no temp file, no fsync), the copy of the instance for the
adapter (decoded from the stored bytes), and the record.
"""

from __future__ import annotations

from _common import OMMX3_PYTHON, OURS_PYTHON, python_or_none, run_python, scratch_dir

CALLS = 200
WARMUP = 20
CAPACITY = 25

_PRELUDE_OURS = """
from ommx.v1 import DecisionVariable, Instance
from ommx_experiment import Experiment
def knapsack(capacity):
    x = [DecisionVariable.binary(i) for i in range(len(W))]
    return Instance.from_components(decision_variables=x, objective=sum(v * xi for v, xi in zip(V, x)),
        constraints=[(sum(w * xi for w, xi in zip(W, x)) <= capacity).set_id(0)], sense=Instance.MAXIMIZE)
"""

_PRELUDE_OMMX3 = """
from ommx import DecisionVariable, Instance
from ommx.experiment import Experiment
def knapsack(capacity):
    x = [DecisionVariable.binary(i) for i in range(len(W))]
    return Instance.from_components(decision_variables=x, objective=sum(v * xi for v, xi in zip(V, x)),
        constraints={0: sum(w * xi for w, xi in zip(W, x)) <= capacity}, sense=Instance.MAXIMIZE)
"""

_BODY = """
import json, statistics, time
from ommx_highs_adapter import OMMXHighsAdapter
instance = knapsack(CAPACITY)
exp = Experiment("example.com/bench/solve:v1")
direct, logged = [], []
with exp.run() as run:
    def timed(fn):
        t0 = time.perf_counter()
        result = fn()
        return time.perf_counter() - t0, result
    for i in range(WARMUP + CALLS):
        # Alternate which call goes first, so neither always runs on a warmer cache.
        if i % 2:
            d, _ = timed(lambda: OMMXHighsAdapter.solve(instance))
            l, solution = timed(lambda: run.log_solve(OMMXHighsAdapter, instance))
        else:
            l, solution = timed(lambda: run.log_solve(OMMXHighsAdapter, instance))
            d, _ = timed(lambda: OMMXHighsAdapter.solve(instance))
        if i >= WARMUP:
            direct.append(d)
            logged.append(l)
assert solution.objective == EXPECTED, solution.objective
ms = lambda xs: 1000 * statistics.median(xs)
print(json.dumps({"direct_ms": ms(direct), "ms": ms(logged),
                  "overhead_ms": ms([b - a for a, b in zip(direct, logged)]), "solves": len(exp.runs[0].solves)}))
"""

WEIGHTS = (11, 7, 5, 13, 9, 4, 6, 8)
VALUES = (23, 14, 9, 30, 17, 6, 12, 15)


def optimum(capacity: int) -> float:
    """Brute-force optimum of the knapsack (2^8 subsets): the children check their Solution against it."""
    best = 0
    for mask in range(1 << len(WEIGHTS)):
        chosen = [i for i in range(len(WEIGHTS)) if mask >> i & 1]
        if sum(WEIGHTS[i] for i in chosen) <= capacity:
            best = max(best, sum(VALUES[i] for i in chosen))
    return float(best)


def _script(prelude: str) -> str:
    constants = (
        f"W, V = {WEIGHTS!r}, {VALUES!r}\n"
        f"CAPACITY, CALLS, WARMUP, EXPECTED = {CAPACITY}, {CALLS}, {WARMUP}, {optimum(CAPACITY)!r}\n"
    )
    return constants + prelude + _BODY


def _row(impl: str, python: object) -> dict[str, object]:
    base = {"benchmark": "log_solve overhead", "case": f"HiGHS knapsack 8 items, median of {CALLS}", "impl": impl}
    if python is None:
        return {**base, "note": "interpreter missing; run `make bootstrap`"}
    prelude = _PRELUDE_OURS if impl == "ours" else _PRELUDE_OMMX3
    with scratch_dir() as root:
        result = run_python(_script(prelude), python=python, env={"OMMX_LOCAL_REGISTRY_ROOT": str(root / "registry")})
    data = result.data
    pct = 100 * data["overhead_ms"] / data["direct_ms"] if data["direct_ms"] else float("nan")
    return {
        **base,
        "ms": round(data["ms"], 3),
        "direct_ms": round(data["direct_ms"], 3),
        "overhead_ms": round(data["overhead_ms"], 3),
        "overhead_%": round(pct, 1),
        "peak_rss_MB": round(result.peak_rss_bytes / 2**20, 1),
    }


def run() -> list[dict[str, object]]:
    return [_row("ours", python_or_none(OURS_PYTHON)), _row("ommx3", python_or_none(OMMX3_PYTHON))]


if __name__ == "__main__":
    for row in run():
        print(row)
