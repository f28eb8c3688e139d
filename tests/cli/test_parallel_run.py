"""``ommx-experiment run`` invoked concurrently on one NAME (``xargs -P``), then ``commit`` (issue 11)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from helpers.cli_support import REPO, ommx_experiment_exe, run_cli

from ommx_experiment import Experiment

NAME = "example.com/conc/sweep:v1"


def _env(root: Path) -> dict[str, str]:
    return dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONPATH=str(REPO / "src"))


def test_eight_concurrent_invocations_five_rounds_keep_every_run(registry_root: Path, tmp_path: Path) -> None:
    exe = ommx_experiment_exe()
    script = (
        f"seq 0 39 | xargs -P 8 -I{{}} {exe} run {NAME} --param seed={{}} --watch {tmp_path}/out-{{}} "
        "-- sh -c 'mkdir -p $0 && echo seed > $0/result.txt && echo out-$1' " + f"{tmp_path}/out-{{}} {{}}"
    )
    for i in range(40):
        (tmp_path / f"out-{i}").mkdir()
    proc = subprocess.run(["bash", "-c", script], env=_env(registry_root), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    committed = run_cli("commit", NAME, root=registry_root)
    assert committed.returncode == 0, committed.stderr
    exp = Experiment.load(NAME)
    df = exp.run_parameters_df()
    assert sorted(df["seed"].tolist()) == list(range(40))
    assert len(exp.runs) == 40 and {r.status for r in exp.runs} == {"finished"}
    for run in exp.runs:
        seed = int(df.loc[run.run_id, "seed"])
        wrapper = {"ommx-experiment/command", "ommx-experiment/result", "ommx-experiment/stdout.txt", "ommx-experiment/stderr.txt"}
        assert set(run.attachment_names) >= {*wrapper, "result.txt"}
        assert run.get_blob("ommx-experiment/stdout.txt") == f"out-{seed}\n".encode()


def test_killed_invocations_become_interrupted_runs_and_nothing_else_is_lost(registry_root: Path) -> None:
    exe = str(ommx_experiment_exe())
    procs = [
        subprocess.Popen(
            [exe, "run", NAME, "--param", f"seed={i}", "--", "sh", "-c", "sleep 30" if i % 2 else "echo done"],
            env=_env(registry_root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for i in range(8)
    ]
    slow = [p for i, p in enumerate(procs) if i % 2]
    for p in (p for i, p in enumerate(procs) if i % 2 == 0):
        assert p.wait(timeout=120) == 0
    deadline = time.monotonic() + 60  # the slow ones must have opened their Run before we kill them
    writers = registry_root / ".oxe-writers"
    while len(list(writers.glob("*.lock"))) < len(slow) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    for p in slow:
        p.send_signal(signal.SIGKILL)
        p.wait()
    subprocess.run(["pkill", "-f", "sleep 30"], check=False)
    committed = run_cli("commit", NAME, root=registry_root)
    assert committed.returncode == 0, committed.stderr
    exp = Experiment.load(NAME)
    df = exp.run_parameters_df()
    status = {int(df.loc[r.run_id, "seed"]): (r.status, r.lifecycle_reason) for r in exp.runs}
    assert sorted(status) == list(range(8))
    for seed, (state, reason) in status.items():
        if seed % 2:
            assert (state, reason) == ("interrupted", "process exited while the run was open")
        else:
            assert state == "finished"


def test_param_of_the_wrong_type_is_an_error_before_the_command_runs(registry_root: Path, tmp_path: Path) -> None:
    first = run_cli("run", NAME, "--param", "seed=1", "--", "true", root=registry_root)
    assert first.returncode == 0, first.stderr
    marker = tmp_path / "ran"
    bad = run_cli("run", NAME, "--param", "seed=[1,2]", "--", "touch", str(marker), root=registry_root)
    assert bad.returncode == 1
    assert "error: Run parameter `seed` is a int64 column" in bad.stderr and "got a string value '[1,2]'" in bad.stderr
    assert not marker.exists()
    committed = run_cli("commit", NAME, root=registry_root)
    assert committed.returncode == 0, committed.stderr
    assert Experiment.load(NAME).run_parameters_df()["seed"].tolist() == [1]
