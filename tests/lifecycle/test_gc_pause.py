"""Bulk views and builds run with the cyclic collector paused (``lifecycle.session.gc_paused``).

A view of N runs allocates O(N) acyclic containers; the collections they would trigger
walk every object of the process. These tests watch the collector itself
(``gc.callbacks``) and its enabled flag, on a real registry.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ommx_experiment import AutosavePolicy, Experiment
from ommx_experiment.lifecycle.session import gc_paused

RUNS = 2_000  # views of this many runs trigger several young collections when the collector runs


_ACTIVE = [0]  # the measuring thread's ident around the measured call only, else 0 (allocates nothing)


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """Generation of every collection that the measured call's own thread starts during a ``_during`` call.

    A collection triggered by another thread's allocations (a group-commit flush still
    writing the sweep's runs, say) before the pause begins is not the view's doing.
    """
    seen: list[int] = []

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and _ACTIVE[0] == threading.get_ident():
            seen.append(info["generation"])

    gc.callbacks.append(watch)
    try:
        yield seen
    finally:
        gc.callbacks.remove(watch)


def _sweep(name: str) -> Experiment:
    exp = Experiment(name)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    for i in range(RUNS):
        with exp.run() as run:
            run.log_parameter("i", i)
            run.log_parameter("x", i / 3)
    return exp


def _during(call: Callable[[], Any], seen: list[int]) -> tuple[Any, list[int]]:
    """``call()`` and the collections that started inside it.

    Allocations made while the collector is paused still count towards the next young
    collection, which starts at the first allocation after the pause, still inside the
    call: one collection is expected; without the pause a view of ``RUNS`` runs makes
    several (one per 700 container allocations).
    """
    gc.collect()
    seen.clear()
    _ACTIVE[0] = threading.get_ident()
    result = call()
    _ACTIVE[0] = 0
    return result, list(seen)


@pytest.mark.usefixtures("registry_root")
def test_unsealed_views_run_without_collections(collections: list[int]) -> None:
    exp = _sweep("example.com/gc/unsealed:v1")
    runs, during = _during(lambda: exp.runs, collections)
    assert [r.run_id for r in runs] == list(range(RUNS))
    assert len(during) <= 1  # the one young collection that the paused allocations make due on the way out
    frame, during = _during(exp.run_parameters_df, collections)
    assert list(frame.index) == list(range(RUNS))
    assert len(during) <= 1
    assert gc.isenabled()


@pytest.mark.usefixtures("registry_root")
def test_sealed_load_and_views_run_without_collections(collections: list[int], tmp_path: Path) -> None:
    exp = _sweep("example.com/gc/sealed:v1")
    exp.commit()
    loaded, during = _during(lambda: Experiment.load("example.com/gc/sealed:v1"), collections)
    assert len(during) <= 1
    runs, during = _during(lambda: loaded.runs, collections)
    assert [r.status for r in runs] == ["finished"] * RUNS
    assert len(during) <= 1
    archive = tmp_path / "sealed.ommx"
    loaded.save(archive)
    imported, during = _during(lambda: Experiment.import_archive(archive), collections)
    assert len(imported.runs) == RUNS
    assert len(during) <= 1
    child, during = _during(lambda: loaded.fork("example.com/gc/child:v1"), collections)
    assert len(child.runs) == RUNS
    assert len(during) <= 1
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_raise_restores_the_collector() -> None:
    with pytest.raises(ZeroDivisionError), gc_paused():
        _ = 1 / 0
    assert gc.isenabled()


def test_nested_and_overlapping_pauses_restore_once_the_last_leaves() -> None:
    """Thread A enters, B enters, A leaves (still paused), B leaves (restored)."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    states: dict[str, bool] = {}

    def first() -> None:
        with gc_paused(), gc_paused():  # nested in one thread
            a_in.set()
            b_in.wait(10)
        states["after A left"] = gc.isenabled()
        a_out.set()

    def second() -> None:
        a_in.wait(10)
        with gc_paused():
            b_in.set()
            a_out.wait(10)
            states["B inside"] = gc.isenabled()
        states["after B left"] = gc.isenabled()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert states == {"after A left": False, "B inside": False, "after B left": True}
