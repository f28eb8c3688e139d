"""Shared helpers for the reliability campaign: subprocess workers with a clean environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers.processes import tmpfs  # noqa: F401 - the fault tests use sup.tmpfs

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
SRC = REPO / "src"
WORKER = TESTS / "workers" / "reliability_worker.py"


def env(root: Path) -> dict[str, str]:
    """Our environment, pointed at ``root``, with ``src`` importable."""
    out = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONDONTWRITEBYTECODE="1")
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    return out


def command(*args: str) -> list[str]:
    return [sys.executable, str(WORKER), *args]


def spawn(root: Path, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command(*args), env=env(root), **kwargs)


def run(root: Path, *args: str, timeout: float = 300, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), *command(*args)], env=env(root), capture_output=True, text=True, timeout=timeout
    )


def run_json(root: Path, *args: str, timeout: float = 300, prefix: list[str] | None = None) -> Any:
    proc = run(root, *args, timeout=timeout, prefix=prefix)
    assert proc.returncode == 0, f"worker {args} failed:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def experiment_config(**changes: object) -> dict[str, object]:
    """A valid experiment config (one attachment at layer 0, one finished run whose file is
    layer 1, run parameters at layer 2) with the top-level keys in ``changes`` replaced."""
    config: dict[str, object] = {
        "status": "finished",
        "attachments": {"entries": {"doc": 0}},
        "runs": [{"run_id": 0, "status": "finished", "attachments": {"entries": {"rf": 1}}, "solves": [], "samplings": []}],
        "run_parameters": 2,
    }
    config.update(changes)
    return config


def stress_count(reduced: int, full: int, stress: bool) -> int:
    return full if stress else reduced
