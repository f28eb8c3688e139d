"""A hypothesis state machine over join / run / close / kill / discard / commit across two processes.

Two real writer processes (tests/workers/shared_worker.py) share one experiment name;
the machine opens and closes runs in either, kills either with SIGKILL (its open runs
must come back ``interrupted``), discards closed runs and commits. The model is
checked against what a fresh process loads after each commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from helpers.processes import Writer
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

REPO = Path(__file__).resolve().parents[2]
_LOAD = """
import json, sys
from ommx_experiment import Experiment
exp = Experiment.load(sys.argv[1])
df = exp.run_parameters_df()
print(json.dumps({str(r.run_id): [r.status, None if "k" not in df.columns else int(df.loc[r.run_id, "k"])] for r in exp.runs}))
"""


class SharedMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name) / "registry"
        self.generation = 0
        self.counter = 0
        self.writers: list[Writer] = []
        self._new_experiment()

    def teardown(self) -> None:
        for writer in self.writers:
            if writer.proc.poll() is None:
                writer.kill()
        self.tmp.cleanup()

    def _new_experiment(self) -> None:
        self.name = f"example.com/shared/machine:g{self.generation}"
        for writer in self.writers:
            if writer.proc.poll() is None:
                writer.kill()
        self.writers = [self._start_writer(), self._start_writer()]
        self.open: list[dict[int, int]] = [{}, {}]  # per writer: run id -> k
        self.expected: dict[int, tuple[str, int]] = {}  # run id -> (status, k)

    def _start_writer(self) -> Writer:
        writer = Writer(self.root)
        assert writer.ask("join", self.name) == {"ok": True}
        return writer

    @rule(w=st.integers(0, 1))
    def open_run(self, w: int) -> None:
        self.counter += 1
        reply = self.writers[w].ask("open", "k", self.counter)
        run_id = reply["run_id"]
        assert run_id not in self.expected and all(run_id not in o for o in self.open)  # unique across writers
        self.open[w][run_id] = self.counter

    @precondition(lambda self: bool(self.open[0] or self.open[1]))
    @rule(data=st.data())
    def close_run(self, data: st.DataObject) -> None:
        w = data.draw(st.sampled_from([i for i in (0, 1) if self.open[i]]))
        run_id = data.draw(st.sampled_from(sorted(self.open[w])))
        assert self.writers[w].ask("close", run_id) == {"ok": True}
        self.expected[run_id] = ("finished", self.open[w].pop(run_id))

    @rule(w=st.integers(0, 1))
    def kill(self, w: int) -> None:
        self.writers[w].kill()
        for run_id, k in self.open[w].items():
            self.expected[run_id] = ("interrupted", k)
        self.open[w] = {}
        self.writers[w] = self._start_writer()  # joining records the dead writer's open runs

    @precondition(lambda self: any(s == "finished" for s, _ in self.expected.values()))
    @rule(data=st.data(), w=st.integers(0, 1))
    def discard(self, data: st.DataObject, w: int) -> None:
        run_id = data.draw(st.sampled_from(sorted(r for r, (s, _) in self.expected.items() if s == "finished")))
        assert self.writers[w].ask("discard", run_id) == {"ok": True}
        del self.expected[run_id]

    @rule(w=st.integers(0, 1))
    def commit(self, w: int) -> None:
        reply = self.writers[w].ask("commit")
        if self.open[w]:  # this process's own open Run handles refuse first, as in OMMX
            assert reply.get("error") == "LifecycleError", reply
            return
        if self.open[1 - w]:
            assert reply.get("error") == "ExperimentBusyError", reply
            return
        assert "digest" in reply, reply
        loaded = self._load()
        assert loaded == {str(r): [s, k] for r, (s, k) in self.expected.items()}
        self.generation += 1
        self._new_experiment()

    def _load(self) -> dict[str, Any]:
        env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(self.root), PYTHONPATH=str(REPO / "src"))
        proc = subprocess.run([sys.executable, "-c", _LOAD, self.name], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)  # type: ignore[no-any-return]


TestSharedMachine = SharedMachine.TestCase
# Each step talks to real processes (about 0.1-1 s): few examples, and no shrinking phase, which
# could take many minutes; a failure prints its full step list, short enough to read as it is.
TestSharedMachine.settings = settings(
    max_examples=4,
    stateful_step_count=12,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
