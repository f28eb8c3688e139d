"""Group commit of Run closes (spec/experiment.md, "Group commit"): deferred rows, real processes.

A close without blobs or new column types appends an ``f`` record to the writer's
open-run log and its row is written with a later batch. These tests hold the batch
back (the worker's ``hold`` command) and check every path where that could lose or
duplicate a run: another process reading before the flush, a commit racing closes
in other processes, SIGKILL with unwritten closes, and a flush that fails.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.processes import Writer, tmpfs

from ommx_experiment import AutosavePolicy, Experiment
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.engine.root import _reset_for_tests
from ommx_experiment.errors import ExperimentBusyError, JournalWriteError, RegistryError

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "workers" / "shared_worker.py"
NAME = "example.com/group/commit:v1"


def _rows(root: Path) -> int:
    conn = sqlite3.connect(root / "index.sqlite3")
    try:
        return int(conn.execute("SELECT count(*) FROM oxe_journal_runs").fetchone()[0])
    finally:
        conn.close()


def _held_writer(writers: Any, seeds: list[int]) -> tuple[Writer, list[int]]:
    """A writer that closed one run per seed; the first close wrote its row (a new column), the rest are deferred."""
    a = writers()
    assert a.ask("hold") == {"ok": True}
    assert a.ask("join", NAME) == {"ok": True}
    ids = []
    for seed in seeds:
        run_id = a.ask("open", "seed", seed)["run_id"]
        assert a.ask("close", run_id) == {"ok": True}
        ids.append(run_id)
    assert a.ask("deferred") == {"deferred": len(seeds) - 1}
    return a, ids


def test_a_deferred_close_is_visible_to_another_process_before_its_row_is_written(
    writers: Any, registry_root: Path
) -> None:
    a, ids = _held_writer(writers, [10, 11, 12, 13])
    assert _rows(registry_root) == 1  # only the close that established the column
    here = Experiment.join(NAME)
    assert [r.run_id for r in here.runs] == ids
    assert [r.status for r in here.runs] == ["finished"] * 4
    assert here.run_parameters_df()["seed"].tolist() == [10, 11, 12, 13]
    assert a.ask("deferred") == {"deferred": 3} and _rows(registry_root) == 1  # read from a's log, not flushed
    here.commit()  # quiesces a: its deferred closes are part of the commit
    late = a.ask("open", "seed", 14)["run_id"]
    closed = a.ask("close", late)
    assert closed["error"] == "RunNotRecordedError", closed
    a.exit()  # its flush finds the commit's tombstone: the deferred runs were committed, nothing is written twice
    assert Experiment.load(NAME).run_parameters_df()["seed"].tolist() == [10, 11, 12, 13]


def test_sigkill_with_deferred_closes_brings_them_back_as_closed_runs_with_their_parameters(
    writers: Any, registry_root: Path
) -> None:
    a, ids = _held_writer(writers, [1, 2, 3])
    open_id = a.ask("open", "seed", 4)["run_id"]
    assert a.ask("log", open_id, "alpha", 0.5) == {"ok": True}
    a.kill()
    assert _rows(registry_root) == 1
    here = Experiment.join(NAME)  # recovers the dead writer: deferred closes as closed, the open run as interrupted
    by_id = {r.run_id: r for r in here.runs}
    assert sorted(by_id) == sorted([*ids, open_id])
    assert [by_id[i].status for i in ids] == ["finished"] * 3
    assert by_id[open_id].status == "interrupted"
    assert _rows(registry_root) == 4  # recovery wrote them
    here.commit()
    df = Experiment.load(NAME).run_parameters_df()
    assert df["seed"].tolist() == [1, 2, 3, 4]
    assert df["alpha"].isna().tolist() == [True, True, True, False]


def test_a_dead_writers_deferred_closes_are_committed_without_a_join(writers: Any) -> None:
    a, ids = _held_writer(writers, [5, 6, 7])
    a.kill()
    b = writers()
    b.ask("join", NAME)  # recovery runs here, in another process
    assert "digest" in b.ask("commit")
    loaded = Experiment.load(NAME)
    assert sorted(r.run_id for r in loaded.runs) == ids
    assert loaded.run_parameters_df()["seed"].tolist() == [5, 6, 7]


def _loop(root: Path, prefix: str, pause: float) -> subprocess.Popen[str]:
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONPATH=str(REPO / "src"))
    return subprocess.Popen(
        [sys.executable, str(WORKER), "loop", NAME, prefix, str(pause)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("round_", range(6))
def test_a_commit_racing_closes_in_other_processes_holds_each_returned_close_exactly_once(
    registry_root: Path, round_: int
) -> None:
    rng = random.Random(round_)
    name_root = registry_root
    seed = Experiment.join(NAME)
    with seed.run() as run:  # establish the columns: every loop close is then deferred
        run.log_parameter("token", "seed")
        run.log_parameter("i", -1)
    loops = [_loop(name_root, f"w{k}", 0.002) for k in range(2)]
    try:
        first = [proc.stdout.readline() for proc in loops if proc.stdout is not None]  # each loop has joined
        assert all(line.startswith("closed ") for line in first), first
        time.sleep(0.5 + rng.uniform(0, 1.0))  # closes deferred and flushed by size and time meanwhile
        deadline = time.monotonic() + 60
        while True:
            try:
                seed.commit()
                break
            except ExperimentBusyError:  # a loop held an open run at that instant
                assert time.monotonic() < deadline, "never found both loops between runs"
                time.sleep(rng.uniform(0, 0.003))
        outputs = list(first)
        for proc in loops:  # each loop dies at its first close (or new run) after the commit
            assert proc.stdout is not None and proc.stderr is not None
            out = proc.stdout.read()  # to the end: the loop exited (not communicate(): it skips what readline buffered)
            err = proc.stderr.read()
            proc.wait(timeout=60)
            assert "RunNotRecordedError" in err or "no new Run can be started" in err, err
            outputs.append(out)
    finally:
        for proc in loops:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    returned = {line.split()[1] for out in outputs for line in out.splitlines() if line.startswith("closed ")}
    committed = Experiment.load(NAME).run_parameters_df()["token"].tolist()
    assert len(committed) == len(set(committed))  # exactly once
    assert set(committed) == returned | {"seed"}  # every close that returned, nothing else
    assert len(returned) > 10


def test_a_batch_that_cannot_be_written_on_a_full_disk_raises_and_is_written_once_space_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ommx_experiment.lifecycle import session as session_module

    monkeypatch.setattr(session_module, "GROUP_COMMIT_SECONDS", 3600.0)
    monkeypatch.setattr(session_module, "GROUP_COMMIT_RUNS", 10**9)
    with tmpfs(tmp_path / "disk", "6m") as disk:
        root = disk / "registry"
        monkeypatch.setenv("OMMX_LOCAL_REGISTRY_ROOT", str(root))
        _reset_for_tests()
        exp = Experiment(NAME)
        exp.set_autosave_policy(AutosavePolicy.disabled())
        for i in range(400):  # the first close writes its row (new columns), the other 399 are deferred
            with exp.run() as run:
                run.log_parameter("i", i)
                run.log_parameter("pad", f"{i:0200d}")
        assert len(exp._session_or_raise().journal.deferred) == 399
        filler = disk / "filler"
        with filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
        with pytest.raises(JournalWriteError, match=r"Run\(s\) 1, 2, 3, .*, 399 of .* were closed but not saved .*full"):
            exp._session_or_raise().flush_pending()  # the batch (a due close, the timer, discard_run, exit)
        assert len(exp._session_or_raise().journal.deferred) == 399  # kept for the retry
        with pytest.raises(RegistryError, match="full"):  # the commit (it writes no batch) fails loudly too
            exp.commit()
        assert len(exp._session_or_raise().journal.deferred) == 399
        filler.unlink()
        exp.commit()
        assert Experiment.load(NAME).run_parameters_df()["i"].tolist() == list(range(400))
        del exp
        _reset_for_tests()


def test_discard_of_a_run_another_writer_deferred_waits_for_its_row(writers: Any) -> None:
    a = writers()
    a.ask("join", NAME)  # not held: its timer writes the batch shortly after the close
    first = a.ask("open", "seed", 1)["run_id"]
    a.ask("close", first)
    second = a.ask("open", "seed", 2)["run_id"]
    a.ask("close", second)
    here = Experiment.join(NAME)
    here.discard_run(second)
    assert [r.run_id for r in here.runs] == [first]
    a.exit()
    here.commit()
    assert Experiment.load(NAME).run_parameters_df()["seed"].tolist() == [1]


def test_closes_after_a_failed_commit_go_to_the_journal_once_then_are_deferred_again(
    writers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, ids = _held_writer(writers, [1, 2])
    here = Experiment.join(NAME)
    registry_type = type(here._registry)
    real_publish = registry_type.publish

    def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError("injected: publish failed")

    monkeypatch.setattr(registry_type, "publish", refuse)
    with pytest.raises(OSError, match="injected"):
        here.commit()  # sealed and quiesced a, then gave up: unsealed
    monkeypatch.setattr(registry_type, "publish", real_publish)
    third = a.ask("open", "seed", 3)["run_id"]
    assert a.ask("close", third) == {"ok": True}  # a's seal flag is set: this close wrote its row (and cleared the flag)
    assert a.ask("deferred") == {"deferred": 1}  # the run deferred before the failed commit is still waiting
    fourth = a.ask("open", "seed", 4)["run_id"]
    assert a.ask("close", fourth) == {"ok": True}
    assert a.ask("deferred") == {"deferred": 2}  # deferred again
    here.commit()
    late = a.ask("open", "seed", 5)["run_id"]
    assert a.ask("close", late)["error"] == "RunNotRecordedError"
    a.exit()
    assert Experiment.load(NAME).run_parameters_df()["seed"].tolist() == [1, 2, 3, 4]
    assert len(ids) == 2


def _db_pages(root: Path) -> int:
    return os.path.getsize(root / "index.sqlite3") // 4096


def test_a_commit_after_a_long_sweep_leaves_the_checkpoint_to_the_helper_thread(
    registry_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Database.checkpoint_later`` (spec/registry.md §4): the sweep's journal rows stay in the WAL
    through the commit's ref write; with SQLite's default of 1,000 pages that write copied them all
    into the database file and fsynced it. The helper thread checkpoints after release."""
    from ommx_experiment.format import journal, journal_sweep

    monkeypatch.setattr(journal, "sweep_orphan_runs_later", lambda registry: None)  # run by hand below
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    pad = "x" * 3000  # about one WAL page per close: 1,200 closes pass SQLite's default of 1,000 pages
    for i in range(1200):
        with exp.run() as run:
            run.log_parameter("i", i)
            run.log_parameter("pad", pad)
    exp._session.flush_pending()  # type: ignore[union-attr]
    before = _db_pages(registry_root)
    exp.commit()
    assert _db_pages(registry_root) - before < 100  # no checkpoint: the database file did not take the journal's pages
    assert journal_sweep.drop_orphan_runs(LocalRegistry.at(registry_root)) == 1200
    assert _db_pages(registry_root) - before > 1000  # the helper's passive checkpoint did
    assert len(Experiment.load(NAME).run_parameters_df()) == 1200


def test_the_first_commit_in_a_fresh_registry_finds_the_registry_id_written_with_the_session(registry_root: Path) -> None:
    """The id names the commit's checkpoint slot; creating it there was a durable write (an fsync) of its own."""
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    with exp.run() as run:
        run.log_parameter("i", 1)
    conn = sqlite3.connect(registry_root / "index.sqlite3")
    try:
        row = conn.execute("SELECT value FROM ommx_local_registry_metadata WHERE key = 'registry_id'").fetchone()
    finally:
        conn.close()
    assert row is not None and len(row[0]) == 32
    exp.commit()
    assert LocalRegistry.at(registry_root).registry_id == row[0]
