"""Task functions for ``Experiment.sweep`` tests and benchmarks, importable by engine workers.

Workers import this module as ``workers.sweep_tasks`` (the tests folder is on their
``PYTHONPATH``), and as a script it is a sweep *driver* that a test can SIGKILL:

    sweep_tasks.py drive NAME N MARKS [--resume] [--workers K] [--commit]
        # create NAME (--resume: restore it), sweep solve_task over parameters(N) on a
        # ProcessPoolExecutor(K) (forkserver), print the summary as JSON, commit if --commit.
        # Each task touches MARKS/<index> when it starts (the test's progress signal);
        # SWEEP_TASK_DELAY (seconds) slows every task down.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def knapsack(capacity: int) -> Any:
    """A 0/1 knapsack over 4 items: tiny, so HiGHS solves it in a few milliseconds."""
    from ommx.v1 import DecisionVariable, Instance

    weights, values = (4, 3, 2, 5), (7, 4, 3, 8)
    x = [DecisionVariable.binary(i) for i in range(len(weights))]
    return Instance.from_components(
        decision_variables=x,
        objective=sum(v * xi for v, xi in zip(values, x, strict=True)),
        constraints=[(sum(w * xi for w, xi in zip(weights, x, strict=True)) <= capacity).set_id(0)],
        sense=Instance.MAXIMIZE,
    )


#: Optimal objective of knapsack(capacity) for the capacities parameters() uses.
OPTIMUM = {4: 7.0, 5: 8.0, 6: 10.0, 7: 11.0, 8: 12.0, 9: 15.0, 10: 15.0, 11: 18.0}


def parameters(n: int) -> list[dict[str, Any]]:
    """``n`` distinct dicts of mixed types (int, float, str, bool)."""
    return [{"seed": i, "capacity": 4 + i % 8, "scale": 0.5 * (i % 3), "tag": f"t{i % 5}", "odd": bool(i % 2)} for i in range(n)]


def solve_task(run: Any, params: dict[str, Any]) -> None:
    """One HiGHS solve; the objective logged as a parameter; a small JSON attachment."""
    from ommx_highs_adapter import OMMXHighsAdapter

    _mark(run.task_index)
    delay = float(os.environ.get("SWEEP_TASK_DELAY", "0"))
    if delay:
        time.sleep(delay)
    solution = run.log_solve(OMMXHighsAdapter, knapsack(int(params["capacity"])))
    run.log_parameter("objective", float(solution.objective))
    run.log_json("summary", {"seed": params["seed"], "capacity": params["capacity"]})


def slow_solve_task(run: Any, params: dict[str, Any]) -> None:
    """solve_task after a 30 ms sleep: long enough for a kill to land mid-task."""
    time.sleep(0.03)
    solve_task(run, params)


def failing_task(run: Any, params: dict[str, Any]) -> None:
    """Logs something, then raises for odd seeds."""
    run.log_parameter("started", True)
    run.log_attachment("note", "text/plain", f"seed {params['seed']}".encode())
    if params["seed"] % 2:
        raise ValueError(f"odd seed {params['seed']}\n  (multi-line)")


def typed_task(run: Any, params: dict[str, Any]) -> None:
    """Logs ``y``: 1.5, then "text", then 2 for seeds 0, 1, 2 (a column type conflict for seed 1); and ``done``."""
    run.log_parameter("y", (1.5, "text", 2)[params["seed"]])
    run.log_parameter("done", True)


def gated_task(run: Any, params: dict[str, Any]) -> None:
    """Tasks from index 4 on wait (up to 60 s) until the file ``params['gate']`` exists."""
    if run.task_index >= 4:
        deadline = time.monotonic() + 60
        while not os.path.exists(params["gate"]) and time.monotonic() < deadline:
            time.sleep(0.01)
    run.log_parameter("passed", True)


def raising_task(run: Any, params: dict[str, Any]) -> None:
    """Always raises (a failed run for any dict)."""
    raise RuntimeError("no luck")


def exit_on_two(run: Any, params: dict[str, Any]) -> None:
    """Kills its own worker process when ``params['i'] == 2`` (a pool worker that dies)."""
    if params["i"] == 2:
        os._exit(3)


def big_file_task(run: Any, params: dict[str, Any]) -> None:
    """Writes a file of ``params['mib']`` MiB and attaches it with log_file; reports its peak RSS growth."""
    import resource

    path = Path(params["dir"]) / f"big-{params['seed']}.bin"
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for _ in range(int(params["mib"])):
            fh.write(chunk)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run.log_file("big", path)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run.log_parameter("rss_growth_kib", int(after - before))


def cpu_task(run: Any, params: dict[str, Any]) -> None:
    """About ``params['ms']`` ms of HiGHS work: a knapsack over ``params['items']`` integer items (bench)."""
    import random

    from ommx.v1 import DecisionVariable, Instance
    from ommx_highs_adapter import OMMXHighsAdapter

    rng = random.Random(int(params["seed"]))
    n = int(params["items"])
    x = [DecisionVariable.integer(i, lower=0, upper=3) for i in range(n)]
    w = [rng.randint(10, 60) for _ in range(n)]
    v = [wi + rng.randint(-5, 5) for wi in w]
    instance = Instance.from_components(
        decision_variables=x,
        objective=sum(vi * xi for vi, xi in zip(v, x, strict=True)),
        constraints=[(sum(wi * xi for wi, xi in zip(w, x, strict=True)) <= sum(w) // 2).set_id(0)],
        sense=Instance.MAXIMIZE,
    )
    solution = run.log_solve(OMMXHighsAdapter, instance)
    run.log_parameter("objective", float(solution.objective))


def _mark(index: int) -> None:
    marks = os.environ.get("SWEEP_MARKS")
    if marks:
        Path(marks, str(index)).touch()


def _drive(argv: list[str]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from ommx_experiment import Experiment
    from workers import sweep_tasks as tasks  # workers import it by this name, not as __main__

    name, n, marks = argv[0], int(argv[1]), argv[2]
    resume = "--resume" in argv
    workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 2
    os.environ["SWEEP_MARKS"] = marks
    exp = Experiment.restore_from_checkpoint(name) if resume else Experiment(name)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        summary = exp.sweep(tasks.solve_task, tasks.parameters(n), executor=pool, resume=resume)
    print(json.dumps({"finished": summary.finished, "failed": summary.failed, "skipped": summary.skipped}), flush=True)
    if "--commit" in argv:
        exp.commit()
        print("committed", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if sys.argv[1] == "drive":
        _drive(sys.argv[2:])
    else:
        raise SystemExit(f"unknown command {sys.argv[1]!r}")
