"""This process's connections to ``index.sqlite3`` (spec/registry.md §4a), on the ommx 2.9 runtime.

The hazards themselves need OMMX 3's SQLite in the process (tests/engine/test_index_db_ommx3.py);
here the same situations are made by hand: what OMMX's last close does to the files is a full
checkpoint, then unlinking ``-wal`` and ``-shm``.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.procfs import deleted_index_fds
from workers.registry_worker import store_generic

from ommx_experiment.engine import index_db
from ommx_experiment.engine.registry import LocalRegistry

OCTET = "application/octet-stream"


def _refs_seen_by_another_process(root: Path) -> list[str]:
    code = (
        "import json, sqlite3, sys; "
        "print(json.dumps(sorted(r[0] for r in sqlite3.connect(sys.argv[1]).execute('SELECT name FROM refs'))))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(root / "index.sqlite3")], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


MODES = pytest.mark.parametrize("ofd", [True, False], ids=["ofd", "fallback"])


@MODES
def test_our_closes_never_checkpoint_or_unlink(registry_root: Path, monkeypatch: pytest.MonkeyPatch, ofd: bool) -> None:
    """Closing every connection leaves ``-wal``/``-shm`` in place: another library may be using them.

    With the keepers' open file description locks our own SQLite cannot take
    EXCLUSIVE; in the fallback the read-only sentinel, closed last, holds SHARED.
    """
    monkeypatch.setattr(index_db, "OFD_LOCKS", ofd)
    reg = LocalRegistry.at(registry_root)
    reg.publish("example.com/ours/a:v1", store_generic(reg, [(OCTET, b"a")]))
    wal = registry_root / "index.sqlite3-wal"
    inode = wal.stat().st_ino
    reg.close()
    assert wal.stat().st_ino == inode and wal.stat().st_size > 0
    assert (registry_root / "index.sqlite3-shm").exists()
    assert _refs_seen_by_another_process(registry_root) == ["example.com/ours/a"]
    assert reg.db.connections.ofd is False  # closed: the keepers' locks are released too


def _close_last_elsewhere(root: Path) -> None:
    """Another process opens, reads and closes the database: SQLite's last close unless a lock stops it."""
    code = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT count(*) FROM refs').fetchone(); c.close()"
    subprocess.run([sys.executable, "-c", code, str(root / "index.sqlite3")], check=True)


@MODES
def test_closing_any_descriptor_of_the_file_keeps_our_lock(
    registry_root: Path, monkeypatch: pytest.MonkeyPatch, ofd: bool
) -> None:
    """What another library's close does to the process's POSIX locks, made by hand (hazard 3 of §4a).

    Closing any descriptor of the file drops every POSIX lock of the process on it,
    our SQLite's SHARED included; then another process's last close checkpoints and
    unlinks the ``-wal`` under our connections. The fallback (its checks off here, as
    on the ommx 2.9 runtime) shows that hazard; the keepers' open file description
    locks are not dropped, so the other process cannot unlink.
    """
    monkeypatch.setattr(index_db, "OFD_LOCKS", ofd)
    reg = LocalRegistry.at(registry_root)
    digest = store_generic(reg, [(OCTET, b"a")])
    reg.publish("example.com/ours/a:v1", digest)
    assert reg.db.connections.ofd is ofd
    for name in ("index.sqlite3", "index.sqlite3-shm"):
        os.close(os.open(registry_root / name, os.O_RDONLY))
    _close_last_elsewhere(registry_root)
    if ofd:
        assert deleted_index_fds() == []
        assert (registry_root / "index.sqlite3-wal").exists()
    else:
        assert "index.sqlite3-wal (deleted)" in deleted_index_fds()  # the hazard
        reg.close()
        reg = LocalRegistry.at(registry_root)
    reg.publish("example.com/ours/b:v1", digest)
    assert _refs_seen_by_another_process(registry_root) == ["example.com/ours/a", "example.com/ours/b"]


def test_a_file_system_refusing_ofd_locks_gets_the_fallback(registry_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail safe: when taking the keepers' locks fails, the sentinel and the checks take over for that file."""
    monkeypatch.setattr(index_db, "OFD_LOCKS", True)

    def refuse(fd: int, start: int, length: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(index_db, "_ofd_read_lock", refuse)
    reg = LocalRegistry.at(registry_root)
    reg.publish("example.com/ours/a:v1", store_generic(reg, [(OCTET, b"a")]))
    shared = reg.db.connections
    assert shared.ofd is False and shared._sentinel is not None and shared._keep_wal >= 0
    wal = registry_root / "index.sqlite3-wal"
    inode = wal.stat().st_ino
    reg.close()
    assert wal.stat().st_ino == inode  # the sentinel kept our close from unlinking
    assert _refs_seen_by_another_process(registry_root) == ["example.com/ours/a"]


def test_an_unlinked_wal_makes_the_next_operation_reopen(registry_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback of platforms without open file description locks: the check before each operation."""
    monkeypatch.setattr(index_db, "OFD_LOCKS", False)
    monkeypatch.setattr(index_db, "other_sqlite_loaded", lambda: True)
    reg = LocalRegistry.at(registry_root)
    digest = store_generic(reg, [(OCTET, b"a")])
    reg.publish("example.com/ours/a:v1", digest)
    shared = reg.db.connections
    reopens = shared.reopens
    # What OMMX's SQLite does when its last connection closes and no other process holds the file.
    reg.db.query("PRAGMA wal_checkpoint(TRUNCATE)")
    os.unlink(registry_root / "index.sqlite3-wal")
    os.unlink(registry_root / "index.sqlite3-shm")
    assert deleted_index_fds()
    reg.publish("example.com/ours/b:v1", digest)
    assert shared.reopens == reopens + 1
    assert deleted_index_fds() == []
    assert _refs_seen_by_another_process(registry_root) == ["example.com/ours/a", "example.com/ours/b"]


def test_every_database_of_a_file_shares_one_set_of_connections(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    first = LocalRegistry(root)
    second = LocalRegistry(tmp_path / "." / "reg")
    assert first.db.connections is second.db.connections
    second.close()  # the other handle just reopens
    first.publish("example.com/ours/a:v1", store_generic(first, [(OCTET, b"a")]))
    assert [str(r.image_name) for r in second.list_refs()] == ["example.com/ours/a:v1"]
    first.close()


def test_a_forked_child_opens_its_own_connections(registry_root: Path) -> None:
    reg = LocalRegistry.at(registry_root)
    digest = store_generic(reg, [(OCTET, b"a")])
    reg.publish("example.com/ours/parent:v1", digest)
    pid = os.fork()
    if pid == 0:  # the child: the parent's connections are not its own
        code = 1
        try:
            reg.publish("example.com/ours/child:v1", digest)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    reg.publish("example.com/ours/after:v1", digest)
    assert sorted(str(r.image_name) for r in reg.list_refs()) == [
        "example.com/ours/after:v1", "example.com/ours/child:v1", "example.com/ours/parent:v1",
    ]
    with sqlite3.connect(registry_root / "index.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_transaction_left_open_by_an_interrupted_operation_is_rolled_back(registry_root: Path) -> None:
    """E.g. a KeyboardInterrupt between ``BEGIN`` and the body: the next operation never reuses its snapshot."""
    reg = LocalRegistry.at(registry_root)
    digest = store_generic(reg, [(OCTET, b"a")])
    with reg.db.connections.operation(index_db.MAIN) as conn:
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM refs").fetchone()  # a read snapshot, never ended
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "c.execute(\"INSERT INTO refs VALUES ('example.com/other/a', 'v1', ?, '2026-01-01T00:00:00+00:00')\", (sys.argv[2],))"
    )
    subprocess.run([sys.executable, "-c", code, str(registry_root / "index.sqlite3"), digest], check=True)
    assert [str(r.image_name) for r in reg.list_refs()] == ["example.com/other/a:v1"]
