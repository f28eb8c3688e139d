"""``ommx-experiment`` as a real subprocess through the installed console script.

stdout is a pipe here, so these also check the plain (non-TTY) rendering: one line per
row, space-separated columns, no box drawing, no ANSI escapes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli_support import OTHER, SOLVED, SWEEP, Populated, populate, run_cli

from ommx_experiment.engine.registry import LocalRegistry


@pytest.fixture
def reg(registry_root: Path) -> Populated:
    return populate(registry_root)


def _plain(text: str) -> None:
    assert "\x1b[" not in text
    assert not set("─│┃━┏┡└") & set(text)


def test_list_plain_columns(reg: Populated) -> None:
    proc = run_cli("list", "--root", str(reg.root))
    assert proc.returncode == 0, proc.stderr
    _plain(proc.stdout)
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert rows[0] == ["NAME", "STATUS", "RUNS", "SOLVES", "SAMPLINGS", "UPDATED", "SIZE"]
    assert [SWEEP, "finished", "3", "0", "0"] == next(r for r in rows if r[0] == SWEEP)[:5]
    assert all(len(r) == 8 for r in rows[1:])  # size is "<n> <unit>"


def test_show_and_params(reg: Populated) -> None:
    show = run_cli("show", SWEEP, root=reg.root)
    assert show.returncode == 0, show.stderr
    _plain(show.stdout)
    assert "org.example.owner = alice" in show.stdout
    assert any(line.split()[-3:] == ["1", "2", "highs"] for line in show.stdout.splitlines())  # alpha, seed, solver
    csv = run_cli("params", SWEEP, "--format", "csv", root=reg.root)
    assert csv.returncode == 0, csv.stderr
    assert csv.stdout.splitlines() == ["run_id,alpha,seed,solver", "0,0.0,0,highs", "1,0.5,1,highs", "2,1.0,2,highs"]
    js = run_cli("params", SOLVED, "--json", root=reg.root)
    assert [row["seed"] for row in json.loads(js.stdout)] == [0, 1]


def test_rm_then_pasted_rollback_restores(reg: Populated) -> None:
    rm = run_cli("rm", OTHER, "--root", str(reg.root))
    assert rm.returncode == 0, rm.stderr
    digest = LocalRegistry.at(reg.root).resolve(OTHER)
    assert digest is None
    rollback = next(line for line in rm.stdout.splitlines() if "Rollback" in line).split("Rollback ", 1)[1]
    assert rollback.startswith("ommx-experiment restore-ref ") and rollback.endswith(f"--root '{reg.root}'")
    exe = Path(sys.executable).parent
    shell = subprocess.run(
        ["sh", "-c", rollback], capture_output=True, text=True, timeout=120,
        env={"PATH": f"{exe}:/usr/bin:/bin"},
    )
    assert shell.returncode == 0, shell.stderr
    assert "Restored" in shell.stdout
    assert LocalRegistry.at(reg.root).resolve(OTHER) is not None


def test_gc_json_and_delete(reg: Populated) -> None:
    assert run_cli("rm", OTHER, root=reg.root).returncode == 0
    dry = run_cli("gc", "--json", "--grace-period", "0s", root=reg.root)
    assert dry.returncode == 0, dry.stderr
    orphans = json.loads(dry.stdout)["orphan_candidates"]["digests"]
    assert orphans
    done = run_cli("gc", "--delete", "--grace-period", "0s", root=reg.root)
    assert done.returncode == 0, done.stderr
    assert "Deleted" in done.stdout
    for name in ("oci-layout", "index.json", "index.sqlite3"):
        assert (reg.root / name).exists()
    blobs = LocalRegistry.at(reg.root).blobs
    assert not any(blobs.exists(d) for d in orphans)


def test_error_is_one_line_with_exit_code(reg: Populated) -> None:
    missing = run_cli("show", "example.com/team/absent:v1", root=reg.root)
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f"error: example.com/team/absent:v1 is not in the Local Registry at {reg.root} "
        "(pull it first: ommx-experiment pull 'example.com/team/absent:v1')"
    ]
    usage = run_cli("gc", "--grace-period", "soon", root=reg.root)
    assert usage.returncode == 2
    assert len(usage.stderr.splitlines()) == 1 and usage.stderr.startswith("error: argument --grace-period")
    assert "Traceback" not in missing.stderr + usage.stderr


def test_python_dash_m_entry_point(registry_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ommx_experiment", "list", "--json"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_demo_commits_and_lists(tmp_path: Path) -> None:
    import importlib.util

    from conftest import unavailable

    if importlib.util.find_spec("ommx_experiment.lifecycle.solve") is None:
        unavailable("ommx_experiment.lifecycle.solve (Run.log_solve, used by the demo) is not in the tree yet")
    target = tmp_path / "demo-root"
    demo = run_cli("demo", "--root", str(target), cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    again = run_cli("demo", "--root", str(target), cwd=tmp_path)  # same second, same registry: new names
    assert again.returncode == 0, again.stderr
    listed = run_cli("list", "--json", "--root", str(target))
    rows = json.loads(listed.stdout)
    names = [r["image_name"] for r in rows if r["image_name"].startswith("example.com/ommx-experiment/knapsack-sweep:")]
    assert len(names) == len(set(names)) == 4  # two sweeps and their forks
    assert all(r["solves"] for r in rows)
    report = (tmp_path / "ommx-experiment-demo-report.html").read_text()
    assert 'data-parameter="capacity"' in report and "forked from" in report
    assert "relation: b forks a" in demo.stdout and "+ run 7" in demo.stdout
