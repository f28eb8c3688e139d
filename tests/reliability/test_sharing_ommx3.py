"""Our package and OMMX 3 in one process, on one root, while another process commits (issue 13).

The worker (tests/workers/sharing_worker.py ``interleave``) runs on the OMMX 3 side
venv: OPS random calls, ours (commit, Run close under two autosave policies,
commit of an open session, failed exit + ``restore_from_checkpoint`` + commit,
load, the three listings, GC dry run) and OMMX's (``list_experiments``,
``list_experiment_checkpoints``, ``list_artifacts``, ``ArtifactDraft`` commits,
``Experiment`` commits, loads); in the first half OMMX only lists, so its last
connection closes after every listing and unlinks the ``-wal`` whenever no other
process has the database open. A peer commits all along from short-lived
processes, alternating the two libraries.

Before the interleaving, a plain ``sqlite3`` connection in a process that then
calls OMMX's listing must end up on an unlinked ``-wal`` (the hazard is real).
Afterwards fresh processes of both libraries must list and load every name the
worker and the peer committed, GC finds no missing blob and no invalid manifest,
and ``integrity_check`` is ok. In the worker, after every call of either library
no file descriptor points at an unlinked ``-wal`` or ``-shm`` (spec/registry.md
§4a). The ``fallback`` variant runs the design of platforms without open file
description locks: there such a descriptor is held after some OMMX calls (the
hazard struck, counted) and gone after our next call.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers.ours_on_ommx3 import OursOnOmmx3

WORKER = Path(__file__).resolve().parents[1] / "workers" / "sharing_worker.py"


def _worker(ours3: OursOnOmmx3, root: Path, *args: str, timeout: float) -> Any:
    proc = subprocess.run(
        [str(ours3.python), str(WORKER), *args], env=ours3.env(root), capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"sharing_worker {args} failed:\n{proc.stderr[-4000:]}"
    lines = proc.stdout.splitlines()
    return json.loads(lines[-1]) if lines else None


def _interleave_and_verify(ours3: OursOnOmmx3, root: Path, ops: int, seed: int, mode: str) -> None:
    first = f"example.com/sharing/first-{seed}:v1"
    _worker(ours3, root, "commit", "ours", first, timeout=300)
    assert "index.sqlite3-wal (deleted)" in _worker(ours3, root, "hazard", timeout=300)
    report = _worker(ours3, root, "interleave", str(ops), str(seed), mode, timeout=900)
    expected = [first, *report.pop("expected")]
    assert report["errors"] == []
    assert report["held_after_ours"] == []
    assert report["held_at_end"] == []
    if mode == "ofd":
        assert report["held_after_ommx"] == 0, report["held_after_ommx_first"]
    else:
        assert report["held_after_ommx"] > 0, "OMMX never unlinked the -wal under us: the hazard was not exercised"
    assert report["peer_exit"] == 0 and report["peer_commits"] > 0
    assert sum(calls for calls, _ in report["calls"].values()) == ops
    names = root.parent / "expected.json"
    names.write_text(json.dumps(expected))
    for lib in ("ommx", "ours"):
        seen = _worker(ours3, root, "verify", lib, str(names), timeout=600)
        assert seen == {"missing": [], "unloadable": [], "gc_missing_blobs": 0, "gc_invalid_manifests": 0}, lib
    with sqlite3.connect(root / "index.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM refs").fetchone()[0] >= len(expected)


@pytest.mark.parametrize("mode", ["ofd", "fallback"])
def test_1000_interleaved_calls_in_one_process_lose_nothing(ours3: OursOnOmmx3, registry_root: Path, mode: str) -> None:
    _interleave_and_verify(ours3, registry_root, ops=1000, seed=1, mode=mode)


@pytest.mark.stress
@pytest.mark.parametrize("mode", ["ofd", "fallback"])
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_interleaved_calls_stress(ours3: OursOnOmmx3, registry_root: Path, seed: int, mode: str) -> None:
    _interleave_and_verify(ours3, registry_root, ops=4000, seed=seed, mode=mode)
