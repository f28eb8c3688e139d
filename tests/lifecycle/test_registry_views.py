"""Tables across a registry, DuckDB views, diff, and the HTML report's structure."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from ommx_highs_adapter import OMMXHighsAdapter

from ommx_experiment import Experiment, diff, duckdb_connection, report, runs_df, solves_df, sql
from ommx_experiment.cli.demo import knapsack
from ommx_experiment.format import run_meta as rm

BASE = "example.com/views/base:v1"
FORK = "example.com/views/base:fork"
OTHER = "example.com/other/x:v1"


@pytest.fixture
def study(registry_root: Path) -> dict[str, Experiment]:
    with Experiment(BASE) as base:
        base.set_annotation("org.example.team", "ops")
        for capacity in (10, 20, 30):
            with base.run() as run:
                run.log_parameter("capacity", capacity)
                run.log_parameter("solver", "highs")
                run.log_solve(OMMXHighsAdapter, knapsack(capacity))
    fork = base.fork(FORK)
    with fork:
        with fork.run() as run:
            run.log_parameter("capacity", 40)
            run.log_parameter("solver", "highs")
            run.log_solve(OMMXHighsAdapter, knapsack(40))
    with Experiment(OTHER) as other, other.run() as run:
        run.log_parameter("seed", 1.5)
    return {"base": base, "fork": fork, "other": other}


def test_registry_runs_df_prefix_and_annotations(study: dict[str, Experiment]) -> None:
    df = runs_df("example.com/views/")
    assert list(df.columns[:4]) == ["image_name", "manifest_digest", "run_id", "status"]
    assert df.groupby("image_name")["run_id"].apply(list).to_dict() == {BASE: [0, 1, 2], FORK: [0, 1, 2, 3]}
    assert set(df["manifest_digest"]) == {study["base"].artifact.manifest_digest, study["fork"].artifact.manifest_digest}
    everything = runs_df()
    assert set(everything["image_name"]) == {BASE, FORK, OTHER}
    assert everything.loc[everything["image_name"] == OTHER, "seed"].tolist() == [1.5]
    only_base = runs_df(annotations={"org.example.team": "ops"})
    assert set(only_base["image_name"]) == {BASE}  # annotations are not inherited by forks
    with pytest.raises(ValueError, match="annotations must map str to str"):
        runs_df(annotations={"k": 1})  # type: ignore[dict-item]


def test_registry_solves_df_joins_parameters(study: dict[str, Experiment]) -> None:
    df = solves_df("example.com/views/base:fork")
    assert df["image_name"].unique().tolist() == [FORK]
    assert df[["run_id", "capacity", "objective"]].values.tolist() == [[0, 10, 18.0], [1, 20, 44.0], [2, 30, 65.0], [3, 40, 84.0]]
    assert solves_df("example.com/none/").empty


def test_sql_views_over_the_whole_registry(study: dict[str, Experiment]) -> None:
    best = sql(
        "SELECT r.image_name, max(s.objective) AS best FROM solves s JOIN runs r USING (image_name, run_id) "
        "GROUP BY 1 ORDER BY 1"
    )
    assert best.values.tolist() == [[FORK, 84.0], [BASE, 65.0]]
    exps = sql("SELECT image_name, parent_name, runs, solves FROM experiments ORDER BY image_name")
    assert exps.astype(object).where(exps.notna(), None).values.tolist() == [
        [OTHER, None, 1, 0], [FORK, BASE, 4, 4], [BASE, None, 3, 3],
    ]
    assert sql("SELECT count(*) AS n FROM runs WHERE duration_s >= 0").loc[0, "n"] == 8
    con = duckdb_connection("example.com/views/")
    try:
        assert con.sql("SELECT count(DISTINCT image_name) FROM runs").fetchall() == [(2,)]
    finally:
        con.close()


def test_sql_on_an_empty_registry_has_the_views(registry_root: Path) -> None:
    assert sql("SELECT * FROM runs").empty
    assert sql("SELECT * FROM solves").empty
    assert sql("SELECT * FROM experiments").empty


def test_diff_fork_added_runs_and_changed_values(study: dict[str, Experiment]) -> None:
    result = diff(BASE, FORK)
    assert result.relation == "b forks a"
    assert (result.added, result.removed, result.changed, result.unchanged) == ([3], [], [], 3)
    assert "+ run 3" in str(result)
    changed = Experiment(f"{BASE}-changed")
    for capacity in (10, 25):
        with changed.run() as run:
            run.log_parameter("capacity", capacity)
            run.log_parameter("solver", "highs")
            run.log_solve(OMMXHighsAdapter, knapsack(capacity))
    changed.commit()
    result = diff(BASE, changed)
    assert result.relation is None
    assert result.removed == [2] and result.added == [] and result.unchanged == 1
    assert [c.run_id for c in result.changed] == [1]
    assert result.changed[0].changes == {"capacity": (20, 25), "objective": ((44.0,), (53.0,))}
    assert "~ run 1: capacity: 20 -> 25, objective: [44] -> [53]" in str(result)
    assert diff(BASE, BASE).identical


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.run_rows = 0
        self.figures: list[tuple[str, str]] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.stack.append(a.get("id") or "")
        if tag == "tr" and self.stack and self.stack[-1] == "runs" and "tbody" in self._open:
            self.run_rows += 1
        if tag == "figure":
            self.figures.append((a.get("class") or "", a.get("data-parameter") or ""))
        for key in ("src", "href"):
            if a.get(key):
                self.external.append(str(a[key]))
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.stack:
            self.stack.pop()
        if self._open and tag in self._open:
            while self._open and self._open.pop() != tag:
                pass

    _open: list[str]

    def feed_all(self, text: str) -> _Dom:
        self._open = []
        self.feed(text)
        return self


def test_experiment_report_structure(study: dict[str, Experiment], tmp_path: Path) -> None:
    path = study["fork"].report(tmp_path / "out" / "fork.html")
    html = path.read_text()
    dom = _Dom().feed_all(html)
    assert dom.run_rows == 4
    assert ("plot objective-plot", "capacity") in dom.figures
    assert [f for f in dom.figures if "objective-plot" in f[0]] == [("plot objective-plot", "capacity")]
    assert ("plot status-plot", "solver") in dom.figures
    assert dom.external == []  # self-contained: nothing fetched
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    assert BASE in html and "forked from" in html and "Provenance" in html


def test_cross_experiment_report(study: dict[str, Experiment], tmp_path: Path) -> None:
    html = report("example.com/views/", tmp_path / "all.html").read_text()
    dom = _Dom().feed_all(html)
    assert dom.run_rows == 7
    assert 'id="experiments"' in html and FORK in html and BASE in html


def test_repr_html_cards(study: dict[str, Experiment]) -> None:
    card = study["fork"]._repr_html_()
    assert FORK in card and "4 finished" in card and f"{BASE}" in card and "capacity, solver" in card
    run_card = study["fork"].runs[3]._repr_html_()
    assert "Run 3" in run_card and "solve 0" in run_card and "OMMXHighsAdapter" in run_card
    unsealed = Experiment("example.com/views/open:v1")
    assert "unsealed" in unsealed._repr_html_()


def test_trace_view_repr_html(registry_root: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    with Experiment("example.com/views/trace:v1", store_trace=True) as exp, exp.run() as run:
        run.log_parameter("x", 1)
    trace = exp.runs[0].trace
    html = trace._repr_html_()
    # OMMX's own TraceResult rendering (tests/lifecycle/test_parity_ommx3.py compares it byte for byte)
    assert html.startswith('<div class="ommx-trace"><pre>') and "Run" in html and "Download Chrome Trace JSON" in html


def test_runs_df_frames_keep_dtypes_across_experiments(study: dict[str, Experiment]) -> None:
    df = runs_df("example.com/views/")
    assert str(df["started_at"].dtype) == "datetime64[us, UTC]"
    assert str(df["capacity"].dtype) == "Int64" and str(df["solves"].dtype) == "Int64"
    pd.testing.assert_series_equal(
        df.loc[df["image_name"] == BASE, "capacity"].reset_index(drop=True),
        study["base"].runs_df()["capacity"].reset_index(drop=True),
    )
    assert rm.RUN_META_COLUMNS[0] == "status"
