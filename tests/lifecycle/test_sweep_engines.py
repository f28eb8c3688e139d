"""Experiment.sweep on real engines: a dask.distributed LocalCluster with worker processes, and local Ray.

One cluster per engine for the whole module (Ray takes seconds to start). Workers
import the task functions as ``workers.sweep_tasks``: the tests folder is put on
the ``PYTHONPATH`` they inherit.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import unavailable
from helpers.sweep_support import dict_counts, pin_files, run_rows
from workers import sweep_tasks as st

from ommx_experiment import Experiment, RayExecutor

TESTS = Path(__file__).resolve().parents[1]
KEYS = ["seed", "capacity", "scale", "tag", "odd"]


@pytest.fixture(scope="module")
def worker_pythonpath() -> Iterator[None]:
    """Engine workers inherit this process's environment: give them the tests folder too."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), old) if p)
    yield
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def dask_client(worker_pythonpath: None) -> Iterator[Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        unavailable(f"dask.distributed is not installed ({exc}); pip install 'ommx-experiment[sweep]'")
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def ray_session(worker_pythonpath: None) -> Iterator[Any]:
    try:
        import ray
    except ImportError as exc:
        unavailable(f"ray is not installed ({exc}); pip install 'ommx-experiment[sweep]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_all_finished_once(exp: Experiment, n: int) -> None:
    rows = run_rows(exp)
    assert len(rows) == n
    counts = dict_counts(exp, KEYS)
    assert len(counts) == n and set(counts.values()) == {1}  # every dict exactly once
    for row in rows:
        assert row["status"] == "finished" and row["solves"] == ["finished"], row
        assert row["params"]["objective"] == st.OPTIMUM[row["params"]["capacity"]]


# --- Dask --------------------------------------------------------------------------------------------------


def test_dask_sweep_of_100_tasks_survives_a_worker_sigkill_every_dict_recorded_once(
    dask_client: Any, registry_root: Path
) -> None:
    """100 tasks, one HiGHS solve each; one worker process SIGKILLed once 20 runs are recorded
    (mid-task: every task sleeps 30 ms first). Dask reruns its tasks elsewhere; nothing is recorded twice."""
    victim = next(iter(dask_client.run(os.getpid).values()))
    exp = Experiment("example.com/team/dask:v1")
    session = exp._session_or_raise()
    killed = threading.Event()

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 60
        while session.closed < 20 and time.monotonic() < deadline:  # runs this session recorded
            time.sleep(0.005)
        os.kill(victim, signal.SIGKILL)
        killed.set()

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    summary = exp.sweep(st.slow_solve_task, st.parameters(100), executor=dask_client.get_executor())
    killer.join(10)
    assert killed.is_set()
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    assert (summary.finished, summary.failed, summary.skipped) == (100, 0, 0)
    _check_all_finished_once(exp, 100)
    assert pin_files(registry_root) == []  # the killed attempt's pin went with the sweep
    exp.commit()
    assert len(Experiment.load("example.com/team/dask:v1").runs) == 100


def test_a_dask_client_is_accepted_and_failures_keep_their_reason(dask_client: Any) -> None:
    exp = Experiment("example.com/team/dask-fail:v1")
    summary = exp.sweep(st.failing_task, [{"seed": i} for i in range(6)], executor=dask_client)
    assert (summary.finished, summary.failed) == (3, 3)
    assert {r["reason"] for r in run_rows(exp) if r["status"] == "failed"} == {
        f"ValueError: odd seed {i} (multi-line)" for i in (1, 3, 5)
    }


# --- Ray ----------------------------------------------------------------------------------------------------


def test_ray_sweep_of_100_tasks_with_one_highs_solve_each(ray_session: Any, registry_root: Path) -> None:
    exp = Experiment("example.com/team/ray:v1")
    summary = exp.sweep(st.solve_task, st.parameters(100), executor=RayExecutor())
    assert (summary.finished, summary.failed, summary.skipped) == (100, 0, 0)
    _check_all_finished_once(exp, 100)
    assert pin_files(registry_root) == []
    exp.commit()
    assert len(Experiment.load("example.com/team/ray:v1").runs) == 100


def test_ray_failures_and_resume(ray_session: Any) -> None:
    exp = Experiment("example.com/team/ray-resume:v1")
    first = exp.sweep(st.failing_task, [{"seed": i} for i in range(6)], executor=RayExecutor(max_retries=1))
    assert (first.finished, first.failed) == (3, 3)
    assert {r["reason"] for r in run_rows(exp) if r["status"] == "failed"} == {
        f"ValueError: odd seed {i} (multi-line)" for i in (1, 3, 5)
    }
    again = exp.sweep(st.failing_task, [{"seed": i} for i in range(8)], executor=RayExecutor(), resume=True)
    assert (again.skipped, again.finished, again.failed) == (3, 1, 4)  # seeds 0,2,4 done; 6 new; odd ones fail again
