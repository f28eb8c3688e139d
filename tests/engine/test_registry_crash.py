"""Issue 2: a writer killed with SIGKILL at random moments never leaves a broken root."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ommx_experiment.engine import atomic

WORKER = Path(__file__).resolve().parents[1] / "workers" / "registry_worker.py"
SRC = Path(__file__).resolve().parents[2] / "src"
KILLS = 50

_VERIFY = """
import hashlib, json, os, sys
from pathlib import Path
sys.path.insert(0, {src!r})
from ommx_experiment.engine import atomic, layout_view
from ommx_experiment.engine.registry import LocalRegistry

root = Path({root!r})
report = {{}}
def _temp_dirs(root):
    # where our temp files can be left: the root, blobs/sha256 and the lease folder
    dirs = (root, root / "blobs" / "sha256", root / ".oxe-leases")
    return [d for d in dirs if d.is_dir()]

reg = LocalRegistry.at(root)
report["integrity"] = reg.db.query("PRAGMA integrity_check")[0][0]
bad_refs = []
refs = reg.list_refs()
for ref in refs:
    try:
        reg.verify_closure(ref.manifest_digest)
        for digest, size in reg.closure(ref.manifest_digest):
            if not reg.blobs.verify(digest, size):
                bad_refs.append((str(ref.image_name), digest))
    except Exception as exc:
        bad_refs.append((str(ref.image_name), repr(exc)))
report["refs"] = len(refs)
report["bad_refs"] = bad_refs
bad_blobs = []
for digest in reg.blobs.iter_digests():
    h = hashlib.sha256(reg.blobs.path(digest).read_bytes()).hexdigest()
    if "sha256:" + h != digest:
        bad_blobs.append(digest)
report["blobs"] = len(list(reg.blobs.iter_digests()))
report["bad_blobs"] = bad_blobs
temps = [p for d in _temp_dirs(root) for p in d.iterdir() if atomic.is_temp_name(p.name)]
report["temps"] = [p.name for p in temps]
report["cleaned"] = reg.blobs.clean_stale_temp_files(older_than=0)
report["temps_after"] = [p.name for d in _temp_dirs(root) for p in d.iterdir() if atomic.is_temp_name(p.name)]
report["index_equals_refs"] = layout_view.read_index(root) == {{str(r.image_name): r.manifest_digest for r in refs}}
print(json.dumps(report))
"""


def _temp_dirs(root: Path) -> list[Path]:
    """Where our temp files can be left: the root, blobs/sha256 and the lease folder."""
    dirs = (root, root / "blobs" / "sha256", root / ".oxe-leases")
    return [d for d in dirs if d.is_dir()]


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_random_sigkill_leaves_a_consistent_root(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    deadline = time.monotonic() + 45
    kills = 0
    pids = []
    while kills < KILLS and time.monotonic() < deadline:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), "churn", str(root), str(kills)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the worker has opened the registry
        assert line == b"ready\n", proc.communicate()[1].decode(errors="replace")
        time.sleep(rng.uniform(0, 0.150))
        os.kill(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, stderr.decode(errors="replace")  # it did not die on its own
        pids.append(proc.pid)
        kills += 1
    assert kills >= 20, "too slow to kill the writer often enough"

    # index.json parses even before anyone repairs anything.
    json.loads((root / "index.json").read_bytes())

    temps_before = [p.name for d in _temp_dirs(root) for p in d.iterdir() if atomic.is_temp_name(p.name)]
    assert all(not _pid_alive(atomic.temp_owner_pid(n)) for n in temps_before)
    assert all(atomic.temp_owner_pid(n) in pids for n in temps_before)

    script = textwrap.dedent(_VERIFY.format(src=str(SRC), root=str(root)))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["integrity"] == "ok"
    assert report["refs"] > 0
    assert report["bad_refs"] == []
    assert report["bad_blobs"] == []
    assert report["cleaned"] == len(temps_before)
    assert report["temps_after"] == []
    assert report["index_equals_refs"] is True
    conn = sqlite3.connect(root / "index.sqlite3")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
