"""A lost, emptied, truncated or corrupt ``index.sqlite3`` (issue 16, faults 4 and 6).

- Missing / empty: every entry point raises ``RegistryIndexLostError`` (a RuntimeError) naming
  the file and ``ommx-experiment recover``; ``index.json`` and the blobs stay byte-identical
  (nothing rewrites ``index.json`` from an empty index; no GC deletes from one).
- Corrupt: ``RegistryCorruptError``; the index is marked and every write stops (no new byte in
  ``index.sqlite3`` or its WAL) until ``recover`` rebuilds it.
- ``recover`` rebuilds refs from the damaged file, ``index.json`` and the blobs; OMMX 3 then
  loads everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ommx_experiment import AutosavePolicy, Experiment, LocalRegistry, gc, list_experiments
from ommx_experiment.edges.recovery import recover
from ommx_experiment.engine.index_db import CORRUPT_MARKER
from ommx_experiment.errors import RegistryCorruptError, RegistryError, RegistryIndexLostError

from . import _support as sup

DB = "index.sqlite3"


def _fresh_process_setup(root: Path, journal_runs: int = 5, *, autosave: bool = False) -> None:
    """Two commits with run attachments and an uncommitted session, written by a process that exits."""
    script = f"""
import os
from ommx_experiment import Experiment, AutosavePolicy
from ommx_experiment.lifecycle import session
session.GROUP_COMMIT_RUNS = 1  # every close writes its journal row before os._exit (no deferred batch)
for n in range(2):
    e = Experiment(f"example.com/il/c{{n}}:v1")
    with e.run() as r:
        r.log_parameter("i", n)
        r.log_json("p", {{"n": n}})
    e.commit()
e = Experiment("example.com/il/draft:v1")
if not {autosave}:
    e.set_autosave_policy(AutosavePolicy.disabled())
for i in range({journal_runs}):
    with e.run() as r:
        r.log_parameter("i", i)
        r.log_parameter("s", "x" * 200)
        if i == 0:
            r.log_json("p", {{"i": i}})
if {autosave}:  # the default policy's first draft is deferred (0.2 s): publish it before the kill-like exit
    from ommx_experiment.lifecycle.autosave import LATER
    LATER.run_all()
os._exit(0)
"""
    proc = subprocess.run([sys.executable, "-c", script], env=sup.env(root), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _snapshot(root: Path) -> dict[str, str]:
    """sha256 of index.json and of every blob (what must stay byte-identical)."""
    out = {"index.json": hashlib.sha256((root / "index.json").read_bytes()).hexdigest()}
    for path in sorted((root / "blobs" / "sha256").iterdir()):
        out[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ommx_experiment", *args, "--root", str(root)],
        env=sup.env(root), capture_output=True, text=True, timeout=120,
    )


def _lose(root: Path, mode: str) -> None:
    files = [root / (DB + s) for s in ("", "-wal", "-shm")]
    if mode == "deleted":
        for f in files:
            f.unlink(missing_ok=True)
    elif mode == "zero-bytes":
        for f in files:
            if f.exists():
                f.write_bytes(b"")
    elif mode == "deleted-db-stale-wal":
        files[0].unlink()
    elif mode == "truncated":
        conn = sqlite3.connect(files[0])
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        size = files[0].stat().st_size
        with open(files[0], "r+b") as fh:
            fh.truncate(size // 3)
    else:
        raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["deleted", "zero-bytes", "deleted-db-stale-wal", "truncated"])
def test_missing_empty_truncated_index_is_detected(registry_root: Path, mode: str) -> None:
    _fresh_process_setup(registry_root)
    _lose(registry_root, mode)
    before = _snapshot(registry_root)
    expected = RegistryCorruptError if mode == "truncated" else RegistryIndexLostError

    proc = _cli(registry_root, "list")
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"{registry_root / DB}" in proc.stderr and "ommx-experiment recover --root" in proc.stderr, proc.stderr
    for step in (
        lambda: Experiment.load("example.com/il/c0:v1"),
        lambda: list_experiments(),
        lambda: Experiment("example.com/il/new:v1").commit(),
        lambda: gc(delete=True, grace_period="0s", exclusive=True),
    ):
        with pytest.raises((RegistryIndexLostError, RegistryCorruptError)) as info:
            step()
        assert isinstance(info.value, RuntimeError)
        assert str(registry_root / DB) in str(info.value) and "recover" in str(info.value)
        if mode != "truncated":
            assert isinstance(info.value, expected)
    assert _snapshot(registry_root) == before  # index.json and every blob untouched

    report = recover(root=registry_root)
    assert report.rebuilt and {r.image_name for r in report.restored} >= {"example.com/il/c0:v1", "example.com/il/c1:v1"}
    for n in range(2):
        assert Experiment.load(f"example.com/il/c{n}:v1").runs[0].get_json("p") == {"n": n}
    assert not (registry_root / CORRUPT_MARKER).exists()
    assert _cli(registry_root, "list").returncode == 0


@pytest.mark.ommx3
def test_recover_rebuilds_refs_from_index_json(ommx3: Any, registry_root: Path) -> None:
    """Deleted index: our commits come back from index.json, the OMMX 3 commit made after our
    last view write from the blob scan (recovered.local/experiment:<hex>), the checkpoint slot and
    pin under a registry id with the same 8-hex prefix (restore finds the draft); then OMMX 3
    loads everything."""
    _fresh_process_setup(registry_root, autosave=True)  # the default policy writes an OMMX slot (deferred first draft)
    old_id = LocalRegistry.default().registry_id
    LocalRegistry.default().close()
    ommx3.run(
        """
from ommx.experiment import Experiment
e = Experiment("example.com/il/theirs:v1")
with e.run() as r:
    r.log_parameter("i", 7)
    r.log_attachment("raw", "application/octet-stream", b"theirs payload")
e.commit()
""",
        root=registry_root,
    )
    conn = sqlite3.connect(registry_root / DB)
    theirs = conn.execute("SELECT manifest_digest FROM refs WHERE name = 'example.com/il/theirs'").fetchone()[0]
    conn.close()
    _lose(registry_root, "deleted")
    dry = recover(root=registry_root, dry_run=True)
    assert dry.dry_run and not (registry_root / DB).exists()
    report = recover(root=registry_root)
    # the id itself lived only in the lost index; its 8-hex prefix (the one in slot and pin names) is kept
    assert report.registry_id[:8] == old_id[:8]
    names = {r.image_name: r for r in report.restored}
    assert {"example.com/il/c0:v1", "example.com/il/c1:v1"} <= set(names)
    adopted = [r for r in report.restored if r.source == "unreferenced"]
    assert len(adopted) == 1 and adopted[0].image_name.startswith("recovered.local/experiment:")
    assert adopted[0].manifest_digest == theirs
    registry = LocalRegistry.default()
    assert registry.registry_id == report.registry_id
    restored = Experiment.restore_from_checkpoint("example.com/il/draft:v1")  # from the OMMX-format slot
    assert restored.runs and restored.runs[0].get_json("p") == {"i": 0}
    loaded = ommx3.run_json(
        f"""
import json
from ommx.experiment import Experiment
out = {{}}
for name in {sorted(n for n in names if "checkpoint" not in n)!r}:
    e = Experiment.load(name)
    out[name] = len(e.runs)
print(json.dumps(out))
""",
        root=registry_root,
    )
    assert loaded[adopted[0].image_name] == 1 and loaded["example.com/il/c0:v1"] == 1


def _corrupt_journal_page(root: Path) -> int:
    db = root / DB
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    leaves = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = 'oxe_journal_runs' AND pagetype = 'leaf'")]
    conn.close()
    leaf = leaves[len(leaves) // 2]
    with open(db, "r+b") as fh:
        fh.seek((leaf - 1) * page + 8)
        fh.write(random.Random(leaf).randbytes(page - 16))
    return leaf


def _db_state(root: Path) -> dict[str, tuple[int, int] | None]:
    out: dict[str, tuple[int, int] | None] = {}
    for suffix in ("", "-wal"):
        path = root / (DB + suffix)
        out[suffix] = (path.stat().st_size, path.stat().st_mtime_ns) if path.exists() else None
    return out


def test_corrupt_page_surfaces_as_our_error_and_stops_writes(registry_root: Path) -> None:
    _fresh_process_setup(registry_root, journal_runs=300)
    _corrupt_journal_page(registry_root)
    with pytest.raises(RegistryCorruptError) as info:
        Experiment.restore_from_checkpoint("example.com/il/draft:v1")
    assert isinstance(info.value, RuntimeError)
    message = str(info.value)
    assert str(registry_root / DB) in message and "ommx-experiment recover --root" in message
    assert (registry_root / CORRUPT_MARKER).exists()
    state = _db_state(registry_root)

    assert Experiment.load("example.com/il/c1:v1").runs[0].get_json("p") == {"n": 1}  # healthy pages still read
    with pytest.warns(RuntimeWarning, match="corrupt"):
        list_experiments()
    fresh = Experiment("example.com/il/after:v1")
    fresh.set_autosave_policy(AutosavePolicy.disabled())
    with pytest.raises(RegistryError) as closing:  # the Run close cannot be journaled: said loudly
        with fresh.run() as run:
            run.log_parameter("i", 1)
    assert "corrupt" in str(closing.value) and str(registry_root / DB) in str(closing.value)
    with pytest.raises(RegistryError) as committing:
        fresh.commit()
    assert "corrupt" in str(committing.value)
    with pytest.raises(RegistryCorruptError):
        gc(delete=True, grace_period="0s", exclusive=True)
    assert _db_state(registry_root) == state  # not one byte written into the damaged index
    proc = _cli(registry_root, "list")
    assert "warning:" in proc.stderr and "recover" in proc.stderr

    # another process learns it from the marker, before touching a damaged page
    script = (
        "from ommx_experiment import Experiment\nfrom ommx_experiment.errors import RegistryCorruptError\n"
        "e = Experiment('example.com/il/other:v1')\n"
        "try:\n    e.commit()\nexcept RegistryCorruptError as exc:\n    print('refused', exc)\n"
    )
    other = subprocess.run([sys.executable, "-c", script], env=sup.env(registry_root), capture_output=True, text=True)
    assert other.stdout.startswith("refused"), other.stderr
    assert _db_state(registry_root) == state

    report = recover(root=registry_root)
    assert report.state in ("corrupt", "marked corrupt") and report.salvage_errors
    assert report.journal_rows["oxe_journal_runs"] > 0
    conn = sqlite3.connect(registry_root / DB)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert not (registry_root / CORRUPT_MARKER).exists()
    assert [p.name for p in report.moved_aside][0].startswith(DB + ".broken-")
    restored = Experiment.restore_from_checkpoint("example.com/il/draft:v1")
    ids = {r.run_id for r in restored.runs}
    assert 0 < len(ids) < 300  # the rows of the damaged page are lost, the others are back
    assert Experiment.load("example.com/il/c0:v1").runs[0].get_json("p") == {"n": 0}
    again = Experiment("example.com/il/after:v1")
    with again.run() as run:
        run.log_parameter("i", 1)
    again.commit()  # writes work again


_PAGES = ["header", "first-page", "refs-page", *[f"random-{seed}" for seed in range(6)]]


@pytest.mark.parametrize("where", _PAGES)
def test_damage_anywhere_gives_our_error_never_a_raw_sqlite_one(registry_root: Path, where: str) -> None:
    _fresh_process_setup(registry_root, journal_runs=40)
    db = registry_root / DB
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    count = conn.execute("PRAGMA page_count").fetchone()[0]
    refs_pages = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = 'refs'")]
    conn.close()
    rng = random.Random(where)
    with open(db, "r+b") as fh:
        if where == "header":
            fh.write(rng.randbytes(100))
        else:
            pageno = 1 if where == "first-page" else refs_pages[0] if where == "refs-page" else rng.randrange(1, count + 1)
            fh.seek((pageno - 1) * page + (100 if pageno == 1 else 0))
            fh.write(rng.randbytes(page - (100 if pageno == 1 else 0)))
    script = """
import json, sqlite3
from ommx_experiment import Experiment, list_experiments, gc
from ommx_experiment.errors import OmmxExperimentError
out = {}
def attempt(label, fn):
    try:
        fn()
        out[label] = "ok"
    except OmmxExperimentError as exc:
        out[label] = type(exc).__name__
    except sqlite3.Error as exc:
        out[label] = "RAW " + repr(exc)
attempt("list", list_experiments)
attempt("load", lambda: Experiment.load("example.com/il/c0:v1").runs[0].get_json("p"))
attempt("restore", lambda: Experiment.restore_from_checkpoint("example.com/il/draft:v1").runs)
def commit():
    e = Experiment("example.com/il/fuzz:v1")
    with e.run() as r:
        r.log_parameter("i", 1)
    e.commit()
attempt("commit", commit)
attempt("gc", lambda: gc(delete=True, grace_period="0s", exclusive=True))
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", script], env=sup.env(registry_root), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not [v for v in out.values() if v.startswith("RAW")], out
    report = recover(root=registry_root)
    if report.rebuilt:
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
    assert Experiment.load("example.com/il/c1:v1").runs[0].get_json("p") == {"n": 1}
