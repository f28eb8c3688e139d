"""Run.open_solve: the manual solve scope (§1.6) with HiGHS and a scripted adapter."""

from __future__ import annotations

import math
from typing import Any

import pytest
from ommx.v1 import Solution
from ommx_highs_adapter import OMMXHighsAdapter
from lifecycle.test_solve import Note, Opaque, Scripted, fingerprint, knapsack

from ommx_experiment import Experiment
from ommx_experiment.lifecycle.diagnostics import DiagnosticCollector

NAME = "example.com/team/open-solve:v1"
SCRIPTED = f"{Scripted.__module__}.Scripted"


def _terminal(outcome: str, solve_id: int = 0, *, pack: str = "disabled", error: dict[str, Any] | None = None,
              diag_state: str | None = None) -> dict[str, Any]:
    return {
        "solve_id": solve_id,
        "outcome": outcome,
        "trace": {
            "state": "closed",
            "context": {
                "solve_context": {"state": "set", "solve_id": solve_id, "adapter": SCRIPTED},
                "error": error or {"state": "not_marked"},
            },
        },
        "diagnostics": {
            "state": diag_state or "finalized",  # OMMX: "disabled" only before close, never with an outcome
            "outcome": {"state": "stored", "pack": pack},
        },
    }


def test_full_workflow_with_highs() -> None:
    exp = Experiment(NAME)
    inst = knapsack()
    with exp.run() as run:
        with run.open_solve(OMMXHighsAdapter, inst, verbose=False) as solve:
            assert solve.solve_id == 0
            highs = solve.solver_input
            highs.run()
            solution = solve.decode(highs)
            solve.log_adapter_option("presolve", "on")
    assert isinstance(solution, Solution) and solution.objective == 11
    (stored,) = exp.runs[0].solves
    assert stored.status == "finished" and stored.adapter == "ommx_highs_adapter.adapter.OMMXHighsAdapter"
    assert stored.adapter_options == {"verbose": False, "presolve": "on"}
    assert fingerprint(stored.input) == fingerprint(inst) and stored.output.objective == 11


def test_full_workflow_scripted_with_diagnostics_and_late_annotations() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        solve = run.open_solve(Scripted, knapsack(), store_diagnostics=True, level=2)
        assert repr(solve) == f"OpenSolve(adapter='{SCRIPTED}', state='open')"
        with solve:
            assert repr(solve) == f"OpenSolve(adapter='{SCRIPTED}', solve_id=0, state='active')"
            assert solve.adapter.options == {"level": 2}  # constructor kwargs forwarded
            assert solve.solver_input == {"n": 4}
            assert isinstance(solve.diagnostics, DiagnosticCollector)
            solve.log_adapter_option("nested", {"a": [1, 2.5], "b": None})
            solve.log_adapter_option("level", 3)  # override keeps its position
            solution = solve.decode({0: 1})
            solution.annotations = {**solution.annotations, "org.ommx.user.late": "yes"}
            solve.diagnostics.record(Note("after-decode", -math.inf, {7: 8}))
    assert repr(solve) == f"OpenSolve(adapter='{SCRIPTED}', solve_id=0, state='closed', outcome='finished')"
    assert solve.terminal_state == _terminal("finished", pack="attached")
    stored = exp.runs[0].solves[0]
    assert stored.adapter_options == {"level": 3, "nested": {"a": [1, 2.5], "b": None}}
    assert stored.output.annotations["org.ommx.user.late"] == "yes"
    assert stored.output.annotations["org.ommx.user.adapter"] == "scripted"
    assert stored.diagnostics == [{"kind": "after-decode", "bound": -math.inf, "counts": {7: 8}}]
    exp.commit()
    assert Experiment.load(NAME).runs[0].solves[0].diagnostics == stored.diagnostics


def test_accessors_before_enter_and_after_close() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        solve = run.open_solve(Scripted, knapsack())
        assert solve.terminal_state is None
        for attr in ("solve_id", "solver_input", "adapter", "diagnostics"):
            with pytest.raises(RuntimeError, match="OpenSolve context has not been entered"):
                getattr(solve, attr)
        with pytest.raises(RuntimeError, match="OpenSolve context has not been entered"):
            solve.decode({})
        with pytest.raises(RuntimeError, match="OpenSolve context has not been entered"):
            solve.__exit__(None, None, None)
        with solve:
            assert solve.diagnostics is None
            with pytest.raises(RuntimeError, match="OpenSolve context has already been entered"):
                solve.__enter__()
            solve.decode({})
        assert solve.terminal_state == _terminal("finished", pack="disabled")
        for attr in ("solver_input", "adapter", "diagnostics"):
            with pytest.raises(RuntimeError, match="OpenSolve has already been closed"):
                getattr(solve, attr)
        with pytest.raises(RuntimeError, match="OpenSolve has already been closed"):
            solve.decode({})
        with pytest.raises(RuntimeError, match="OpenSolve has already been closed"):
            solve.__enter__()
        with pytest.raises(RuntimeError, match="OpenSolve has already been closed"):
            solve.log_adapter_option("x", 1)
        assert solve.solve_id == 0 and solve.__exit__(None, None, None) is False


def test_empty_diagnostics_pack_is_empty() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        with run.open_solve(Scripted, knapsack(), store_diagnostics=True) as solve:
            solve.decode({})
    assert solve.terminal_state == _terminal("finished", pack="empty")
    assert exp.runs[0].solves[0].diagnostics == []


def test_unpackable_diagnostics_still_finished() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        with run.open_solve(Scripted, knapsack(), store_diagnostics=True) as solve:
            solve.diagnostics.record(Opaque(object()))
            solve.decode({})
    assert solve.terminal_state["diagnostics"]["outcome"] == {"state": "stored", "pack": "serialization_failed"}
    stored = exp.runs[0].solves[0]
    assert stored.status == "finished" and stored.diagnostics == []


def test_diagnostics_kwarg_is_rejected() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        with pytest.raises(ValueError, match=r"Run.open_solve owns the `diagnostics`.*store_diagnostics=True"):
            run.open_solve(Scripted, knapsack(), diagnostics=None)
        with pytest.raises(ValueError, match="JSON-serializable"):
            run.open_solve(Scripted, knapsack(), bad=object())
        with pytest.raises(TypeError, match="ommx.adapter.SolverAdapter"):
            run.open_solve(dict, knapsack())
    assert exp.runs[0].solves == []


def test_adapter_constructor_raising_records_failed_solve() -> None:
    exp = Experiment(NAME)
    with pytest.raises(ValueError, match="constructor failed"):
        with exp.run() as run:
            solve = run.open_solve(Scripted, knapsack(), mode="ctor_raise", limit=1)
            with solve:
                pytest.fail("the body must not run")
    assert exp.runs[0].status == "failed"
    stored = exp.runs[0].solves[0]
    assert (stored.status, stored.output, stored.diagnostics) == ("failed", None, [])
    assert stored.adapter == SCRIPTED and stored.adapter_options == {"mode": "ctor_raise", "limit": 1}
    assert fingerprint(stored.input) == fingerprint(knapsack())
    state = solve.terminal_state
    assert state["outcome"] == "adapter_construction_failed"
    assert state["trace"]["context"]["error"] == {"state": "marked", "reason": "ValueError: constructor failed"}


def test_failing_decode_clears_the_candidate() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        with pytest.raises(RuntimeError, match="decode failed"):
            with run.open_solve(Scripted, knapsack()) as solve:
                solve.decode({})
                solve.decode("bad")
    stored = exp.runs[0].solves[0]
    assert stored.status == "failed" and stored.output is None
    assert solve.terminal_state["outcome"] == "failed"


def test_decode_must_return_a_solution() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        with pytest.raises(TypeError, match=r"adapter.decode\(...\) must return ommx.Solution"):
            with run.open_solve(Scripted, knapsack()) as solve:
                solve.decode("wrong")
    assert exp.runs[0].solves[0].status == "failed"


def test_body_exception_without_decode_keeps_diagnostics() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        with pytest.raises(ZeroDivisionError):
            with run.open_solve(Scripted, knapsack(), store_diagnostics=True) as solve:
                solve.diagnostics.record(Note("partial", math.inf))
                1 / 0  # noqa: B018
    stored = exp.runs[0].solves[0]
    assert stored.status == "failed" and stored.diagnostics == [{"kind": "partial", "bound": math.inf, "counts": {}}]
    state = solve.terminal_state
    assert state["outcome"] == "failed"
    assert state["trace"]["context"]["error"]["state"] == "marked"


def test_body_exception_after_decode_is_still_finished() -> None:
    exp = Experiment(NAME)
    with pytest.raises(KeyError):
        with exp.run() as run:
            with run.open_solve(Scripted, knapsack()) as solve:
                solve.decode({1: 1})
                raise KeyError("late")
    assert exp.runs[0].status == "failed"
    assert exp.runs[0].solves[0].status == "finished"
    assert solve.terminal_state["outcome"] == "finished"
    assert solve.terminal_state["trace"]["context"]["error"] == {"state": "marked", "reason": "KeyError: 'late'"}


def test_keyboard_interrupt_in_body_is_interrupted() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        with pytest.raises(KeyboardInterrupt):
            with run.open_solve(Scripted, knapsack()) as solve:
                raise KeyboardInterrupt
    assert exp.runs[0].solves[0].status == "interrupted"
    assert solve.terminal_state["outcome"] == "interrupted"


def test_leaving_without_decode_raises_and_records_failed() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        with pytest.raises(RuntimeError, match=r"OpenSolve.decode\(\.\.\.\) must be called before leaving the context"):
            with run.open_solve(Scripted, knapsack()) as solve:
                pass
    stored = exp.runs[0].solves[0]
    assert stored.status == "failed" and stored.output is None
    assert solve.terminal_state["outcome"] == "missing_decode"
    assert solve.terminal_state["trace"]["context"]["error"]["state"] == "marked"


def test_log_adapter_option_rolls_back_non_json() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        with run.open_solve(Scripted, knapsack(), a=1) as solve:
            with pytest.raises(ValueError, match="JSON-serializable"):
                solve.log_adapter_option("bad", {1, 2})
            solve.decode({})
    assert exp.runs[0].solves[0].adapter_options == {"a": 1}


def test_ids_reserved_at_enter_interleave_with_log_solve() -> None:
    exp = Experiment(NAME)
    with exp.run() as run:
        run.log_solve(Scripted, knapsack())
        with run.open_solve(Scripted, knapsack(), which="open") as solve:
            run.log_solve(Scripted, knapsack(), which="inner")
            solve.decode({})
    assert solve.solve_id == 1
    assert [(s.solve_id, s.adapter_options.get("which")) for s in exp.runs[0].solves] == [(0, None), (1, "open"), (2, "inner")]


def test_instance_and_kwargs_are_copied_at_open() -> None:
    exp = Experiment(NAME)
    options = {"nested": [1]}
    inst = knapsack()
    with exp.run() as run:
        solve = run.open_solve(Scripted, inst, opts=options)
        options["nested"].append(2)
        inst.annotations = {"org.ommx.user.case": "changed later"}
        with solve:
            assert solve.adapter.options == {"opts": {"nested": [1]}}
            solve.decode({})
    stored = exp.runs[0].solves[0]
    assert stored.adapter_options == {"opts": {"nested": [1]}}
    assert stored.input.annotations["org.ommx.user.case"] == "knapsack"
