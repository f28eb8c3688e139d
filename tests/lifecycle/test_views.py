"""Cached views of an unsealed experiment (``Session.view`` over ``format.journal.SessionReader``), real processes.

A view is read again only where the session changed: other writers' closes (rows and
deferred ``f`` records in their open-run logs), ``discard_run`` in another process, a
commit by another process. Every test compares the cached view with an uncached read
of the same journal (``read_journal``), so a stale cache fails it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ommx_experiment import AutosavePolicy, Experiment
from ommx_experiment.engine.names import ImageName
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.errors import LifecycleError
from ommx_experiment.format.journal import read_journal

NAME = "example.com/views/cached:v1"


def _uncached(name: str = NAME) -> dict[int, dict[str, Any]]:
    snapshot = read_journal(LocalRegistry.default(), ImageName.parse(name))
    assert snapshot is not None
    return {run.run_id: dict(params) for run, params in snapshot.runs}


def _seen(exp: Experiment) -> dict[int, dict[str, Any]]:
    df = exp.run_parameters_df()
    ids = [r.run_id for r in exp.runs]
    assert list(df.index) == ids
    return {run_id: {k: v for k, v in df.loc[run_id].items() if v is not None and v == v} for run_id in ids}


def _here(n: int) -> Experiment:
    here = Experiment.join(NAME)
    here.set_autosave_policy(AutosavePolicy.disabled())
    for i in range(n):
        with here.run() as run:
            run.log_parameter("seed", i)
    return here


def test_a_cached_view_sees_each_deferred_close_of_another_process_and_its_later_row(writers: Any) -> None:
    here = _here(3)
    assert _seen(here) == _uncached()
    a = writers()
    assert a.ask("hold") == {"ok": True}
    assert a.ask("join", NAME) == {"ok": True}
    for seed in (100, 101, 102):
        run_id = a.ask("open", "seed", seed)["run_id"]
        assert a.ask("close", run_id) == {"ok": True}
        assert a.ask("deferred")["deferred"] >= 1  # only in a's open-run log: the cache must read it
        seen = _seen(here)
        assert seen[run_id] == {"seed": seed}
        assert seen == _uncached()
    a.exit()  # its batch is written and its log goes away
    assert _seen(here) == _uncached() and len(_uncached()) == 6


def test_a_run_discarded_by_another_process_leaves_the_cached_view(writers: Any) -> None:
    here = _here(5)
    before = _seen(here)
    a = writers()
    assert a.ask("join", NAME) == {"ok": True}
    assert a.ask("discard", 4) == {"ok": True}  # the newest row: its rowid may be reused next
    assert 4 not in _seen(here) and _seen(here) == _uncached()
    run_id = a.ask("open", "seed", 50)["run_id"]
    assert a.ask("close", run_id) == {"ok": True}
    assert a.ask("discard", 1) == {"ok": True}  # one row gone, one added: the count alone does not tell
    a.exit()
    after = _seen(here)
    assert after == _uncached()
    assert set(after) == (set(before) - {1, 4}) | {run_id}


def test_a_commit_by_another_process_ends_the_cached_view(writers: Any) -> None:
    here = _here(2)
    assert len(here.runs) == 2
    a = writers()
    assert a.ask("join", NAME) == {"ok": True}
    assert "digest" in a.ask("commit")
    with pytest.raises(LifecycleError, match="gone"):
        here.runs  # noqa: B018
    a.exit()
    assert [r.run_id for r in Experiment.load(NAME).runs] == [0, 1]


def test_an_unchanged_session_gives_back_the_same_view_and_a_change_a_new_one(registry_root: Path) -> None:
    here = _here(2)
    session = here._session_or_raise()
    first = session.view()
    assert session.view() is first and [r.run_id for r in here.runs] == [0, 1]
    here.set_annotation("k", "v")
    second = session.view()
    assert second is not first and second.annotations == {"k": "v"}
    with here.run() as run:  # a deferred close of this writer: in memory, not yet a row
        run.log_parameter("seed", 9)
    assert list(session.view().runs) == [0, 1, 2] and _seen(here) == _uncached()
    with pytest.raises(TypeError):
        session.view().runs[5] = None  # type: ignore[index]


def test_views_of_a_join_in_this_process_follow_another_handle_of_the_same_process(registry_root: Path) -> None:
    here = _here(1)
    other = Experiment.join(NAME)  # a second writer in the same process: its own journal connection
    assert [r.run_id for r in here.runs] == [0]
    with other.run() as run:
        run.log_parameter("seed", 7)
    assert [r.run_id for r in here.runs] == [0, 1]
    other.discard_run(0)
    assert [r.run_id for r in here.runs] == [1] and _seen(here) == _uncached()


def test_run_parameters_df_of_an_unchanged_view_is_a_fresh_copy_each_time(registry_root: Path) -> None:
    here = _here(3)
    first = here.run_parameters_df()
    first.loc[0, "seed"] = 999
    first["extra"] = 1
    second = here.run_parameters_df()
    assert second["seed"].tolist() == [0, 1, 2] and list(second.columns) == ["seed"]
    assert str(second["seed"].dtype) == "Int64" and second.index.name == "run_id"
    with here.run() as run:
        run.log_parameter("seed", 3)
    assert here.run_parameters_df()["seed"].tolist() == [0, 1, 2, 3]
