"""Run metadata, solve summaries and provenance: ``runs_df``/``solves_df`` on one experiment, with real solvers."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from ommx_highs_adapter import OMMXHighsAdapter
from ommx_openjij_adapter import OMMXOpenJijSAAdapter

from ommx_experiment import Experiment
from ommx_experiment import media_types as mt
from ommx_experiment.cli.demo import knapsack
from ommx_experiment.format import run_meta as rm
from ommx_experiment.lifecycle.provenance import git_state

META = list(rm.RUN_META_COLUMNS)


def _study(name: str, *, fail: bool = True) -> Experiment:
    exp = Experiment(name)
    for capacity in (10, 30):
        with exp.run() as run:
            run.log_parameter("capacity", capacity)
            run.log_solve(OMMXHighsAdapter, knapsack(capacity))
            run.log_sample(OMMXOpenJijSAAdapter, knapsack(capacity), num_reads=3, seed=1)
    if fail:
        with pytest.raises(ValueError, match="bad"), exp.run() as run:
            run.log_parameter("capacity", 40)
            raise ValueError("bad")
    return exp


def test_runs_df_unsealed_equals_sealed_and_has_metadata() -> None:
    exp = _study("example.com/views/a:v1")
    before = exp.runs_df()
    exp.commit()
    after = exp.runs_df()
    pd.testing.assert_frame_equal(before, after)
    loaded = Experiment.load("example.com/views/a:v1").runs_df()
    pd.testing.assert_frame_equal(after, loaded)
    assert list(after.columns) == [*META, "capacity"]
    assert after.index.name == "run_id" and after.index.tolist() == [0, 1, 2]
    assert after["status"].tolist() == ["finished", "finished", "failed"]
    assert after["lifecycle_reason"].tolist()[:2] == [pd.NA, pd.NA]
    assert after.loc[2, "lifecycle_reason"] == "ValueError: bad"
    assert after["solves"].tolist() == [1, 1, 0] and after["samplings"].tolist() == [1, 1, 0]
    assert str(after["started_at"].dtype) == "datetime64[us, UTC]"
    assert (after["finished_at"] >= after["started_at"]).all()
    assert (after["duration_s"] >= 0).all()
    span = (after.loc[0, "finished_at"] - after.loc[0, "started_at"]).total_seconds()
    assert after.loc[0, "duration_s"] == pytest.approx(span)
    # run_parameters_df() is untouched: OMMX's frame, parameters only
    assert list(exp.run_parameters_df().columns) == ["capacity"]


def test_solves_df_real_highs_and_openjij() -> None:
    exp = _study("example.com/views/s:v1")
    exp.commit()
    df = exp.solves_df()
    assert list(df.columns) == [*rm.SOLVE_COLUMNS, "capacity"]
    assert df["kind"].tolist() == ["solve", "sampling", "solve", "sampling"]
    assert df["run_id"].tolist() == [0, 0, 1, 1]
    highs = df[df["kind"] == "solve"]
    assert highs["adapter"].str.endswith("OMMXHighsAdapter").all()
    assert highs["objective"].tolist() == [18.0, 65.0]  # knapsack optimum at capacity 10 and 30
    assert highs["feasible"].tolist() == [True, True]
    assert highs["sense"].tolist() == ["maximize", "maximize"]
    assert highs["optimality"].tolist() == ["optimal", "optimal"]
    samplings = df[df["kind"] == "sampling"]
    assert samplings["samples"].tolist() == [3, 3]
    assert (samplings["feasible_samples"] <= 3).all()
    for _, row in samplings.iterrows():  # objective: the best feasible sample, or none
        if row["feasible_samples"] == 0:
            assert row["objective"] is pd.NA and not row["feasible"]
        else:
            assert row["objective"] <= 65.0
    assert samplings["adapter_options"].tolist() == ['{"num_reads": 3, "seed": 1}'] * 2
    assert df["capacity"].tolist() == [10, 10, 30, 30]


def test_parameter_names_win_over_metadata_names() -> None:
    exp = Experiment("example.com/views/clash:v1")
    with exp.run() as run:
        run.log_parameter("status", "mine")
        run.log_parameter("run_id", 7)
        run.log_parameter("objective", 1.5)
        run.log_solve(OMMXHighsAdapter, knapsack(10))
    exp.commit()
    runs = exp.runs_df()
    assert runs.loc[0, "status"] == "mine" and runs.loc[0, "_status"] == "finished"
    assert runs.loc[0, "run_id"] == 7 and runs.index.tolist() == [0]
    solves = exp.solves_df()
    assert solves.loc[0, "objective"] == 1.5 and solves.loc[0, "_objective"] == 18.0
    assert solves.loc[0, "status"] == "mine" and solves.loc[0, "_status"] == "finished"
    assert solves.loc[0, "_run_id"] == 0 and solves.loc[0, "run_id"] == 7


def test_layers_carry_statistics_and_key_value_metadata() -> None:
    parent = _study("example.com/views/kv:v1", fail=False)
    parent.commit()
    child = parent.fork("example.com/views/kv:v2")
    with child.run() as run:
        run.log_parameter("capacity", 50)
    child.commit()
    layers = rm.trailing_layers(child.artifact.manifest)
    assert set(layers) == {mt.PARQUET_RUN_PARAMS_TITLE, mt.RUNS_TITLE, mt.SOLVES_TITLE, mt.PROVENANCE_TITLE}
    blobs = child.artifact.registry.blobs
    for title, table in ((mt.RUNS_TITLE, "runs"), (mt.SOLVES_TITLE, "solves"), (mt.PARQUET_RUN_PARAMS_TITLE, "run_parameters")):
        meta = pq.ParquetFile(blobs.path(layers[title].digest)).metadata
        kv = {k.decode(): v.decode() for k, v in meta.metadata.items()}
        assert kv == {
            "ommx_experiment.table": table,
            "ommx_experiment.schema_version": rm.SCHEMA_VERSION,
            "ommx_experiment.image_name": "example.com/views/kv:v2",
            "ommx_experiment.parent_digest": parent.artifact.manifest_digest,
        }
    meta = pq.ParquetFile(blobs.path(layers[mt.RUNS_TITLE].digest)).metadata
    names = meta.schema.names
    capacity = meta.row_group(0).column(names.index("capacity")).statistics
    assert (capacity.min, capacity.max, capacity.null_count) == (10, 50, 0)


def test_fork_carries_run_timing_of_the_parent() -> None:
    parent = _study("example.com/views/fork:v1", fail=False)
    parent.commit()
    child = parent.fork("example.com/views/fork:v2")
    with child.run() as run:
        run.log_parameter("capacity", 50)
    child.commit()
    p, c = parent.runs_df(), child.runs_df()
    pd.testing.assert_frame_equal(c.loc[[0, 1], META], p.loc[[0, 1], META])
    assert c.loc[2, "finished_at"] > p.loc[1, "finished_at"]


def test_fork_reads_the_timing_without_pyarrow_in_a_fresh_process(registry_root: Path) -> None:
    """Fork + run + commit in a fresh process imports neither pyarrow nor pandas (our own reader
    of our ``runs.parquet``), and the child's runs carry the parent's times exactly."""
    import json
    import subprocess
    import sys

    parent = Experiment("example.com/views/fork-fresh:v1")
    for capacity in (10, 20):
        with parent.run() as run:
            run.log_parameter("capacity", capacity)
            run.log_json("cfg", {"capacity": capacity})
    parent.commit()
    script = (
        "import json, sys\nfrom ommx_experiment import Experiment\n"
        "child = Experiment.load('example.com/views/fork-fresh:v1').fork('example.com/views/fork-fresh:v2')\n"
        "with child.run() as run:\n    run.log_parameter('capacity', 50)\n"
        "child.commit()\nprint(json.dumps(['pyarrow' in sys.modules, 'pandas' in sys.modules]))\n"
    )
    env = {**__import__("os").environ, "OMMX_LOCAL_REGISTRY_ROOT": str(registry_root)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == [False, False]
    p, c = parent.runs_df(), Experiment.load("example.com/views/fork-fresh:v2").runs_df()
    pd.testing.assert_frame_equal(c.loc[[0, 1], META], p.loc[[0, 1], META])
    assert p["started_at"].notna().all()


def test_provenance_recorded_by_default_and_switched_off() -> None:
    exp = _study("example.com/views/prov:v1", fail=False)
    exp.commit()
    record = exp.provenance
    assert record is not None
    assert record["created_at"].endswith("Z") and record["host"]
    assert record["packages"]["ommx"] and record["packages"]["ommx-experiment"]
    assert "highspy" in record["packages"] and "openjij" in record["packages"]
    assert record["adapters"] == sorted(record["adapters"]) and len(record["adapters"]) == 2
    off = Experiment("example.com/views/prov:v2")
    off.set_provenance(False)
    with off.run() as run:
        run.log_parameter("x", 1)
    off.commit()
    assert off.provenance is None
    assert mt.PROVENANCE_TITLE not in rm.trailing_layers(off.artifact.manifest)
    with pytest.raises(TypeError, match="bool"):
        off.set_provenance("no")  # type: ignore[arg-type]


def test_provenance_environment_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMMX_EXPERIMENT_PROVENANCE", "0")
    with Experiment("example.com/views/prov:env") as exp, exp.run() as run:
        run.log_parameter("x", 1)
    assert exp.provenance is None


def test_git_state_reads_head_without_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".git" / "refs" / "heads").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    sha = "0123456789abcdef0123456789abcdef01234567"
    (repo / ".git" / "packed-refs").write_text(f"# pack-refs\n{sha} refs/heads/main\n")
    (repo / "sub").mkdir()
    assert git_state(repo / "sub") == {"root": str(repo), "branch": "main", "commit": sha}
    (repo / ".git" / "refs" / "heads" / "main").write_text("f" * 40 + "\n")
    assert git_state(repo)["commit"] == "f" * 40
    assert git_state(tmp_path) is None or git_state(tmp_path)["root"] != str(tmp_path)
    # the repository's place is remembered, its HEAD is not: a checkout or a new commit is seen
    (repo / ".git" / "refs" / "heads" / "main").write_text("e" * 40 + "\n")
    assert git_state(repo / "sub")["commit"] == "e" * 40
    (repo / ".git" / "HEAD").write_text("d" * 40 + "\n")
    assert git_state(repo / "sub") == {"root": str(repo), "commit": "d" * 40}


def test_git_state_of_a_linked_worktree_reads_its_branch_from_the_common_dir(tmp_path: Path) -> None:
    main = tmp_path / "main"
    (main / ".git" / "refs" / "heads").mkdir(parents=True)
    (main / ".git" / "refs" / "heads" / "topic").write_text("a" * 40 + "\n")
    linked = main / ".git" / "worktrees" / "wt"
    linked.mkdir(parents=True)
    (linked / "HEAD").write_text("ref: refs/heads/topic\n")
    (linked / "commondir").write_text("../..\n")
    tree = tmp_path / "wt"
    tree.mkdir()
    (tree / ".git").write_text(f"gitdir: {linked}\n")
    assert git_state(tree) == {"root": str(tree), "branch": "topic", "commit": "a" * 40}
    (main / ".git" / "refs" / "heads" / "topic").write_text("b" * 40 + "\n")
    assert git_state(tree)["commit"] == "b" * 40


def test_unsealed_frames_without_runs_are_empty() -> None:
    exp = Experiment("example.com/views/empty:v1")
    runs, solves = exp.runs_df(), exp.solves_df()
    assert list(runs.columns) == META and len(runs) == 0
    assert list(solves.columns) == list(rm.SOLVE_COLUMNS) and len(solves) == 0
    exp.commit()
    assert len(exp.runs_df()) == 0


def test_nan_objective_and_float_statistics_skip_nan() -> None:
    from ommx_experiment.format.parquet import Column, write_parquet

    data = write_parquet([Column("x", "float64", [math.nan, 2.0, -0.0, None])], 4, {"k": "v"})
    import io

    stats = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(0).statistics
    assert (stats.min, stats.max, stats.null_count) == (-0.0, 2.0, 1)
    assert math.copysign(1.0, stats.min) == -1.0
    only_nan = write_parquet([Column("x", "float64", [math.nan])], 1)
    assert not pq.ParquetFile(io.BytesIO(only_nan)).metadata.row_group(0).column(0).statistics.has_min_max


def test_the_commit_reads_its_provenance_before_handing_any_blob_to_a_batch_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading HEAD files after the first batched blob let a busy helper thread hold the GIL the commit waited for."""
    from ommx_experiment import AutosavePolicy
    from ommx_experiment.engine.blobstore import BlobStore
    from ommx_experiment.lifecycle import provenance

    exp = Experiment("example.com/views/provenance-order:v1")
    exp.set_autosave_policy(AutosavePolicy.disabled())
    with exp.run() as run:
        run.log_parameter("x", 1)
    events: list[str] = []
    real_collect, real_put = provenance.collect, BlobStore.put_bytes

    def collect(*args, **kwargs):  # type: ignore[no-untyped-def]
        events.append("provenance")
        return real_collect(*args, **kwargs)

    def put_bytes(self, data, **kwargs):  # type: ignore[no-untyped-def]
        events.append("blob")
        return real_put(self, data, **kwargs)

    monkeypatch.setattr(provenance, "collect", collect)
    monkeypatch.setattr(BlobStore, "put_bytes", put_bytes)
    exp.commit()
    assert events[0] == "provenance" and events.count("provenance") == 1 and "blob" in events
    assert exp.provenance is not None and "created_at" in exp.provenance
