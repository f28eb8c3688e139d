"""The CPU-bound sweep task of ``bench_parallel_sweep.py`` (importable by engine workers: bench/ is on their path)."""

from __future__ import annotations

import random
from typing import Any


def transport(seed: int, size: int) -> Any:
    """A ``size`` x ``size`` transportation LP (HiGHS: about 50 ms at size 20 on this machine)."""
    from ommx.v1 import DecisionVariable, Instance

    rng = random.Random(seed)
    x = {(i, j): DecisionVariable.continuous(i * size + j, lower=0, upper=100) for i in range(size) for j in range(size)}
    supply = [rng.randint(50, 100) for _ in range(size)]
    demand = [rng.randint(20, 60) for _ in range(size)]
    constraints = [(sum(x[i, j] for j in range(size)) <= supply[i]).set_id(i) for i in range(size)]
    constraints += [(sum(x[i, j] for i in range(size)) >= demand[j]).set_id(size + j) for j in range(size)]
    objective = sum(rng.randint(1, 20) * x[i, j] for i in range(size) for j in range(size))
    return Instance.from_components(
        decision_variables=list(x.values()), objective=objective, constraints=constraints, sense=Instance.MINIMIZE
    )


def solve_task(run: Any, params: dict[str, Any]) -> None:
    """One logged HiGHS solve of ``transport(seed, size)``; the objective as a parameter."""
    from ommx_highs_adapter import OMMXHighsAdapter

    solution = run.log_solve(OMMXHighsAdapter, transport(int(params["seed"]), int(params["size"])))
    run.log_parameter("objective", float(solution.objective))
