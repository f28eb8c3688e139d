"""Run.log_solve / log_sample and the Solve / Sampling views (§1.7, §1.9, §2.8) with real adapters."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from ommx.adapter import SamplerAdapter, SolverAdapter
from ommx.v1 import DecisionVariable, Instance, SampleSet, Solution
from ommx_highs_adapter import OMMXHighsAdapter
from ommx_openjij_adapter import OMMXOpenJijSAAdapter

from ommx_experiment import Experiment, LocalRegistry
from ommx_experiment.engine.oci import Manifest
from ommx_experiment.lifecycle.diagnostics import DiagnosticCollector, pack_diagnostics

NAME = "example.com/team/solve:v1"
REPO = Path(__file__).resolve().parents[2]

# --- instances -----------------------------------------------------------------------------------------

WEIGHTS, VALUES = (4, 3, 2, 5), (7, 4, 3, 8)


def knapsack(capacity: int = 7) -> Instance:
    """A small 0/1 knapsack: optimum 11 at capacity 7, 15 at capacity 9."""
    x = [DecisionVariable.binary(i) for i in range(len(WEIGHTS))]
    inst = Instance.from_components(
        decision_variables=x,
        objective=sum(v * xi for v, xi in zip(VALUES, x)),
        constraints=[(sum(w * xi for w, xi in zip(WEIGHTS, x)) <= capacity).set_id(0)],
        sense=Instance.MAXIMIZE,
    )
    inst.annotations = {"org.ommx.user.case": "knapsack"}
    return inst


def contradictory() -> Instance:
    """Constraints no assignment satisfies (sum == 1 and sum == 2): every sample is infeasible."""
    x = [DecisionVariable.binary(i) for i in range(3)]
    total = x[0] + x[1] + x[2]
    return Instance.from_components(
        decision_variables=x, objective=x[0], constraints=[(total == 1).set_id(0), (total == 2).set_id(1)],
        sense=Instance.MAXIMIZE,
    )


# --- a scripted adapter of our own (failure paths, diagnostics) ----------------------------------------


@dataclass
class Note:
    kind: str
    bound: float
    counts: dict[int, int] = field(default_factory=dict)


@dataclass
class Opaque:
    thing: object


class Scripted(SolverAdapter):
    """Solves by evaluating the all-zero state; ``mode`` chooses a failure."""

    calls: list[dict[str, Any]] = []

    def __init__(self, ommx_instance: Instance, *, mode: str = "ok", **options: Any) -> None:
        if mode == "ctor_raise":
            raise ValueError("constructor failed")
        self.instance = ommx_instance
        self.options = options

    @classmethod
    def solve(cls, ommx_instance: Instance, *, mode: str = "ok", diagnostics: Any = None, **options: Any) -> Any:
        cls.calls.append({"mode": mode, "options": options, "diagnostics": diagnostics, "instance": ommx_instance})
        if diagnostics is not None:
            diagnostics.record(Note("start", math.inf, {1: 2, -3: 4}))
        if mode == "unpackable" and diagnostics is not None:
            diagnostics.record(Opaque(object()))
        if mode == "raise":
            raise ValueError("adapter exploded")
        if mode == "interrupt":
            raise KeyboardInterrupt
        if mode == "wrong_type":
            return {"not": "a solution"}
        ommx_instance.annotations = {"org.ommx.user.mutated": "by adapter"}  # the adapter's copy only
        return cls(ommx_instance).decode({})

    @property
    def solver_input(self) -> Any:
        return {"n": len(self.instance.decision_variables)}

    def decode(self, data: Any) -> Solution:
        if data == "bad":
            raise RuntimeError("decode failed")
        if data == "wrong":
            return "not a solution"  # type: ignore[return-value]
        state = {v.id: float(data.get(v.id, 0)) for v in self.instance.decision_variables}
        solution = self.instance.evaluate(state)
        solution.annotations = {"org.ommx.user.adapter": "scripted"}
        return solution


class Legacy(SolverAdapter):
    """An adapter written before diagnostics existed: ``solve(instance)`` only."""

    def __init__(self, ommx_instance: Instance) -> None:
        self.instance = ommx_instance

    @classmethod
    def solve(cls, ommx_instance: Instance) -> Solution:
        return ommx_instance.evaluate({v.id: 0.0 for v in ommx_instance.decision_variables})

    @property
    def solver_input(self) -> Any:
        return None

    def decode(self, data: Any) -> Solution:
        return self.instance.evaluate(data)


class FailingSampler(SamplerAdapter):
    def __init__(self, ommx_instance: Instance) -> None:
        self.instance = ommx_instance

    @classmethod
    def sample(cls, ommx_instance: Instance, **kwargs: Any) -> SampleSet:
        raise RuntimeError("sampler exploded")

    @classmethod
    def solve(cls, ommx_instance: Instance) -> Solution:
        raise NotImplementedError

    @property
    def sampler_input(self) -> Any:
        return None

    @property
    def solver_input(self) -> Any:
        return None

    def decode(self, data: Any) -> Solution:
        raise NotImplementedError

    def decode_to_sampleset(self, data: Any) -> SampleSet:
        raise NotImplementedError


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    Scripted.calls.clear()


def fingerprint(obj: Any) -> Any:
    """The content of an OMMX object, comparable across processes (its protobuf bytes are not:
    ommx 2.x serialises hash maps in arbitrary order)."""
    if obj is None:
        return None
    if isinstance(obj, Instance):
        constraints = sorted((c.id, str(c.function), str(c.equality)) for c in obj.constraints)
        found = {"objective": str(obj.objective), "variables": sorted(v.id for v in obj.decision_variables),
                 "constraints": constraints, "sense": str(obj.sense)}
    elif isinstance(obj, Solution):
        found = {"objective": obj.objective, "state": sorted(obj.state.entries.items()), "feasible": obj.feasible}
    else:
        found = {"objectives": sorted(obj.objectives.items()), "feasible": sorted(obj.feasible.items())}
    found["annotations"] = dict(obj.annotations)
    return json.loads(json.dumps(found))


def summary(exp: Experiment) -> list[dict[str, Any]]:
    """Every call of every run, in a JSON-comparable form."""
    out = []
    for run in exp.runs:
        for kind, calls in (("solve", run.solves), ("sampling", run.samplings)):
            for c in calls:
                out.append({
                    "run": run.run_id, "kind": kind, "repr": repr(c), "status": c.status, "adapter": c.adapter,
                    "options": c.adapter_options, "diagnostics": repr(c.diagnostics),
                    "input": fingerprint(c.input), "output": fingerprint(c.output),
                })
    return out


# --- log_solve with HiGHS --------------------------------------------------------------------------------


def test_log_solve_highs_knapsack_roundtrip() -> None:
    exp = Experiment(NAME)
    inst = knapsack()
    with exp.run() as run:
        run.log_parameter("capacity", 7)
        solution = run.log_solve(OMMXHighsAdapter, inst)
        again = run.log_solve(OMMXHighsAdapter, knapsack(9), verbose=False)
    assert isinstance(solution, Solution) and solution.feasible and solution.objective == 11
    assert again.objective == 15
    sealed = exp.runs[0]
    assert repr(sealed) == "SealedRun(run_id=0, status='finished', attachments=0, solves=2, samplings=0)"
    first, second = sealed.solves
    assert (first.solve_id, second.solve_id) == (0, 1) and repr(first) == "Solve(solve_id=0, status='finished')"
    assert first.adapter == "ommx_highs_adapter.adapter.OMMXHighsAdapter"
    assert (first.adapter_options, second.adapter_options) == ({}, {"verbose": False})
    assert fingerprint(first.input) == fingerprint(inst)
    assert first.input.annotations["org.ommx.user.case"] == "knapsack"
    assert fingerprint(first.output) == fingerprint(solution) and first.output.objective == 11
    assert first.diagnostics == [] and sealed.samplings == [] and sealed.attachment_names == []
    assert exp.run_parameters_df().columns.tolist() == ["capacity"]
    exp.commit()
    loaded = Experiment.load(NAME)
    assert summary(loaded) == summary(exp)
    assert loaded.run_parameters_df().columns.tolist() == ["capacity"]


def test_stored_config_and_layers_follow_ommx_format() -> None:
    exp = Experiment(NAME)
    inst = knapsack()
    with exp.run() as run:
        run.log_solve(Scripted, inst, store_diagnostics=True, time_limit=1.5, tag="é")
        with pytest.raises(ValueError):
            run.log_solve(Scripted, inst, mode="raise")
    exp.commit()
    registry = LocalRegistry.at(Path(os.environ["OMMX_LOCAL_REGISTRY_ROOT"]))
    manifest = Manifest.parse(registry.blobs.get(registry.resolve(NAME)))
    config = json.loads(registry.blobs.get(manifest.config.digest))
    solves = config["runs"][0]["solves"]
    adapter = f"{Scripted.__module__}.Scripted"
    assert solves == [
        {"solve_id": 0, "status": "finished", "input": 0, "output": 1, "adapter": adapter,
         "adapter_options": '{"time_limit": 1.5, "tag": "\\u00e9"}', "diagnostics": 2},
        {"solve_id": 1, "status": "failed", "input": 3, "adapter": adapter, "adapter_options": '{"mode": "raise"}'},
    ]
    media = [layer.media_type for layer in manifest.layers]
    assert media[:4] == ["application/org.ommx.v1.instance", "application/org.ommx.v1.solution",
                         "application/org.ommx.diagnostic+msgpack", "application/org.ommx.v1.instance"]
    assert manifest.layers[0].digest == manifest.layers[3].digest  # same input twice, no de-duplication
    assert dict(manifest.layers[0].annotations)["org.ommx.user.case"] == "knapsack"
    assert dict(manifest.layers[2].annotations) == {}
    raw = registry.blobs.get(manifest.layers[2].digest)
    assert msgpack.unpackb(raw, raw=False, strict_map_key=False) == [{"kind": "start", "bound": math.inf, "counts": {1: 2, -3: 4}}]


def test_adapter_gets_a_copy_and_verbatim_kwargs() -> None:
    exp = Experiment(NAME)
    inst = knapsack()
    nested = {"a": [1, 2], "b": {"c": None}}
    with exp.run() as run:
        run.log_solve(Scripted, inst, nested=nested, flag=True)
    call = Scripted.calls[0]
    assert call["options"] == {"nested": nested, "flag": True} and "diagnostics" not in call["options"]
    assert call["diagnostics"] is None
    assert call["instance"] is not inst
    assert "org.ommx.user.mutated" not in inst.annotations  # the adapter changed its copy only
    stored = exp.runs[0].solves[0]
    assert stored.input.annotations.get("org.ommx.user.mutated") is None
    assert stored.adapter_options == {"nested": nested, "flag": True}


def test_diagnostics_round_trip_with_inf_and_int_keys() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        run.log_solve(Scripted, knapsack(), store_diagnostics=True, seed=3)
    sink = Scripted.calls[0]["diagnostics"]
    assert isinstance(sink, DiagnosticCollector)
    solve = exp.runs[0].solves[0]
    assert solve.adapter_options == {"seed": 3}  # store_diagnostics is never an option
    assert solve.diagnostics == [{"kind": "start", "bound": math.inf, "counts": {1: 2, -3: 4}}]
    exp.commit()
    assert Experiment.load(NAME).runs[0].solves[0].diagnostics == solve.diagnostics


def test_unpackable_diagnostics_drop_only_the_diagnostics() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        solution = run.log_solve(Scripted, knapsack(), store_diagnostics=True, mode="unpackable")
    assert isinstance(solution, Solution)
    solve = exp.runs[0].solves[0]
    assert solve.status == "finished" and solve.diagnostics == [] and solve.output is not None


def test_pack_diagnostics_rules() -> None:
    assert pack_diagnostics([]) is None
    assert pack_diagnostics([Note("note", 3, {})]) == msgpack.packb([{"kind": "note", "bound": 3, "counts": {}}], use_bin_type=True)
    with pytest.raises(TypeError):
        pack_diagnostics([{"not": "a dataclass"}])


def test_adapter_exception_records_failed_solve_and_reraises_same_object() -> None:
    exp = Experiment(NAME)
    with pytest.raises(ValueError, match="adapter exploded") as info:
        with exp.run() as run:
            run.log_solve(Scripted, knapsack())
            run.log_solve(Scripted, knapsack(), store_diagnostics=True)
            try:
                run.log_solve(Scripted, knapsack(), store_diagnostics=True, mode="raise")
            except ValueError as exc:
                caught = exc
                raise
    assert info.value is caught
    sealed = exp.runs[0]
    assert sealed.status == "failed" and sealed.lifecycle_reason == "ValueError: adapter exploded"
    assert [(s.solve_id, s.status) for s in sealed.solves] == [(0, "finished"), (1, "finished"), (2, "failed")]
    failed = sealed.solves[2]
    assert failed.output is None and fingerprint(failed.input) == fingerprint(knapsack())
    assert failed.adapter_options == {"mode": "raise"}
    assert failed.diagnostics == [{"kind": "start", "bound": math.inf, "counts": {1: 2, -3: 4}}]


def test_keyboard_interrupt_records_interrupted() -> None:
    exp = Experiment(NAME)
    with pytest.raises(KeyboardInterrupt):
        with exp.run() as run:
            run.log_solve(Scripted, knapsack(), store_diagnostics=True, mode="interrupt")
    sealed = exp.runs[0]
    assert sealed.status == "interrupted" and sealed.lifecycle_reason == "KeyboardInterrupt"
    solve = sealed.solves[0]
    assert solve.status == "interrupted" and solve.output is None and len(solve.diagnostics) == 1


def test_wrong_return_type_is_a_failed_solve() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        with pytest.raises(TypeError, match=r"adapter.solve\(...\) must return ommx.Solution"):
            run.log_solve(Scripted, knapsack(), mode="wrong_type")
    solve = exp.runs[0].solves[0]
    assert solve.status == "failed" and solve.output is None


def test_legacy_adapter_without_diagnostics_parameter() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        assert isinstance(run.log_solve(Legacy, knapsack()), Solution)
        with pytest.raises(TypeError, match="diagnostics"):  # the adapter cannot take the sink
            run.log_solve(Legacy, knapsack(), store_diagnostics=True)
    assert [s.status for s in exp.runs[0].solves] == ["finished", "failed"]


def test_the_ommx_2_9_highs_adapter_with_diagnostics_says_it_needs_an_ommx3_adapter() -> None:
    """The 2.9 adapter's own TypeError (so the Run's reason is OMMX 3's for such an adapter), plus a note."""
    exp = Experiment(NAME)
    with pytest.raises(TypeError) as caught:
        with exp.run() as run:
            run.log_solve(OMMXHighsAdapter, knapsack(), store_diagnostics=True)
    assert str(caught.value) == "OMMXHighsAdapter.solve() got an unexpected keyword argument 'diagnostics'"
    [note] = caught.value.__notes__
    assert "OMMXHighsAdapter.solve(), which does not accept it" in note and "adapter written for ommx 3" in note
    [run] = exp.runs
    assert run.status == "failed" and run.lifecycle_reason == f"TypeError: {caught.value}"
    assert [(s.status, s.diagnostics) for s in run.solves] == [("failed", [])]


def test_argument_validation_happens_before_the_adapter_runs() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        with pytest.raises(TypeError, match="ommx.adapter.SolverAdapter"):
            run.log_solve(object, knapsack())
        with pytest.raises(TypeError, match="ommx.adapter.SolverAdapter"):
            run.log_solve(Scripted(knapsack()), knapsack())  # an instance, not the class
        with pytest.raises(TypeError, match="ommx.adapter.SamplerAdapter"):
            run.log_sample(OMMXHighsAdapter, knapsack())
        with pytest.raises(ValueError, match="JSON-serializable"):
            run.log_solve(Scripted, knapsack(), bad={1, 2})
        with pytest.raises(ValueError, match=r"Run.log_solve owns the `diagnostics` adapter option"):
            run.log_solve(Scripted, knapsack(), diagnostics=None)
        with pytest.raises(ValueError, match=r"Run.log_sample owns the `diagnostics` adapter option"):
            run.log_sample(OMMXOpenJijSAAdapter, knapsack(), diagnostics=None)
        assert Scripted.calls == []
        run.log_solve(Scripted, knapsack())
    assert [s.solve_id for s in exp.runs[0].solves] == [0]  # no id consumed by the rejected calls


def test_writes_after_close_and_on_sealed_runs() -> None:
    exp = Experiment(NAME)
    run = exp.run()
    run.finish()
    with pytest.raises(RuntimeError, match="Run has already been finished"):
        run.log_solve(Scripted, knapsack())
    assert Scripted.calls == []


# --- log_sample with OpenJij ----------------------------------------------------------------------------------


def test_log_sample_openjij_infeasible_is_finished() -> None:
    exp = Experiment(NAME)
    inst = contradictory()
    with exp.run() as run:
        sample_set = run.log_sample(OMMXOpenJijSAAdapter, inst, num_reads=4, seed=0)
    assert isinstance(sample_set, SampleSet) and not any(sample_set.feasible.values())
    sealed = exp.runs[0]
    assert sealed.solves == []
    (sampling,) = sealed.samplings
    assert repr(sampling) == "Sampling(sampling_id=0, status='finished')" and sampling.sampling_id == 0
    assert sampling.adapter == "ommx_openjij_adapter.OMMXOpenJijSAAdapter"
    assert sampling.adapter_options == {"num_reads": 4, "seed": 0} and sampling.diagnostics == []
    assert fingerprint(sampling.input) == fingerprint(inst)
    assert fingerprint(sampling.output) == fingerprint(sample_set)
    exp.commit()
    assert summary(Experiment.load(NAME)) == summary(exp)


def test_failing_sampler_records_failed_sampling() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        with pytest.raises(RuntimeError, match="sampler exploded"):
            run.log_sample(FailingSampler, knapsack(), store_diagnostics=True)
        run.log_sample(OMMXOpenJijSAAdapter, knapsack(), num_reads=2, seed=1)
    sealed = exp.runs[0]
    assert sealed.solves == []
    assert [(s.sampling_id, s.status, s.output is None) for s in sealed.samplings] == [(0, "failed", True), (1, "finished", False)]


# --- persistence ---------------------------------------------------------------------------------------


_READER = """
import json, sys
from ommx_experiment import Experiment
sys.path.insert(0, {tests!r})
from lifecycle.test_solve import summary
print(json.dumps(summary(Experiment.load({name!r}))))
"""


def test_commit_then_load_in_a_fresh_process_gives_identical_solves() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        run.log_solve(OMMXHighsAdapter, knapsack())
        run.log_solve(Scripted, knapsack(), store_diagnostics=True, x=1)
        run.log_sample(OMMXOpenJijSAAdapter, knapsack(), num_reads=2, seed=0)
    with pytest.raises(ValueError):
        with exp.run() as run:
            run.log_solve(Scripted, knapsack(), mode="raise")
    exp.commit()
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    script = _READER.format(tests=str(REPO / "tests"), name=NAME)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == summary(exp)


def test_option_names_may_shadow_parameter_names() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        run.log_solve(Scripted, knapsack(), adapter="a", instance="i", run=1, self=2)
    assert exp.runs[0].solves[0].adapter_options == {"adapter": "a", "instance": "i", "run": 1, "self": 2}
