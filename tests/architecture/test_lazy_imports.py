"""What a bare import and a read load: the package facade and the read paths import only what they use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _modules_after(code: str, root: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMMX_LOCAL_REGISTRY_ROOT": str(root)}
    probe = code + "\nimport sys\nloaded = sorted(sys.modules)\nimport json\nprint(json.dumps(loaded))"
    out = subprocess.run([sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_bare_import_reads_only_the_facade(tmp_path: Path) -> None:
    loaded = _modules_after("import ommx_experiment", tmp_path)
    assert [m for m in loaded if m.startswith("ommx_experiment")] == ["ommx_experiment"]
    assert "typing" not in loaded and "re" not in loaded  # ~30 ms together, before any use


def test_loading_and_listing_runs_does_not_load_the_archive_code(tmp_path: Path) -> None:
    build = (
        "from ommx_experiment import Experiment\n"
        "with Experiment('example.com/team/lazy:v1') as exp:\n"
        "    with exp.run() as run:\n"
        "        run.log_parameter('x', 1)\n"
    )
    _modules_after(build, tmp_path)
    loaded = _modules_after(
        "from ommx_experiment import Experiment\n"
        "exp = Experiment.load('example.com/team/lazy:v1')\n"
        "assert [r.run_id for r in exp.runs] == [0] and exp.runs[0].attachment_names == []\n",
        tmp_path,
    )
    assert "ommx_experiment.lifecycle.experiment" in loaded
    assert "ommx_experiment.format.archive" not in loaded and "ommx_experiment.format.tarstream" not in loaded
