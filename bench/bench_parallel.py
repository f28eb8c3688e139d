"""Parallel studies (issue 11): many writers on one experiment.

Rows:

- ``cli writers``: 40 ``ommx-experiment run NAME --param seed=i -- true`` invocations,
  8 at a time (``xargs -P 8``), then ``commit``: runs/s of the whole batch and of the
  commit. Each invocation is a fresh Python process (interpreter start and imports are
  most of its cost), so this is the throughput a shell sweep sees.
- ``python writers``: 4 processes joining one name, 2,500 params-only runs each
  (10 parameters per run, as the sweep benchmark), then one commit: runs/s.
- ``open-run recovery``: the params-only 10,000-run sweep with autosave disabled, ours
  (open-run log on, as always) beside OMMX 3.0.0b7, in fresh processes.

OMMX 3 has no multi-writer mode, so only the last row has an OMMX column.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import OMMX3_PYTHON, OURS_PYTHON, python_or_none, run_python, scratch_dir

NAME = "example.com/bench/parallel:v1"
CLI_RUNS, CLI_PARALLEL = 40, 8
PY_WRITERS, PY_RUNS = 4, 2_500
SWEEP_RUNS = 10_000

_WRITER = """
import json, sys, time
from ommx_experiment import Experiment
exp = Experiment.join({name!r})
t0 = time.perf_counter()
for i in range({runs}):
    with exp.run() as run:
        for k in range(10):
            run.log_parameter("p%d" % k, i + k)
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""

_SWEEP = """
import json, time
from {module} import Experiment, AutosavePolicy
t0 = time.perf_counter()
exp = Experiment({name!r})
exp.set_autosave_policy(AutosavePolicy.disabled())
for i in range({n}):
    with exp.run() as run:
        for k in range(10):
            run.log_parameter("p%d" % k, (i * 10 + k) + 0.5 if k % 2 else i + k)
exp.commit()
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""


def _cli(root: Path) -> list[dict[str, object]]:
    exe = Path(OURS_PYTHON).parent / "ommx-experiment"
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root))
    script = f"seq 0 {CLI_RUNS - 1} | xargs -P {CLI_PARALLEL} -I{{}} {exe} run {NAME} --param seed={{}} -- true"
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", script], env=env, check=True, capture_output=True)
    batch = time.perf_counter() - t0
    t1 = time.perf_counter()
    subprocess.run([str(exe), "commit", NAME], env=env, check=True, capture_output=True)
    commit = time.perf_counter() - t1
    return [{
        "benchmark": "parallel", "case": f"cli writers: {CLI_RUNS} invocations, -P {CLI_PARALLEL}", "impl": "ours",
        "seconds": round(batch, 3), "runs/s": round(CLI_RUNS / batch, 1), "ms": round(1000 * commit, 1),
        "note": "ms = the commit",
    }]


def _python(root: Path) -> list[dict[str, object]]:
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root))
    code = _WRITER.format(name=NAME, runs=PY_RUNS)
    run_python("from ommx_experiment import Experiment\nimport json\nExperiment.join(%r)\nprint(json.dumps({}))" % NAME,
               python=OURS_PYTHON, env={"OMMX_LOCAL_REGISTRY_ROOT": str(root)})
    t0 = time.perf_counter()
    procs = [subprocess.Popen([str(OURS_PYTHON), "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(PY_WRITERS)]
    inner = [json.loads(p.communicate()[0].strip().splitlines()[-1])["seconds"] for p in procs]
    wall = time.perf_counter() - t0
    commit = run_python(
        "import json, time\nfrom ommx_experiment import Experiment\nt=time.perf_counter()\n"
        f"Experiment.join({NAME!r}).commit()\nprint(json.dumps({{'s': time.perf_counter()-t}}))",
        python=OURS_PYTHON, env={"OMMX_LOCAL_REGISTRY_ROOT": str(root)},
    ).data["s"]
    total = PY_WRITERS * PY_RUNS
    return [{
        "benchmark": "parallel", "case": f"python writers: {PY_WRITERS} x {PY_RUNS} runs x 10 params", "impl": "ours",
        "seconds": round(wall, 3), "runs/s": round(total / max(inner), 1), "ms": round(1000 * commit, 1),
        "note": "runs/s over the slowest writer's loop; seconds = wall incl. process start; ms = the commit",
    }]


def _sweeps(tmp: Path) -> list[dict[str, object]]:
    rows = []
    for impl, module, python in (("ours", "ommx_experiment", OURS_PYTHON), ("ommx3", "ommx.experiment", python_or_none(OMMX3_PYTHON))):
        if python is None:
            continue
        root = tmp / f"sweep-{impl}"
        data = run_python(_SWEEP.format(module=module, name=NAME, n=SWEEP_RUNS), python=python,
                          env={"OMMX_LOCAL_REGISTRY_ROOT": str(root)}).data
        rows.append({
            "benchmark": "parallel", "case": f"params-only sweep {SWEEP_RUNS} runs, autosave disabled", "impl": impl,
            "seconds": round(data["seconds"], 3), "runs/s": round(SWEEP_RUNS / data["seconds"], 1),
            "note": "ours with the open-run log on (always); target <= 1x OMMX 3" if impl == "ours" else "",
        })
    return rows


def run() -> list[dict[str, object]]:
    with scratch_dir("parallel") as tmp:
        return [*_cli(tmp / "cli"), *_python(tmp / "py"), *_sweeps(tmp)]


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row), file=sys.stdout)
