"""``ommx-experiment run`` / ``commit`` (issue 6), driven as real subprocesses with shell scripts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ommx_experiment.cli.command_run import RunOptions, UsageError, parse_param, parse_run_args, parse_value
from ommx_experiment.errors import OmmxExperimentError
from ommx_experiment.lifecycle.experiment import Experiment

SRC = Path(__file__).resolve().parents[2] / "src"

JOB = textwrap.dedent(
    """\
    #!/bin/sh
    # usage: job.sh LABEL OUTDIR EXIT
    echo "stdout of $1"
    echo "stderr of $1" >&2
    mkdir -p "$2/nested/deeper"
    printf 'solution %s' "$1" > "$2/nested/deeper/solution.txt"
    printf 'partial' > "$2/result.json.part"
    mv "$2/result.json.part" "$2/result.json"
    exit "$3"
    """
)


@pytest.fixture
def job(tmp_path: Path) -> Path:
    path = tmp_path / "job.sh"
    path.write_text(JOB)
    path.chmod(0o755)
    return path


def cli(registry_root: Path, *args: str, cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMMX_LOCAL_REGISTRY_ROOT": str(registry_root), "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "ommx_experiment.cli.command_run", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kwargs,  # type: ignore[call-overload]
    )


def test_three_invocations_and_commit_build_one_experiment(tmp_path: Path, registry_root: Path, job: Path) -> None:
    results = []
    for i, (alpha, code) in enumerate([("0.5", 0), ("1.5", 3), ("2.5", 0)]):
        out = tmp_path / f"out{i}"
        out.mkdir()
        results.append(
            cli(
                registry_root, "run", "sweep:v1", "--param", f"alpha={alpha}", "--param", f"seed={i}",
                "--param", "greedy=true", "--param", "label=run-" + str(i), "--watch", str(out),
                "--", str(job), f"L{i}", str(out), str(code), cwd=tmp_path,
            )
        )
    assert [r.returncode for r in results] == [0, 3, 0]
    assert "stdout of L0" in results[0].stdout and "stderr of L0" in results[0].stderr  # teed
    last = results[1].stderr.strip().splitlines()[-1]
    assert last.startswith("ommx-experiment: run 1 of ") and ": failed; attached: " in last
    assert "nested/deeper/solution.txt" in last and "ommx-experiment/stdout.txt" in last

    committed = cli(registry_root, "commit", "sweep:v1", cwd=tmp_path)
    assert committed.returncode == 0, committed.stderr
    image, digest = committed.stdout.split()
    assert image.endswith("sweep:v1") and digest.startswith("sha256:")

    experiment = Experiment.load("sweep:v1")
    assert experiment.artifact.manifest_digest == digest
    runs = experiment.runs
    assert [r.run_id for r in runs] == [0, 1, 2]
    assert [r.status for r in runs] == ["finished", "failed", "finished"]
    assert runs[1].lifecycle_reason == "CommandFailed: exit code 3"

    df = experiment.run_parameters_df()
    assert list(df.index) == [0, 1, 2]
    assert list(df["alpha"]) == [0.5, 1.5, 2.5]
    assert list(df["seed"]) == [0, 1, 2]
    assert list(df["greedy"]) == [True, True, True]
    assert list(df["label"]) == ["run-0", "run-1", "run-2"]

    for i, run in enumerate(runs):
        assert sorted(run.attachment_names) == sorted(
            ["nested/deeper/solution.txt", "ommx-experiment/command", "ommx-experiment/result", "ommx-experiment/stderr.txt", "ommx-experiment/stdout.txt", "result.json"]
        )
        assert run.get_blob("ommx-experiment/stdout.txt") == f"stdout of L{i}\n".encode()
        assert run.get_blob("ommx-experiment/stderr.txt") == f"stderr of L{i}\n".encode()
        assert run.get_blob("nested/deeper/solution.txt") == f"solution L{i}".encode()
        assert run.get_blob("result.json") == b"partial"
        assert run.get_json("ommx-experiment/command")["argv"][0] == str(job)
        result = run.get_json("ommx-experiment/result")
        assert result["exit_code"] == (3 if i == 1 else 0) and result["wall_time_s"] >= 0


def test_commit_flag_and_auto_resume_after_commit_is_refused(tmp_path: Path, registry_root: Path, job: Path) -> None:
    done = cli(registry_root, "run", "one:v1", "--commit", "--", str(job), "x", str(tmp_path / "o"), "0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("sha256:")
    assert [r.status for r in Experiment.load("one:v1").runs] == ["finished"]
    again = cli(registry_root, "run", "one:v1", "--", "true", cwd=tmp_path)
    assert again.returncode == 2 and "already committed" in again.stderr


def test_resume_without_checkpoint_is_an_error(tmp_path: Path, registry_root: Path) -> None:
    result = cli(registry_root, "run", "none:v1", "--resume", "--", "true", cwd=tmp_path)
    assert result.returncode == 2
    assert "no checkpoint" in result.stderr


def test_command_not_found_is_a_failed_run(tmp_path: Path, registry_root: Path) -> None:
    result = cli(registry_root, "run", "missing:v1", "--", "no-such-command-xyz", cwd=tmp_path)
    assert result.returncode == 127
    run = Experiment.restore_from_checkpoint("missing:v1").runs[0]
    assert run.status == "failed"
    assert run.lifecycle_reason is not None and run.lifecycle_reason.startswith("CommandNotStarted:")
    assert b"no-such-command-xyz" in run.get_blob("ommx-experiment/stderr.txt")


def test_ctrl_c_interrupts_the_run_and_reaches_the_child(tmp_path: Path, registry_root: Path) -> None:
    script = tmp_path / "slow.sh"
    script.write_text("#!/bin/sh\ntrap 'echo child-got-int; exit 9' INT\necho started\nwhile :; do sleep 0.05; done\n")
    script.chmod(0o755)
    env = {**os.environ, "OMMX_LOCAL_REGISTRY_ROOT": str(registry_root), "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ommx_experiment.cli.command_run", "run", "intr:v1", "--", str(script)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "child-got-int" in out
    run = Experiment.restore_from_checkpoint("intr:v1").runs[0]
    assert run.status == "interrupted"
    assert run.lifecycle_reason == "CommandInterrupted: SIGINT forwarded to the command; exit code 9"
    assert run.get_blob("ommx-experiment/stdout.txt") == b"started\nchild-got-int\n"


def test_usage_errors(tmp_path: Path, registry_root: Path) -> None:
    for args in (["run"], ["run", "x:1"], ["run", "x:1", "--param", "novalue", "--", "true"], ["commit"], ["bogus"]):
        result = cli(registry_root, *args, cwd=tmp_path)
        assert result.returncode == 2, args
        assert "usage" in result.stderr


def test_parse_run_args() -> None:
    opts = parse_run_args(["n:1", "--param", "a=1", "--param=b=x=y", "--watch", "d", "--resume", "--commit", "--", "cmd", "--param", "z"])
    assert opts == RunOptions("n:1", ("cmd", "--param", "z"), (("a", 1), ("b", "x=y")), Path("d"), True, True)
    assert parse_run_args(["n:1", "cmd", "arg"]).command == ("cmd", "arg")
    with pytest.raises(UsageError):
        parse_run_args(["n:1", "--unknown", "--", "cmd"])
    with pytest.raises(UsageError):
        parse_param("=1")


def test_parse_value_examples() -> None:
    assert parse_value("true") is True and parse_value("False") is False
    assert parse_value("42") == 42 and isinstance(parse_value("42"), int)
    assert parse_value("1e3") == 1000.0 and isinstance(parse_value("1e3"), float)
    assert parse_value(str(2**63)) == str(2**63)  # beyond int64: kept as text
    assert parse_value("nan") == "nan" and parse_value("abc") == "abc" and parse_value("") == ""


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_parse_value_int_roundtrip(value: int) -> None:
    parsed = parse_value(str(value))
    assert parsed == value and type(parsed) is int


@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()))
def test_parse_value_float_roundtrip(value: float) -> None:
    parsed = parse_value(repr(value))
    assert parsed == value and type(parsed) is float


def test_not_committed_without_commit_flag(tmp_path: Path, registry_root: Path) -> None:
    result = cli(registry_root, "run", "open:v1", "--param", "k=1", "--", "true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with pytest.raises(OmmxExperimentError):
        Experiment.load("open:v1")  # nothing was committed
    restored = Experiment.restore_from_checkpoint("open:v1")
    assert [r.status for r in restored.runs] == ["finished"]


def test_watch_dir_reused_across_runs_attaches_only_what_each_command_writes(tmp_path: Path, registry_root: Path) -> None:
    out = tmp_path / "shared-out"
    out.mkdir()
    (out / "before.txt").write_text("was here before any run")
    script = tmp_path / "write.sh"
    script.write_text('#!/bin/sh\nprintf "%s" "$2" > "$1/$2.txt"\n')
    script.chmod(0o755)
    for label in ("first", "second"):
        done = cli(registry_root, "run", "reuse:v1", "--watch", str(out), "--", str(script), str(out), label, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert cli(registry_root, "commit", "reuse:v1", cwd=tmp_path).returncode == 0
    runs = Experiment.load("reuse:v1").runs
    watched = [sorted(set(r.attachment_names) - {"ommx-experiment/command", "ommx-experiment/result", "ommx-experiment/stdout.txt", "ommx-experiment/stderr.txt"}) for r in runs]
    assert watched == [["first.txt"], ["second.txt"]]


def test_watch_dir_must_exist(tmp_path: Path, registry_root: Path) -> None:
    missing = tmp_path / "nope"
    done = cli(registry_root, "run", "nodir:v1", "--watch", str(missing), "--", "true", cwd=tmp_path)
    assert done.returncode == 2
    assert f"--watch {missing}: no such directory" in done.stderr
    assert not missing.exists()


def test_command_files_keep_their_names_beside_the_wrapper_attachments(tmp_path: Path, registry_root: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    script = "printf solved > \"$1/result\"; printf log > \"$1/stdout.txt\"; printf cmd > \"$1/command\""
    done = cli(registry_root, "run", "names:v1", "--watch", str(out), "--", "sh", "-c", script, "sh", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert cli(registry_root, "commit", "names:v1", cwd=tmp_path).returncode == 0
    from ommx_experiment.lifecycle.experiment import Experiment
    from ommx_experiment.engine import root as root_module

    root_module.set_local_registry_root(registry_root)
    (run,) = Experiment.load("names:v1").runs
    assert run.get_blob("result") == b"solved" and run.get_blob("stdout.txt") == b"log" and run.get_blob("command") == b"cmd"
    assert run.get_json("ommx-experiment/result")["exit_code"] == 0
    assert not any(name.endswith(".1") for name in run.attachment_names)
