"""Solves, Samplings, diagnostics and traces shared with OMMX 3.0.0b7 (side venv) in one Local Registry root.

ommx 2.9.3 (our venv) writes v1 protobuf payloads, which OMMX 3 reads; OMMX 3
writes v2 payloads, which ommx 2.9.3 cannot decode: our ``Solve.input`` /
``.output`` then fail with a clear error while every other field reads fine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from ommx_highs_adapter import OMMXHighsAdapter
from ommx_openjij_adapter import OMMXOpenJijSAAdapter
from lifecycle.test_solve import Note, Scripted, knapsack

from ommx_experiment import Experiment, LocalRegistry
from ommx_experiment.engine.oci import Manifest

pytestmark = pytest.mark.ommx3

OURS = "example.com/interop/our-solves:v1"
THEIRS = "example.com/interop/their-solves:v1"

_READ_OURS = """
import json
from ommx.experiment import Experiment

def instance(i):
    ones = {v.id: 1.0 for v in i.decision_variables}
    return {"vars": sorted(v.id for v in i.decision_variables), "at_ones": i.evaluate(ones).objective,
            "case": i.annotations.get("org.ommx.user.case")}

def output(o):
    if o is None:
        return None
    if hasattr(o, "objectives"):
        return {"objectives": sorted(o.objectives.items()), "feasible": sorted(o.feasible.items())}
    return {"objective": o.objective, "feasible": o.feasible, "state": sorted(o.state.entries.items())}

def call(c, id_name):
    return {"id": getattr(c, id_name), "repr": repr(c), "status": c.status, "adapter": c.adapter,
            "options": c.adapter_options, "diagnostics": repr(c.diagnostics),
            "input": instance(c.input), "output": output(c.output)}

run = Experiment.load(NAME).runs[0]
print(json.dumps({
    "run": repr(run),
    "solves": [call(c, "solve_id") for c in run.solves],
    "samplings": [call(c, "sampling_id") for c in run.samplings],
    "trace_hex": run.trace.otlp_protobuf().hex(),
    "trace_tree": repr(run.trace),
}))
"""


def _instance_view(inst: Any) -> dict[str, Any]:
    ones = {v.id: 1.0 for v in inst.decision_variables}
    return {"vars": sorted(v.id for v in inst.decision_variables), "at_ones": inst.evaluate(ones).objective,
            "case": inst.annotations.get("org.ommx.user.case")}


def _output_view(out: Any) -> Any:
    if out is None:
        return None
    if hasattr(out, "objectives"):
        return {"objectives": sorted(out.objectives.items()), "feasible": sorted(out.feasible.items())}
    return {"objective": out.objective, "feasible": out.feasible, "state": sorted(out.state.entries.items())}


def _call_view(c: Any, id_name: str) -> dict[str, Any]:
    return {"id": getattr(c, id_name), "repr": repr(c), "status": c.status, "adapter": c.adapter,
            "options": c.adapter_options, "diagnostics": repr(c.diagnostics),
            "input": _instance_view(c.input), "output": _output_view(c.output)}


def test_ommx3_reads_our_solves_samplings_diagnostics_and_trace(ommx3: Any, registry_root: Path) -> None:
    exp = Experiment(OURS, store_trace=True)
    with exp.run() as run:
        run.log_solve(OMMXHighsAdapter, knapsack())
        run.log_solve(Scripted, knapsack(), store_diagnostics=True, time_limit=1.5, name="é")
        with pytest.raises(ValueError):
            run.log_solve(Scripted, knapsack(), mode="raise")
        with run.open_solve(Scripted, knapsack(), store_diagnostics=True) as solve:
            solve.diagnostics.record(Note("open", math.nan, {2: 3}))
            solve.decode({3: 1})
        run.log_sample(OMMXOpenJijSAAdapter, knapsack(), num_reads=2, seed=0)
    exp.commit()
    sealed = exp.runs[0]
    theirs = ommx3.run_json(_READ_OURS.replace("NAME", repr(OURS)), root=registry_root)
    ours = json.loads(json.dumps({
        "run": repr(sealed),
        "solves": [_call_view(c, "solve_id") for c in sealed.solves],
        "samplings": [_call_view(c, "sampling_id") for c in sealed.samplings],
        "trace_hex": sealed.trace.otlp_protobuf().hex(),
        "trace_tree": repr(sealed.trace),
    }))
    assert theirs == ours
    assert [s["status"] for s in theirs["solves"]] == ["finished", "finished", "failed", "finished"]
    assert theirs["solves"][1]["options"] == {"time_limit": 1.5, "name": "é"}
    assert theirs["solves"][1]["diagnostics"] == "[{'kind': 'start', 'bound': inf, 'counts': {1: 2, -3: 4}}]"
    assert theirs["solves"][3]["diagnostics"] == "[{'kind': 'open', 'bound': nan, 'counts': {2: 3}}]"
    assert theirs["samplings"][0]["adapter"] == "ommx_openjij_adapter.OMMXOpenJijSAAdapter"
    assert "└── Run (" in theirs["trace_tree"] and "{scope=ommx.experiment}" in theirs["trace_tree"]


_WRITE_THEIRS = """
import json
from ommx import DecisionVariable, Instance
from ommx.experiment import Experiment
from ommx_highs_adapter import OMMXHighsAdapter
from ommx_openjij_adapter import OMMXOpenJijSAAdapter

x = [DecisionVariable.binary(i) for i in range(4)]
W, V = (4, 3, 2, 5), (7, 4, 3, 8)
knapsack = Instance.from_components(decision_variables=x, objective=sum(v * xi for v, xi in zip(V, x)),
    constraints={0: sum(w * xi for w, xi in zip(W, x)) <= 7}, sense=Instance.MAXIMIZE)
qubo = Instance.from_components(decision_variables=x[:3], objective=x[0] * x[1] - x[0] + 2 * x[2] - x[1],
    constraints={}, sense=Instance.MINIMIZE)
exp = Experiment(NAME, store_trace=True)
with exp.run() as run:
    sample_set = run.log_sample(OMMXOpenJijSAAdapter, qubo, num_reads=4, seed=0)
    solution = run.log_solve(OMMXHighsAdapter, knapsack, store_diagnostics=True)
exp.commit()
run = exp.runs[0]
print(json.dumps({
    "qubo": qubo.to_v2_bytes().hex(), "knapsack": knapsack.to_v2_bytes().hex(),
    "sample_set": sample_set.to_v2_bytes().hex(), "solution": solution.to_v2_bytes().hex(),
    "solve_diagnostics": repr(run.solves[0].diagnostics), "trace_tree": repr(run.trace),
    "trace_hex": run.trace.otlp_protobuf().hex(),
}))
"""


def _layer_bytes(registry_root: Path, name: str) -> tuple[list[Any], dict[str, Any], LocalRegistry]:
    registry = LocalRegistry.at(registry_root)
    manifest = Manifest.parse(registry.blobs.get(registry.resolve(name)))
    config = json.loads(registry.blobs.get(manifest.config.digest))
    return list(manifest.layers), config["runs"][0], registry


def test_we_read_what_ommx3_writes_with_its_adapters(ommx3: Any, registry_root: Path) -> None:
    theirs = ommx3.run_json(_WRITE_THEIRS.replace("NAME", repr(THEIRS)), root=registry_root)
    exp = Experiment.load(THEIRS)
    sealed = exp.runs[0]
    assert repr(sealed) == "SealedRun(run_id=0, status='finished', attachments=0, solves=1, samplings=1)"
    (sampling,) = sealed.samplings
    (solve,) = sealed.solves
    assert (sampling.sampling_id, sampling.status) == (0, "finished")
    assert sampling.adapter == "ommx_openjij_adapter.OMMXOpenJijSAAdapter"
    assert sampling.adapter_options == {"num_reads": 4, "seed": 0} and sampling.diagnostics == []
    assert solve.adapter == "ommx_highs_adapter.adapter.OMMXHighsAdapter" and solve.adapter_options == {}
    assert repr(solve.diagnostics) == theirs["solve_diagnostics"]  # HiGHS reports, inf included
    assert solve.diagnostics[-1]["status"] == "Optimal"

    layers, run_record, registry = _layer_bytes(registry_root, THEIRS)
    sampling_record, solve_record = run_record["samplings"][0], run_record["solves"][0]
    stored = {k: registry.blobs.get(layers[v].digest) for k, v in (
        ("qubo", sampling_record["input"]), ("sample_set", sampling_record["output"]),
        ("knapsack", solve_record["input"]), ("solution", solve_record["output"]))}
    assert stored["qubo"].hex() == theirs["qubo"]  # the caller's bytes, exactly
    assert stored["knapsack"].hex() == theirs["knapsack"]
    assert stored["sample_set"].hex() == theirs["sample_set"]
    assert stored["solution"].hex() == theirs["solution"]
    assert layers[sampling_record["input"]].media_type == "application/org.ommx.v2.instance"

    # ommx 2.9.3 has no v2 decoder: a clear error naming the call, the digest and the fix.
    with pytest.raises(RuntimeError, match=r"Sampling 0 input \(sha256:[0-9a-f]{64}\): Cannot decode application/org.ommx.v2.instance.*ommx>=3"):
        sampling.input
    with pytest.raises(RuntimeError, match=r"Solve 0 output .*application/org.ommx.v2.solution"):
        solve.output

    assert sealed.trace.otlp_protobuf().hex() == theirs["trace_hex"]
    assert repr(sealed.trace) == theirs["trace_tree"]
    names = {r.name for r in sealed.trace.records}
    assert {"Run", "sample", "solve"} <= names
