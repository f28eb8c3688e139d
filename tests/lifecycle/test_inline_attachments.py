"""Inline attachments (spec/experiment.md, "Inline attachments"): real processes, real SIGKILL, real tmpfs.

A Run attachment up to ``INLINE_MAX_BYTES`` logged from memory is not written to
``blobs/sha256`` when it is logged: its bytes ride in the writer's open-run log and
the deferred close, and reach the store (pinned in the same publish window) with
the batch that writes the run's row. Every reader must get the bytes before that.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.processes import Writer, tmpfs

import ommx_experiment
from ommx_experiment import AutosavePolicy, Experiment, LocalRegistry
from ommx_experiment.engine.digest import sha256_digest
from ommx_experiment.engine.root import _reset_for_tests
from ommx_experiment.errors import JournalWriteError, RegistryError
from ommx_experiment.format.run_log import read_log_state

NAME = "example.com/inline/attach:v1"
SRC = Path(ommx_experiment.__file__).resolve().parents[1]  # children import the package this test imports


def _payload(seed: int) -> bytes:
    return bytes((seed * 7 + i) % 256 for i in range(1000 + seed))


def _stored(root: Path, data: bytes) -> bool:
    return (root / "blobs" / "sha256" / sha256_digest(data).removeprefix("sha256:")).exists()


def _sweep_with_every_close_deferred(monkeypatch: pytest.MonkeyPatch, n: int) -> Experiment:
    """``n`` runs with one small attachment each, no batch due by count or timer: the first close
    writes its row (a new column), the other ``n - 1`` stay deferred."""
    from ommx_experiment.lifecycle import session as session_module

    monkeypatch.setattr(session_module, "GROUP_COMMIT_SECONDS", 3600.0)
    monkeypatch.setattr(session_module, "GROUP_COMMIT_RUNS", 10**9)
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    for i in range(n):
        with exp.run() as run:
            run.log_parameter("i", i)
            run.log_attachment("raw", "application/octet-stream", _payload(i))
    return exp


def _held_writer_with_attachments(writers: Any, seeds: list[int]) -> tuple[Writer, list[int]]:
    """A writer whose runs each logged one parameter and two small attachments; every close but the first is deferred."""
    a = writers()
    assert a.ask("hold") == {"ok": True}
    assert a.ask("join", NAME) == {"ok": True}
    ids = []
    for seed in seeds:
        run_id = a.ask("open", "seed", seed)["run_id"]
        assert a.ask("attach", run_id, "raw", _payload(seed).hex()) == {"ok": True}
        assert a.ask("close", run_id) == {"ok": True}
        ids.append(run_id)
    return a, ids


def test_deferred_inline_attachments_are_read_by_another_process_and_committed_by_it(
    writers: Any, registry_root: Path, ommx3: Any
) -> None:
    seeds = [1, 2, 3, 4]
    a, ids = _held_writer_with_attachments(writers, seeds)
    assert a.ask("deferred") == {"deferred": 3}
    assert not _stored(registry_root, _payload(2))  # inline: not in the blob store before the batch
    here = Experiment.join(NAME)
    got = {r.run_id: r.get_blob("raw") for r in here.runs}
    assert got == {i: _payload(s) for i, s in zip(ids, seeds, strict=True)}
    assert [r.get_json("raw.json")["hex"] for r in here.runs] == [_payload(s).hex() for s in seeds]
    art = here.commit()  # quiesces a; the inline bytes of its deferred closes are stored by this commit
    a.exit()
    loaded = Experiment.load(NAME)
    assert [r.get_blob("raw") for r in loaded.runs] == [_payload(s) for s in seeds]
    for s in seeds:  # digest-equal to what OMMX 3 stores for the same bytes: the layer is the bytes' sha256
        assert _stored(registry_root, _payload(s))
    loaded3 = ommx3.run_json(
        "import json\nfrom ommx.experiment import Experiment\n"
        f"e = Experiment.load({NAME!r})\n"
        "print(json.dumps([r.get_blob('raw').hex() for r in e.runs]))\n",
        root=registry_root,
    )
    assert loaded3 == [_payload(s).hex() for s in seeds]
    assert Experiment.load(NAME).artifact.manifest_digest == art.manifest_digest


def _pin_manifests(root: Path) -> list[str]:
    """Digests of the generic-artifact manifests in the store (pins: our commits are experiments)."""
    found = []
    for path in (root / "blobs" / "sha256").iterdir():
        if path.name.startswith(".") or path.stat().st_size < 64:
            continue
        head = path.read_bytes()[:4096]
        if b'"artifactType":"application/org.ommx.v1.artifact"' in head.replace(b" ", b""):
            found.append(path.name)
    return found


def test_a_commit_takes_its_own_deferred_closes_without_writing_a_batch(
    registry_root: Path, ommx3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """spec/experiment.md, "Commit": the committer's deferred closes (and their inline bytes) go into the
    commit straight from its view: no rows, no pin manifest over their blobs; OMMX 3 loads every run."""
    exp = _sweep_with_every_close_deferred(monkeypatch, 40)
    journal = exp._session_or_raise().journal
    assert len(journal.deferred) == 39 and journal.log is not None
    log = Path(journal.log.path)
    art = exp.commit()
    pinned = "".join((registry_root / "blobs" / "sha256" / d).read_text() for d in _pin_manifests(registry_root))
    deferred = [sha256_digest(_payload(i)) for i in range(1, 40)]
    assert sha256_digest(_payload(0)) in pinned  # the first close's pin: the manifests were found
    assert not [d for d in deferred if d in pinned]  # no batch pinned the deferred closes' blobs
    assert not log.exists() or read_log_state(log) == ({}, {})  # no closed run left for a recovery to bring back
    loaded = Experiment.load(NAME)
    assert [r.get_blob("raw") for r in loaded.runs] == [_payload(i) for i in range(40)]
    loaded3 = ommx3.run_json(
        "import json\nfrom ommx.experiment import Experiment\n"
        f"e = Experiment.load({NAME!r})\n"
        "print(json.dumps([r.get_blob('raw').hex() for r in e.runs]))\n",
        root=registry_root,
    )
    assert loaded3 == [_payload(i).hex() for i in range(40)]
    assert loaded.artifact.manifest_digest == art.manifest_digest


def test_sigkill_with_deferred_inline_attachments_brings_the_bytes_back(writers: Any, registry_root: Path) -> None:
    a, ids = _held_writer_with_attachments(writers, [5, 6, 7])
    open_id = a.ask("open", "seed", 8)["run_id"]
    assert a.ask("attach", open_id, "raw", _payload(8).hex()) == {"ok": True}
    a.kill()
    assert not _stored(registry_root, _payload(6)) and not _stored(registry_root, _payload(8))
    here = Experiment.join(NAME)  # recovery: deferred closes as closed runs, the open one as interrupted
    by_id = {r.run_id: r for r in here.runs}
    assert sorted(by_id) == sorted([*ids, open_id])
    assert [by_id[i].status for i in ids] == ["finished"] * 3 and by_id[open_id].status == "interrupted"
    for run_id, seed in zip([*ids, open_id], [5, 6, 7, 8], strict=True):
        assert by_id[run_id].get_blob("raw") == _payload(seed)
        assert by_id[run_id].get_json("raw.json") == {"hex": _payload(seed).hex()}
    here.commit()
    loaded = Experiment.load(NAME)
    assert [r.get_blob("raw") for r in loaded.runs] == [_payload(s) for s in (5, 6, 7, 8)]


def test_a_batch_of_inline_attachments_on_a_full_disk_raises_naming_the_runs_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tmpfs(tmp_path / "disk", "6m") as disk:
        root = disk / "registry"
        monkeypatch.setenv("OMMX_LOCAL_REGISTRY_ROOT", str(root))
        _reset_for_tests()
        exp = _sweep_with_every_close_deferred(monkeypatch, 200)
        assert len(exp._session_or_raise().journal.deferred) == 199
        filler = disk / "filler"
        with filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 4096)
        with pytest.raises(JournalWriteError, match=r"Run\(s\) 1, 2, 3, .*, 199 of .* were closed but not saved"):
            exp._session_or_raise().flush_pending()  # the batch (a due close, the timer, discard_run, exit)
        assert len(exp._session_or_raise().journal.deferred) == 199  # kept for the retry
        with pytest.raises(RegistryError, match=r"full|space"):  # the commit (it writes no batch) fails loudly too
            exp.commit()
        assert len(exp._session_or_raise().journal.deferred) == 199
        assert [r.get_blob("raw") for r in exp.runs] == [_payload(i) for i in range(200)]
        filler.unlink()
        exp.commit()
        loaded = Experiment.load(NAME)
        assert [r.get_blob("raw") for r in loaded.runs] == [_payload(i) for i in range(200)]
        del exp, loaded
        _reset_for_tests()


_SWEEP = """
import json, sys
from ommx_experiment import Experiment, AutosavePolicy
exp = Experiment({name!r})
exp.set_autosave_policy(AutosavePolicy.disabled())
for i in range({n}):
    with exp.run() as run:
        run.log_parameter("i", i)
        run.log_attachment("raw", "application/octet-stream", b"%06d" % i * 100)
        run.log_json("cfg", {{"i": i}})
print(json.dumps({{"digest": exp.commit().manifest_digest}}))
"""

_OMMX_GC_LOOP = """
import json, os
from ommx.artifact import gc
passes, errors = 0, []
while not os.path.exists({stop!r}):
    try:
        gc(delete=True, grace_period="0s")
    except Exception as exc:
        errors.append(repr(exc))
    passes += 1
print(json.dumps({{"passes": passes, "errors": errors}}))
"""


@pytest.mark.ommx3
def test_ommx_zero_grace_gc_during_a_sweep_never_loses_an_inline_attachment(ommx3: Any, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    stop = tmp_path / "stop"
    LocalRegistry.at(root)
    gc_loop = subprocess.Popen(
        [str(ommx3.python), "-c", _OMMX_GC_LOOP.format(stop=str(stop))],
        env=ommx3.env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    n = 600
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONPATH=str(SRC))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _SWEEP.format(name=NAME, n=n)], env=env, capture_output=True, text=True, timeout=600
        )
    finally:
        stop.touch()
        out, err = gc_loop.communicate(timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.strip().splitlines()[-1])
    assert report["errors"] == [] and report["passes"] > 0, (report, err)
    check = (
        "import json\nfrom MODULE import Experiment\n"
        f"e = Experiment.load({NAME!r})\n"
        "print(json.dumps(sum(r.get_blob('raw') == b'%06d' % i * 100 and r.get_json('cfg') == {'i': i} for i, r in enumerate(e.runs))))\n"
    )
    ours = subprocess.run([sys.executable, "-c", check.replace("MODULE", "ommx_experiment")], env=env, capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout.strip().splitlines()[-1]) == n
    assert ommx3.run_json(check.replace("MODULE", "ommx.experiment"), root=root) == n


def test_the_lease_file_stays_small_over_many_closes_with_attachments(registry_root: Path) -> None:
    """Every ref write releases its blobs inside the publish window, where compaction cannot take
    the GC lock; the window's end compacts. Without it the file grew ~300 B per close."""
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    for i in range(400):
        with exp.run() as run:
            run.log_attachment("big", "application/octet-stream", b"%08d" % i * 10_000)  # 80 KB: stored at once
    leases = list((registry_root / ".oxe-leases").glob("*.lease"))
    assert leases and sum(p.stat().st_size for p in leases) < 80 * 1024  # compacted past 64 KiB
    exp.commit()


def test_a_process_exiting_with_deferred_inline_closes_journals_them_and_releases_its_writer(registry_root: Path) -> None:
    """The exit flush stores the batch's inline blobs after the interpreter shut its thread pools
    down: the blob writes run in the exiting thread (they raised "cannot schedule new futures
    after shutdown", leaving the closes in the log and the writer's files behind)."""
    root = registry_root
    env = dict(os.environ, PYTHONPATH=str(SRC))
    script = (
        "from ommx_experiment import Experiment\n"
        f"exp = Experiment.join({NAME!r})\n"
        "for i in range(10):\n"
        "    with exp.run() as run:\n"
        "        run.log_parameter('i', i)\n"
        "        run.log_json('cfg', {'i': i})\n"  # no commit: the closes are still deferred at exit
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert "not released cleanly" not in done.stderr and "not written" not in done.stderr, done.stderr
    assert list((root / ".oxe-writers").iterdir()) == []  # released: nothing left for recovery
    for i in range(10):  # stored by the exit flush, with the rows that name them
        assert _stored(root, json.dumps({"i": i}).encode())
    exp = Experiment.join(NAME)
    assert [json.loads(run.get_blob("cfg"))["i"] for run in exp.runs] == list(range(10))
    exp.commit()


# a 1,500-run sweep whose rows (~1.4 MB) grow the WAL past EXIT_CHECKPOINT_WAL_BYTES, then commit
_WAL_SWEEP = (
    "from ommx_experiment import Experiment, AutosavePolicy\n"
    f"exp = Experiment({NAME!r})\n"
    "exp.set_autosave_policy(AutosavePolicy.disabled())\n"
    "for i in range(1500):\n"
    "    with exp.run() as run:\n"
    "        run.log_parameter('pad', 'x' * 900 + str(i))\n"
    "exp.commit()\n"
)


def test_a_large_wal_is_truncated_at_exit(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONPATH=str(SRC))
    subprocess.run([sys.executable, "-c", _WAL_SWEEP], env=env, check=True, timeout=600)
    wal = root / "index.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size <= 1 << 20



def test_exit_does_not_wait_for_a_reader_to_truncate_the_wal(tmp_path: Path) -> None:
    """The exit checkpoint is best effort: a reader on an older snapshot (another process) makes it
    skip, not wait BUSY_TIMEOUT_MS (60 s) in the busy handler."""
    import sqlite3

    root = tmp_path / "registry"
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONPATH=str(SRC))
    subprocess.run([sys.executable, "-c", "from ommx_experiment import LocalRegistry; LocalRegistry.default()"],
                   env=env, check=True, timeout=120)
    reader = sqlite3.connect(root / "index.sqlite3", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM refs").fetchone()  # a snapshot older than what follows
        subprocess.run([sys.executable, "-c", _WAL_SWEEP], env=env, check=True, timeout=45)  # 60 s if exit waited
        wal = root / "index.sqlite3-wal"
        assert wal.exists() and wal.stat().st_size > 1 << 20, "the reader did not keep the WAL: nothing was tested"
    finally:
        reader.execute("COMMIT")
        reader.close()

def _free_bytes(index: Path) -> tuple[int, int]:
    """(free, used) bytes of an index file, read by a plain connection."""
    import sqlite3

    conn = sqlite3.connect(index)
    try:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    return free * size, (pages - free) * size


def test_free_pages_of_a_committed_journal_are_given_back_at_exit(tmp_path: Path) -> None:
    """The 1,500 run rows the commit dropped (~1.4 MB) leave no free pages behind once the process exited."""
    root = tmp_path / "registry"
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONPATH=str(SRC))
    subprocess.run([sys.executable, "-c", _WAL_SWEEP], env=env, check=True, timeout=600)
    free, used = _free_bytes(root / "index.sqlite3")
    assert free < 256 << 10, (free, used)
    check = (f"from ommx_experiment import Experiment\n"
             f"assert len(Experiment.load({NAME!r}).runs) == 1500\n"
             "import sqlite3, os\n"
             "c = sqlite3.connect(os.path.join(os.environ['OMMX_LOCAL_REGISTRY_ROOT'], 'index.sqlite3'))\n"
             "assert c.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'\n")
    subprocess.run([sys.executable, "-c", check], env=env, check=True, timeout=120)


_SWEEP_THEN_WAIT = _WAL_SWEEP + (
    "from ommx_experiment.format.journal_sweep import wait_for_sweeps\n"
    "import sys\n"
    "wait_for_sweeps()\n"
    "print('committed', flush=True)\n"
    "sys.stdin.readline()\n"
)


def test_exit_does_not_wait_for_a_writer_to_give_free_pages_back(tmp_path: Path) -> None:
    """The exit VACUUM is best effort: a writer holding the lock (another process) makes it skip,
    not wait BUSY_TIMEOUT_MS (60 s); the pages stay free for the next rows."""
    import sqlite3

    root = tmp_path / "registry"
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONPATH=str(SRC))
    proc = subprocess.Popen([sys.executable, "-c", _SWEEP_THEN_WAIT], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "committed"
    writer = sqlite3.connect(root / "index.sqlite3", isolation_level=None, timeout=60)
    try:
        writer.execute("BEGIN IMMEDIATE")
        assert proc.communicate("\n", timeout=45)[1] is None  # 60 s if exit waited for the lock
        assert proc.returncode == 0
        writer.execute("COMMIT")
        free, used = _free_bytes(root / "index.sqlite3")
        assert free >= 256 << 10 and 4 * free >= used, "no free pages were left to give back: nothing was tested"
    finally:
        if writer.in_transaction:
            writer.execute("ROLLBACK")
        writer.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_index_marked_corrupt_is_not_vacuumed_at_exit(tmp_path: Path) -> None:
    """No write of ours once the index is marked corrupt (spec/registry.md §4): the exit VACUUM neither."""
    from ommx_experiment.engine.index_db import CORRUPT_MARKER

    root = tmp_path / "registry"
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONPATH=str(SRC))
    proc = subprocess.Popen([sys.executable, "-c", _SWEEP_THEN_WAIT], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "committed"
        (root / CORRUPT_MARKER).touch()  # as another process that saw SQLITE_CORRUPT leaves it
        proc.communicate("\n", timeout=120)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    free, used = _free_bytes(root / "index.sqlite3")
    assert free >= 256 << 10 and 4 * free >= used  # left as they were


_EXP_WRITER = """
import os, sys
from ommx_experiment import Experiment
exp = Experiment.join({name!r})
exp.log_json("cfg", {{"pad": "x" * 180}})
exp.log_attachment("raw", "application/octet-stream", bytes(range(256)) * 4)
print("logged", flush=True)
sys.stdin.readline()
"""



def test_experiment_level_inline_attachments_survive_sigkill_and_are_committed_by_another_process(
    registry_root: Path, ommx3: Any
) -> None:
    env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(registry_root), PYTHONPATH=str(SRC))
    proc = subprocess.Popen(
        [sys.executable, "-c", _EXP_WRITER.format(name=NAME)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "logged"
        raw = bytes(range(256)) * 4
        assert not _stored(registry_root, raw)  # inline: in the journal row, not a blob
        here = Experiment.join(NAME)  # another process reads it while the writer lives
        assert here.get_json("cfg") == {"pad": "x" * 180} and here.get_blob("raw") == raw
    finally:
        proc.kill()  # SIGKILL: the row (and its bytes) is in SQLite already
        proc.wait()
    from ommx_experiment import gc

    assert gc(delete=False).missing_blobs == ()  # an inline attachment is not a missing blob
    here = Experiment.join(NAME)
    assert here.get_blob("raw") == raw
    here.commit()
    assert _stored(registry_root, raw)
    loaded = Experiment.load(NAME)
    assert loaded.get_blob("raw") == raw and loaded.get_json("cfg") == {"pad": "x" * 180}
    got = ommx3.run_json(
        "import json\nfrom ommx.experiment import Experiment\n"
        f"e = Experiment.load({NAME!r})\n"
        "print(json.dumps([e.get_json('cfg'), e.get_blob('raw').hex()]))\n",
        root=registry_root,
    )
    assert got == [{"pad": "x" * 180}, raw.hex()]


def test_gc_beside_deferred_and_open_inline_attachments_reports_nothing_missing(writers: Any, registry_root: Path) -> None:
    """The open-run logs name inline digests that are not blobs yet: GC must not root them (it would
    report them missing), and once the batch stored them the rows keep them."""
    from ommx_experiment import gc

    a, _ids = _held_writer_with_attachments(writers, [11, 12])
    open_id = a.ask("open", "seed", 13)["run_id"]
    assert a.ask("attach", open_id, "raw", _payload(13).hex()) == {"ok": True}
    assert not _stored(registry_root, _payload(12)) and not _stored(registry_root, _payload(13))
    report = gc(delete=False)
    assert report.missing_blobs == (), report.missing_blobs
    assert a.ask("close", open_id) == {"ok": True}
    a.exit()  # the batch is written at exit: stored and pinned
    assert _stored(registry_root, _payload(12)) and _stored(registry_root, _payload(13))
    gc(delete=True)
    here = Experiment.join(NAME)
    assert sorted(r.get_blob("raw") for r in here.runs) == sorted(_payload(s) for s in (11, 12, 13))
    assert gc(delete=False).missing_blobs == ()


def test_write_attachment_of_inline_attachments_writes_their_bytes(registry_root: Path, tmp_path: Path) -> None:
    """write_attachment lets the kernel copy stored blobs; inline bytes are not a blob yet."""
    exp = Experiment(NAME)
    exp.set_autosave_policy(AutosavePolicy.disabled())
    exp.log_attachment("top", "application/octet-stream", _payload(21))
    with exp.run() as run:
        run.log_parameter("i", 0)
    with exp.run() as run:  # deferred: its inline bytes wait for the batch
        run.log_parameter("i", 1)
        run.log_attachment("raw", "application/octet-stream", _payload(22))
    assert not _stored(registry_root, _payload(21)) and not _stored(registry_root, _payload(22))
    assert exp.write_attachment("top", tmp_path / "top.bin").read_bytes() == _payload(21)
    assert exp.runs[1].write_attachment("raw", tmp_path / "raw.bin").read_bytes() == _payload(22)
    exp.commit()
    loaded = Experiment.load(NAME)
    assert loaded.runs[1].write_attachment("raw", tmp_path / "raw2.bin").read_bytes() == _payload(22)
