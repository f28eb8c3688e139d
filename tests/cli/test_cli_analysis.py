"""``sql``, ``diff``, ``report``, ``show`` (parent, provenance, --limit/--columns/--sort), ``import --name``,
``completion``, and the friction messages (drafts, did-you-mean, missing extras)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ommx_highs_adapter import OMMXHighsAdapter

from ommx_experiment import Experiment, cli
from ommx_experiment.cli.demo import knapsack

BASE = "example.com/cli/study:v1"
FORK = "example.com/cli/study:v2"


def _invoke(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = _invoke(capsys, *argv)
    assert code == 0, err
    return out


@pytest.fixture
def study(registry_root: Path) -> tuple[Experiment, Experiment]:
    with Experiment(BASE) as base:
        for capacity in (10, 20, 30):
            with base.run() as run:
                run.log_parameter("capacity", capacity)
                run.log_parameter("ratio", capacity / 3)
                run.log_solve(OMMXHighsAdapter, knapsack(capacity))
    fork = base.fork(FORK)
    with fork, fork.run() as run:
        run.log_parameter("capacity", 40)
        run.log_parameter("ratio", 40 / 3)
        run.log_solve(OMMXHighsAdapter, knapsack(40))
    return base, fork


def test_sql_table_csv_and_json(study: tuple[Experiment, Experiment], capsys: pytest.CaptureFixture[str]) -> None:
    query = "SELECT image_name, count(*) AS n FROM runs GROUP BY 1 ORDER BY 1"
    out = _ok(capsys, "sql", query, "--format", "csv")
    assert out.splitlines() == ["image_name,n", f"{BASE},3", f"{FORK},4"]
    rows = json.loads(_ok(capsys, "sql", "SELECT run_id, objective FROM solves WHERE image_name = '" + FORK + "' ORDER BY 1", "--json"))
    assert rows == [{"run_id": 0, "objective": 18.0}, {"run_id": 1, "objective": 44.0},
                    {"run_id": 2, "objective": 65.0}, {"run_id": 3, "objective": 84.0}]
    table = _ok(capsys, "sql", "SELECT ratio FROM runs ORDER BY ratio LIMIT 2")
    assert "3.33333" in table and "3.3333333333" not in table  # floats rounded for display
    code, _, err = _invoke(capsys, "sql", "SELECT * FROM nowhere")
    assert code == 1 and err.startswith("error: SQL query failed: ") and "nowhere" in err and len(err.splitlines()) == 1


def test_diff_and_show_name_the_parent(study: tuple[Experiment, Experiment], capsys: pytest.CaptureFixture[str]) -> None:
    out = _ok(capsys, "diff", BASE, FORK)
    assert "relation: b forks a" in out and "+ run 3" in out and "1 added, 0 removed, 0 changed, 3 unchanged" in out
    data = json.loads(_ok(capsys, "diff", FORK, BASE, "--json"))
    assert data["removed"] == [3] and data["relation"] == "a forks b"
    shown = _ok(capsys, "show", FORK)
    assert f"Parent {BASE} {study[0].artifact.manifest_digest}" in " ".join(shown.split())
    assert "Created" in shown and "Packages" in shown and "highspy" in shown
    summary = json.loads(_ok(capsys, "show", FORK, "--json"))
    assert summary["parent"] == {"manifest_digest": study[0].artifact.manifest_digest, "image_name": BASE}
    assert summary["solves"] == 4 and summary["samplings"] == 0
    assert summary["runs"][0]["duration_s"] >= 0 and summary["runs"][0]["started_at"].endswith("+00:00")


def test_show_limit_columns_sort(study: tuple[Experiment, Experiment], capsys: pytest.CaptureFixture[str]) -> None:
    out = _ok(capsys, "show", FORK, "--columns", "capacity,ratio", "--sort", "capacity", "--desc", "--limit", "2")
    lines = [line.split() for line in out.splitlines()]
    header = next(i for i, line in enumerate(lines) if line[:1] == ["run_id"])
    assert lines[header] == ["run_id", "capacity", "ratio"]
    assert lines[header + 1] == ["3", "40", "13.3333"] and lines[header + 2] == ["2", "30", "10"]
    assert "(2 more rows; --limit N to show more)" in out
    code, _, err = _invoke(capsys, "show", FORK, "--sort", "nope")
    assert code == 2 and "--sort nope: no such column" in err


def test_report_command_one_and_prefix(study: tuple[Experiment, Experiment], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _ok(capsys, "report", FORK, "-o", str(tmp_path / "fork.html"))
    assert str(tmp_path / "fork.html") in out
    html = (tmp_path / "fork.html").read_text()
    assert 'data-parameter="capacity"' in html and 'data-parameter="ratio"' in html
    _ok(capsys, "report", "example.com/cli/", "--prefix", "-o", str(tmp_path / "all.html"))
    assert 'id="experiments"' in (tmp_path / "all.html").read_text()
    code, _, err = _invoke(capsys, "report", "example.com/cli/nothing:v1", "-o", str(tmp_path / "x.html"))
    assert code == 1 and "not in the Local Registry" in err


def test_list_shows_solves_and_samplings(study: tuple[Experiment, Experiment], capsys: pytest.CaptureFixture[str]) -> None:
    out = _ok(capsys, "list")
    assert out.split()[:7] == ["NAME", "STATUS", "RUNS", "SOLVES", "SAMPLINGS", "UPDATED", "SIZE"]


def test_draft_message_says_how_to_commit(registry_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    draft = Experiment("example.com/cli/draft:v1")
    with draft.run() as run:
        run.log_parameter("x", 1)
    for command in ("show", "params"):
        code, _, err = _invoke(capsys, command, "example.com/cli/draft:v1")
        assert code == 1
        assert "is an unsealed draft experiment (1 runs), not committed yet" in err
        assert "ommx-experiment commit 'example.com/cli/draft:v1'" in err and "restore_from_checkpoint" in err


def test_draft_message_names_a_journal_only_draft(registry_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No OMMX-format slot yet (policy disabled; the default's first draft is deferred): the journal says it."""
    from ommx_experiment import AutosavePolicy

    draft = Experiment("example.com/cli/journal-only:v1")
    draft.set_autosave_policy(AutosavePolicy.disabled())
    for i in range(2):
        with draft.run() as run:
            run.log_parameter("x", i)
    code, _, err = _invoke(capsys, "show", "example.com/cli/journal-only:v1")
    assert code == 1
    assert "is an unsealed draft experiment (2 runs), not committed yet" in err


def test_did_you_mean(study: tuple[Experiment, Experiment], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _invoke(capsys, "shwo", BASE)
    assert code == 2 and "did you mean 'show'?" in err
    code, _, err = _invoke(capsys, "show", "example.com/cli/study:v3")
    assert code == 1 and f"did you mean '{BASE}'?" in err or f"did you mean '{FORK}'?" in err


def test_import_under_another_name(study: tuple[Experiment, Experiment], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "fork.ommx"
    _ok(capsys, "export", FORK, str(archive))
    out = _ok(capsys, "import", str(archive), "--name", "example.com/cli/copy:v1")
    assert "example.com/cli/copy:v1" in out
    rows = {row["image_name"]: row["manifest_digest"] for row in json.loads(_ok(capsys, "list", "--json"))}
    assert rows["example.com/cli/copy:v1"] == rows[FORK]  # FORK existed before: kept
    other = tmp_path / "other-root"
    for argv in (["import", str(archive), "--name", "example.com/cli/copy:v1"], ["list", "--json"]):
        proc = subprocess.run([sys.executable, "-m", "ommx_experiment", *argv, "--root", str(other)],
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
    names = [row["image_name"] for row in json.loads(proc.stdout)]
    assert names == ["example.com/cli/copy:v1"]  # the archive's own name was only a step on the way


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _ok(capsys, "completion", shell)
    for command in ("show", "sql", "diff", "report"):
        assert command in out
    if shell == "fish":
        assert "complete -c ommx-experiment -n '__fish_seen_subcommand_from show' -l limit -r" in out
    if shell == "bash":
        check = subprocess.run(["bash", "-n"], input=out, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr


def test_missing_extras_name_the_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], registry_root: Path) -> None:
    monkeypatch.setitem(sys.modules, "duckdb", None)
    code, _, err = _invoke(capsys, "sql", "SELECT 1")
    assert code == 1 and "pip install 'ommx-experiment[analysis]'" in err
    monkeypatch.setitem(sys.modules, "ommx_highs_adapter", None)
    code, _, err = _invoke(capsys, "demo")
    assert code == 1 and "pip install 'ommx-experiment[solvers]'" in err
    monkeypatch.setitem(sys.modules, "shtab", None)
    code, _, err = _invoke(capsys, "completion", "bash")
    assert code == 1 and "pip install 'ommx-experiment[completion]'" in err
