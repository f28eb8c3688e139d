"""Parameter sweeps: N runs x 10 parameters, ours against OMMX 3.0.0b7, each in a fresh process.

``seconds`` is measured inside the child from ``Experiment(...)`` to the end of
``commit()``: imports done before that (``from ommx.experiment import ...`` imports
OMMX's extension eagerly; ours imports ``pyarrow`` lazily inside ``commit``) are not
in it, so ``process_s`` (wall time of the whole child) is reported beside it.

Cases: 100 / 1,000 / 10,000 runs with each implementation's default autosave policy
(ours: ``min_interval(60)`` plus the O(1) journal; OMMX 3: ``every_run_close``) and with
``AutosavePolicy.disabled()``. Metrics: total seconds (sweep + commit, measured inside the
child), per-run ms of the first and last 10 % of runs, registry bytes on disk. Then
``run_parameters_df()`` on the 10,000 x 10 experiment, warm (in-process, after a first
call) and in a fresh process (wall time of the whole child).

OMMX 3's default-policy sweep is quadratic (it rewrites the whole config and
parameter table at every Run close). When its 10,000-run case would exceed
``OMMX3_DEFAULT_MAX_RUNS`` it is measured at 1,000 and 3,000 runs and extrapolated
with ``t(n) = a*n + b*n^2`` (same for disk); the row's ``note`` says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from _common import OMMX3_PYTHON, OURS_PYTHON, disk_usage, fmt_mb, python_or_none, run_python, scratch_dir

SIZES = (100, 1_000, 10_000)
POLICIES = ("default", "disabled")
PARAMS = 10
OMMX3_DEFAULT_MAX_RUNS = 3_000
NAME = "example.com/bench/sweep:v1"

_SWEEP = """
import json, time
from {module} import Experiment, AutosavePolicy
t0 = time.perf_counter()
exp = Experiment({name!r})
if {policy!r} == "disabled":
    exp.set_autosave_policy(AutosavePolicy.disabled())
per_run = []
for i in range({n}):
    s = time.perf_counter()
    with exp.run() as run:
        for k in range({params}):
            run.log_parameter("p%d" % k, (i * {params} + k) + 0.5 if k % 2 else i + k)
    per_run.append(time.perf_counter() - s)
c = time.perf_counter()
exp.commit()
done = time.perf_counter()
tenth = max(1, {n} // 10)
print(json.dumps({{"seconds": done - t0, "commit_s": done - c,
    "first_ms": 1000 * sum(per_run[:tenth]) / tenth, "last_ms": 1000 * sum(per_run[-tenth:]) / tenth}}))
"""

_DF_WARM = """
import json, time
from {module} import Experiment
exp = Experiment.load({name!r})
exp.run_parameters_df()
times = []
for _ in range(5):
    s = time.perf_counter()
    exp.run_parameters_df()
    times.append(time.perf_counter() - s)
print(json.dumps({{"ms": 1000 * min(times)}}))
"""

_DF_FRESH = """
import json, time
s = time.perf_counter()
from {module} import Experiment
df = Experiment.load({name!r}).run_parameters_df()
print(json.dumps({{"ms": 1000 * (time.perf_counter() - s), "shape": list(df.shape)}}))
"""

_IMPLS = {"ours": ("ommx_experiment", OURS_PYTHON), "ommx3": ("ommx.experiment", OMMX3_PYTHON)}


def _sweep(impl: str, root: Path, n: int, policy: str) -> dict[str, float]:
    module, python = _IMPLS[impl]
    code = _SWEEP.format(module=module, name=NAME, policy=policy, n=n, params=PARAMS)
    result = run_python(code, python=python, env={"OMMX_LOCAL_REGISTRY_ROOT": str(root)})
    data = dict(result.data)
    data["disk"] = disk_usage(root)
    data["rss"] = result.peak_rss_bytes
    data["process_s"] = result.seconds
    return data


def _row(case: str, impl: str, data: dict[str, float], note: str = "") -> dict[str, object]:
    row: dict[str, object] = {
        "benchmark": "sweep",
        "case": case,
        "impl": impl,
        "seconds": round(data["seconds"], 3),
        "first10%_ms": round(data["first_ms"], 3),
        "last10%_ms": round(data["last_ms"], 3),
        "disk_MB": fmt_mb(data["disk"]),
    }
    if "process_s" in data:  # whole child: interpreter start and imports included (OMMX imports before t0)
        row["process_s"] = round(data["process_s"], 3)
    if "rss" in data:
        row["peak_rss_MB"] = fmt_mb(data["rss"])
    if note:
        row["note"] = note
    return row


def _extrapolate(points: dict[int, dict[str, float]], n: int) -> dict[str, float]:
    """Fit ``y = a*n + b*n^2`` through two measured sizes, per metric."""
    (n1, d1), (n2, d2) = sorted(points.items())
    out: dict[str, float] = {}
    for key in ("seconds", "disk"):
        b = (d2[key] / n2 - d1[key] / n1) / (n2 - n1)
        a = d1[key] / n1 - b * n1
        out[key] = a * n + b * n * n
    for key in ("first_ms",):
        out[key] = d1[key]
    slope = (d2["last_ms"] - d1["last_ms"]) / (n2 - n1)
    out["last_ms"] = d2["last_ms"] + slope * (n - n2)
    return out


def _sweeps(impl: str, tmp: Path, df_roots: dict[str, Path]) -> list[dict[str, object]]:
    rows = []
    for policy in POLICIES:
        measured: dict[int, dict[str, float]] = {}
        for n in SIZES:
            case = f"{n} runs x {PARAMS} params, {policy}"
            if impl == "ommx3" and policy == "default" and n > OMMX3_DEFAULT_MAX_RUNS:
                for m in (1_000, OMMX3_DEFAULT_MAX_RUNS):
                    if m not in measured:
                        measured[m] = _sweep(impl, tmp / f"{impl}-{policy}-{m}", m, policy)
                note = (
                    f"EXTRAPOLATED from measured 1000 and {OMMX3_DEFAULT_MAX_RUNS} runs "
                    f"(a*n+b*n^2); 3000 runs took {measured[OMMX3_DEFAULT_MAX_RUNS]['seconds']:.0f} s"
                )
                fit = {m: measured[m] for m in (1_000, OMMX3_DEFAULT_MAX_RUNS)}
                rows.append(_row(case, impl, _extrapolate(fit, n), note))
                continue
            root = tmp / f"{impl}-{policy}-{n}"
            measured[n] = _sweep(impl, root, n, policy)
            rows.append(_row(case, impl, measured[n]))
            if policy == "disabled" and n == SIZES[-1]:
                df_roots[impl] = root
        if impl == "ommx3" and policy == "default" and OMMX3_DEFAULT_MAX_RUNS in measured:
            extra = measured[OMMX3_DEFAULT_MAX_RUNS]
            rows.append(_row(f"{OMMX3_DEFAULT_MAX_RUNS} runs x {PARAMS} params, default", impl, extra, "measured"))
    return rows


def _df_rows(impl: str, root: Path) -> list[dict[str, object]]:
    module, python = _IMPLS[impl]
    env = {"OMMX_LOCAL_REGISTRY_ROOT": str(root)}
    warm = run_python(_DF_WARM.format(module=module, name=NAME), python=python, env=env)
    fresh = run_python(_DF_FRESH.format(module=module, name=NAME), python=python, env=env)
    case = f"run_parameters_df {SIZES[-1]} x {PARAMS}"
    return [
        {"benchmark": "sweep", "case": f"{case}, warm", "impl": impl, "ms": round(warm.data["ms"], 2)},
        {
            "benchmark": "sweep",
            "case": f"{case}, fresh process",
            "impl": impl,
            "ms": round(fresh.seconds * 1000, 1),
            "peak_rss_MB": fmt_mb(fresh.peak_rss_bytes),
            "note": f"wall time of the whole child incl. interpreter start; import+load+df inside: {fresh.data['ms']:.0f} ms",
        },
    ]


def run() -> list[dict[str, object]]:
    """Every sweep case for ours and OMMX 3 (when its side venv exists), then the DataFrame reads."""
    rows: list[dict[str, object]] = []
    with scratch_dir("ommx-bench-sweep-") as tmp:
        df_roots: dict[str, Path] = {}
        for impl, (_, python) in _IMPLS.items():
            if python_or_none(python) is None:
                rows.append({"benchmark": "sweep", "case": "all", "impl": impl, "note": f"{python} missing"})
                continue
            rows.extend(_sweeps(impl, tmp, df_roots))
        for impl, root in df_roots.items():
            rows.extend(_df_rows(impl, root))
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
