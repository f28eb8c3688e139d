"""``ommx-experiment`` over a root that OMMX 3.0.0b7 also wrote to, and against a real OCI registry."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers.cli_support import SWEEP, populate, run_cli

from ommx_experiment import Experiment, cli
from ommx_experiment.engine.registry import LocalRegistry

OMMX_WRITES = """
    from ommx.experiment import Experiment
    from ommx import DecisionVariable, Instance
    from ommx_openjij_adapter import OMMXOpenJijSAAdapter

    x = DecisionVariable.binary(0)
    instance = Instance.from_components(decision_variables=[x], objective=x, constraints={}, sense=Instance.MAXIMIZE)
    with Experiment("example.com/ommx3/solved:v1") as e:
        e.set_annotation("com.example.writer", "ommx3")
        for seed in range(2):
            with e.run() as r:
                r.log_parameter("seed", seed)
                r.log_solve(OMMXOpenJijSAAdapter, instance, num_reads=1, seed=1)
                r.log_sample(OMMXOpenJijSAAdapter, instance, num_reads=2, seed=2)
    try:
        with Experiment("example.com/ommx3/failed:v1") as f:
            with f.run() as r:
                r.log_parameter("seed", 9)
            raise ValueError("boom")
    except ValueError:
        pass
"""


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code = cli.main([*argv, "--json"] if argv[0] != "params" else [*argv, "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_root_shared_with_ommx3(ommx3: Any, registry_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    populate(registry_root)
    ommx3.run(OMMX_WRITES, root=registry_root)

    listed = {row["image_name"]: row for row in _json(capsys, "list")}
    assert {SWEEP, "example.com/ommx3/solved:v1"} <= set(listed)
    theirs = listed["example.com/ommx3/solved:v1"]
    assert (theirs["status"], theirs["runs"], theirs["solves"], theirs["samplings"]) == ("finished", 2, 2, 2)
    assert theirs["annotations"] == {"com.example.writer": "ommx3"}

    shown = _json(capsys, "show", "example.com/ommx3/solved:v1")
    assert [r["parameters"] for r in shown["runs"]] == [{"seed": 0}, {"seed": 1}]
    adapter = "ommx_openjij_adapter.OMMXOpenJijSAAdapter"
    assert [[s["adapter"] for s in r["solves"] + r["samplings"]] for r in shown["runs"]] == [[adapter] * 2] * 2
    assert _json(capsys, "params", "example.com/ommx3/solved:v1") == [{"run_id": 0, "seed": 0}, {"run_id": 1, "seed": 1}]
    parquet = tmp_path / "theirs.parquet"
    assert cli.main(["params", "example.com/ommx3/solved:v1", "--format", "parquet", "--output", str(parquet)]) == 0
    assert list(pd.read_parquet(parquet)["seed"]) == [0, 1]

    checkpoints = {(c["requested_image_name"], c["status"]) for c in _json(capsys, "checkpoints")}
    assert ("example.com/ommx3/failed:v1", "failed") in checkpoints
    report = _json(capsys, "gc")
    assert report["missing"] == [] and report["invalid"] == []

    # ...and OMMX 3 still reads the root after our CLI listed (and back-filled) it.
    seen = ommx3.run_json(
        "import json\nfrom ommx.experiment import list_experiments\n"
        "print(json.dumps(sorted(r.image_name for r in list_experiments())))",
        root=registry_root,
    )
    assert sorted(listed) == seen


def test_push_then_pull_into_another_root(oci_registry: Any, registry_root: Path, tmp_path: Path) -> None:
    name = f"{oci_registry.host}/cli-tests/sweep-{uuid.uuid4().hex[:10]}:v1"
    with Experiment(name) as exp:
        with exp.run() as run:
            run.log_parameter("seed", 42)
    digest = exp.artifact.manifest_digest

    pushed = run_cli("push", name, root=registry_root)
    assert pushed.returncode == 0, pushed.stderr
    assert f"Pushed {name}" in pushed.stdout and digest in pushed.stdout

    other = tmp_path / "other-root"
    pulled = run_cli("pull", name, "--root", str(other))
    assert pulled.returncode == 0, pulled.stderr
    assert "Pulled" in pulled.stdout
    assert LocalRegistry.at(other).resolve(name) == digest
    again = run_cli("pull", name, "--root", str(other))
    assert again.returncode == 0 and "Present" in again.stdout
    params = run_cli("params", name, "--json", "--root", str(other))
    assert json.loads(params.stdout) == [{"run_id": 0, "seed": 42}]


def test_push_and_pull_errors_are_one_line(oci_registry: Any, registry_root: Path) -> None:
    missing = f"{oci_registry.host}/cli-tests/absent-{uuid.uuid4().hex[:10]}:v1"
    pull = run_cli("pull", missing, root=registry_root)
    assert pull.returncode == 1 and len(pull.stderr.splitlines()) == 1 and pull.stderr.startswith("error: ")
    push = run_cli("push", missing, root=registry_root)
    assert push.returncode == 1 and "is not in the Local Registry" in push.stderr
    local = run_cli("push", "example.com/x/y:v1", root=registry_root)
    assert local.returncode == 1
