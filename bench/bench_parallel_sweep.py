"""Experiment.sweep on 2 workers of each engine against the same sweep in one process.

200 tasks, each one logged HiGHS solve of a 20 x 20 transportation LP (about 50 ms
of solver work; the measured mean task time is in ``task_ms``). Every case runs in
a fresh process on a fresh registry root:

* ``serial``: ``executor=None`` (tasks and recording in the driver).
* ``process-pool``: ``ProcessPoolExecutor(2)`` (forkserver).
* ``dask``: ``LocalCluster(n_workers=2, threads_per_worker=1)``, ``client.get_executor()``.
* ``ray``: ``ray.init(num_cpus=2)``, ``RayExecutor()``.

Columns: ``seconds`` (the ``sweep`` call: engine start-up excluded, reported as
``startup_s``), ``speedup`` (serial seconds / these seconds), ``record_ms``
(driver time spent recording results, per run: storing/leasing payloads and the
journal write, batched when results arrive together), ``batch`` (mean runs per
journal write), ``task_ms`` (mean task time inside the worker) and ``load1`` (the
machine's 1-minute load average around the case: on 2 cores, 2 workers only run at
full speed when nothing else does; compare ``task_ms`` with the serial row). Warm-up:
the first 4 tasks of each engine are a separate sweep, not counted (worker imports).
"""

from __future__ import annotations

import os
from pathlib import Path

from _common import REPO_ROOT, run_python, scratch_dir

TASKS = 200
SIZE = 20
WARMUP = 4
ENGINES = ("serial", "process-pool", "dask", "ray")

_DRIVER = """
import json, os, time
engine = {engine!r}
t0 = time.perf_counter()
executor, close = None, lambda: None
if engine == "process-pool":
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    executor = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver"))
    close = executor.shutdown
elif engine == "dask":
    import logging
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    executor = client.get_executor()
    close = lambda: (client.close(), cluster.close())
elif engine == "ray":
    import ray
    from ommx_experiment import RayExecutor
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    executor = RayExecutor()
    close = ray.shutdown
startup = time.perf_counter() - t0

from ommx_experiment import Experiment
from ommx_experiment.lifecycle import sweep as sw
import _sweep_tasks as tasks

spent, sizes, task_s = [], [], []
record = sw._Driver.record
def timed(self, results):
    start = time.perf_counter()
    out = record(self, results)
    spent.append(time.perf_counter() - start)
    sizes.append(len(results))
    task_s.extend(r.seconds for r in results)
    return out
sw._Driver.record = timed

if __name__ == "__main__":
    exp = Experiment("example.com/bench/parallel-sweep:v1")
    exp.sweep(tasks.solve_task, [{{"seed": -1 - i, "size": {size}}} for i in range({warmup})], executor=executor)
    spent.clear(); sizes.clear(); task_s.clear()
    params = [{{"seed": i, "size": {size}}} for i in range({tasks})]
    start = time.perf_counter()
    summary = exp.sweep(tasks.solve_task, params, executor=executor)
    seconds = time.perf_counter() - start
    assert summary.finished == {tasks}, summary
    exp.commit()
    close()
    print(json.dumps({{"seconds": seconds, "startup_s": startup, "record_s": sum(spent), "batches": len(sizes),
                      "runs": sum(sizes), "task_s": sum(task_s)}}))
"""


def _case(engine: str) -> dict[str, float]:
    before = os.getloadavg()[0]
    with scratch_dir() as scratch:
        root = Path(scratch) / "registry"
        code = _DRIVER.format(engine=engine, size=SIZE, warmup=WARMUP, tasks=TASKS)
        src, bench = REPO_ROOT / "src", Path(__file__).resolve().parent
        env = {"OMMX_LOCAL_REGISTRY_ROOT": str(root), "PYTHONPATH": f"{bench}:{src}"}
        data = dict(run_python(code, env=env, cwd=bench).data)
    data["load"] = (before + os.getloadavg()[0]) / 2
    return data


def run() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    serial = None
    for engine in ENGINES:
        data = _case(engine)
        if serial is None:
            serial = data["seconds"]
        rows.append(
            {
                "benchmark": "parallel-sweep",
                "case": f"{TASKS} tasks, log_solve {SIZE}x{SIZE} LP",
                "impl": f"ours/{engine}" + ("" if engine == "serial" else " x2"),
                "seconds": round(data["seconds"], 2),
                "speedup": round(serial / data["seconds"], 2),
                "runs/s": round(TASKS / data["seconds"], 1),
                "record_ms": round(1000 * data["record_s"] / data["runs"], 2),
                "batch": round(data["runs"] / data["batches"], 1),
                "task_ms": round(1000 * data["task_s"] / data["runs"], 1),
                "startup_s": round(data["startup_s"], 2),
                "load1": round(data["load"], 1),
            }
        )
    return rows
