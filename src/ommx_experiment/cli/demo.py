"""``make demo``: the product's main job, end to end, on the default Local Registry.

A capacity sweep of a small 0/1 knapsack, solved with HiGHS through OMMX's
adapter: one Run per capacity (parameters logged, the Solve recorded), the
whole study committed as one OCI artifact, then everything a user needs to look
at it with other tools.

Re-runnable: every invocation commits under a fresh tag (a timestamp plus a
random suffix), so an existing name is never a conflict, even twice in a second.

Then the analysis: a fork that adds larger capacities, ``runs_df``, ``diff``, a
DuckDB query over the whole registry and the HTML report
(``ommx-experiment-demo-report.html`` in the current directory).
"""

from __future__ import annotations

import secrets
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

WEIGHTS = (11, 7, 5, 13, 9, 4, 6, 8)
VALUES = (23, 14, 9, 30, 17, 6, 12, 15)
CAPACITIES = (10, 15, 20, 25, 30, 35, 40)
FORK_CAPACITIES = (45, 50, 60)
REPORT = "ommx-experiment-demo-report.html"
REPOSITORY = "example.com/ommx-experiment/knapsack-sweep"


def knapsack(capacity: int) -> Any:
    """An ``ommx.v1.Instance``: maximise value subject to total weight ≤ capacity."""
    from ..format.payload import ommx_type  # ommx 2.x: ommx.v1.*, ommx 3: ommx.*

    DecisionVariable, Instance = ommx_type("DecisionVariable"), ommx_type("Instance")
    x = [DecisionVariable.binary(i, name="x", subscripts=[i]) for i in range(len(WEIGHTS))]
    objective = sum(v * xi for v, xi in zip(VALUES, x, strict=True))
    weight = sum(w * xi for w, xi in zip(WEIGHTS, x, strict=True))
    return Instance.from_components(
        decision_variables=x,
        objective=objective,
        constraints=[(weight <= capacity).set_id(0)],
        sense=Instance.MAXIMIZE,
    )


def solver_adapter() -> Any:
    """``OMMXHighsAdapter``; without it, an ImportError naming the extra that installs it."""
    try:
        from ommx_highs_adapter import OMMXHighsAdapter
    except ModuleNotFoundError as exc:
        if exc.name != "ommx_highs_adapter":
            raise
        raise ImportError(
            "the demo solves with HiGHS: ommx-highs-adapter is not installed; "
            "install the solvers with: pip install 'ommx-experiment[solvers]'"
        ) from None
    return OMMXHighsAdapter


def unique_tag() -> str:
    """``YYYYmmddTHHMMSS-<6 hex>``: never the same twice, even within one second."""
    return f"{datetime.now().strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def main(argv: list[str] | None = None) -> int:
    OMMXHighsAdapter = solver_adapter()
    from rich.console import Console
    from rich.table import Table

    from .. import Experiment, get_local_registry_root

    console = Console()
    tag = unique_tag()
    name = f"{REPOSITORY}:{tag}"
    console.print(
        f"[bold]ommx-experiment demo[/]: knapsack capacity sweep → [cyan]{name}[/] "
        "(a fresh timestamp tag each time, so re-running never conflicts)",
        soft_wrap=True,
    )

    rows = []
    with Experiment(name) as experiment:
        experiment.set_annotation("org.example.study", "knapsack capacity sweep")
        experiment.log_json("items", {"weights": list(WEIGHTS), "values": list(VALUES)})
        for capacity in CAPACITIES:
            with experiment.run() as run:
                run.log_parameter("capacity", capacity)
                run.log_parameter("solver", "highs")
                solution = run.log_solve(OMMXHighsAdapter, knapsack(capacity))
                chosen = [i for i, v in sorted(solution.state.entries.items()) if round(v) == 1]
                run.log_parameter("items_chosen", len(chosen))
                rows.append((run.run_id, capacity, solution.objective, chosen))
    artifact = experiment.artifact

    table = Table(title=f"{len(experiment.runs)} runs committed")
    for column in ("run_id", "capacity", "solver", "solve status", "objective", "items"):
        table.add_column(column, justify="right" if column in ("run_id", "capacity", "objective") else "left")
    by_run = {run.run_id: run for run in experiment.runs}
    for run_id, capacity, objective, chosen in rows:
        solve = by_run[run_id].solves[0]
        table.add_row(str(run_id), str(capacity), "highs", solve.status, f"{objective:g}", str(chosen))
    console.print(table)

    root = get_local_registry_root()
    parquet = experiment.run_parameters_parquet
    python = shlex.quote(sys.executable)
    for label, value in (
        ("image name", artifact.image_name),
        ("manifest digest", artifact.manifest_digest),
        ("registry root", root),
        ("parquet file", parquet),
    ):
        console.print(f"[bold]{label:<16}[/]{value}", soft_wrap=True, highlight=False)
    console.print()
    console.print("[bold]Look at it with other tools:[/]")
    console.print(f"  skopeo inspect --raw oci:{root}:{artifact.image_name}", soft_wrap=True, highlight=False)
    for code in (
        f'import duckdb; print(duckdb.read_parquet("{parquet}"))',
        f'import pandas as pd; print(pd.read_parquet("{parquet}"))',
    ):
        console.print(f"  {python} -c {shlex.quote(code)}", soft_wrap=True, markup=False, highlight=False)
    cli = Path(sys.executable).with_name("ommx-experiment")
    console.print(f"  {shlex.quote(str(cli))} show {artifact.image_name}", soft_wrap=True, highlight=False)
    analyse(console, experiment, OMMXHighsAdapter, cli)
    return 0


def analyse(console: Any, experiment: Any, adapter: Any, cli: Path) -> None:
    """The fork, runs_df, diff, sql and the report: what a researcher looks at next."""
    from .. import diff

    fork = experiment.fork(f"{REPOSITORY}:{unique_tag()}-larger")
    with fork:
        for capacity in FORK_CAPACITIES:
            with fork.run() as run:
                run.log_parameter("capacity", capacity)
                run.log_parameter("solver", "highs")
                solution = run.log_solve(adapter, knapsack(capacity))
                run.log_parameter("items_chosen", sum(1 for v in solution.state.entries.values() if round(v) == 1))
    console.print()
    console.print(f"[bold]Forked[/] with {len(FORK_CAPACITIES)} larger capacities → [cyan]{fork.image_name}[/]", soft_wrap=True)
    columns = ["status", "duration_s", "solves", "capacity", "items_chosen"]
    console.print(fork.runs_df()[columns].to_string(), markup=False, highlight=False)
    console.print()
    console.print(str(diff(experiment, fork)), markup=False, highlight=False, soft_wrap=True)
    report = fork.report(Path.cwd() / REPORT)
    console.print()
    console.print(f"[bold]{'HTML report':<16}[/]{report}", soft_wrap=True, highlight=False)
    query = "SELECT image_name, count(*) AS runs, max(objective) AS best FROM solves GROUP BY ALL ORDER BY 1"
    for line in (
        f"show {fork.image_name}",
        f"diff {experiment.image_name} {fork.image_name}",
        f"sql {shlex.quote(query)}",
        f"report {REPOSITORY}: --prefix -o study.html",
    ):
        console.print(f"  {shlex.quote(str(cli))} {line}", soft_wrap=True, markup=False, highlight=False)


if __name__ == "__main__":
    raise SystemExit(main())
