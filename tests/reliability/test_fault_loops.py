"""Kill loops under faults other than a kill (issue 16, "must show"): a sweep killed at a random
moment while the disk fills and empties and another process holds the index lock, and a sweep
killed at a random moment beside OMMX 3's deleting GC at 0 s and 1 s grace.

Each round: a worker joins one experiment and closes runs (parameters, a payload on every other
run) until SIGKILL, writing a line per close that *returned* to a report outside the registry.
Then a fresh process restores the experiment: every run reported closed must be there, finished,
with its parameters and payload bytes; it commits, and the commit loads in OMMX 3 with the same
payloads. Closes that raised (``JournalWriteError``, ``RunBlobsLostError``, ``OSError``) were
said, and need not be there. Each test also asserts that its fault really happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from . import _support as sup

WORKER = sup.TESTS / "workers" / "fault_worker.py"
ROUNDS = int(os.environ.get("OXE_FAULT_LOOP_ROUNDS", "1"))

_OMMX_GC_LOOP = """
import json, os, time
from ommx.artifact import gc
passes, errors, deleted = 0, [], 0
while not os.path.exists({stop!r}):
    try:
        deleted += len(gc(delete=True, grace_period={grace!r}).deleted_blobs)
    except Exception as exc:
        errors.append(repr(exc))
    passes += 1
print(json.dumps({{"passes": passes, "errors": errors, "deleted": deleted}}))
"""

_OMMX_CHECK = """
import hashlib, json, sys
sys.path.insert(0, {workers!r})
from fault_worker import payload
from ommx.experiment import Experiment
e = Experiment.load({name!r})
df = e.run_parameters_df()
problems, checked = [], 0
closed = set({closed!r})
for run in e.runs:
    if run.run_id not in closed:  # e.g. the run open at the kill, interrupted maybe before its first parameter
        continue
    i = int(df.loc[run.run_id, "i"])
    if i % 2 == 0:
        checked += 1
        if run.get_blob("payload") != payload({tag!r}, i):
            problems.append(run.run_id)
print(json.dumps({{"runs": len(e.runs), "checked": checked, "problems": problems}}))
"""

_LOCK_HOLDER = """
import sqlite3, sys, time, os
stop = sys.argv[2]
held = 0
while not os.path.exists(stop):
    try:  # on a full disk SQLite may fail to take the lock (disk I/O error): try again later
        conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(0.6)
        conn.execute("COMMIT")
        conn.close()
        held += 1
    except sqlite3.Error:
        pass
    time.sleep(0.4)
print(held)
"""


def _sweep_round(root: Path, report: Path, name: str, *, busy_ms: int, during: float, pace_ms: int = 0) -> None:
    """Start the sweep worker, let it run for ``during`` seconds, SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "sweep", name, report.stem, str(report), str(busy_ms), str(pace_ms)],
        env=sup.env(root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(during)
    if proc.poll() is not None:
        raise AssertionError(f"the sweep worker exited early ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _verify(root: Path, report: Path, name: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(WORKER), "verify", name, str(report)], env=sup.env(root),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["problems"] == [], out["problems"]
    assert out["digest"] is not None and out["restored"] >= len(out["closed"])
    return out  # type: ignore[no-any-return]


def _check_ommx(ommx3: Any, root: Path, name: str, tag: str, got: dict[str, Any]) -> None:
    """OMMX 3 loads the commit: every run restored, the payload of every run reported closed."""
    script = _OMMX_CHECK.format(workers=str(WORKER.parent), name=name, tag=tag, closed=got["closed"])
    seen = ommx3.run_json(script, root=root, timeout=300)
    assert seen["problems"] == [] and seen["runs"] == got["restored"] and seen["checked"] > 0, seen


class _Filler(threading.Thread):
    """Fills the disk to the last byte, holds it full, frees it, again, until stopped."""

    def __init__(self, disk: Path) -> None:
        super().__init__(daemon=True)
        self.path = disk / "filler"
        self.stop = threading.Event()
        self.fills = 0

    def run(self) -> None:
        while not self.stop.is_set():
            with self.path.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
                while not self.stop.is_set():
                    fh.write(b"\0" * 65536)
            self.fills += 1
            self.stop.wait(0.5)
            self.path.unlink(missing_ok=True)
            self.stop.wait(0.4)
        self.path.unlink(missing_ok=True)


@pytest.mark.ommx3
@pytest.mark.parametrize("rounds", [pytest.param(ROUNDS, id="quick"), pytest.param(10, id="stress", marks=pytest.mark.stress)])
def test_sweep_killed_under_a_filling_disk_and_a_held_lock(ommx3: Any, tmp_path: Path, rounds: int) -> None:
    errors: dict[str, int] = {}
    closed = 0
    for k in range(rounds):
        with sup.tmpfs(tmp_path / f"disk{k}", "12m") as disk:
            root = disk / "registry"
            name = f"example.com/loops/disk:{k}"
            report = tmp_path / f"d{k}.txt"
            filler = _Filler(disk)
            stop = tmp_path / f"stop{k}"
            # the root must exist before the lock holder opens its index
            subprocess.run([sys.executable, "-c", "from ommx_experiment import LocalRegistry; LocalRegistry.default()"],
                           env=sup.env(root), check=True, timeout=60)
            holder = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, str(root / "index.sqlite3"), str(stop)],
                                      stdout=subprocess.PIPE, text=True)
            filler.start()
            try:
                # paced: the registry itself must not fill the 12 MiB disk (the filler's space comes back
                # for the verify; a sweep of unpaced ~0.1 ms closes would leave no room for restore's log)
                _sweep_round(root, report, name, busy_ms=300, during=random.uniform(3.0, 5.0), pace_ms=3)
            finally:
                filler.stop.set()
                filler.join(timeout=30)
                stop.touch()
                out, _ = holder.communicate(timeout=60)
            assert int(out.strip()) > 0 and filler.fills > 0, "the faults never happened"
            got = _verify(root, report, name)
            _check_ommx(ommx3, root, name, report.stem, got)
            closed += len(got["closed"])
            for kind, count in got["errors"].items():
                errors[kind] = errors.get(kind, 0) + count
    assert closed > 0, "no close ever returned: nothing was checked"
    assert errors, "no close ever failed: the faults did not reach the writer"
    assert set(errors) <= {"JournalWriteError", "RegistryError", "OSError"}, errors


@pytest.mark.ommx3
@pytest.mark.parametrize(
    ("grace", "rounds"),
    [
        pytest.param("0s", ROUNDS, id="0s"),
        pytest.param("1s", ROUNDS, id="1s"),
        pytest.param("0s", 10, id="0s-stress", marks=pytest.mark.stress),
        pytest.param("1s", 10, id="1s-stress", marks=pytest.mark.stress),
    ],
)
def test_sweep_killed_beside_ommx_gc(ommx3: Any, tmp_path: Path, grace: str, rounds: int) -> None:
    root = tmp_path / "registry"
    subprocess.run([sys.executable, "-c", "from ommx_experiment import LocalRegistry; LocalRegistry.default()"],
                   env=sup.env(root), check=True, timeout=60)
    stop = tmp_path / "stop"
    gc_loop = subprocess.Popen(
        [str(ommx3.python), "-c", _OMMX_GC_LOOP.format(stop=str(stop), grace=grace)],
        env=ommx3.env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    results = []
    try:
        for k in range(rounds):
            report = tmp_path / f"g{k}.txt"
            name = f"example.com/loops/gc-{grace}:{k}"
            _sweep_round(root, report, name, busy_ms=60_000, during=random.uniform(2.0, 4.0))
            got = _verify(root, report, name)  # restore and commit while OMMX's GC keeps running
            results.append((name, report.stem, got))
    finally:
        stop.touch()
        out, err = gc_loop.communicate(timeout=300)
    assert gc_loop.returncode == 0, err
    gc_report = json.loads(out.strip().splitlines()[-1])
    assert gc_report["errors"] == [] and gc_report["passes"] > 0, gc_report
    assert gc_report["deleted"] > 0 or grace == "1s", "OMMX's GC never deleted anything: the fault did not happen"
    for name, tag, got in results:
        assert set(got["errors"]) <= {"RunBlobsLostError"}, got["errors"]
        _check_ommx(ommx3, root, name, tag, got)
    assert sum(len(got["closed"]) for _, _, got in results) > 0
