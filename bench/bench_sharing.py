"""What sharing one process with OMMX 3 costs: Run close, Run enter+exit, listings, load.

Our process-wide SQLite connections sit beside two keepers holding open file
description locks (spec/registry.md §4a; on platforms without them, every operation
re-takes the POSIX locks and stats the ``-wal`` first, and reopens after OMMX unlinked
it), every operation refreshes ``index.json`` when OMMX wrote since, and a Run opens its
OpenTelemetry span with OMMX's calls. These rows show what that costs on the paths users
repeat most:

- ``run close``: median ``Run.__exit__`` over 400 runs with no parameter type
  change (the journal's O(1) fast path), default autosave policy;
- ``run enter+exit``: the whole ``with experiment.run():`` of an empty Run, and the same
  once ``opentelemetry.trace`` is imported (no provider set): the Run then makes OMMX's
  OpenTelemetry calls (``get_tracer``, ``start_as_current_span``, ``get_current_span``);
- ``list_experiments`` / ``list_experiment_checkpoints``: median of 20 warm calls
  on a root holding 40 experiments;
- ``Experiment.load``: median of 20 warm loads;
- beside OMMX 3 only, 40 rounds of OMMX's ``list_experiments`` then one Run close of
  ours (OMMX's listing opens and closes its connection each time): the median of each
  (``run enter+exit after an OMMX listing``, ``OMMX list_experiments between ours``).

Each runtime runs in a fresh process: the project venv (ommx 2.9) and the OMMX 3
side venv with ``ommx.experiment`` imported (OMMX's SQLite loaded in the process).
Run it on another checkout with ``python bench/bench_sharing.py --src PATH/src``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import OMMX3_PYTHON, OURS_PYTHON, REPO_ROOT, python_or_none, run_python, scratch_dir

_SNIPPET = """
import json, os, statistics, time, warnings
warnings.simplefilter("ignore")
if {with_ommx}:
    import ommx.experiment  # OMMX 3's SQLite in this process
import ommx_experiment as ox

def median_us(values):
    return round(statistics.median(values) * 1e6, 1)

closes, whole = [], []
with ox.Experiment("bench.example.com/sharing/runs:v1") as experiment:
    for i in range(401):
        start = time.perf_counter()
        run = experiment.run()
        run.__enter__()
        run.log_parameter("seed", i)
        before = time.perf_counter()
        run.__exit__(None, None, None)
        end = time.perf_counter()
        if i:
            closes.append(end - before)
            whole.append(end - start)
import opentelemetry.trace  # from now on a Run makes OMMX's OpenTelemetry calls (no provider set)
spans = []
with ox.Experiment("bench.example.com/sharing/spans:v1") as experiment:
    for i in range(401):
        start = time.perf_counter()
        with experiment.run() as run:
            run.log_parameter("seed", i)
        if i:
            spans.append(time.perf_counter() - start)
for k in range(40):
    with ox.Experiment(f"bench.example.com/sharing/e{{k:02d}}:v1") as experiment:
        with experiment.run() as run:
            run.log_parameter("k", k)
draft = ox.Experiment("bench.example.com/sharing/draft:v1")
with draft.run() as run:
    run.log_parameter("k", 0)

after_ommx, ommx_lists = [], []
if {with_ommx}:
    for i in range(41):
        start = time.perf_counter()
        ommx.experiment.list_experiments()
        middle = time.perf_counter()
        with draft.run() as run:
            run.log_parameter("k", i)
        end = time.perf_counter()
        if i:
            ommx_lists.append(middle - start)
            after_ommx.append(end - middle)

def timed(fn, n=20):
    fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return median_us(out)

print(json.dumps({{
    "run close": median_us(closes),
    "run enter+exit": median_us(whole),
    "run enter+exit, opentelemetry imported": median_us(spans),
    "list_experiments": timed(ox.list_experiments),
    "list_experiment_checkpoints": timed(ox.list_experiment_checkpoints),
    "Experiment.load": timed(lambda: ox.Experiment.load("bench.example.com/sharing/e07:v1")),
    **({{"run enter+exit after an OMMX listing": median_us(after_ommx),
        "OMMX list_experiments between ours": median_us(ommx_lists)}} if {with_ommx} else {{}}),
}}))
"""


def measure_runtime(python: Path, src: Path, with_ommx: bool) -> dict[str, float]:
    with scratch_dir("ommx-bench-sharing-") as tmp:
        env = {"OMMX_LOCAL_REGISTRY_ROOT": str(tmp / "registry"), "PYTHONPATH": str(src)}
        return dict(run_python(_SNIPPET.format(with_ommx=with_ommx), python=python, env=env).data)


def _rows(src: Path) -> list[dict[str, object]]:
    runtimes = [("ours (ommx 2.9)", OURS_PYTHON, False)]
    ommx3 = python_or_none(OMMX3_PYTHON)
    if ommx3 is not None:
        runtimes.append(("ours beside ommx 3", ommx3, True))
    rows: list[dict[str, object]] = []
    for impl, python, with_ommx in runtimes:
        for case, us in measure_runtime(python, src, with_ommx).items():
            rows.append({"benchmark": "sharing", "case": case, "impl": impl, "ms": round(us / 1000, 3)})
    return rows


def run() -> list[dict[str, object]]:
    """Run close, Run enter+exit, warm listings and load, on both runtimes."""
    return _rows(REPO_ROOT / "src")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO_ROOT / "src", help="the src/ folder to measure")
    args = parser.parse_args()
    for row in _rows(args.src):
        print(json.dumps(row))
