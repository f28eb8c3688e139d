"""Our analysis layers beside OMMX 3.0.0b7: OMMX ignores them; our views read what OMMX wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO_ROOT, unavailable
from helpers.ours_on_ommx3 import OursOnOmmx3
from ommx_highs_adapter import OMMXHighsAdapter

from ommx_experiment import Experiment, runs_df, solves_df, sql
from ommx_experiment.cli.demo import knapsack
from ommx_experiment.format import run_meta as rm

pytestmark = pytest.mark.ommx3

OMMX_WRITES = """
    from ommx.experiment import Experiment
    from ommx import DecisionVariable, Instance
    from ommx_highs_adapter import OMMXHighsAdapter
    from ommx_openjij_adapter import OMMXOpenJijSAAdapter

    def knapsack(capacity):
        w, v = (11, 7, 5, 13, 9, 4, 6, 8), (23, 14, 9, 30, 17, 6, 12, 15)
        x = [DecisionVariable.binary(i) for i in range(8)]
        return Instance.from_components(
            decision_variables=x, objective=sum(a * b for a, b in zip(v, x)),
            constraints={0: sum(a * b for a, b in zip(w, x)) <= capacity}, sense=Instance.MAXIMIZE)

    def qubo():  # the sampler takes unconstrained binaries
        x = [DecisionVariable.binary(i) for i in range(3)]
        return Instance.from_components(decision_variables=x, objective=x[0] * x[1] - x[0] + 2 * x[2] - x[1],
                                        constraints={}, sense=Instance.MINIMIZE)

    with Experiment("example.com/ommx3/study:v1") as e:
        e.set_annotation("org.example.team", "ops")
        for c in (10, 30):
            with e.run() as r:
                r.log_parameter("capacity", c)
                r.log_solve(OMMXHighsAdapter, knapsack(c))
                r.log_sample(OMMXOpenJijSAAdapter, qubo(), num_reads=2, seed=0)
        try:
            with e.run() as r:
                r.log_parameter("capacity", 99)
                raise ValueError("ommx side failure")
        except ValueError:
            pass
"""


def test_views_read_an_experiment_ommx3_wrote(ommx3, registry_root: Path) -> None:
    ommx3.run(OMMX_WRITES, root=registry_root)
    exp = Experiment.load("example.com/ommx3/study:v1")
    runs = exp.runs_df()
    assert runs["status"].tolist() == ["finished", "finished", "failed"]
    assert runs.loc[2, "lifecycle_reason"] == "ValueError: ommx side failure"
    assert runs["solves"].tolist() == [1, 1, 0] and runs["samplings"].tolist() == [1, 1, 0]
    assert runs["started_at"].isna().all() and runs["duration_s"].isna().all()  # OMMX records no timing
    assert runs["capacity"].tolist() == [10, 30, 99]
    solves = exp.solves_df()
    assert solves["kind"].tolist() == ["solve", "sampling", "solve", "sampling"]
    assert solves["adapter"].str.startswith("ommx_").all() and (solves["status"] == "finished").all()
    # derived once, cached under .oxe-derived with the manifest digest in its metadata
    derived = sorted((registry_root / ".oxe-derived").glob("*.runs.parquet"))
    assert len(derived) == 1
    import pyarrow.parquet as pq

    kv = pq.ParquetFile(derived[0]).metadata.metadata
    assert kv[b"ommx_experiment.manifest_digest"].decode() == exp.artifact.manifest_digest
    # across the registry: filtered by annotation, and in DuckDB
    assert runs_df(annotations={"org.example.team": "ops"})["image_name"].unique().tolist() == ["example.com/ommx3/study:v1"]
    assert runs_df(annotations={"org.example.team": "other"}).empty
    assert len(solves_df("example.com/ommx3/")) == 4
    got = sql("SELECT status, count(*) AS n FROM runs GROUP BY status ORDER BY status")
    assert got.to_dict("list") == {"status": ["failed", "finished"], "n": [1, 2]}


@pytest.fixture(scope="module")
def ours3(ommx3, tmp_path_factory: pytest.TempPathFactory) -> OursOnOmmx3:
    driver = OursOnOmmx3(ommx3.python, REPO_ROOT / "src")
    problem = driver.problem(tmp_path_factory.mktemp("probe") / "registry")
    if problem is not None:
        unavailable(problem)
    return driver


def test_objectives_of_ommx3_results_on_an_ommx3_runtime(ommx3, ours3: OursOnOmmx3, registry_root: Path) -> None:
    # v2 payloads need ommx 3 to decode: our views on the side venv read OMMX's objectives
    ommx3.run(OMMX_WRITES, root=registry_root)
    got = ours3.run_json(
        """
        import json
        from ommx_experiment import Experiment
        df = Experiment.load("example.com/ommx3/study:v1").solves_df()
        print(json.dumps([[r.kind, None if r.objective is None or r.objective != r.objective else r.objective,
                           r.feasible if r.feasible in (True, False) else None, r.sense, r.samples]
                          for r in df.astype(object).where(df.notna(), None).itertuples()]))
        """,
        root=registry_root,
    )
    assert got[0] == ["solve", 18.0, True, "maximize", None]
    assert got[2] == ["solve", 65.0, True, "maximize", None]
    assert got[1] == ["sampling", -1.0, True, "minimize", 2]  # min of x0*x1 - x0 + 2*x2 - x1 is -1


OMMX_READS_OURS = """
    import json
    from ommx.experiment import Experiment, list_experiments
    e = Experiment.load("example.com/ours/study:v1")
    df = e.run_parameters_df()
    child = e.fork("example.com/ours/study:ommx-fork")
    with child:
        with child.run() as r:
            r.log_parameter("capacity", 77)
    names = [r.image_name for r in list_experiments()]
    print(json.dumps({"df": df.reset_index().astype(object).where(df.reset_index().notna(), None).values.tolist(),
                      "columns": list(df.columns), "dtypes": [str(t) for t in df.dtypes],
                      "index": str(df.index.dtype), "names": names, "layers": len(e.artifact.layers),
                      "child_runs": [r.run_id for r in Experiment.load("example.com/ours/study:ommx-fork").runs]}))
"""


def test_ommx3_loads_lists_and_forks_ours_and_run_parameters_df_is_unchanged(ommx3, registry_root: Path) -> None:
    with Experiment("example.com/ours/study:v1") as exp:
        for capacity in (10, 30):
            with exp.run() as run:
                run.log_parameter("capacity", capacity)
                run.log_parameter("note", f"c{capacity}")
                run.log_solve(OMMXHighsAdapter, knapsack(capacity))
    assert len(rm.trailing_layers(exp.artifact.manifest)) == 4
    theirs = ommx3.run_json(OMMX_READS_OURS, root=registry_root)
    ours = exp.run_parameters_df()
    assert theirs["columns"] == list(ours.columns) == ["capacity", "note"]
    assert theirs["dtypes"] == [str(t) for t in ours.dtypes]
    assert theirs["df"] == [[0, 10, "c10"], [1, 30, "c30"]]
    assert theirs["layers"] == len(exp.artifact.layers)
    assert "example.com/ours/study:v1" in theirs["names"]
    assert theirs["child_runs"] == [0, 1, 2]
    # OMMX's fork drops our layers: the child reads with NULL timing for every run, ours included
    child = Experiment.load("example.com/ours/study:ommx-fork")
    assert rm.trailing_layers(child.artifact.manifest) == {}
    assert child.runs_df()["started_at"].isna().all()
    assert json.loads(json.dumps(child.runs_df()["capacity"].tolist())) == [10, 30, 77]
    pd.testing.assert_frame_equal(child.run_parameters_df().loc[[0, 1]], ours)
