"""Builders shared by the CLI tests (no tests here).

The registry is prepared through the public API (``Experiment``, ``ArtifactDraft``);
one experiment with solves is assembled with the codec helpers of the catalog tests
because the solve-logging module is not part of the tree yet.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ommx_experiment import Experiment
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.lifecycle.artifact import ArtifactDraft

REPO = Path(__file__).resolve().parents[2]
SWEEP = "example.com/team/sweep:v1"
OTHER = "example.com/team/other:v2"
SOLVED = "example.com/team/solved:v1"
FAILED = "example.com/team/failed:v1"
GENERIC = "example.com/team/generic:v1"


@dataclass(frozen=True, slots=True)
class Populated:
    root: Path
    sweep_digest: str
    anonymous_experiment: str
    anonymous_artifact: str


def populate(root: Path) -> Populated:
    """Commit a small but varied registry at the default root (``$OMMX_LOCAL_REGISTRY_ROOT``)."""
    with Experiment(SWEEP) as exp:
        exp.set_annotation("org.example.owner", "alice")
        exp.log_json("config", {"items": 3})
        for seed in range(3):
            with exp.run() as run:
                run.log_parameter("seed", seed)
                run.log_parameter("alpha", 0.5 * seed)
                run.log_parameter("solver", "highs")
    with Experiment(OTHER) as other:
        with other.run() as run:
            run.log_parameter("seed", 7)
    with pytest.raises(ValueError, match="boom"), Experiment(FAILED) as failed:
        with failed.run() as run:
            run.log_parameter("seed", 1)
        raise ValueError("boom")
    with Experiment() as anonymous:
        with anonymous.run():
            pass
    draft = ArtifactDraft.new(GENERIC)
    draft.add_json({"a": 1})
    draft.commit()
    anon_artifact = ArtifactDraft.new_anonymous()
    anon_artifact.add_json({"b": 2})
    anon_artifact.commit()

    from helpers.catalog_support import commit_experiment

    registry = LocalRegistry.at(root)
    commit_experiment(registry, SOLVED, runs=2, solves=2)
    return Populated(root, Experiment.load(SWEEP).artifact.manifest_digest, anonymous.image_name, anon_artifact.image_name)


def ommx_experiment_exe() -> Path:
    """The console script of the project venv (or next to this interpreter)."""
    for candidate in (REPO / ".venv" / "bin" / "ommx-experiment", Path(sys.executable).parent / "ommx-experiment"):
        if candidate.exists():
            return candidate
    pytest.skip("the ommx-experiment console script is not installed (pip install -e .)")


def run_cli(
    *args: str, root: Path | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``ommx-experiment`` as a real subprocess (stdout is a pipe, not a TTY)."""
    child_env = dict(os.environ if env is None else env)
    if root is not None:
        child_env["OMMX_LOCAL_REGISTRY_ROOT"] = str(root)
    child_env.setdefault("PYTHONPATH", str(REPO / "src"))
    return subprocess.run(
        [str(ommx_experiment_exe()), *args],
        capture_output=True, text=True, env=child_env, timeout=300, stdin=subprocess.DEVNULL, cwd=cwd,
    )
