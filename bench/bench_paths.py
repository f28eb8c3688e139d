"""The other paths a study takes, ours beside OMMX 3.0.0b7 (the rows ``bench_issue12`` does not have).

Each case builds its registry once per implementation (setup, not timed), then times the
operation in a fresh process, REPEATS times alternating the implementations, and keeps the
median. Identical calls on both sides (only the import differs); ``ratio`` = ours / OMMX.

- restore a draft of N runs (10 params + one 200 B attachment each; checkpointed once by
  ``AutosavePolicy.every_n_runs(N)``), then ``.runs``, ``run_parameters_df()`` and commit;
- views of an unsealed experiment in the writing process (``runs``, ``run_parameters_df``);
- ``list_experiments()`` / ``list_experiment_checkpoints()`` over many experiments and drafts;
- ``Experiment.load`` + every run's attachment bytes;
- ``fork`` of a large experiment + one run + commit; sealed ``rename`` (an alias); ``save``.

``BENCH_PATHS_SCALE`` (default 1) scales every size.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Any

from _common import OMMX3_PYTHON, OURS_PYTHON, run_python, scratch_dir

SCALE = float(os.environ.get("BENCH_PATHS_SCALE", "1"))
REPEATS = 3
IMPLS = {"ours": ("ommx_experiment", OURS_PYTHON), "ommx3": ("ommx.experiment", OMMX3_PYTHON)}
Row = dict[str, Any]


def _n(value: int) -> int:
    return max(1, int(value * SCALE))


def _py(impl: str, code: str, root: Path) -> Any:
    module, python = IMPLS[impl]
    return run_python(code.replace("{module}", module), python=python, env={"OMMX_LOCAL_REGISTRY_ROOT": str(root)}).data


_SETUP = """
import json, sys
from {{module}} import Experiment, AutosavePolicy
n, drafts, small = {n}, {drafts}, {small}
big = Experiment("example.com/paths/big:v1")
big.set_autosave_policy(AutosavePolicy.disabled())
for i in range(n):
    with big.run() as run:
        for k in range(10):
            run.log_parameter("p%d" % k, i * 10 + k)
        run.log_json("cfg", {{"i": i, "pad": "x" * 180}})
big.commit()
for j in range(small):
    e = Experiment("example.com/paths/small-%d:v1" % j)
    with e.run() as run:
        run.log_parameter("j", j)
    e.commit()
for j in range(drafts):
    d = Experiment("example.com/paths/draft-%d:v1" % j)
    d.set_autosave_policy(AutosavePolicy.every_n_runs(n if j == 0 else 1))
    for i in range(n if j == 0 else 1):
        with d.run() as run:
            for k in range(10):
                run.log_parameter("p%d" % k, i * 10 + k)
            run.log_json("cfg", {{"i": i, "pad": "x" * 180}})
print(json.dumps({{"ok": True}}))
"""

_TIMED = """
import json, time
import {{module}} as lib
from {{module}} import Experiment
t0 = time.perf_counter()
{body}
print(json.dumps({{"seconds": time.perf_counter() - t0, "check": check}}))
"""

CASES: dict[str, str] = {
    "restore draft of N runs + .runs + run_parameters_df + commit": """
e = Experiment.restore_from_checkpoint("example.com/paths/draft-0:v1")
check = [len(e.runs), len(e.run_parameters_df())]
e.commit()""",
    "list_experiments()": """
check = len(lib.list_experiments())""",
    "list_experiment_checkpoints()": """
check = len(lib.list_experiment_checkpoints())""",
    "load + every run's attachment": """
e = Experiment.load("example.com/paths/big:v1")
check = sum(len(r.get_blob("cfg")) for r in e.runs)""",
    "fork of N runs + 1 run + commit": """
import uuid
child = Experiment.load("example.com/paths/big:v1").fork("example.com/paths/fork-%s:v1" % uuid.uuid4().hex[:8])
with child.run() as run:
    run.log_parameter("p0", -1)
check = len(child.commit().image_name) > 0""",
    "sealed rename (alias) x 20": """
import uuid
e = Experiment.load("example.com/paths/big:v1")
tag = uuid.uuid4().hex[:8]
for k in range(20):
    e.rename("example.com/paths/alias-%s-%d:v1" % (tag, k))
check = 20""",
    "save N runs to .ommx": """
import os, tempfile
path = os.path.join(tempfile.mkdtemp(), "big.ommx")
Experiment.load("example.com/paths/big:v1").save(path)
check = os.path.getsize(path) > 0""",
}

_VIEWS = """
import json, time
from {{module}} import Experiment, AutosavePolicy
e = Experiment("example.com/paths/views:v1")
e.set_autosave_policy(AutosavePolicy.disabled())
for i in range({n}):
    with e.run() as run:
        for k in range(10):
            run.log_parameter("p%d" % k, i * 10 + k)
out = {{}}
for label, fn in (("runs", lambda: len(e.runs)), ("run_parameters_df", lambda: len(e.run_parameters_df()))):
    t0 = time.perf_counter()
    for _ in range(5):
        fn()
    out[label] = (time.perf_counter() - t0) / 5
print(json.dumps(out))
"""


def _ratio(ours: float, other: float) -> float:
    return round(ours / other, 3) if other > 0 else float("inf")


def run() -> list[Row]:
    n = _n(2_000)
    rows: list[Row] = []
    with scratch_dir() as tmp:
        roots = {impl: tmp / impl for impl in IMPLS}
        for impl, root in roots.items():
            _py(impl, _SETUP.format(n=n, drafts=_n(20), small=_n(300)), root)
        for case, body in CASES.items():
            samples: dict[str, list[float]] = {impl: [] for impl in IMPLS}
            checks: dict[str, Any] = {}
            repeats = 1 if case.startswith("restore") else REPEATS  # restoring commits the draft: once
            for _ in range(repeats):
                for impl, root in roots.items():
                    got = _py(impl, _TIMED.format(body=body), root)
                    samples[impl].append(got["seconds"])
                    checks[impl] = got["check"]
            med = {impl: statistics.median(xs) for impl, xs in samples.items()}
            label = case.replace("N", f"{n:,}")
            for impl in IMPLS:
                rows.append({"benchmark": "paths", "case": label, "impl": impl, "ms": round(1000 * med[impl], 1),
                             "check": str(checks[impl])})
            rows.append({"benchmark": "paths", "case": label, "impl": "ours/ommx3", "ratio": _ratio(med["ours"], med["ommx3"])})
        views_n = _n(5_000)
        got = {impl: _py(impl, _VIEWS.format(n=views_n), tmp / f"views-{impl}") for impl in IMPLS}
        for view in ("runs", "run_parameters_df"):
            label = f"unsealed {view} in the writing process, {views_n:,} runs"
            for impl in IMPLS:
                rows.append({"benchmark": "paths", "case": label, "impl": impl, "ms": round(1000 * got[impl][view], 1)})
            rows.append({"benchmark": "paths", "case": label, "impl": "ours/ommx3",
                         "ratio": _ratio(got["ours"][view], got["ommx3"][view])})
    return rows


if __name__ == "__main__":
    import json

    for row in run():
        print(json.dumps(row), flush=True)
    sys.exit(0)
