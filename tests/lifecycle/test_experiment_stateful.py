"""A hypothesis state machine over run/close/abandon/commit/fork/rename/restore.

The model is checked against what a FRESH PROCESS sees (tests/workers/experiment_worker.py):
``Experiment.load`` for every committed name and ``restore_from_checkpoint`` for the
unsealed session.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ommx_experiment import AutosavePolicy, Experiment
from ommx_experiment.engine.root import _reset_for_tests

WORKER = Path(__file__).resolve().parents[1] / "workers" / "experiment_worker.py"
REPO = Path(__file__).resolve().parents[2]
NAMES = [f"example.com/state/exp:{tag}" for tag in ("a", "b", "c")]


class ExperimentMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name) / "registry"
        os.environ["OMMX_LOCAL_REGISTRY_ROOT"] = str(self.root)
        _reset_for_tests()
        self.committed: dict[str, dict[int, dict[str, float | int]]] = {}
        self._start(NAMES[0], {}, durable=False)

    def teardown(self) -> None:
        self.exp = None
        gc.collect()
        _reset_for_tests()
        self.tmp.cleanup()

    def _start(self, name: str, runs: dict[int, dict[str, float | int]], *, durable: bool, exp: Experiment | None = None) -> None:
        self.name = name
        self.runs = {k: dict(v) for k, v in runs.items()}
        self.next_id = max(self.runs, default=-1) + 1
        self.durable = durable
        self.exp = exp if exp is not None else Experiment(name)
        self.exp.set_autosave_policy(AutosavePolicy.min_interval(0.0) if len(self.runs) % 2 else AutosavePolicy.disabled())

    # --- rules ----------------------------------------------------------------------------------

    @rule(i=st.integers(-1000, 1000), x=st.one_of(st.none(), st.floats(-1e6, 1e6)))
    def close_run(self, i: int, x: float | None) -> None:
        with self.exp.run() as run:
            assert run.run_id == self.next_id
            run.log_parameter("i", i)
            if x is not None:
                run.log_parameter("x", x)
        self.runs[self.next_id] = {"i": i} if x is None else {"i": i, "x": x}
        self.next_id += 1
        self.durable = True

    @rule()
    def abandon_run(self) -> None:
        run = self.exp.run()
        run.log_parameter("i", 0)
        del run
        gc.collect()
        self.next_id += 1

    @rule(name=st.sampled_from(NAMES))
    def rename(self, name: str) -> None:
        self.exp.rename(name)
        self.name = name

    @rule(fork=st.booleans(), next_name=st.sampled_from(NAMES))
    def commit(self, fork: bool, next_name: str) -> None:
        existing = self.committed.get(self.name)
        try:
            self.exp.commit()
        except RuntimeError as exc:  # a different artifact (content or subject) holds the name
            assert existing is not None and "already points to" in str(exc)
            assert "state='unsealed'" in repr(self.exp)
            return
        assert existing is None or existing == self.runs
        self.committed[self.name] = {k: dict(v) for k, v in self.runs.items()}
        if fork:
            self._start(next_name, self.runs, durable=False, exp=self.exp.fork(next_name))
        else:
            self._start(next_name, {}, durable=False)

    @precondition(lambda self: self.durable)
    @rule()
    def crash_and_restore(self) -> None:
        self.exp = None
        gc.collect()
        restored = Experiment.restore_from_checkpoint(self.name)
        self._start(self.name, self.runs, durable=True, exp=restored)

    # --- checks -----------------------------------------------------------------------------------

    @invariant()
    def live_view_matches(self) -> None:
        if self.exp is None:
            return
        assert [r.run_id for r in self.exp.runs] == sorted(self.runs)

    @precondition(lambda self: self.committed or self.durable)
    @rule()
    def fresh_process_agrees(self) -> None:
        requests = [["dump", name] for name in self.committed]
        expected = list(self.committed.values())
        if self.durable:
            requests.append(["restore", self.name])
            expected.append(self.runs)
        states = self._fresh(requests)
        assert [_params(state) for state in states] == expected

    def _fresh(self, requests: list[list[str]]) -> list[dict]:
        env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(self.root), PYTHONPATH=str(REPO / "src"))
        proc = subprocess.run(
            [sys.executable, str(WORKER), "batch", json.dumps(requests)], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])


def _params(state: dict) -> dict[int, dict[str, float | int]]:
    runs = {r["run_id"]: {} for r in state["runs"]}
    for run_id, values in state["params"].items():
        runs[int(run_id)] = values
    return runs


ExperimentMachine.TestCase.settings = settings(
    max_examples=20, stateful_step_count=12, deadline=None, suppress_health_check=list(HealthCheck)
)
TestExperimentStateMachine = ExperimentMachine.TestCase
