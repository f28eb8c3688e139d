"""Shared unsealed experiments: many processes write one experiment, exactly once (issue 11).

Real processes (tests/workers/shared_worker.py) join one name on one root; some are
killed with SIGKILL. What a fresh process (and OMMX 3) loads after the commit is
compared with what the writers reported.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ommx_experiment import Experiment
from ommx_experiment.errors import ExperimentBusyError, ParameterTypeError

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "workers" / "shared_worker.py"
NAME = "example.com/shared/sweep:v1"


def test_two_processes_share_run_ids_and_see_each_others_runs(writers: Any) -> None:
    a, b = writers(), writers()
    assert a.ask("join", NAME) == {"ok": True} and b.ask("join", NAME) == {"ok": True}
    ids = [a.ask("open", "seed", 1)["run_id"], b.ask("open", "seed", 2)["run_id"], a.ask("open", "seed", 3)["run_id"]]
    assert len(set(ids)) == 3
    for writer, run_id in ((a, ids[0]), (b, ids[1]), (a, ids[2])):
        assert writer.ask("close", run_id) == {"ok": True}
    here = Experiment.join(NAME)  # a third writer, in this process: sees all closed runs at once
    assert sorted(r.run_id for r in here.runs) == sorted(ids)
    assert sorted(here.run_parameters_df()["seed"].tolist()) == [1, 2, 3]
    a.exit()
    b.exit()
    here.commit()
    assert sorted(Experiment.load(NAME).run_parameters_df()["seed"].tolist()) == [1, 2, 3]


def test_commit_refuses_while_another_live_process_holds_an_open_run(writers: Any) -> None:
    a = writers()
    a.ask("join", NAME)
    run_id = a.ask("open", "seed", 1)["run_id"]
    here = Experiment.join(NAME)
    with here.run() as run:
        run.log_parameter("seed", 2)
    with pytest.raises(ExperimentBusyError, match=rf"while 1 Run\(s\) are open in other processes: pid {a.proc.pid} on .* \(run {run_id}\)"):
        here.commit()
    assert a.ask("close", run_id) == {"ok": True}
    artifact = here.commit()  # the refusal published nothing and left the experiment usable
    assert sorted(Experiment.load(NAME).run_parameters_df()["seed"].tolist()) == [1, 2]
    assert artifact.image_name == NAME


def test_a_killed_writers_open_run_comes_back_interrupted_with_what_it_logged(writers: Any) -> None:
    a = writers()
    a.ask("join", NAME)
    closed = a.ask("open", "seed", 1)["run_id"]
    a.ask("close", closed)
    open_id = a.ask("open", "seed", 2)["run_id"]
    assert a.ask("log", open_id, "alpha", 0.5) == {"ok": True}
    a.kill()
    restored = Experiment.restore_from_checkpoint(NAME)
    runs = {r.run_id: r for r in restored.runs}
    assert runs[closed].status == "finished"
    assert (runs[open_id].status, runs[open_id].lifecycle_reason) == ("interrupted", "process exited while the run was open")
    df = restored.run_parameters_df()
    assert (df.loc[open_id, "seed"], df.loc[open_id, "alpha"]) == (2, 0.5)
    restored.commit()
    loaded = Experiment.load(NAME)
    assert [(r.run_id, r.status) for r in loaded.runs] == [(closed, "finished"), (open_id, "interrupted")]


def _late_draft(message: str) -> str:
    return message.split("of the draft ")[1].rsplit(": Experiment.", 1)[0]


def test_a_run_closed_after_another_writer_committed_is_kept_in_a_late_draft(writers: Any) -> None:
    a = writers()
    a.ask("join", NAME)
    for seed in (1, 2):  # two runs: a reserved 1 + 2 ids and holds one spare
        a.ask("close", a.ask("open", "seed", seed)["run_id"])
    here = Experiment.join(NAME)
    digest = here.commit().manifest_digest
    spare = a.ask("open", "seed", 3)  # from the spare id: no round trip, so the commit is not noticed yet
    closed = a.ask("close", spare["run_id"])
    assert closed["error"] == "RunNotRecordedError", closed
    assert f"was committed as {digest} by another writer" in closed["message"]
    kept = Experiment.restore_from_checkpoint(_late_draft(closed["message"]))
    assert kept.run_parameters_df()["seed"].tolist() == [3]
    assert sorted(Experiment.load(NAME).run_parameters_df()["seed"].tolist()) == [1, 2]
    refused = a.ask("open", "seed", 4)  # the next id needs the journal: the commit is seen
    assert refused["error"] == "LifecycleError" and "no new Run can be started" in refused["message"]


def test_parameter_types_are_checked_against_every_writers_closed_runs(writers: Any) -> None:
    a = writers()
    a.ask("join", NAME)
    run_id = a.ask("open", "seed", 1)["run_id"]
    a.ask("close", run_id)
    here = Experiment.join(NAME)
    run = here.run()
    with pytest.raises(ParameterTypeError, match=r"Run parameter `seed` is a int64 column .* got a string value '1'"):
        run.log_parameter("seed", "1")
    with pytest.raises(TypeError, match="must be bool, int, float, or str"):  # not a parameter type: OMMX's TypeError
        run.log_parameter("seed", [1, 2])  # type: ignore[arg-type]
    run.log_parameter("seed", 2.5)  # int column widens to float
    run.finish()
    # the other writer sees the widened column: a string is still refused there
    other = a.ask("open", "seed", "x")
    assert other["error"] == "ParameterTypeError" and "float64 column" in other["message"]
    a.exit()
    here.commit()
    assert Experiment.load(NAME).run_parameters_df()["seed"].tolist() == [1.0, 2.5]


def test_discard_run_removes_a_bad_run_for_every_writer(writers: Any) -> None:
    here = Experiment.join(NAME)
    with here.run() as run:
        run.log_parameter("x", 1)
    with here.run() as run:
        run.log_parameter("y", "only here")
    a = writers()
    a.ask("join", NAME)
    assert a.ask("discard", 1) == {"ok": True}
    assert [r.run_id for r in here.runs] == [0]
    with pytest.raises(KeyError, match="has no closed run 7"):
        here.discard_run(7)
    a.exit()
    here.commit()
    assert list(Experiment.load(NAME).run_parameters_df().columns) == ["x"]


def test_experiment_new_keeps_ommx_meaning_and_the_old_writer_loses_nothing(registry_root: Path) -> None:
    old = Experiment(NAME)
    with old.run() as run:
        run.log_parameter("gen", 1)
    pending = old.run()
    pending.log_parameter("gen", 1)
    new = Experiment(NAME)  # OMMX: a new session takes the draft of the name at its first write
    with new.run() as run:
        run.log_parameter("gen", 2)
    pending.finish()  # the old session, still written by a live writer, was detached, not dropped
    assert Experiment.restore_from_checkpoint(NAME).run_parameters_df()["gen"].tolist() == [2]
    assert old.run_parameters_df()["gen"].tolist() == [1, 1]
    new.commit()
    with pytest.raises(RuntimeError, match="already points to"):  # OMMX's rule: the first commit of a name wins
        old.commit()
    old.rename("example.com/shared/sweep:old")  # nothing lost: the old session commits under another name
    old.commit()
    assert Experiment.load("example.com/shared/sweep:old").run_parameters_df()["gen"].tolist() == [1, 1]


def test_a_replaced_session_without_live_writers_is_dropped_as_in_ommx(writers: Any) -> None:
    a = writers()
    a.ask("join", NAME)
    a.ask("close", a.ask("open", "gen", 1)["run_id"])
    a.kill()
    new = Experiment(NAME)
    with new.run() as run:
        run.log_parameter("gen", 2)
    from ommx_experiment import list_experiment_checkpoints

    assert [c.requested_image_name for c in list_experiment_checkpoints(include_journal=True)] == [NAME]


@pytest.mark.slow
def test_four_processes_with_random_sigkills_lose_nothing(registry_root: Path, ommx3: Any) -> None:
    """50 rounds: 4 looping writers, one killed at random per round and restarted."""
    rng = random.Random(1111)
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(registry_root), PYTHONPATH=str(REPO / "src"))
    logs: list[Path] = []

    def spawn(slot: int, round_no: int) -> subprocess.Popen[bytes]:
        out = registry_root.parent / f"w{slot}-{round_no}.out"
        logs.append(out)
        with out.open("wb") as fh:
            return subprocess.Popen(
                [sys.executable, str(WORKER), "loop", NAME, f"s{slot}r{round_no}"], env=env, stdout=fh
            )

    Experiment.join(NAME)  # create it once, so the first joiners do not race to create it
    procs = [spawn(slot, 0) for slot in range(4)]
    for round_no in range(1, 51):
        time.sleep(rng.uniform(0.05, 0.4))
        slot = rng.randrange(4)
        procs[slot].send_signal(signal.SIGKILL)
        procs[slot].wait()
        procs[slot] = spawn(slot, round_no)
    time.sleep(0.5)
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    reported: dict[str, int] = {}
    for out in logs:
        for line in out.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "closed":
                reported[parts[1]] = int(parts[2])
    assert len(reported) > 50
    artifact = Experiment.join(NAME).commit()
    loaded = Experiment.load(NAME)
    df = loaded.run_parameters_df()
    status = {r.run_id: r.status for r in loaded.runs}
    finished = df[[status[i] == "finished" for i in df.index]]
    tokens = finished["token"].tolist()
    assert len(tokens) == len(set(tokens))  # exactly once
    assert set(reported) <= set(tokens)  # every close that returned is there
    for token, run_id in reported.items():
        assert df.loc[run_id, "token"] == token
    interrupted = [i for i, s in status.items() if s == "interrupted"]
    assert set(status.values()) <= {"finished", "interrupted"}
    assert len(df) == len(loaded.runs)
    # OMMX 3 loads the same table
    theirs = ommx3.run_json(
        f"""
        import json
        from ommx.experiment import Experiment
        df = Experiment.load({NAME!r}).run_parameters_df()
        print(json.dumps({{"rows": len(df), "tokens": sorted(df["token"].dropna().tolist()), "digest": None}}))
        """,
        root=registry_root,
    )
    assert theirs["rows"] == len(df) and theirs["tokens"] == sorted(df["token"].dropna().tolist())
    assert artifact.manifest_digest and len(interrupted) <= 51


def _python(code: str) -> None:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_a_run_left_open_at_interpreter_exit_is_abandoned_and_its_id_not_reused(registry_root: Path) -> None:
    _python(
        "from ommx_experiment import Experiment\n"
        f"exp = Experiment.join({NAME!r})\n"
        "with exp.run() as run:\n    run.log_parameter('seed', 1)\n"
        "left = exp.run()\nleft.log_parameter('seed', 2)\n"  # still referenced when the interpreter exits
    )
    here = Experiment.join(NAME)
    with here.run() as run:
        run.log_parameter("seed", 3)
        assert run.run_id == 2  # the abandoned run's id 1 is not given again
    here.commit()
    loaded = Experiment.load(NAME)
    assert [(r.run_id, r.status) for r in loaded.runs] == [(0, "finished"), (2, "finished")]
    assert loaded.run_parameters_df()["seed"].tolist() == [1, 3]


def test_runs_open_at_a_failed_context_exit_come_back_interrupted(registry_root: Path) -> None:
    _python(
        "from ommx_experiment import Experiment\n"
        "keep = []\n"
        "try:\n"
        f"    with Experiment.join({NAME!r}) as exp:\n"
        "        with exp.run() as run:\n            run.log_parameter('seed', 1)\n"
        "        keep.append(exp.run())\n        keep[0].log_parameter('seed', 2)\n"
        "        raise RuntimeError('boom')\n"
        "except RuntimeError:\n    pass\n"
        "import os; os._exit(0)\n"  # the open Run is never collected: only the failed exit released the writer
    )
    here = Experiment.join(NAME)
    here.commit()
    loaded = Experiment.load(NAME)
    assert [(r.run_id, r.status) for r in loaded.runs] == [(0, "finished"), (1, "interrupted")]
    assert loaded.run_parameters_df()["seed"].tolist() == [1, 2]
