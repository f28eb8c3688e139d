"""``ommx-experiment`` in-process (``cli.main([...])`` with capsys): every sub-command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers.cli_support import FAILED, GENERIC, OTHER, SOLVED, SWEEP, Populated, populate

from ommx_experiment import cli
from ommx_experiment.engine import root
from ommx_experiment.engine.registry import LocalRegistry
from ommx_experiment.lifecycle.artifact import Artifact


@pytest.fixture
def reg(registry_root: Path) -> Populated:
    return populate(registry_root)


def invoke(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = invoke(capsys, *argv)
    assert code == 0, err
    return out


def ok_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    return json.loads(ok(capsys, *argv, "--json"))


def fail(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 1) -> str:
    got, out, err = invoke(capsys, *argv)
    assert got == code, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- list ---------------------------------------------------------------------------------------


def test_list_table_has_every_column_and_experiment(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    out = ok(capsys, "list")
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "STATUS", "RUNS", "SOLVES", "SAMPLINGS", "UPDATED", "SIZE"]
    by_name = {row.split()[0]: row.split() for row in rows}
    assert by_name[SWEEP][1:5] == ["finished", "3", "0", "0"]
    assert by_name[SOLVED][1:4] == ["finished", "2", "4"]
    assert reg.anonymous_experiment in by_name
    assert GENERIC not in by_name and FAILED not in by_name  # generic artifact; checkpoint only


def test_list_prefix_and_json(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    rows = ok_json(capsys, "list", "example.com/team/s")
    assert [r["image_name"] for r in rows] == [SOLVED, SWEEP]
    sweep = rows[1]
    assert sweep["manifest_digest"] == reg.sweep_digest
    assert sweep["annotations"] == {"org.example.owner": "alice"}
    assert sweep["runs"] == 3 and sweep["size"] > 0


def test_list_with_root_option_reads_that_registry(reg: Populated, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "elsewhere"
    assert ok_json(capsys, "list", "--root", str(empty)) == []
    assert len(ok_json(capsys, "--root", str(reg.root), "list")) == 4


# --- show / params ------------------------------------------------------------------------------


def test_show_summary(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    out = ok(capsys, "show", SWEEP)
    assert "Status finished" in out
    assert "org.example.owner = alice" in out
    assert "Attachments config" in out
    table = [line.split() for line in out.splitlines()]
    header = next(i for i, line in enumerate(table) if line[:1] == ["run_id"])
    assert table[header][-3:] == ["alpha", "seed", "solver"]
    assert [row[-3:] for row in table[header + 1 : header + 4]] == [["0", "0", "highs"], ["0.5", "1", "highs"], ["1", "2", "highs"]]
    assert reg.sweep_digest in out


def test_show_json_runs_parameters_and_solves(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    summary = ok_json(capsys, "show", SWEEP)
    assert summary["status"] == "finished"
    assert summary["attachments"] == ["config"]
    assert [r["parameters"] for r in summary["runs"]] == [
        {"alpha": 0.0, "seed": 0, "solver": "highs"},
        {"alpha": 0.5, "seed": 1, "solver": "highs"},
        {"alpha": 1.0, "seed": 2, "solver": "highs"},
    ]
    solved = ok_json(capsys, "show", SOLVED)
    assert [len(r["solves"]) for r in solved["runs"]] == [2, 2]
    assert solved["runs"][0]["solves"][0] == {"id": 0, "status": "failed", "adapter": "tests.FakeAdapter"}
    assert "tests.FakeAdapter" in ok(capsys, "show", SOLVED)


def test_show_missing_is_one_line_error(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    line = fail(capsys, "show", "example.com/team/nope:v1")
    assert "example.com/team/nope:v1 is not in the Local Registry" in line


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_params_formats(reg: Populated, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = ok(capsys, "params", SWEEP, "--format", fmt)
    if fmt == "json":
        assert json.loads(out) == [
            {"run_id": 0, "alpha": 0.0, "seed": 0, "solver": "highs"},
            {"run_id": 1, "alpha": 0.5, "seed": 1, "solver": "highs"},
            {"run_id": 2, "alpha": 1.0, "seed": 2, "solver": "highs"},
        ]
    elif fmt == "csv":
        assert out.splitlines()[0] == "run_id,alpha,seed,solver"
        assert out.splitlines()[3] == "2,1.0,2,highs"
    else:
        assert out.splitlines()[0].split() == ["run_id", "alpha", "seed", "solver"]
        assert out.splitlines()[3].split() == ["2", "1.0", "2", "highs"]


def test_params_json_flag_and_output_file(reg: Populated, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert len(ok_json(capsys, "params", SWEEP)) == 3
    target = tmp_path / "p.csv"
    assert ok(capsys, "params", SWEEP, "--format", "csv", "--output", str(target)) == ""
    assert target.read_text().startswith("run_id,alpha,seed,solver")


def test_params_parquet_needs_output_and_round_trips(reg: Populated, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = fail(capsys, "params", SWEEP, "--format", "parquet", code=2)
    assert "--output" in line
    target = tmp_path / "p.parquet"
    ok(capsys, "params", SWEEP, "--format", "parquet", "--output", str(target))
    df = pd.read_parquet(target)
    assert list(df["seed"]) == [0, 1, 2] and list(df["solver"]) == ["highs"] * 3


# --- checkpoints / size / inspect -------------------------------------------------------------------


def test_checkpoints_lists_failed_session(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    out = ok(capsys, "checkpoints")
    assert FAILED in out and "failed" in out
    rows = ok_json(capsys, "checkpoints", "--status", "failed")
    assert [(r["requested_image_name"], r["status"], r["runs"]) for r in rows] == [(FAILED, "failed", 1)]
    assert ok_json(capsys, "checkpoints", "--status", "draft") == []


def test_checkpoints_shows_ommx_checkpoints_and_journal_drafts_marked(
    registry_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both kinds, with SOURCE; RESTORE marks the entry ``restore_from_checkpoint`` uses for each name."""
    from ommx_experiment import AutosavePolicy, Experiment

    journal_only = Experiment("example.com/cli/journal-only:v1")
    journal_only.set_autosave_policy(AutosavePolicy.disabled())
    with journal_only.run() as run:
        run.log_parameter("x", 1)
    ahead = Experiment("example.com/cli/ahead:v1")
    ahead.set_autosave_policy(AutosavePolicy.every_n_runs(2))
    for i in range(3):  # the checkpoint has 2 runs, the journal 3
        with ahead.run() as run:
            run.log_parameter("x", i)
    rows = ok_json(capsys, "checkpoints")
    assert [(r["requested_image_name"], r["source"], r["runs"], r["restore"]) for r in rows] == [
        ("example.com/cli/ahead:v1", "checkpoint", 2, False),
        ("example.com/cli/ahead:v1", "journal", 3, True),
        ("example.com/cli/journal-only:v1", "journal", 1, True),
    ]
    header, *lines = ok(capsys, "checkpoints").splitlines()
    assert header.split() == ["REQUESTED", "NAME", "SOURCE", "STATUS", "RUNS", "SOLVES", "UPDATED", "RESTORE"]
    assert [line.split()[1] for line in lines] == ["checkpoint", "journal", "journal"]
    assert [line.rstrip().endswith("*") for line in lines] == [False, True, True]


def test_size_matches_library_and_json(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    from ommx_experiment.edges.maintenance import size

    expected = size(SWEEP)
    out = ok(capsys, "size", SWEEP, GENERIC)
    assert f"({expected} bytes)" in out and f"Image {GENERIC}" in out
    assert ok_json(capsys, "size", SWEEP) == [{"image_name": SWEEP, "size": expected}]
    assert "is not in the Local Registry" in fail(capsys, "size", SWEEP, "example.com/x/y:z")


def test_inspect_ref_archive_and_layout_dir(reg: Populated, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stored = json.loads(Artifact.load(SWEEP).manifest_bytes)
    assert json.loads(ok(capsys, "inspect", SWEEP)) == stored
    archive = tmp_path / "sweep.ommx"
    Artifact.load(SWEEP).save(archive)
    assert json.loads(ok(capsys, "inspect", str(archive))) == stored
    found = ok_json(capsys, "inspect", str(archive))
    assert found["image_name"] == SWEEP and found["manifest_digest"] == reg.sweep_digest


def test_inspect_bad_target_is_usage_error(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    assert "neither an existing archive" in fail(capsys, "inspect", "Not A Name", code=2)


# --- export / import ------------------------------------------------------------------------------


def test_export_then_import_into_another_root(reg: Populated, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "sweep.ommx"
    assert reg.sweep_digest in ok(capsys, "export", SWEEP, str(archive))
    assert archive.stat().st_size > 0
    assert "exists" in fail(capsys, "export", SWEEP, str(archive)).lower()
    other = tmp_path / "other-root"
    root._reset_for_tests()
    out = ok(capsys, "import", str(archive), "--root", str(other))
    assert f"Imported {SWEEP}" in out
    assert LocalRegistry.at(other).resolve(SWEEP) == reg.sweep_digest


def test_import_hostile_archive_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.ommx"
    bad.write_bytes(b"not a tar archive at all" * 40)
    fail(capsys, "import", str(bad))


# --- rm / restore-ref -------------------------------------------------------------------------------


def test_rm_prints_rollback_and_restore_ref_undoes_it(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    out = ok(capsys, "rm", SWEEP)
    assert reg.sweep_digest in out
    rollback = next(line for line in out.splitlines() if "Rollback" in line).split("Rollback ", 1)[1]
    assert rollback == f"ommx-experiment restore-ref '{SWEEP}' '{reg.sweep_digest}'"
    assert LocalRegistry.at(reg.root).resolve(SWEEP) is None
    assert "is not in the Local Registry" in fail(capsys, "rm", SWEEP)
    assert "Restored" in ok(capsys, "restore-ref", SWEEP, reg.sweep_digest)
    assert "Unchanged" in ok(capsys, "restore-ref", SWEEP, reg.sweep_digest)
    assert LocalRegistry.at(reg.root).resolve(SWEEP) == reg.sweep_digest


def test_rm_json_with_root_includes_root_in_rollback(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    got = ok_json(capsys, "rm", OTHER, "--root", str(reg.root))
    assert got["rollback"].endswith(f"--root '{reg.root}'")
    assert got["image_name"] == OTHER


def test_restore_ref_conflict_and_bad_digest(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    other_digest = LocalRegistry.at(reg.root).resolve(OTHER)
    assert other_digest is not None
    assert "currently points to" in fail(capsys, "restore-ref", SWEEP, other_digest)
    assert "invalid manifest digest" in fail(capsys, "restore-ref", SWEEP, "sha256:xyz", code=2)


# --- gc / prune-anonymous / sync ----------------------------------------------------------------------


def test_gc_dry_run_then_delete(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "rm", OTHER)
    dry = ok_json(capsys, "gc", "--grace-period", "0s")
    assert dry["delete_applied"] is False and dry["orphan_candidates"]["count"] > 0
    orphans = dry["orphan_candidates"]["digests"]
    assert "Orphans" in ok(capsys, "gc", "--grace-period", "0s")
    assert all(LocalRegistry.at(reg.root).blobs.exists(d) for d in orphans)
    done = ok_json(capsys, "gc", "--delete", "--grace-period", "0s")
    assert done["deleted"]["digests"] == orphans
    assert not any(LocalRegistry.at(reg.root).blobs.exists(d) for d in orphans)
    assert ok_json(capsys, "gc", "--grace-period", "0s")["orphan_candidates"]["count"] == 0
    assert "Deleted" in ok(capsys, "gc", "--delete")


def test_gc_default_grace_defers_fresh_orphans(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "rm", OTHER)
    report = ok_json(capsys, "gc", "--delete")
    assert report["deleted"]["count"] == 0 and report["deferred"]["count"] > 0


def test_prune_anonymous_dry_run_delete_and_experiments(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    dry = ok_json(capsys, "prune-anonymous")
    assert [r["image_name"] for r in dry["refs"]] == [reg.anonymous_artifact]
    assert "Dry Run" in ok(capsys, "prune-anonymous", "--experiments")
    assert ok_json(capsys, "prune-anonymous", "--older-than", "7d")["refs"] == []
    out = ok(capsys, "prune-anonymous", "--experiments", "--delete")
    assert reg.anonymous_artifact in out and reg.anonymous_experiment in out
    assert out.count("Rollback ommx-experiment restore-ref") == 2
    assert "Clean" in ok(capsys, "prune-anonymous", "--experiments")


def test_sync_rebuilds_index_json(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    index = reg.root / "index.json"
    before = json.loads(index.read_text())
    index.unlink()
    got = ok_json(capsys, "sync")
    assert got["entries"] == len(before["manifests"])
    key = lambda e: e["annotations"]["org.opencontainers.image.ref.name"]  # noqa: E731
    assert sorted(json.loads(index.read_text())["manifests"], key=key) == sorted(before["manifests"], key=key)
    assert "Synced" in ok(capsys, "sync")


# --- run / commit / demo ------------------------------------------------------------------------------


def test_run_and_commit_delegate(registry_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = "example.com/team/cmd:v1"
    code, out, err = invoke(capsys, "run", name, "--param", "seed=3", "--", "sh", "-c", "echo hello")
    assert code == 0, err
    assert "hello" in out
    code, out, err = invoke(capsys, "--root", str(registry_root), "commit", name)
    assert code == 0, err
    assert out.splitlines()[0] == name
    assert ok_json(capsys, "show", name)["runs"][0]["parameters"] == {"seed": 3}


def test_run_root_option_before_separator_only(registry_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ommx_experiment.cli.delegated import split_root

    assert split_root(["n", "--root", "/r", "--", "cmd", "--root", "x"]) == (Path("/r"), ["n", "--", "cmd", "--root", "x"])
    assert split_root(["--root=/r", "n", "--", "c"]) == (Path("/r"), ["n", "--", "c"])
    code, _, err = invoke(capsys, "run", "--help")
    assert code == 0
    assert invoke(capsys, "run")[0] == 2
    assert invoke(capsys, "commit")[0] == 2


def test_demo_missing_module_is_one_line_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ommx_experiment.cli.demo", None)  # import raises ModuleNotFoundError
    line = fail(capsys, "demo")
    assert "demo" in line


# --- errors and usage -------------------------------------------------------------------------------------


def test_usage_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert "Invalid image reference" in fail(capsys, "show", "BAD NAME", code=2)
    assert "invalid duration" in fail(capsys, "gc", "--grace-period", "3x", code=2)
    assert "invalid choice" in fail(capsys, "frobnicate", code=2)
    assert "required" in fail(capsys, "size", code=2)
    assert "required" in fail(capsys, code=2)


def test_repaired_cache_warning_is_one_line(reg: Populated, capsys: pytest.CaptureFixture[str]) -> None:
    from helpers.catalog_support import sql

    from ommx_experiment.edges import catalog

    catalog._clear_caches()
    sql(reg.root, "UPDATE experiment_configs SET config_json = X'7B7D'")
    code, out, err = invoke(capsys, "list")
    assert code == 0 and SWEEP in out
    assert err and all(line.startswith("warning: ") for line in err.splitlines())


def test_params_keep_nan_inf_and_gaps_apart(registry_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ommx_experiment import Experiment

    name = "example.com/team/edge:v1"
    with Experiment(name) as exp:
        for x in (float("inf"), float("nan")):
            with exp.run() as run:
                run.log_parameter("x", x)
                run.log_parameter("label", "é")
        with exp.run():
            pass
    rows = json.loads(ok(capsys, "params", name, "--format", "json"))
    assert rows[0] == {"run_id": 0, "label": "é", "x": float("inf")}
    assert rows[1]["x"] != rows[1]["x"]  # NaN stays a value
    assert rows[2] == {"run_id": 2}
    table = ok(capsys, "params", name).splitlines()
    assert [line.split() for line in table] == [["run_id", "label", "x"], ["0", "é", "inf"], ["1", "é", "nan"], ["2"]]
    assert ok_json(capsys, "show", name)["runs"][2]["parameters"] == {}


def test_show_with_root_option(reg: Populated, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root._reset_for_tests()
    assert ok_json(capsys, "show", SWEEP, "--root", str(reg.root))["manifest_digest"] == reg.sweep_digest
    root._reset_for_tests()
    assert "is not in the Local Registry" in fail(capsys, "show", SWEEP, "--root", str(tmp_path / "empty"))
