"""The same calls through ``ommx.experiment`` (OMMX 3.0.0b7) and through us, compared (issue 13).

Each script runs twice on the OMMX 3 side venv (``OursOnOmmx3.run_both``), once with
``L = ommx.experiment`` and once with ``L = ommx_experiment``; the expected values are
OMMX's output, not ours. Covered: ``OpenSolve.terminal_state``, the OpenTelemetry calls
of Run and Solve spans and their failure paths, an adapter without ``diagnostics``,
and (on the ommx 2.9 runtime, against OMMX's renderer) ``TraceResult._repr_html_``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from helpers.ommx3 import Ommx3Driver
from helpers.ours_on_ommx3 import OursOnOmmx3

COMMON = """
import json, warnings
warnings.simplefilter("ignore")
from ommx import Instance
from ommx.adapter import SolverAdapter

class ManualAdapter(SolverAdapter):
    def __init__(self, ommx_instance, fail=False):
        if fail:
            raise ValueError("constructor failed")
        self.instance = ommx_instance
    @classmethod
    def solve(cls, ommx_instance, **kwargs):
        raise AssertionError("not used")
    @classmethod
    def solve_without_preparation(cls, ommx_instance, **kwargs):
        raise AssertionError("not used")
    @property
    def solver_input(self):
        return {}
    def decode(self, data):
        return self.instance.evaluate({})

def outcome(fn):
    try:
        value = fn()
    except BaseException as exc:
        builtin = next(k for k in type(exc).__mro__ if k.__module__ == "builtins")
        return ["raises", builtin.__name__, str(exc)]
    return ["ok", type(value).__name__]
"""


def test_open_solve_terminal_state_matches_ommx(ours3: OursOnOmmx3, tmp_path: Path) -> None:
    script = COMMON + """
from dataclasses import dataclass

@dataclass(frozen=True)
class Note:
    status: str

states = {}
def scope(label, *, store=False, record=False, decode=True, body_error=False, fail=False):
    e = L.Experiment.with_temp_local_registry()
    with e.run() as run:
        kw = {"store_diagnostics": True} if store else {}
        if fail:
            kw["fail"] = True
        solve = run.open_solve(ManualAdapter, Instance.empty(), **kw)
        seen = [solve.terminal_state]
        def body():
            with solve:
                seen.append(solve.terminal_state)
                if record:
                    solve.diagnostics.record(Note("ok"))
                if decode:
                    solve.decode(solve.solver_input)
                if body_error:
                    raise KeyError("late")
        result = outcome(body)
    states[label] = {"before": seen[0], "inside": seen[1:], "exit": result, "after": solve.terminal_state}

scope("plain")
scope("store", store=True)
scope("store+record", store=True, record=True)
scope("missing decode", decode=False)
scope("missing decode, store", store=True, decode=False)
scope("body error", decode=False, body_error=True)
scope("body error after decode", body_error=True)
scope("construction fails", fail=True)
print(json.dumps(states, sort_keys=True))
"""
    both = ours3.run_both(script, tmp_path)
    assert both["ours"] == both["ommx"]
    assert both["ommx"]["plain"]["after"]["diagnostics"] == {
        "state": "finalized", "outcome": {"state": "stored", "pack": "disabled"},
    }


# Records every OpenTelemetry call the library makes: get_tracer, the tracer's start_as_current_span,
# get_current_span() and the span's set_attribute/set_status. OMMX's Rust tracing bridge also calls
# get_current_span(<context>) and get_span_context() to link its own spans: internal, left out.
RECORDER = """
from opentelemetry import trace as ot
calls = []
real_get_tracer, real_get_current_span = ot.get_tracer, ot.get_current_span

def get_tracer(*args, **kwargs):
    calls.append(["get_tracer", list(args), sorted(kwargs)])
    tracer = real_get_tracer(*args, **kwargs)
    class Tracer:
        def start_as_current_span(self, name, *a, **k):
            calls.append(["start_as_current_span", name, len(a), sorted(k)])
            return tracer.start_as_current_span(name, *a, **k)
    return Tracer()

def get_current_span(*args, **kwargs):
    span = real_get_current_span(*args, **kwargs)
    if args or kwargs:
        return span
    calls.append(["get_current_span"])
    class Span:
        def set_attribute(self, key, value):
            calls.append(["set_attribute", key, value, type(value).__name__])
            return span.set_attribute(key, value)
        def set_status(self, status, *a):
            calls.append(["set_status", status.status_code.name, status.description])
            return span.set_status(status, *a)
        def __getattr__(self, name):
            return getattr(span, name)
    return Span()

ot.get_tracer, ot.get_current_span = get_tracer, get_current_span
"""


def test_run_and_solve_spans_make_ommx_calls(ours3: OursOnOmmx3, tmp_path: Path) -> None:
    script = COMMON + RECORDER + """
out = {}
for store_trace in (False, True):
    e = L.Experiment.with_temp_local_registry(store_trace=store_trace)
    calls.clear()
    for i in range(2):
        calls.append(["--- run", i])
        with e.run() as run:
            run.log_parameter("x", i)
    calls.append(["--- open_solve"])
    with e.run() as run:
        with run.open_solve(ManualAdapter, Instance.empty()) as solve:
            solve.decode(solve.solver_input)
    calls.append(["--- open_solve without decode"])
    with e.run() as run:
        outcome(lambda: run.open_solve(ManualAdapter, Instance.empty()).__enter__().__exit__(None, None, None))
    out[str(store_trace)] = list(calls)
print(json.dumps(out))
"""
    both = ours3.run_both(script, tmp_path)
    assert both["ours"] == both["ommx"]
    assert both["ommx"]["False"][1:5] == [
        ["get_tracer", ["ommx.experiment"], []], ["start_as_current_span", "Run", 0, []],
        ["get_current_span"], ["set_attribute", "ommx.run.id", 0, "int"],
    ]


def test_span_failure_paths_match_ommx(ours3: OursOnOmmx3, tmp_path: Path) -> None:
    script = COMMON + """
from opentelemetry import trace as ot
out = {}

# Run enter: setting the attribute fails -> the partial span is closed, the Run can be entered again.
e = L.Experiment.with_temp_local_registry()
run = e.run()
class BrokenSpan:
    def set_attribute(self, name, value):
        raise RuntimeError("run attribute unavailable")
real = ot.get_current_span
ot.get_current_span = lambda *a, **k: real(*a, **k) if (a or k) else BrokenSpan()
try:
    out["enter"] = outcome(run.__enter__)
finally:
    ot.get_current_span = real
out["current span after"] = ot.get_current_span().get_span_context().is_valid
out["re-enter"] = outcome(run.__enter__)
out["exit"] = outcome(lambda: run.__exit__(None, None, None))
out["commit"] = outcome(e.commit)

# Run exit: closing the span fails -> the Run stays entered (its span too), commit refuses.
e = L.Experiment.with_temp_local_registry()
run = e.run()
closes = []
class BrokenCM:
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        closes.append(len(closes))
        if len(closes) == 1:
            raise RuntimeError("run span close failed")
        return False
class FakeTracer:
    def start_as_current_span(self, name):
        return BrokenCM()
real_get_tracer = ot.get_tracer
ot.get_tracer = lambda *a, **k: FakeTracer()
try:
    out["2 enter"] = outcome(run.__enter__)
    out["2 exit"] = outcome(lambda: run.__exit__(None, None, None))
    out["2 re-enter"] = outcome(run.__enter__)
    out["2 commit"] = outcome(e.commit)
    out["2 open runs"] = repr(e).split("open_runs=")[-1]
    out["2 exit again"] = outcome(lambda: run.__exit__(None, None, None))
    out["2 span closes"] = len(closes)
    out["2 commit again"] = outcome(e.commit)
finally:
    ot.get_tracer = real_get_tracer

# get_tracer itself raises on enter -> propagates, the Run can be entered again.
e = L.Experiment.with_temp_local_registry()
run = e.run()
def no_tracer(*a, **k):
    raise RuntimeError("no tracer")
ot.get_tracer = no_tracer
try:
    out["3 enter"] = outcome(run.__enter__)
finally:
    ot.get_tracer = real_get_tracer
out["3 re-enter"] = outcome(run.__enter__)
out["3 exit"] = outcome(lambda: run.__exit__(None, None, None))
print(json.dumps(out))
"""
    both = ours3.run_both(script, tmp_path)
    assert both["ours"] == both["ommx"]
    assert both["ommx"]["2 commit"] == [
        "raises", "RuntimeError", "Cannot commit Experiment while 1 Run handle(s) are still open",
    ]


def test_adapter_without_diagnostics_fails_as_in_ommx_with_a_note(ours3: OursOnOmmx3, tmp_path: Path) -> None:
    """``store_diagnostics=True`` with an adapter written before ommx 3 (the ommx 2.9 adapters' signature)."""
    script = COMMON + """
class Legacy(ManualAdapter):
    @classmethod
    def solve(cls, ommx_instance):
        return ommx_instance.evaluate({})

e = L.Experiment.with_temp_local_registry()
notes = []
def call(store):
    try:
        with e.run() as run:
            run.log_solve(Legacy, Instance.empty(), store_diagnostics=store)
    except TypeError as exc:
        notes.extend(getattr(exc, "__notes__", []))
        raise
results = [outcome(lambda: call(False)), outcome(lambda: call(True))]
runs = L.Experiment.from_artifact(e.commit()).runs
print(json.dumps({"results": results, "notes": notes, "runs": [
    [r.status, r.lifecycle_reason, [[s.status, s.adapter_options, list(s.diagnostics)] for s in r.solves]] for r in runs]}))
"""
    both = ours3.run_both(script, tmp_path)
    ommx, ours = both["ommx"], both["ours"]
    assert ours["results"] == ommx["results"] and ours["runs"] == ommx["runs"]
    assert ommx["results"][1] == ["raises", "TypeError", "Legacy.solve() got an unexpected keyword argument 'diagnostics'"]
    assert ommx["notes"] == []
    [note] = ours["notes"]
    assert "__main__.Legacy.solve()" in note and "adapter written for ommx 3" in note


_RENDER_WITH_OMMX = """
import base64, json
from ommx.tracing import TraceResult
result = TraceResult.from_otlp_protobuf(base64.b64decode(PAYLOAD))
print(json.dumps({"html": result._repr_html_(), "repr": repr(result)}))
"""


def test_trace_html_on_the_2_9_runtime_is_ommx_render_html(ommx3: Ommx3Driver, tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    from ommx_experiment import Experiment
    from ommx_experiment.lifecycle.tracing import TraceResult

    experiment = Experiment.with_temp_local_registry(store_trace=True)
    for i in range(2):
        with experiment.run() as run:
            run.log_parameter("x", i)
    trace = Experiment.from_artifact(experiment.commit()).runs[1].trace
    assert isinstance(trace, TraceResult)  # the 2.9 runtime's fallback, not ommx.tracing's
    payload = base64.b64encode(trace.otlp_protobuf()).decode()
    theirs = ommx3.run_json(_RENDER_WITH_OMMX.replace("PAYLOAD", repr(payload)), root=tmp_path / "registry")
    assert trace._repr_html_() == theirs["html"]
    assert repr(trace) == theirs["repr"]
    chrome = json.loads(base64.b64decode(theirs["html"].split("base64,")[1].split('"')[0]))
    assert [event["name"] for event in chrome["traceEvents"]] == ["Run"]
