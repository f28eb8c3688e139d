"""A sweep driver SIGKILLed mid-sweep, restarted with ``resume=True``: it records exactly the missing dicts.

The driver is a fresh process (``workers/sweep_tasks.py drive``) running a
ProcessPoolExecutor sweep of HiGHS tasks; it is killed, with its pool, once about
a third of the tasks have started. The committed result must equal that of an
uninterrupted sweep of the same dicts, apart from timings and run order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers.sweep_support import dict_counts, picture, pin_files
from workers import sweep_tasks as st

from ommx_experiment import Experiment, gc

from . import _support as sup

N = 60
KEYS = ["seed", "capacity", "scale", "tag", "odd"]
SCRIPT = sup.TESTS / "workers" / "sweep_tasks.py"


def _env(root: Path) -> dict[str, str]:
    env = sup.env(root)
    env["PYTHONPATH"] = os.pathsep.join((str(sup.TESTS), env["PYTHONPATH"]))
    env["SWEEP_TASK_DELAY"] = "0.04"  # slow enough for the kill to land mid-sweep
    return env


def _drive(root: Path, name: str, marks: Path, *flags: str) -> subprocess.Popen[str]:
    marks.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "drive", name, str(N), str(marks), *flags],
        env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )


def _finish(proc: subprocess.Popen[str]) -> dict[str, int]:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    lines = out.strip().splitlines()
    assert lines[-1] == "committed", out
    return json.loads(lines[-2])


def test_driver_sigkilled_mid_sweep_then_resumed_records_exactly_the_missing_dicts(registry_root: Path, tmp_path: Path) -> None:
    reference = _drive(registry_root, "example.com/team/reference:v1", tmp_path / "ref-marks", "--commit")
    victim = _drive(registry_root, "example.com/team/killed:v1", tmp_path / "marks")
    deadline = time.monotonic() + 120
    while len(os.listdir(tmp_path / "marks")) < N // 3 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert victim.poll() is None, "the driver finished before it could be killed"
    os.killpg(victim.pid, signal.SIGKILL)  # the driver and its pool workers
    victim.wait(timeout=60)
    assert _finish(reference) == {"finished": N, "failed": 0, "skipped": 0}

    survived = Experiment.restore_from_checkpoint("example.com/team/killed:v1")
    done = [run for run in survived.runs if run.status == "finished"]
    assert 0 < len(done) < N
    assert set(dict_counts(survived, KEYS).values()) == {1}
    del survived

    resumed = _finish(_drive(registry_root, "example.com/team/killed:v1", tmp_path / "marks", "--resume", "--commit"))
    assert resumed == {"finished": N - len(done), "failed": 0, "skipped": len(done)}
    killed = Experiment.load("example.com/team/killed:v1")
    assert picture(killed) == picture(Experiment.load("example.com/team/reference:v1"))
    assert len(killed.runs) == N and set(dict_counts(killed, KEYS).values()) == {1}
    # The dead driver's pins protect nothing: a zero-grace GC removes its folder and the blobs of the
    # attempts it never recorded, and keeps everything both committed experiments reference.
    gc(delete=True, grace_period="0s")
    assert pin_files(registry_root) == []
    for name in ("example.com/team/killed:v1", "example.com/team/reference:v1"):
        for run in Experiment.load(name).runs:
            assert run.solves[0].output.objective == st.OPTIMUM[run.get_json("summary")["capacity"]]
