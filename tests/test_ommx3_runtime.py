"""Our library on an ommx 3 runtime: typed payloads written as v2, and v1 and v2 payloads read.

The project venv has ommx 2.9.3 (v1 payloads only). With ommx 3 installed our
``Experiment`` writes ``to_v2_bytes()`` with the v2 media types and decodes both. These
tests run OUR package in the OMMX 3.0.0b7 side venv (``helpers.ours_on_ommx3``) and check:

(a) what we write there: v2 media types, bytes exactly the objects' ``to_v2_bytes()``;
(b) OMMX 3's own ``Experiment.load`` reads it back, in the writing process and in another;
(c) we read what OMMX 3 writes with its openjij (and HiGHS) adapter;
(d) we still read the v1 payloads that our ommx 2.9.3 side wrote;
(e) ``log_solve`` / ``open_solve`` with ``ommx-highs-adapter`` 3.0.0b7, the sink being
    ``ommx.adapter.DiagnosticCollector``.

Typed objects are compared by their canonical v2 bytes: ``from_v2_bytes`` may re-order a
polynomial's terms, so "equal" means ``decoded.to_v2_bytes() == canon(original)`` with
``canon(b) = from_v2_bytes(b).to_v2_bytes()`` (idempotent), plus semantic views.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers.ommx3 import Ommx3Driver
from helpers.ours_on_ommx3 import OursOnOmmx3
from ommx_highs_adapter import OMMXHighsAdapter
from lifecycle.test_solve import knapsack

from ommx_experiment import Experiment, LocalRegistry
from ommx_experiment.engine.oci import Manifest

pytestmark = pytest.mark.ommx3

REPO = Path(__file__).resolve().parent.parent
OURS = "example.com/runtime3/ours:v1"
THEIRS = "example.com/runtime3/theirs:v1"
V1 = "example.com/runtime3/v1:v1"

V2 = {
    "instance": "application/org.ommx.v2.instance",
    "parametric_instance": "application/org.ommx.v2.parametric-instance",
    "solution": "application/org.ommx.v2.solution",
    "sample_set": "application/org.ommx.v2.sample-set",
}

# Views that run unchanged on ommx 2.9.3 (this process) and ommx 3 (side venv).
VIEWS = """
def instance_view(i):
    ones = {v.id: 1.0 for v in i.decision_variables}
    user = sorted((k, v) for k, v in dict(i.annotations).items() if k.startswith("org.ommx.user."))
    return {"vars": sorted(v.id for v in i.decision_variables), "at_ones": i.evaluate(ones).objective, "user": user}

def solution_view(s):
    return {"objective": s.objective, "feasible": s.feasible, "state": sorted(s.state.entries.items())}

def sample_set_view(s):
    return {"objectives": sorted(s.objectives.items()), "feasible": sorted(s.feasible.items())}
"""

# OMMX 3 model builders and the canonical-bytes helper (side venv only).
MODELS = (
    """
import json
from ommx import DecisionVariable, Instance, Parameter, ParametricInstance, SampleSet, Solution

KIND = {"instance": Instance, "parametric_instance": ParametricInstance, "solution": Solution,
        "sample_set": SampleSet}

def canon(kind, hexed):
    return KIND[kind].from_v2_bytes(bytes.fromhex(hexed)).to_v2_bytes().hex()

def knapsack():
    x = [DecisionVariable.binary(i) for i in range(4)]
    inst = Instance.from_components(decision_variables=x, objective=sum(v * xi for v, xi in zip((7, 4, 3, 8), x)),
        constraints={0: sum(w * xi for w, xi in zip((4, 3, 2, 5), x)) <= 7}, sense=Instance.MAXIMIZE)
    inst.add_user_annotation("case", "knapsack")
    return inst

def qubo():
    x = [DecisionVariable.binary(i) for i in range(3)]
    return Instance.from_components(decision_variables=x, objective=x[0] * x[1] - x[0] + 2 * x[2] - x[1],
        constraints={}, sense=Instance.MINIMIZE)

def parametric():
    x = [DecisionVariable.binary(i) for i in range(2)]
    p = Parameter(10, name="capacity")
    return ParametricInstance.from_components(sense=Instance.MAXIMIZE, objective=x[0] + 2 * x[1],
        decision_variables=x, constraints={0: 3 * x[0] + 4 * x[1] <= p}, parameters=[p])
"""
    + VIEWS
)

_views: dict[str, Any] = {}
exec(VIEWS, _views)  # the same view code as the side venv runs
instance_view, solution_view, sample_set_view = _views["instance_view"], _views["solution_view"], _views["sample_set_view"]


def _layers(root: Path, name: str) -> tuple[list[Any], dict[str, Any], LocalRegistry]:
    registry = LocalRegistry.at(root)
    digest = registry.resolve(name)
    assert digest is not None, f"{name} not in {root}"
    manifest = Manifest.parse(registry.blobs.get(digest))
    return list(manifest.layers), json.loads(registry.blobs.get(manifest.config.digest)), registry


# --- (a) + (b) + (e): we write on ommx 3; OMMX 3 loads it ------------------------------------------

_WRITE_OURS = MODELS + """
import ommx.adapter
from ommx.experiment import Experiment as TheirExperiment
from ommx_highs_adapter import OMMXHighsAdapter
from ommx_openjij_adapter import OMMXOpenJijSAAdapter
from ommx_experiment import Experiment
from ommx_experiment.lifecycle.diagnostics import new_collector

SINKS = []

class SpyHighs(OMMXHighsAdapter):
    @classmethod
    def solve(cls, ommx_instance, **kwargs):
        sink = kwargs.get("diagnostics")
        SINKS.append(None if sink is None else [type(sink).__module__, type(sink).__qualname__,
                                                isinstance(sink, ommx.adapter.DiagnosticCollector)])
        return super().solve(ommx_instance, **kwargs)

knap, q, pinst = knapsack(), qubo(), parametric()
knap_hex, qubo_hex = knap.to_v2_bytes().hex(), q.to_v2_bytes().hex()
sol = knap.evaluate({0: 1.0, 1: 1.0, 2: 0.0, 3: 0.0})
ss = OMMXOpenJijSAAdapter.sample(q, num_reads=3, seed=1)
direct = OMMXHighsAdapter.solve(knap)

exp = Experiment(NAME, store_trace=True)
exp.log_instance("inst", knap)
exp.log_parametric_instance("pinst", pinst)
exp.log_solution("sol", sol)
exp.log_sample_set("ss", ss)
with exp.run() as run:
    run.log_parameter("capacity", 7)
    run.log_instance("rinst", q)
    solved = run.log_solve(OMMXHighsAdapter, knap, store_diagnostics=True)
    spied = run.log_solve(SpyHighs, knap, store_diagnostics=True)
    plain = run.log_solve(SpyHighs, knap)
    with run.open_solve(OMMXHighsAdapter, knap, store_diagnostics=True) as manual:
        model = manual.solver_input
        model.run()
        opened = manual.decode(model)
    sampled = run.log_sample(OMMXOpenJijSAAdapter, q, num_reads=4, seed=0)
exp.commit()

expected = {
    "attachments": {"inst": ["instance", knap.to_v2_bytes().hex()], "pinst": ["parametric_instance", pinst.to_v2_bytes().hex()],
                    "sol": ["solution", sol.to_v2_bytes().hex()], "ss": ["sample_set", ss.to_v2_bytes().hex()]},
    "run_attachments": {"rinst": ["instance", q.to_v2_bytes().hex()]},
    "solves": [[knap_hex, o.to_v2_bytes().hex()] for o in (solved, spied, plain, opened)],
    "samplings": [[qubo_hex, sampled.to_v2_bytes().hex()]],
}

def read_back(e):
    run = e.runs[0]
    typed = {"inst": e.get_instance("inst"), "pinst": e.get_parametric_instance("pinst"), "sol": e.get_solution("sol"),
             "ss": e.get_sample_set("ss"), "rinst": run.get_instance("rinst"),
             "inst_any": e.get_attachment("inst"), "ss_any": e.get_attachment("ss")}
    return {
        "typed": {k: [type(v).__name__, v.to_v2_bytes().hex()] for k, v in typed.items()},
        "media_types": {k: e.attachment_media_type(k) for k in ("inst", "pinst", "sol", "ss")},
        "solves": [[c.status, c.adapter, c.adapter_options, c.input.to_v2_bytes().hex(), c.output.to_v2_bytes().hex(),
                    c.diagnostics[-1]["status"] if c.diagnostics else None] for c in run.solves],
        "samplings": [[c.status, c.adapter, c.adapter_options, c.input.to_v2_bytes().hex(), c.output.to_v2_bytes().hex()]
                      for c in run.samplings],
        "views": {"inst": instance_view(typed["inst"]), "sol": solution_view(typed["sol"]),
                  "ss": sample_set_view(typed["ss"])},
    }

print(json.dumps({
    "expected": expected,
    "canon": {k: canon(kind, h) for group in ("attachments", "run_attachments") for k, (kind, h) in expected[group].items()},
    "canon_calls": [[canon("instance", i), canon("solution", o)] for i, o in expected["solves"]]
                   + [[canon("instance", i), canon("sample_set", o)] for i, o in expected["samplings"]],
    "caller_untouched": knap.to_v2_bytes().hex() == knap_hex and q.to_v2_bytes().hex() == qubo_hex,
    "objectives": [direct.objective, solved.objective, spied.objective, plain.objective, opened.objective],
    "sinks": SINKS,
    "new_collector_is_ommx": isinstance(new_collector(), ommx.adapter.DiagnosticCollector),
    "has_ommx_collector": hasattr(ommx.adapter, "DiagnosticCollector"),
    "trace_spans": sorted({s.name for s in exp.runs[0].trace.spans}),  # ommx.tracing.TraceResult here
    "ours": read_back(Experiment.load(NAME)),
    "theirs_same_process": read_back(TheirExperiment.load(NAME)),
    "views": {"inst": instance_view(knap), "sol": solution_view(sol), "ss": sample_set_view(ss)},
}))
"""

_READ_WITH_OMMX3 = MODELS + """
from ommx.experiment import Experiment
""" + _WRITE_OURS[_WRITE_OURS.index("def read_back(e):"):_WRITE_OURS.index("print(json.dumps({")] + """
e = Experiment.load(NAME)
print(json.dumps({"read": read_back(e), "params": e.run_parameters_df()["capacity"].tolist()}))
"""


@pytest.fixture(scope="module")
def ours_written(ours3: OursOnOmmx3, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One experiment written by OUR package on ommx 3 (a module-scoped root shared by (a), (b), (e))."""
    root = tmp_path_factory.mktemp("ours-on-ommx3") / "registry"
    return root, ours3.run_json(_WRITE_OURS.replace("NAME", repr(OURS)), root=root)


def _reads_equal_canonical(read: dict[str, Any], out: dict[str, Any]) -> None:
    canon = out["canon"]
    typed = read["typed"]
    for name in ("inst", "pinst", "sol", "ss", "rinst"):
        assert typed[name][1] == canon[name], name
    assert [typed[n][0] for n in ("inst", "pinst", "sol", "ss", "rinst", "inst_any", "ss_any")] == [
        "Instance", "ParametricInstance", "Solution", "SampleSet", "Instance", "Instance", "SampleSet"]
    assert typed["inst_any"][1] == canon["inst"] and typed["ss_any"][1] == canon["ss"]
    assert read["media_types"] == {"inst": V2["instance"], "pinst": V2["parametric_instance"],
                                   "sol": V2["solution"], "ss": V2["sample_set"]}
    calls = [c[3:5] for c in read["solves"]] + [c[3:5] for c in read["samplings"]]
    assert calls == out["canon_calls"]
    assert read["views"] == out["views"]
    highs = "ommx_highs_adapter.adapter.OMMXHighsAdapter"
    assert [c[:3] for c in read["solves"]] == [
        ["finished", highs, {}], ["finished", "__main__.SpyHighs", {}], ["finished", "__main__.SpyHighs", {}],
        ["finished", highs, {}]]
    assert [c[5] for c in read["solves"]] == ["Optimal", "Optimal", None, None]  # open_solve: HiGHS reported nothing
    assert read["samplings"][0][:3] == ["finished", "ommx_openjij_adapter.OMMXOpenJijSAAdapter", {"num_reads": 4, "seed": 0}]


def test_a_we_write_v2_media_types_and_to_v2_bytes_on_ommx3(ours_written: tuple[Path, dict[str, Any]]) -> None:
    root, out = ours_written
    expected = out["expected"]
    layers, config, registry = _layers(root, OURS)

    def check(index: int, kind: str, hexed: str, what: str) -> None:
        layer = layers[index]
        assert layer.media_type == V2[kind], what
        assert registry.blobs.get(layer.digest).hex() == hexed, f"{what}: stored bytes differ from to_v2_bytes()"

    entries = config["attachments"]["entries"]
    assert set(entries) == set(expected["attachments"])
    for name, (kind, hexed) in expected["attachments"].items():
        check(entries[name], kind, hexed, f"attachment {name}")
    (run,) = config["runs"]
    for name, (kind, hexed) in expected["run_attachments"].items():
        check(run["attachments"]["entries"][name], kind, hexed, f"run attachment {name}")
    assert len(run["solves"]) == len(expected["solves"]) == 4
    for record, (input_hex, output_hex) in zip(run["solves"], expected["solves"], strict=True):
        check(record["input"], "instance", input_hex, f"solve {record['solve_id']} input")
        check(record["output"], "solution", output_hex, f"solve {record['solve_id']} output")
    (sampling,) = run["samplings"]
    check(sampling["input"], "instance", expected["samplings"][0][0], "sampling input")
    check(sampling["output"], "sample_set", expected["samplings"][0][1], "sampling output")
    # The typed descriptor annotations are the object's flat annotations (§2.7).
    inst_layer = layers[entries["inst"]]
    assert inst_layer.annotations["org.ommx.user.case"] == "knapsack"
    assert inst_layer.annotations["org.ommx.v1.instance.variables"] == "4"
    assert out["caller_untouched"] is True
    _reads_equal_canonical(out["ours"], out)  # and our own reader on ommx 3 gets them back


def test_b_ommx3_loads_what_we_wrote_same_and_other_process(
    ours_written: tuple[Path, dict[str, Any]], ommx3: Ommx3Driver
) -> None:
    root, out = ours_written
    _reads_equal_canonical(out["theirs_same_process"], out)
    other = ommx3.run_json(_READ_WITH_OMMX3.replace("NAME", repr(OURS)), root=root)
    _reads_equal_canonical(other["read"], out)
    assert other["read"] == out["theirs_same_process"] == out["ours"]
    assert other["params"] == [7]


def test_e_highs_3_log_solve_through_our_run_uses_ommx_diagnostic_collector(
    ours_written: tuple[Path, dict[str, Any]],
) -> None:
    _, out = ours_written
    assert out["has_ommx_collector"] is True
    assert out["new_collector_is_ommx"] is True
    # store_diagnostics=True hands the adapter an ommx.adapter.DiagnosticCollector; without it no sink at all.
    sink, no_sink = out["sinks"]
    assert sink[2] is True, sink
    assert no_sink is None
    assert out["objectives"] == [11.0] * 5  # direct HiGHS, log_solve x3, open_solve: same optimum
    assert {"Run", "Solve", "solve", "sample", "convert", "decode"} <= set(out["trace_spans"])


# --- (c): we read what OMMX 3 writes with its adapters -----------------------------------------------

_WRITE_THEIRS = MODELS + """
from ommx.experiment import Experiment
from ommx_highs_adapter import OMMXHighsAdapter
from ommx_openjij_adapter import OMMXOpenJijSAAdapter

knap, q = knapsack(), qubo()
exp = Experiment(NAME)
with exp.run() as run:
    sample_set = run.log_sample(OMMXOpenJijSAAdapter, q, num_reads=4, seed=0)
    solution = run.log_solve(OMMXHighsAdapter, knap, store_diagnostics=True)
    run.log_instance("q", q)
exp.log_solution("best", solution)
exp.commit()
print(json.dumps({"qubo": q.to_v2_bytes().hex(), "knapsack": knap.to_v2_bytes().hex(),
                  "sample_set": sample_set.to_v2_bytes().hex(), "solution": solution.to_v2_bytes().hex(),
                  "views": {"sample_set": sample_set_view(sample_set), "solution": solution_view(solution),
                            "qubo": instance_view(q), "knapsack": instance_view(knap)}}))
"""

_READ_THEIRS_WITH_OURS = MODELS + """
from ommx_experiment import Experiment

theirs = json.loads(THEIRS_JSON)
exp = Experiment.load(NAME)
run = exp.runs[0]
(sampling,), (solve,) = run.samplings, run.solves
decoded = {"qubo": sampling.input, "sample_set": sampling.output, "knapsack": solve.input, "solution": solve.output,
           "run_q": run.get_instance("q"), "best": exp.get_solution("best")}
kinds = {"qubo": "instance", "sample_set": "sample_set", "knapsack": "instance", "solution": "solution",
         "run_q": "instance", "best": "solution"}
source = {"run_q": "qubo", "best": "solution"}
print(json.dumps({
    "equal": {k: v.to_v2_bytes().hex() == canon(kinds[k], theirs[source.get(k, k)]) for k, v in decoded.items()},
    "types": {k: type(v).__name__ for k, v in decoded.items()},
    "sampling": [sampling.sampling_id, sampling.status, sampling.adapter, sampling.adapter_options],
    "solve": [solve.solve_id, solve.status, solve.adapter, solve.adapter_options, solve.diagnostics[-1]["status"]],
    "views": {"sample_set": sample_set_view(decoded["sample_set"]), "solution": solution_view(decoded["solution"]),
              "qubo": instance_view(decoded["qubo"]), "knapsack": instance_view(decoded["knapsack"])},
    "media_types": [exp.attachment_media_type("best"), run.attachment_media_type("q")],
}))
"""


def test_c_we_read_what_ommx3_writes_with_its_openjij_adapter(
    ommx3: Ommx3Driver, ours3: OursOnOmmx3, registry_root: Path
) -> None:
    theirs = ommx3.run_json(_WRITE_THEIRS.replace("NAME", repr(THEIRS)), root=registry_root)
    script = _READ_THEIRS_WITH_OURS.replace("THEIRS_JSON", repr(json.dumps(theirs))).replace("NAME", repr(THEIRS))
    ours = ours3.run_json(script, root=registry_root)
    assert ours["equal"] == dict.fromkeys(("qubo", "sample_set", "knapsack", "solution", "run_q", "best"), True)
    assert ours["types"] == {"qubo": "Instance", "sample_set": "SampleSet", "knapsack": "Instance",
                             "solution": "Solution", "run_q": "Instance", "best": "Solution"}
    assert ours["sampling"] == [0, "finished", "ommx_openjij_adapter.OMMXOpenJijSAAdapter", {"num_reads": 4, "seed": 0}]
    assert ours["solve"] == [0, "finished", "ommx_highs_adapter.adapter.OMMXHighsAdapter", {}, "Optimal"]
    assert ours["views"] == theirs["views"]
    assert ours["views"]["solution"]["objective"] == 11.0 and ours["views"]["solution"]["feasible"] is True
    assert ours["media_types"] == [V2["solution"], V2["instance"]]


# --- (d): ours on ommx 3 reads the v1 payloads our ommx 2.9.3 side wrote ------------------------------

_READ_V1_WITH_OURS = VIEWS + """
import json
from ommx_experiment import Experiment

exp = Experiment.load(NAME)
run = exp.runs[0]
(solve,) = run.solves
print(json.dumps({
    "media_types": [exp.attachment_media_type("inst"), exp.attachment_media_type("sol")],
    "types": [type(exp.get_instance("inst")).__module__, type(exp.get_attachment("sol")).__name__],
    "inst": instance_view(exp.get_instance("inst")),
    "sol": solution_view(exp.get_solution("sol")),
    "solve": [solve.status, solve.adapter, solve.adapter_options, instance_view(solve.input), solution_view(solve.output)],
    "params": exp.run_parameters_df()["capacity"].tolist(),
}))
"""


def test_d_ours_on_ommx3_reads_v1_payloads_from_ommx_2(ours3: OursOnOmmx3, registry_root: Path) -> None:
    inst = knapsack()
    sol = inst.evaluate({0: 1.0, 1: 1.0, 2: 0.0, 3: 0.0})
    exp = Experiment(V1)
    exp.log_instance("inst", inst)
    exp.log_solution("sol", sol)
    with exp.run() as run:
        run.log_parameter("capacity", 7)
        solved = run.log_solve(OMMXHighsAdapter, inst)
    exp.commit()
    assert exp.attachment_media_type("inst") == "application/org.ommx.v1.instance"  # ommx 2.x writes v1
    layers, config, _ = _layers(registry_root, V1)
    solve_record = config["runs"][0]["solves"][0]
    assert [layers[solve_record[k]].media_type for k in ("input", "output")] == [
        "application/org.ommx.v1.instance", "application/org.ommx.v1.solution"]

    theirs = ours3.run_json(_READ_V1_WITH_OURS.replace("NAME", repr(V1)), root=registry_root)
    assert theirs["media_types"] == ["application/org.ommx.v1.instance", "application/org.ommx.v1.solution"]
    assert theirs["types"] == ["builtins", "Solution"]  # ommx 3's native classes, not ommx.v1's
    expected = json.loads(json.dumps({
        "inst": instance_view(inst),
        "sol": solution_view(sol),
        "solve": [
            "finished", "ommx_highs_adapter.adapter.OMMXHighsAdapter", {}, instance_view(inst), solution_view(solved)],
    }))
    assert {k: theirs[k] for k in expected} == expected
    assert theirs["inst"]["user"] == [["org.ommx.user.case", "knapsack"]]
    assert theirs["sol"]["objective"] == 11.0 and theirs["params"] == [7]


# --- descriptor annotations fill what the message lacks (§2.7), as OMMX 3 does --------------------------

_WRITE_ANNOTATED = MODELS + """
from ommx_experiment import Experiment
from ommx_experiment.lifecycle.attachments import decode_typed

V2_INSTANCE = "application/org.ommx.v2.instance"
knap = knapsack()  # carries org.ommx.user.case=knapsack in the message itself
extra = {"org.ommx.user.case": "from-descriptor", "org.ommx.user.origin": "descriptor"}
exp = Experiment(NAME)
exp._store("inst", V2_INSTANCE, knap.to_v2_bytes(), extra)  # a foreign writer's descriptor annotations
exp.log_instance("v1", knap)
exp.commit()

def user(obj):
    return sorted((k, v) for k, v in dict(obj.annotations).items() if k.startswith("org.ommx.user."))

print(json.dumps({
    "loaded": user(Experiment.load(NAME).get_instance("inst")),
    "v2": user(decode_typed("instance", V2_INSTANCE, knap.to_v2_bytes(), extra)),
    "v1": user(decode_typed("instance", "application/org.ommx.v1.instance", knap.to_v1_bytes(), extra)),
}))
"""

_READ_ANNOTATED_WITH_OMMX3 = """
import json
from ommx.experiment import Experiment
inst = Experiment.load(NAME).get_instance("inst")
print(json.dumps(sorted((k, v) for k, v in dict(inst.annotations).items() if k.startswith("org.ommx.user."))))
"""


def test_descriptor_annotations_fill_missing_keys_on_ommx3_like_ommx3(
    ours3: OursOnOmmx3, ommx3: Ommx3Driver, registry_root: Path
) -> None:
    name = "example.com/runtime3/annotated:v1"
    ours = ours3.run_json(_WRITE_ANNOTATED.replace("NAME", repr(name)), root=registry_root)
    merged = [["org.ommx.user.case", "knapsack"], ["org.ommx.user.origin", "descriptor"]]  # the message's own value wins
    assert ours == {"loaded": merged, "v2": merged, "v1": merged}
    assert ommx3.run_json(_READ_ANNOTATED_WITH_OMMX3.replace("NAME", repr(name)), root=registry_root) == merged
