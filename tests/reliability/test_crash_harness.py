"""Crash harness: a writer workload SIGKILLed at random moments, checked in a fresh process.

Issue 8, "Crash safety". The worker (tests/workers/reliability_worker.py ``workload``) runs
experiments with parameters and attachments, commits, forks, sealed renames and archive
imports, and appends a side-file line only AFTER each step returned. After the kills a fresh
process checks (``verify``): the registry opens; ``PRAGMA integrity_check`` is ok; every ref's
closure is present and hashes right; every recorded commit loads with the recorded content;
``restore_from_checkpoint`` of every uncommitted session yields a run set between the runs
reported closed and the runs whose close had started; ``index.json`` equals ``refs`` after
``sync()``. The same checks run every ``VERIFY_EVERY`` kills, so damage cannot be hidden by
later workers.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ommx_experiment.engine import atomic

from . import _support as sup

VERIFY_EVERY = 10


def _kill_loop(tmp_path: Path, kills: int) -> dict[str, object]:
    root = tmp_path / "registry"
    side = tmp_path / "side.jsonl"
    side.touch()
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    reports = []
    for seed in range(kills):
        proc = sup.spawn(root, "workload", str(side), str(seed), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == b"ready\n", proc.communicate()[1].decode(errors="replace")
            # mostly short (mid-run, mid-commit), sometimes long enough for forks and imports
            time.sleep(rng.uniform(0, 0.4) if rng.random() < 0.6 else rng.uniform(0.4, 2.5))
        finally:  # also when the test fails or times out here: the workload never stops by itself
            os.kill(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, stderr.decode(errors="replace")  # it did not die on its own
        json.loads((root / "index.json").read_bytes())  # parses even before anyone repairs anything
        if (seed + 1) % VERIFY_EVERY == 0 or seed == kills - 1:
            report = sup.run_json(root, "verify", str(side), timeout=600)
            assert report["integrity"] == "ok"
            assert report["errors"] == [], report["errors"][:10]
            reports.append(report)
    temps = [p for d in (root, root / "blobs" / "sha256") for p in d.iterdir() if atomic.is_temp_name(p.name)]
    assert all(atomic.temp_owner_pid(p.name) is not None for p in temps)
    _next_operation_removes_dead_temps(root, tmp_path / "scratch")
    return reports[-1]


def _next_operation_removes_dead_temps(root: Path, scratch: Path) -> None:
    """Issue 16, fault 9: every writer is dead now. One import and one save (the next operation on
    the root and on the folder) leave no blob/staging temp in blobs/sha256 and no archive temp in
    the folder. (Archive temps younger than 5 s are spared, as a save may have just created one:
    the dead ones are aged first.)"""
    scratch.mkdir(exist_ok=True)
    old = time.time() - 60
    for p in scratch.iterdir():
        if p.name.startswith(".oxe-archive-"):
            os.utime(p, (old, old))
    proc = subprocess.run(
        [sup.sys.executable, str(sup.TESTS / "workers" / "fault_worker.py"), "tidy", str(scratch)],
        env=sup.env(root), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    left = [p.name for p in (root / "blobs" / "sha256").iterdir() if atomic.is_temp_name(p.name)]
    assert left == [], left
    assert [p.name for p in scratch.iterdir() if atomic.is_temp_name(p.name)] == []


# 300 kills: 908 s on a quiet 2-core machine (the verify every 10 kills re-checks everything so far)
_STRESS = [pytest.mark.stress, pytest.mark.timeout(2400)]


@pytest.mark.parametrize("kills", [pytest.param(20, id="20"), pytest.param(300, id="300", marks=_STRESS)])
def test_sigkill_at_random_moments_loses_nothing_committed_or_closed(tmp_path: Path, kills: int) -> None:
    last = _kill_loop(tmp_path, kills)
    assert last["committed"] > 0  # the workload got far enough to commit
    assert last["refs"] > 0
