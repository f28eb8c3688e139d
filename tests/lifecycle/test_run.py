"""Run and SealedRun (§1.5, §1.7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ommx_experiment import Experiment

NAME = "example.com/team/run:v1"


def test_run_repr_and_id_lifecycle() -> None:
    exp = Experiment(NAME)
    run = exp.run()
    assert repr(run) == "Run(run_id=0)" and run.run_id == 0
    run.finish()
    assert repr(run) == "Run(finished=True)"
    with pytest.raises(RuntimeError, match="Run has already been finished"):
        run.run_id
    with pytest.raises(RuntimeError, match="Run has already been finished"):
        run.finish()
    with pytest.raises(RuntimeError, match="Run has already been finished"):
        run.log_parameter("a", 1)
    with pytest.raises(RuntimeError, match="Run has already been finished"):
        run.log_json("a", 1)
    with pytest.raises(RuntimeError, match="Run has already been finished"):
        run.__enter__()


def test_context_errors() -> None:
    exp = Experiment(NAME)
    run = exp.run()
    with pytest.raises(RuntimeError, match="Run context has not been entered"):
        run.__exit__(None, None, None)
    with run:
        with pytest.raises(RuntimeError, match="Run context has already been entered"):
            run.__enter__()
    assert run.__exit__(None, None, None) is False  # closed: silent


def test_finish_inside_with_records_failed() -> None:
    exp = Experiment(NAME)
    with pytest.raises(RuntimeError, match="Run context is active"):
        with exp.run() as run:
            run.log_parameter("kept", 1)
            run.finish()
    exp.commit()
    loaded = Experiment.load(NAME)
    assert loaded.runs[0].status == "failed"
    assert loaded.runs[0].lifecycle_reason.startswith("RuntimeError: Run context is active")  # OMMX's type name
    assert loaded.run_parameters_df()["kept"].tolist() == [1]


def test_failed_run_keeps_parameters_and_attachments() -> None:
    exp = Experiment(NAME)
    with pytest.raises(ValueError):
        with exp.run() as run:
            run.log_parameter("p", 2.5)
            run.log_json("state", {"ok": False})
            raise ValueError("failed")
    with exp.run():
        pass
    exp.commit()
    runs = Experiment.load(NAME).runs
    assert [(r.status, r.lifecycle_reason) for r in runs] == [("failed", "ValueError: failed"), ("finished", None)]
    assert runs[0].get_json("state") == {"ok": False}
    assert repr(runs[0]) == "SealedRun(run_id=0, status='failed', attachments=1, solves=0, samplings=0)"
    assert runs[0].solves == [] and runs[0].samplings == [] and runs[0].trace is None


def test_writes_after_parent_sealed_use_parent_error() -> None:
    exp = Experiment(NAME)
    run = exp.run()
    run.finish()
    late = Experiment(NAME + "x")
    other = late.run()
    late_run_id = other.run_id
    other.finish()
    late.commit()
    assert late_run_id == 0
    exp.commit()
    with pytest.raises(RuntimeError, match="Sealed Experiment is read-only"):
        exp.run()


def test_open_run_of_failed_experiment_is_not_included() -> None:
    with pytest.raises(ValueError):
        with Experiment(NAME) as exp:
            with exp.run():
                pass
            dangling = exp.run()
            dangling.log_parameter("x", 1)
            raise ValueError("stop")
    with pytest.raises(RuntimeError, match="Checkpointed Experiment is read-only"):
        dangling.log_parameter("y", 2)
    dangling.finish()  # closing late is harmless and records nothing
    assert [r.run_id for r in exp.runs] == [0]


def test_store_trace_requires_context_manager() -> None:
    exp = Experiment(NAME, store_trace=True)
    run = exp.run()
    with pytest.raises(RuntimeError, match="store_trace=True requires using Run"):
        run.log_parameter("a", 1)
    with pytest.raises(RuntimeError, match="store_trace=True requires using Run"):
        run.finish()
    with run:
        run.log_parameter("a", 1)
    exp.commit()


def test_parameter_subclasses_are_normalised() -> None:
    import enum

    import numpy as np

    class Level(enum.IntEnum):
        HIGH = 3

    exp = Experiment(NAME)
    with exp.run() as run:
        run.log_parameter("f", np.float64(0.5))
        run.log_parameter("i", Level.HIGH)
        run.log_parameter("n", np.int64(1))  # numpy scalars: their Python values (a superset of OMMX)
        run.log_parameter("g", np.float32(0.25))
        run.log_parameter("b", np.bool_(True))
        with pytest.raises(TypeError):
            run.log_parameter("a", np.array([1, 2]))
        with pytest.raises(TypeError):
            run.log_parameter(1, 1)  # type: ignore[arg-type]
    exp.commit()
    df = Experiment.load(NAME).run_parameters_df()
    assert df.loc[0, "f"] == 0.5 and df.loc[0, "i"] == 3
    assert (df.loc[0, "n"], df.loc[0, "g"], df.loc[0, "b"]) == (1, 0.25, True)


def _mixed_experiment(name: str) -> Experiment:
    """Params-only runs, runs with attachments (one named twice over runs), a failed and an interrupted run."""
    exp = Experiment(name)
    for i in range(4):
        with exp.run() as run:
            run.log_parameter("i", i)
            if i % 2:
                run.log_json("cfg", {"i": i})
                run.log_attachment("raw", "application/octet-stream", b"%d" % i)
    with pytest.raises(ValueError):
        with exp.run() as run:
            run.log_json("state", {"ok": False})
            raise ValueError("boom")
    with pytest.raises(KeyboardInterrupt):
        with exp.run() as run:
            raise KeyboardInterrupt
    exp.commit()
    return exp


def _eager_views(exp: Experiment) -> list[object]:
    """The views as built before they were lazy: every run mapped through content_from_artifact at once."""
    from ommx_experiment.format.content import content_from_artifact
    from ommx_experiment.lifecycle.run import SealedRun

    sealed = exp._sealed
    assert sealed is not None
    content = content_from_artifact(sealed.manifest, sealed.config)
    return [SealedRun(sealed.registry.blobs, run) for run in content.runs]


def _view_facts(run: object) -> tuple[object, ...]:
    names = run.attachment_names  # type: ignore[attr-defined]
    return (
        run.run_id, run.status, run.lifecycle_reason, names,  # type: ignore[attr-defined]
        [run.get_blob(n) for n in names], [run.attachment_media_type(n) for n in names],  # type: ignore[attr-defined]
        run.solves, run.samplings, run.trace, repr(run),  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize("opened", ["load", "import_archive"])
def test_sealed_run_views_are_lazy_and_agree_with_eager_decoding(opened: str, tmp_path: Path) -> None:
    _mixed_experiment(NAME)
    if opened == "load":
        exp = Experiment.load(NAME)
    else:
        Experiment.load(NAME).save(tmp_path / "mixed.ommx")
        exp = Experiment.import_archive(tmp_path / "mixed.ommx")  # validated again, opened from what it validated
    runs = exp.runs
    assert [r._resolved for r in runs] == [None] * 6  # nothing mapped yet: each view holds its config record
    assert [(r.run_id, r.status) for r in runs] == [(0, "finished"), (1, "finished"), (2, "finished"),
                                                    (3, "finished"), (4, "failed"), (5, "interrupted")]  # fmt: skip
    assert all(r._resolved is None for r in runs)  # run_id and status came from the record
    eager = _eager_views(exp)
    assert [_view_facts(r) for r in runs] == [_view_facts(r) for r in eager]
    assert runs[1].get_json("cfg") == {"i": 1} and runs[4].lifecycle_reason.startswith("ValueError: boom")


def test_lazy_run_view_of_a_damaged_artifact_names_the_run_and_the_digest() -> None:
    from ommx_experiment.engine.oci import Manifest
    from ommx_experiment.errors import DigestMismatchError, InvalidArtifactError, OmmxExperimentError
    from ommx_experiment.lifecycle.run import SealedRuns

    _mixed_experiment(NAME)
    exp = Experiment.load(NAME)
    sealed = exp._sealed
    assert sealed is not None
    # A manifest that lost the layers run 1 refers to (validation stops this on every stored path;
    # a view must still fail with our error, naming the run and the artifact, never an IndexError).
    short = Manifest(sealed.manifest.artifact_type, sealed.manifest.config, sealed.manifest.layers[:1])
    views = SealedRuns(sealed.registry.blobs, None, short, sealed.manifest_digest).views(sealed.run_records())
    assert views[0].attachment_names == []  # a params-only run refers to no layer
    with pytest.raises(InvalidArtifactError, match=rf"^Experiment artifact {sealed.manifest_digest}, run 1: .*refers to layer"):
        views[1].attachment_names
    # A run's blob damaged on disk after the load: the lazy view reads it verified, naming the digest.
    run = exp.runs[3]
    desc = run._content.attachments.descriptors["raw"]
    path = sealed.registry.blobs.path(desc.digest)
    path.chmod(0o644)
    path.write_bytes(b"X" * desc.size)
    with pytest.raises(DigestMismatchError, match=desc.digest) as info:
        exp.runs[3].get_blob("raw")
    assert isinstance(info.value, OmmxExperimentError)


def test_a_failed_close_under_a_failing_body_is_told_on_the_body_exception(registry_root, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The body's exception propagates (as OMMX), and the close that failed meanwhile (here: another
    process holds the index lock past the busy budget) is added to it as a note, not only logged;
    the run stays pending and the commit saves it."""
    import subprocess
    import sys

    from ommx_experiment.engine import index_db

    monkeypatch.setattr(index_db, "BUSY_TIMEOUT_MS", 1000)
    exp = Experiment("example.com/run/noted:v1")
    with exp.run() as run:
        run.log_parameter("i", 0)
    second = exp.run()  # its id is reserved before the lock is taken
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\nsys.stdin.read()\nc.execute('COMMIT')",
         str(registry_root / "index.sqlite3")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ZeroDivisionError) as info:
            with second as run:
                run.log_parameter("j", 1)  # a new column: this close writes its row at once (no group commit)
                1 / 0  # noqa: B018
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    notes = getattr(info.value, "__notes__", [])
    assert len(notes) == 1 and notes[0].startswith("Run 1 could not be recorded as failed: JournalWriteError"), notes
    assert "stays in this session" in notes[0]
    art = exp.commit()
    assert [(r.run_id, r.status) for r in Experiment.load(art.image_name).runs] == [(0, "finished"), (1, "failed")]
