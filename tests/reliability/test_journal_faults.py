"""A Run close is durable or raises: a full disk, a lock held by another process, a kill inside commit.

Issue 16 (faults 1 and 8), reproduced for real: a small tmpfs filled to the last
byte, a second process holding ``BEGIN EXCLUSIVE`` on ``index.sqlite3``, and a
committer killed with SIGKILL between publishing the ref and dropping the journal.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ommx_experiment import AutosavePolicy, Experiment
from ommx_experiment.engine import index_db
from ommx_experiment.engine.root import _reset_for_tests
from ommx_experiment.errors import JournalWriteError, RegistryError

from . import _support as sup

REPO = Path(__file__).resolve().parents[2]
NAME = "example.com/faults/journal:v1"


def _fresh_restore_ids(root: Path) -> list[int]:
    script = "import json\nfrom ommx_experiment import Experiment\n" \
        f"print(json.dumps([r.run_id for r in Experiment.restore_from_checkpoint({NAME!r}).runs]))"
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _use_root(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    monkeypatch.setenv("OMMX_LOCAL_REGISTRY_ROOT", str(root))
    _reset_for_tests()


def test_a_full_disk_makes_close_raise_and_the_run_is_saved_once_space_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sup.tmpfs(tmp_path / "disk", "6m") as disk:
        root = disk / "registry"
        _use_root(monkeypatch, root)
        exp = Experiment(NAME)
        exp.set_autosave_policy(AutosavePolicy.disabled())
        with exp.run() as run:
            run.log_parameter("i", -1)
        runs = []
        for i in range(200):
            run = exp.run()
            run.log_parameter("i", i)
            run.log_parameter("pad", "x" * 200)
            runs.append(run)
        filler = disk / "filler"
        with filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):  # unbuffered: close() has nothing left to flush
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        returned: list[int] = []
        refused: list[int] = []
        for run in runs:  # opened before the disk filled up (their ids are reserved)
            run_id = run.run_id
            try:
                run.finish()
                returned.append(run_id)
            except JournalWriteError as exc:
                assert "was not saved to the checkpoint journal" in str(exc) and "it stays in this session" in str(exc)
                refused.append(run_id)
        assert refused, "the disk never filled up: nothing was tested"
        filler.unlink()
        with exp.run() as run:  # space is back: this close writes the refused run first
            run.log_parameter("i", 1000)
            last = run.run_id
        ids = _fresh_restore_ids(root)  # what a fresh process (after any crash) gets back
        assert set(ids) >= {0, *returned, *refused, last}
        exp.commit()
        assert sorted(r.run_id for r in Experiment.load(NAME).runs) == sorted({0, *returned, *refused, last})
        del exp
        _reset_for_tests()


_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("COMMIT")
"""


def test_a_lock_held_by_another_process_makes_close_raise_then_commit_saves_the_run(
    registry_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_db, "BUSY_TIMEOUT_MS", 1500)  # OMMX's 60 s budget, shortened for the test
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    with exp.run() as run:
        run.log_parameter("i", 0)
    run = exp.run()  # opened before the lock is taken
    run.log_parameter("j", 1)  # a new column: this close writes its row at once (no group commit)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(registry_root / "index.sqlite3")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(JournalWriteError, match=r"Run 1 of .* was not saved .*locked"):
            run.finish()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    artifact = exp.commit()  # writes the refused run first, then publishes
    assert artifact.image_name == NAME
    assert [r.run_id for r in Experiment.load(NAME).runs] == [0, 1]


def test_a_lock_held_by_another_process_makes_the_batch_flush_raise_and_commit_retries_it(
    registry_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ommx_experiment.lifecycle import session as session_module

    monkeypatch.setattr(index_db, "BUSY_TIMEOUT_MS", 1500)
    monkeypatch.setattr(session_module, "GROUP_COMMIT_SECONDS", 3600.0)  # only the size trigger
    monkeypatch.setattr(session_module, "GROUP_COMMIT_RUNS", 4)
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    with exp.run() as run:
        run.log_parameter("i", 0)  # establishes the column: written at once
    runs = [exp.run() for _ in range(4)]  # ids reserved before the lock is taken
    for i, run in enumerate(runs, start=1):
        run.log_parameter("i", i)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(registry_root / "index.sqlite3")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        for run in runs[:3]:  # deferred: no database access
            run.finish()
        with pytest.raises(JournalWriteError, match=r"Run\(s\) 1, 2, 3, 4 of .* were closed but not saved .*locked"):
            runs[3].finish()  # the fourth deferred close makes the batch due
        with pytest.raises(RegistryError, match="locked"):
            exp.commit()  # it writes no batch (its view holds the deferred closes), but its seal waits for the lock
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert _fresh_restore_ids(registry_root) == [0, 1, 2, 3, 4]  # the deferred closes survive in the log meanwhile
    exp.commit()  # the retry publishes them
    assert [r.run_id for r in Experiment.load(NAME).runs] == [0, 1, 2, 3, 4]
    assert Experiment.load(NAME).run_parameters_df()["i"].tolist() == [0, 1, 2, 3, 4]


_KILLED_COMMIT = """
import os, sys
from ommx_experiment import Experiment
from ommx_experiment.format import journal
exp = Experiment.join(sys.argv[1])
for i in range(3):
    with exp.run() as run:
        run.log_parameter("i", i)
def die(self, *args, **kwargs):
    os.kill(os.getpid(), 9)
journal.Journal.discard = die  # the ref is published; the kill lands before the journal is dropped
exp.commit()
"""


def test_a_commit_killed_before_its_cleanup_leaves_no_stale_draft(registry_root: Path) -> None:
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(registry_root), PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, "-c", _KILLED_COMMIT, NAME], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    from ommx_experiment import list_experiment_checkpoints

    assert [c for c in list_experiment_checkpoints(include_journal=True) if c.requested_image_name == NAME] == []
    assert len(Experiment.load(NAME).runs) == 3
    with pytest.raises(RuntimeError, match="No Experiment checkpoint found"):
        Experiment.restore_from_checkpoint(NAME)  # finishes the dead commit's cleanup, finds nothing to restore
    with pytest.raises(RuntimeError, match="already committed"):
        Experiment.join(NAME)


def test_a_commit_killed_before_publishing_leaves_the_experiment_unsealed(registry_root: Path) -> None:
    script = _KILLED_COMMIT.replace("journal.Journal.discard = die", "type(exp._registry).publish = die")
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(registry_root), PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, "-c", script, NAME], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    exp = Experiment.join(NAME)  # the dead committer's seal is undone: writers go on
    with exp.run() as run:
        run.log_parameter("i", 3)
    exp.commit()
    assert sorted(Experiment.load(NAME).run_parameters_df()["i"].tolist()) == [0, 1, 2, 3]


def test_the_held_lock_helper_really_locks(registry_root: Path) -> None:
    """The fault injector itself: while it holds the lock, a plain write fails (so the test above tests something)."""
    import sqlite3

    Experiment(NAME).log_json("x", {})  # creates the database
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(registry_root / "index.sqlite3")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        conn = sqlite3.connect(registry_root / "index.sqlite3", timeout=0.2)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            conn.execute("INSERT INTO oxe_meta VALUES ('probe', '1')")
        conn.close()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
