"""``make demo``: the product's main job, end to end, on the default Local Registry.

A capacity sweep of a small 0/1 knapsack, solved with HiGHS through OMMX's
adapter: one Run per capacity (parameters logged, the Solve recorded), the
whole study committed as one OCI artifact, then everything a user needs to look
at it with other tools.

Re-runnable: every invocation commits under a fresh tag (a timestamp), so an
existing name is never a conflict.
"""

from __future__ import annotations

import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

WEIGHTS = (11, 7, 5, 13, 9, 4, 6, 8)
VALUES = (23, 14, 9, 30, 17, 6, 12, 15)
CAPACITIES = (10, 15, 20, 25, 30, 35, 40)
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


def main(argv: list[str] | None = None) -> int:
    from ommx_highs_adapter import OMMXHighsAdapter
    from rich.console import Console
    from rich.table import Table

    from .. import Experiment, get_local_registry_root

    console = Console()
    tag = datetime.now().strftime("%Y%m%dT%H%M%S")
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
