"""Subprocess worker for Experiment tests: run in a FRESH process, print JSON or progress lines.

Usage (registry root from ``OMMX_LOCAL_REGISTRY_ROOT``)::

    experiment_worker.py dump NAME            # Experiment.load(NAME) -> JSON summary
    experiment_worker.py restore NAME         # restore_from_checkpoint(NAME) -> JSON summary
    experiment_worker.py batch JSON           # [[dump|restore, NAME], ...] -> JSON list of summaries
    experiment_worker.py sweep NAME N [--policy P] [--then-commit] [--step]
        # closes N runs (param i, attachment bytes), printing "closed <i>" after each,
        # then either commits (printing "committed") or sleeps until killed.
        # --step: after each "closed" line, wait for one stdin line before the next run.
    experiment_worker.py fail NAME N          # N runs then an exception in `with Experiment`
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def summary(exp: Any) -> dict[str, Any]:
    """A JSON-able picture of an experiment, identical for sealed and unsealed sessions."""
    df = exp.run_parameters_df()
    params: dict[str, dict[str, Any]] = {}
    for column in df.columns:
        for run_id, value in df[column].items():
            if value is not None and str(value) != "<NA>":
                params.setdefault(str(int(run_id)), {})[column] = _plain(value)
    frame = df.astype(object).where(df.notna(), None)
    return {
        "df": json.dumps(frame.to_dict(), sort_keys=True, default=str),
        "dtypes": [str(t).replace("[python]", "") for t in df.dtypes],
        "columns": [str(c) for c in df.columns],
        "index": [int(i) for i in df.index],
        "image_name": exp.image_name,
        "status": exp.status,
        "annotations": exp.annotations,
        "attachments": {n: exp.get_blob(n).hex() for n in exp.attachment_names},
        "runs": [
            {
                "run_id": r.run_id,
                "status": r.status,
                "reason": r.lifecycle_reason,
                "attachments": {n: r.get_blob(n).hex() for n in r.attachment_names},
            }
            for r in exp.runs
        ],
        "params": params,
    }


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return "NaN"
    return value


def _policy(text: str) -> Any:
    from ommx_experiment import AutosavePolicy

    if text == "disabled":
        return AutosavePolicy.disabled()
    if text == "every":
        return AutosavePolicy.every_run_close()
    return AutosavePolicy.min_interval(float(text))


def sweep(name: str, n: int, policy: str | None, then_commit: bool, step: bool) -> None:
    from ommx_experiment import Experiment

    exp = Experiment(name)
    if policy is not None:
        exp.set_autosave_policy(_policy(policy))
    exp.log_attachment("shared", "application/octet-stream", b"experiment-level")
    for i in range(n):
        with exp.run() as run:
            run.log_parameter("i", i)
            run.log_parameter("x", i / 2)
            run.log_attachment("blob", "application/octet-stream", f"payload-{i}".encode())
        print(f"closed {i}", flush=True)
        if step:
            sys.stdin.readline()
    if then_commit:
        exp.commit()
        print("committed", flush=True)
        return
    while True:
        time.sleep(60)


def fail(name: str, n: int) -> None:
    from ommx_experiment import Experiment

    try:
        with Experiment(name) as exp:
            for i in range(n):
                with exp.run() as run:
                    run.log_parameter("i", i)
            raise ValueError("boom")
    except ValueError:
        print("failed", flush=True)


def main(argv: list[str]) -> None:
    from ommx_experiment import Experiment

    command, name = argv[0], argv[1]
    if command == "batch":  # name = JSON list of [command, name] pairs; prints a JSON list
        out = []
        for sub, sub_name in json.loads(name):
            load = Experiment.load if sub == "dump" else Experiment.restore_from_checkpoint
            out.append(summary(load(sub_name)))
        print(json.dumps(out))
    elif command == "dump":
        print(json.dumps(summary(Experiment.load(name))))
    elif command == "restore":
        print(json.dumps(summary(Experiment.restore_from_checkpoint(name))))
    elif command == "sweep":
        policy = argv[argv.index("--policy") + 1] if "--policy" in argv else None
        sweep(name, int(argv[2]), policy, "--then-commit" in argv, "--step" in argv)
    elif command == "fail":
        fail(name, int(argv[2]))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
