"""Checkpoints: AutosavePolicy, the journal, pins, OMMX-format slots, restore, crash safety (§3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ommx_experiment import AutosavePolicy, Experiment, LocalRegistry
from ommx_experiment.engine.names import ImageName
from ommx_experiment.engine.oci import Manifest
from ommx_experiment.format.codec import ExperimentConfig
from ommx_experiment.format.journal import checkpoint_ref, pin_refs, read_journal
from ommx_experiment.lifecycle import autosave
from ommx_experiment.lifecycle.autosave import LATER

NAME = "example.com/team/ck:v1"
WORKER = Path(__file__).resolve().parents[1] / "workers" / "experiment_worker.py"
REPO = Path(__file__).resolve().parents[2]


def _slot_config(name: str = NAME) -> ExperimentConfig | None:
    registry = LocalRegistry.default()
    digest = registry.resolve(checkpoint_ref(registry, ImageName.parse(name)))
    if digest is None:
        return None
    manifest = Manifest.parse(registry.blobs.get(digest))
    return ExperimentConfig.parse(registry.blobs.get(manifest.config.digest))


def _close_runs(exp: Experiment, n: int) -> None:
    for _ in range(n):
        with exp.run() as run:
            run.log_parameter("i", run.run_id)


# --- AutosavePolicy values ----------------------------------------------------------------------------


def test_policy_reprs_and_validation() -> None:
    assert repr(AutosavePolicy.every_run_close()) == "AutosavePolicy.every_run_close()"
    assert repr(AutosavePolicy.every_n_runs(2)) == "AutosavePolicy.every_n_runs(2)"
    assert repr(AutosavePolicy.min_interval(1.5)) == "AutosavePolicy.min_interval(1.5)"
    assert repr(AutosavePolicy.disabled()) == "AutosavePolicy.disabled()"
    assert AutosavePolicy.min_interval(0) == AutosavePolicy.min_interval(0.0)
    with pytest.raises(ValueError, match="greater than zero"):
        AutosavePolicy.every_n_runs(0)
    for bad in (float("inf"), -1.0, float("nan")):
        with pytest.raises(ValueError, match="finite and non-negative"):
            AutosavePolicy.min_interval(bad)
    with pytest.raises(TypeError):
        Experiment(NAME).set_autosave_policy("every")  # type: ignore[arg-type]


def test_every_n_runs_schedule() -> None:
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.every_n_runs(2))
    _close_runs(exp, 1)
    assert _slot_config() is None
    _close_runs(exp, 1)
    config = _slot_config()
    assert config is not None and config.status == "draft" and len(config.runs) == 2
    assert config.requested_image_name == NAME
    exp.commit()
    assert _slot_config() is None


def test_every_run_close_publishes_each_time() -> None:
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.every_run_close())
    for n in range(1, 4):
        _close_runs(exp, 1)
        assert len(_slot_config().runs) == n


def test_default_policy_is_min_interval_60() -> None:
    exp = Experiment(NAME)
    assert exp._session.schedule.policy == AutosavePolicy.min_interval(60.0)
    _close_runs(exp, 3)
    LATER.run_all()  # the first draft, deferred from the first close, holds the runs closed by then
    assert len(_slot_config().runs) == 3
    _close_runs(exp, 2)
    LATER.run_all()
    assert len(_slot_config().runs) == 3  # then at most one per minute
    journal = read_journal(LocalRegistry.default(), ImageName.parse(NAME))
    assert [run.run_id for run, _ in journal.runs] == [0, 1, 2, 3, 4]


def test_disabled_policy_writes_no_draft_but_journals() -> None:
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    _close_runs(exp, 2)
    assert _slot_config() is None
    restored = Experiment.restore_from_checkpoint(NAME)
    assert [r.run_id for r in restored.runs] == [0, 1]


def test_failed_exit_publishes_checkpoint_even_when_disabled() -> None:
    with pytest.raises(RuntimeError):
        with Experiment(NAME) as exp:
            exp.set_autosave_policy(AutosavePolicy.disabled())
            _close_runs(exp, 1)
            raise RuntimeError("solve failed")
    config = _slot_config()
    assert config.status == "failed" and config.reason == "RuntimeError: solve failed"


# --- journal ---------------------------------------------------------------------------------------------


def test_journal_rows_are_o1_per_close() -> None:
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    registry = LocalRegistry.default()
    _close_runs(exp, 5)
    rows = registry.db.query("SELECT run_id FROM oxe_journal_runs ORDER BY run_id")
    assert [r[0] for r in rows] == [0]  # the close that established the column; 1-4 are group-committed
    assert sorted(exp._session_or_raise().journal.deferred) == [1, 2, 3, 4]
    exp._session_or_raise().flush_pending()  # one transaction for the batch
    rows = registry.db.query("SELECT run_id FROM oxe_journal_runs ORDER BY run_id")
    assert [r[0] for r in rows] == [0, 1, 2, 3, 4]
    # The session row is written once, not per close (that would touch a second page per run).
    sessions = registry.db.query("SELECT COUNT(*) FROM oxe_journal_sessions WHERE requested_name = ?", (NAME,))
    assert sessions[0][0] == 1
    snapshot = read_journal(registry, ImageName.parse(NAME))
    assert snapshot is not None and max(r.run_id for r, _ in snapshot.runs) + 1 == 5


def _journal_run_rows(registry: LocalRegistry) -> int:
    return int(registry.db.query("SELECT count(*) FROM oxe_journal_runs")[0][0])


def test_a_commit_leaves_its_run_rows_to_a_helper_thread_and_no_reader_sees_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """spec/experiment.md, "Commit": the session row goes in the commit's cleanup, its run rows after release."""
    from ommx_experiment.format import journal, journal_sweep
    from ommx_experiment.lifecycle import experiment

    registry = LocalRegistry.default()
    monkeypatch.setattr(experiment, "SWEEP_LATER_RUNS", 5)  # a session this large leaves its rows
    monkeypatch.setattr(journal, "sweep_orphan_runs_later", lambda registry: None)  # the helper thread never runs
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    _close_runs(exp, 5)
    exp._session_or_raise().journal.flush()  # rows (a commit takes deferred closes from its view, unwritten)
    exp.commit()
    assert _journal_run_rows(registry) == 5  # orphans: their session is gone
    assert Experiment.load(NAME).run_parameters_df()["i"].tolist() == [0, 1, 2, 3, 4]
    from ommx_experiment.edges import catalog

    assert catalog.list_experiment_checkpoints(include_journal=True) == []  # no draft listed
    with pytest.raises(Exception, match=r"committed|checkpoint"):
        Experiment.restore_from_checkpoint(NAME)
    with pytest.raises(Exception, match="already committed"):
        Experiment.join(NAME)
    assert journal_sweep.drop_orphan_runs(registry) == 5  # any sweep deletes them, whoever left them
    assert _journal_run_rows(registry) == 0


def test_the_next_commit_sweeps_run_rows_a_killed_committer_left(monkeypatch: pytest.MonkeyPatch) -> None:
    from ommx_experiment.format.journal_sweep import wait_for_sweeps
    from ommx_experiment.lifecycle import experiment

    monkeypatch.setattr(experiment, "SWEEP_LATER_RUNS", 2)
    registry = LocalRegistry.default()
    with registry.db.journal_write("test: orphans of a killed committer") as conn:
        conn.executemany("INSERT INTO oxe_journal_runs VALUES (?, ?, ?)", [("gone-session", i, "[]") for i in range(3)])
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    _close_runs(exp, 2)
    exp.commit()
    wait_for_sweeps()
    assert _journal_run_rows(registry) == 0  # ours and the orphans
    assert len(Experiment.load(NAME).runs) == 2


def test_a_small_commit_drops_its_run_rows_itself_and_starts_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    from ommx_experiment.format import journal

    def no_thread(registry: object) -> None:
        raise AssertionError("a helper thread was started")

    monkeypatch.setattr(journal, "sweep_orphan_runs_later", no_thread)
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    _close_runs(exp, 3)
    exp.commit()
    assert _journal_run_rows(LocalRegistry.default()) == 0


def _record_journal_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the step name of every journal write transaction, in order."""
    from ommx_experiment.format import journal

    steps: list[str] = []
    real = journal.journal_write

    def recording(registry: object, step: str) -> object:
        steps.append(step)
        return real(registry, step)  # type: ignore[arg-type]

    monkeypatch.setattr(journal, "journal_write", recording)
    return steps


def test_a_commit_writes_nothing_for_its_writer_after_dropping_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cleanup deleted the session and its writers: the release returns no ids and deletes no writer row."""
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    _close_runs(exp, 2)
    steps = _record_journal_writes(monkeypatch)
    exp.commit()
    after = steps[next(i for i, s in enumerate(steps) if s.startswith("journal discard")) + 1 :]
    assert after == [], after


def test_a_new_sessions_first_run_id_is_reserved_by_the_start_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """One journal write transaction less per small experiment; ids stay dense and shared."""
    steps = _record_journal_writes(monkeypatch)
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    with exp.run() as run:
        run.log_parameter("i", 0)
    assert [s for s in steps if "run ids" in s] == [], steps
    assert any(s.startswith("journal start") for s in steps)
    other = Experiment.join(NAME)
    with other.run() as run:  # the other writer reserves after ours: no id given twice
        run.log_parameter("i", 1)
    _close_runs(exp, 2)
    exp.commit()
    assert sorted(r.run_id for r in Experiment.load(NAME).runs) == [0, 1, 2, 3]


def test_a_single_writer_commit_takes_its_parameter_table_from_the_columns_kept_at_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """format/run_columns.py: the commit does not gather the table from one dict per run."""
    from ommx_experiment.format import run_params

    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    for i in range(20):
        with exp.run() as run:
            run.log_parameter("seed", i)
            run.log_parameter("w", i / 4)

    def derived(*args: object) -> object:
        raise AssertionError("the table was derived from every run's parameters")

    monkeypatch.setattr(run_params, "build_table", derived)
    exp.commit()
    monkeypatch.undo()
    df = Experiment.load(NAME).run_parameters_df()
    assert df["seed"].tolist() == list(range(20)) and df["w"].tolist() == [i / 4 for i in range(20)]


def test_runs_with_inline_attachments_keep_the_columns_kept_at_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that stores a deferred run's inline bytes replaces the run object: the columns follow it."""
    from ommx_experiment.format import run_params

    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    for i in range(20):
        with exp.run() as run:
            run.log_parameter("seed", i)
            run.log_json("small", {"i": i})  # inline: stored by the batch, not when logged
        if i == 9:
            exp._session_or_raise().journal.flush()  # the first half is stored before the commit

    def derived(*args: object) -> object:
        raise AssertionError("the table was derived from every run's parameters")

    monkeypatch.setattr(run_params, "build_table", derived)
    exp.commit()
    monkeypatch.undo()
    loaded = Experiment.load(NAME)
    assert loaded.run_parameters_df()["seed"].tolist() == list(range(20))
    assert [r.get_json("small") for r in loaded.runs] == [{"i": i} for i in range(20)]


def test_a_discarded_run_makes_the_commit_derive_its_table() -> None:
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    _close_runs(exp, 4)
    exp.discard_run(2)
    exp.commit()
    assert Experiment.load(NAME).run_parameters_df()["i"].to_dict() == {0: 0, 1: 1, 3: 3}


def test_restore_from_journal_has_params_attachments_annotations() -> None:
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    exp.log_attachment("top", "application/octet-stream", b"top-level")
    with exp.run() as run:
        run.log_parameter("b", True)
        run.log_parameter("f", float("nan"))
        run.log_parameter("s", "x")
        run.log_file("f1", __file__, filename="src.py")
    exp.set_annotation("com.example.k", "v")
    restored = Experiment.restore_from_checkpoint(NAME)
    assert restored.get_blob("top") == b"top-level"
    assert restored.annotations == {"com.example.k": "v"}
    df = restored.run_parameters_df()
    assert df.loc[0, "b"] == True and df.loc[0, "s"] == "x"  # noqa: E712
    import math

    assert math.isnan(df.loc[0, "f"])
    assert restored.runs[0].get_blob("f1") == Path(__file__).read_bytes()
    with restored.run() as run:
        assert run.run_id == 1
    restored.commit()
    registry = LocalRegistry.default()
    assert read_journal(registry, ImageName.parse(NAME)) is None
    assert pin_refs(registry, ImageName.parse(NAME)) == []
    assert Experiment.load(NAME).runs[0].get_blob("f1") == Path(__file__).read_bytes()


def test_new_session_replaces_old_journal_at_first_write() -> None:
    old = Experiment(NAME)
    old.set_autosave_policy(AutosavePolicy.disabled())
    _close_runs(old, 3)
    new = Experiment(NAME)
    new.set_autosave_policy(AutosavePolicy.disabled())
    assert len(Experiment.restore_from_checkpoint(NAME).runs) == 3  # not replaced before a durable write
    _close_runs(new, 1)
    assert [r.run_id for r in Experiment.restore_from_checkpoint(NAME).runs] == [0]
    # `old` is still alive in this process: its session is detached, not dropped, and it can still commit
    old._session_or_raise().flush_pending()  # its group-committed closes are rows now
    rows = LocalRegistry.default().db.query("SELECT requested_name, count(*) FROM oxe_journal_sessions s "
                                            "JOIN oxe_journal_runs r USING (session_id) GROUP BY requested_name")
    assert sorted((str(n).split(":")[-1].split("-late-")[0], c) for n, c in rows) == [("v1", 1), ("v1", 3)]
    old.commit()
    assert len(Experiment.load(NAME).runs) == 3
    with pytest.raises(RuntimeError, match="already points to"):
        new.commit()  # OMMX's rule: the first commit of a name wins


def test_pin_chain_keeps_journaled_blobs_reachable() -> None:
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    big = 70_000  # over INLINE_MAX_BYTES: stored and pinned when logged/closed (small ones stay inline)
    exp.log_attachment("a", "x/y", b"A" * big)
    with exp.run() as run:
        run.log_attachment("b", "x/y", b"B" * big)
    with exp.run() as run:
        run.log_attachment("c", "x/y", b"C" * big)
    registry = LocalRegistry.default()
    [pin_ref] = pin_refs(registry, ImageName.parse(NAME))  # one writer: one pin chain
    pin = registry.resolve(pin_ref)
    reached = {d for d, _ in registry.closure(pin)}
    for payload in (b"A" * big, b"B" * big, b"C" * big):
        from ommx_experiment.engine.digest import sha256_digest

        assert sha256_digest(payload) in reached
    chain = 0
    digest = pin
    while digest is not None:
        chain += 1
        digest = Manifest.parse(registry.blobs.get(digest)).subject
        digest = digest.digest if digest else None
    assert chain == 3


def test_restore_missing_is_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="No Experiment checkpoint found for requested image example.com/none/x:v1"):
        Experiment.restore_from_checkpoint("example.com/none/x:v1")


def test_restore_prefers_newer_slot_over_journal() -> None:
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    _close_runs(exp, 2)
    time.sleep(0.01)
    exp._session.publish_checkpoint("draft")  # slot newer than the journal: same content
    registry = LocalRegistry.default()
    restored = Experiment.restore_from_checkpoint(NAME)
    subject = restored._session.subject
    assert subject is not None and subject.digest == registry.resolve(checkpoint_ref(registry, ImageName.parse(NAME)))
    assert [r.run_id for r in restored.runs] == [0, 1]


def test_rename_moves_checkpoint_and_journal() -> None:
    exp = Experiment(NAME)
    _close_runs(exp, 2)
    LATER.run_all()  # default policy: the deferred first draft is published for NAME
    assert _slot_config() is not None
    exp.rename("example.com/team/renamed:v1")
    assert _slot_config() is None
    config = _slot_config("example.com/team/renamed:v1")
    assert config.status == "draft" and len(config.runs) == 2
    with pytest.raises(RuntimeError, match="No Experiment checkpoint"):
        Experiment.restore_from_checkpoint(NAME)
    assert len(Experiment.restore_from_checkpoint("example.com/team/renamed:v1").runs) == 2


def test_restore_of_restored_session_continues_run_ids() -> None:
    import gc

    exp = Experiment(NAME)
    _close_runs(exp, 2)
    del exp  # its writer leaves and gives its reserved ids back ...
    LATER.run_all()  # ... once its deferred first draft is published (until then LATER holds the session)
    gc.collect()
    restored = Experiment.restore_from_checkpoint(NAME)
    _close_runs(restored, 1)
    del restored
    LATER.run_all()
    gc.collect()
    again = Experiment.restore_from_checkpoint(NAME)
    assert [r.run_id for r in again.runs] == [0, 1, 2]


def test_restore_beside_a_live_writer_never_reuses_its_ids() -> None:
    exp = Experiment(NAME)
    _close_runs(exp, 2)
    restored = Experiment.restore_from_checkpoint(NAME)  # joins: exp still writes to the same journal
    _close_runs(restored, 1)
    _close_runs(exp, 1)
    ids = [r.run_id for r in Experiment.restore_from_checkpoint(NAME).runs]
    assert ids[:2] == [0, 1] and len(ids) == len(set(ids)) == 4


# --- crash safety in subprocesses ---------------------------------------------------------------------------


def _worker(root: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONPATH=str(REPO / "src"))
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _fresh(root: Path, *args: str) -> dict:
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, str(WORKER), *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("policy", "kill_after"), [("default", 1), ("default", 5), ("disabled", 3), ("every", 4)])
def test_sigkill_after_n_closes_restores_exactly_those_runs(registry_root: Path, policy: str, kill_after: int) -> None:
    args = ["sweep", NAME, "20", "--step"] + ([] if policy == "default" else ["--policy", policy])
    proc = _worker(registry_root, *args)
    try:
        for i in range(kill_after):
            assert proc.stdout.readline().strip() == f"closed {i}"
            if i < kill_after - 1:
                proc.stdin.write("\n")
                proc.stdin.flush()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    state = _fresh(registry_root, "restore", NAME)
    assert [r["run_id"] for r in state["runs"]] == list(range(kill_after))
    assert all(r["status"] == "finished" for r in state["runs"])
    assert state["attachments"] == {"shared": b"experiment-level".hex()}
    for r in state["runs"]:
        assert r["attachments"] == {"blob": f"payload-{r['run_id']}".encode().hex()}
    assert state["params"] == {str(i): {"i": i, "x": i / 2} for i in range(kill_after)}


def test_sigkill_during_commit_never_damages_committed(registry_root: Path) -> None:
    baseline = _fresh_commit(registry_root, "example.com/team/base:v1", 3)
    for attempt, delay in enumerate((0.0, 0.02, 0.05, 0.1, 0.2)):
        name = f"example.com/team/crash:{attempt}"
        proc = _worker(registry_root, "sweep", name, "15", "--then-commit")
        lines = []
        while len(lines) < 15:
            lines.append(proc.stdout.readline().strip())
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        registry = LocalRegistry.at(registry_root)
        if registry.resolve(name) is not None:
            state = _fresh(registry_root, "dump", name)
            assert state["status"] == "finished"
        else:
            state = _fresh(registry_root, "restore", name)
        assert [r["run_id"] for r in state["runs"]] == list(range(15))
        assert state["params"]["14"] == {"i": 14, "x": 7.0}
        assert _fresh(registry_root, "dump", "example.com/team/base:v1") == baseline


def _fresh_commit(root: Path, name: str, n: int) -> dict:
    proc = _worker(root, "sweep", name, str(n), "--then-commit")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return _fresh(root, "dump", name)


def test_failed_worker_checkpoint_restored_in_fresh_process(registry_root: Path) -> None:
    proc = _worker(registry_root, "fail", NAME, "2")
    out, err = proc.communicate(timeout=120)
    assert "failed" in out, err
    state = _fresh(registry_root, "restore", NAME)
    assert [r["run_id"] for r in state["runs"]] == [0, 1]
    assert state["status"] is None


# --- journal rows of the old (v1) format ------------------------------------------------------------------


def _v1_row(run_id: int, status: str, reason: str | None, params: list[list[object]], attachments: dict) -> str:
    """A run row exactly as the first journal writer produced it (dict, floats as ``float.hex``)."""
    body = {
        "run_id": run_id, "status": status, "reason": reason, "attachments": attachments,
        "filenames": {name: f"{name}.bin" for name in attachments}, "trace": None, "solves": [], "samplings": [],
        "params": params,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def test_restore_reads_journal_rows_in_the_old_format() -> None:
    import math

    from ommx_experiment.edges import catalog

    registry = LocalRegistry.default()
    blob = registry.blobs.put_bytes(b"old-format payload")
    desc = {"mediaType": "application/octet-stream", "digest": blob.digest, "size": blob.size, "annotations": {}}
    rows = [
        _v1_row(0, "finished", None, [
            ["x", "f", (0.1).hex()], ["n", "f", float("nan").hex()], ["b", "b", True],
            ["i", "i", -(2**63)], ["s", "s", "é"],
        ], {"f": desc}),
        _v1_row(1, "failed", "RuntimeError: boom", [["x", "f", (-0.0).hex()], ["i", "i", 2**63 - 1]], {}),
    ]
    header = json.dumps({"annotations": {"com.example.k": "v"}, "subject": None, "next_run_id": 2})
    with registry.db.write("test: journal in the old format") as conn:
        conn.execute(
            "INSERT INTO oxe_journal_sessions(requested_name, session_id, header, pin_digest, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (NAME, "old-session", header, None, "2026-01-01T00:00:00+00:00"),
        )
        conn.executemany(
            "INSERT INTO oxe_journal_runs VALUES (?, ?, ?)", [("old-session", i, r) for i, r in enumerate(rows)]
        )

    [listed] = catalog.list_experiment_checkpoints(include_journal=True)
    assert (listed.requested_image_name, listed.status, listed.run_count) == (NAME, "draft", 2)
    assert listed.updated_at == "2026-01-01T00:00:00+00:00"  # v1 rows carry no close time

    restored = Experiment.restore_from_checkpoint(NAME)
    assert [(r.run_id, r.status, r.lifecycle_reason) for r in restored.runs] == [
        (0, "finished", None), (1, "failed", "RuntimeError: boom"),
    ]
    assert restored.annotations == {"com.example.k": "v"}
    assert restored.runs[0].get_blob("f") == b"old-format payload"
    df = restored.run_parameters_df()
    assert df.loc[0, "x"] == 0.1 and math.copysign(1.0, df.loc[1, "x"]) == -1.0
    assert math.isnan(df.loc[0, "n"]) and df.loc[0, "b"] == True  # noqa: E712
    assert df["i"].tolist() == [-(2**63), 2**63 - 1] and df.loc[0, "s"] == "é"
    _close_runs(restored, 1)  # appends a v2 row to the adopted session
    again = Experiment.restore_from_checkpoint(NAME)
    assert [r.run_id for r in again.runs] == [0, 1, 2]
    assert again.run_parameters_df().loc[2, "i"] == 2


def test_a_draft_slot_and_the_journals_note_of_it_are_one_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal notes the slot's digest inside the slot's own ref write: a failed note publishes no slot."""
    import sqlite3

    from ommx_experiment.format import journal
    from ommx_experiment.format.journal import checkpoint_updated_at

    exp = Experiment(NAME)
    with exp.run() as run:  # default policy: the first close publishes a draft (deferred)
        run.log_parameter("i", 0)
    LATER.run_all()
    registry = exp._session.registry
    slot = checkpoint_updated_at(registry, ImageName.parse(NAME))
    assert slot is not None
    noted = registry.db.query("SELECT slot_digest FROM oxe_journal_sessions WHERE requested_name = ?", (NAME,))
    assert noted == [(slot[0],)]

    def broken(self: object, conn: object, digest: object) -> None:
        raise sqlite3.OperationalError("injected")

    monkeypatch.setattr(journal.Journal, "note_checkpoint_in", broken)
    other = Experiment(NAME + "-b")
    with other.run() as run:
        run.log_parameter("i", 0)
    LATER.run_all()  # the draft fails (logged, not raised): neither slot nor note
    assert checkpoint_updated_at(registry, ImageName.parse(NAME + "-b")) is None


# --- the default policy's deferred first draft ------------------------------------------------------------


def _wait_for_slot(name: str = NAME, timeout: float = 10.0) -> ExperimentConfig | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        config = _slot_config(name)
        if config is not None:
            return config
        time.sleep(0.02)
    return None


def test_the_default_first_draft_is_published_after_the_delay_with_the_runs_closed_by_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(autosave, "DEFERRED_DRAFT_SECONDS", 0.5)
    exp = Experiment(NAME)
    _close_runs(exp, 2)
    assert _slot_config() is None  # not at the close
    assert LATER.pending(exp._session)
    config = _wait_for_slot()  # by LATER's thread, not by a call of ours
    assert config is not None and config.status == "draft" and len(config.runs) == 2
    assert config.requested_image_name == NAME
    deadline = time.monotonic() + 10
    while LATER.pending(exp._session) and time.monotonic() < deadline:  # the thread returns from the call
        time.sleep(0.01)
    assert not LATER.pending(exp._session)
    _close_runs(exp, 1)  # min_interval(60): no second draft now
    LATER.run_all()
    assert len(_slot_config().runs) == 2


def test_a_commit_before_the_delay_drops_the_deferred_draft(monkeypatch: pytest.MonkeyPatch) -> None:
    from ommx_experiment.format.journal import checkpoint_updated_at

    monkeypatch.setattr(autosave, "DEFERRED_DRAFT_SECONDS", 0.3)
    exp = Experiment(NAME)
    _close_runs(exp, 1)
    session = exp._session
    assert LATER.pending(session)
    exp.commit()
    assert not LATER.pending(session)
    time.sleep(0.5)
    LATER.run_all()
    registry = LocalRegistry.default()
    assert checkpoint_updated_at(registry, ImageName.parse(NAME)) is None
    assert [r for r in registry.db.query("SELECT name, reference FROM refs") if str(r[0]).endswith(".ommx.local/checkpoint")] == []
    assert len(Experiment.load(NAME).runs) == 1


def test_a_failed_exit_or_a_policy_change_drops_the_deferred_draft(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autosave, "DEFERRED_DRAFT_SECONDS", 30.0)
    with pytest.raises(RuntimeError):
        with Experiment(NAME) as exp:
            _close_runs(exp, 1)
            session = exp._session
            raise RuntimeError("boom")
    assert not LATER.pending(session)
    LATER.run_all()
    assert _slot_config().status == "failed"  # not overwritten by a late draft
    other = Experiment(NAME + "-b")
    _close_runs(other, 1)
    assert LATER.pending(other._session)
    other.set_autosave_policy(AutosavePolicy.disabled())
    assert not LATER.pending(other._session)
    LATER.run_all()
    assert _slot_config(NAME + "-b") is None


@pytest.mark.parametrize(
    "policy", [AutosavePolicy.min_interval(60.0), AutosavePolicy.every_n_runs(1), AutosavePolicy.every_run_close()]
)
def test_a_chosen_policy_publishes_its_first_draft_at_the_close(monkeypatch: pytest.MonkeyPatch, policy: AutosavePolicy) -> None:
    monkeypatch.setattr(autosave, "DEFERRED_DRAFT_SECONDS", 30.0)
    exp = Experiment(NAME)
    exp.set_autosave_policy(policy)  # even the default's own value, when chosen
    _close_runs(exp, 1)
    assert not LATER.pending(exp._session)
    assert len(_slot_config().runs) == 1


def test_with_ommx3_loaded_the_first_draft_is_published_at_the_close(monkeypatch: pytest.MonkeyPatch) -> None:
    from ommx_experiment.lifecycle import session as session_module

    monkeypatch.setattr(autosave, "DEFERRED_DRAFT_SECONDS", 30.0)
    monkeypatch.setattr(session_module, "other_sqlite_loaded", lambda: True)
    exp = Experiment(NAME)
    _close_runs(exp, 1)
    assert not LATER.pending(exp._session)
    assert len(_slot_config().runs) == 1


def test_ommx3_loaded_after_the_close_leaves_the_draft_to_our_next_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from ommx_experiment.lifecycle import session as session_module

    monkeypatch.setattr(autosave, "DEFERRED_DRAFT_SECONDS", 0.05)
    exp = Experiment(NAME)
    _close_runs(exp, 1)
    monkeypatch.setattr(session_module, "other_sqlite_loaded", lambda: True)
    time.sleep(0.3)
    assert _slot_config() is None  # LATER's thread does not touch the index beside OMMX 3's calls
    assert LATER.pending(exp._session)  # kept for our next close or exit
    _close_runs(exp, 1)
    assert len(_slot_config().runs) == 2 and not LATER.pending(exp._session)


def test_rename_before_the_deferred_draft_publishes_it_under_the_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autosave, "DEFERRED_DRAFT_SECONDS", 30.0)
    exp = Experiment(NAME)
    _close_runs(exp, 1)
    exp.rename("example.com/team/renamed:v1")
    LATER.run_all()
    assert _slot_config() is None
    assert len(_slot_config("example.com/team/renamed:v1").runs) == 1


_DEFERRED_SCRIPT = """
import sys, time
from ommx_experiment import Experiment
from ommx_experiment.lifecycle import autosave
autosave.DEFERRED_DRAFT_SECONDS = 60.0  # far longer than this process lives
exp = Experiment(sys.argv[1])
with exp.run() as run:
    run.log_parameter("i", 7)
    run.log_attachment("blob", "application/octet-stream", b"payload")
print("closed", flush=True)
if sys.argv[2] == "wait":
    time.sleep(120)
"""


def _deferred_child(root: Path, mode: str) -> subprocess.Popen[str]:
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONPATH=str(REPO / "src"))
    return subprocess.Popen(
        [sys.executable, "-c", _DEFERRED_SCRIPT, NAME, mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_normal_interpreter_exit_publishes_the_deferred_draft(registry_root: Path) -> None:
    proc = _deferred_child(registry_root, "exit")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == "closed"
    config = _slot_config()
    assert config is not None and config.status == "draft" and len(config.runs) == 1


def test_sigkill_before_the_deferred_draft_keeps_the_closed_run_recoverable(registry_root: Path) -> None:
    proc = _deferred_child(registry_root, "wait")
    try:
        assert proc.stdout.readline().strip() == "closed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert _slot_config() is None  # the draft never ran: the journal (open-run log) holds the run
    state = _fresh(registry_root, "restore", NAME)
    assert [(r["run_id"], r["status"]) for r in state["runs"]] == [(0, "finished")]
    assert state["params"] == {"0": {"i": 7}}
    assert state["runs"][0]["attachments"] == {"blob": b"payload".hex()}
