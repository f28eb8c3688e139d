"""One process, two SQLite libraries: our ``sqlite3`` and OMMX 3's bundled copy on one ``index.sqlite3``.

Each test replays one hazard of spec/registry.md §4a deterministically, in a
process running OUR package on the OMMX 3.0.0b7 side venv, and then checks the
root from fresh processes of both libraries. Each first proves that the hazard
really happens to a connection without our protection (a plain ``sqlite3``
connection, or OMMX's own), so a change of OMMX's behaviour shows up as a failure
instead of a silent pass. Each runs twice: with the keepers' open file
description locks (``ofd``, the design on Linux) and with the fallback of other
platforms (``fallback``: the sentinel and the per-operation checks).
"""

from __future__ import annotations

import inspect
import json
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import pytest
from helpers import procfs
from helpers.ours_on_ommx3 import OursOnOmmx3

# The /proc helpers (deleted descriptors, POSIX and OFD locks), then what the OMMX-side scripts share.
PROC = inspect.getsource(procfs) + """
def hazard_to_a_plain_connection(db):   # a plain connection's descriptors once OMMX's listing closed its last one
    import sqlite3
    import ommx.experiment as oe
    plain = sqlite3.connect(db)
    plain.execute("SELECT count(*) FROM refs").fetchone()
    oe.list_experiments()
    held = deleted_index_fds()
    plain.close()
    return held

def commit(lib, name):
    with lib.Experiment(name) as e:
        with e.run() as r:
            r.log_parameter("x", 1)
"""

_LIST_BOTH = """
import json, ommx.experiment as oe, ommx_experiment as ox
print(json.dumps({"ommx": sorted(e.image_name for e in oe.list_experiments()),
                  "ours": sorted(e.image_name for e in ox.list_experiments())}))
"""


MODES = pytest.mark.parametrize("mode", ["ofd", "fallback"])
SHARED_RANGE = procfs.SHARED


def _prelude(mode: str) -> str:
    """The script's helpers, and for ``fallback`` the design of platforms without open file description locks."""
    if mode == "fallback":
        return PROC + "from ommx_experiment.engine import index_db\nindex_db.OFD_LOCKS = False\n"
    return PROC


def _names(*short: str) -> list[str]:
    return sorted(f"example.com/shared/{s}:v1" for s in short)


def _assert_root(ours3: OursOnOmmx3, root: Path, expected: list[str]) -> None:
    listed = ours3.run_json(_LIST_BOTH, root=root)
    assert listed == {"ommx": expected, "ours": expected}
    with sqlite3.connect(root / "index.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _commit_elsewhere(ours3: OursOnOmmx3, root: Path, name: str) -> None:
    ours3.run(PROC + f"import ommx.experiment as oe\ncommit(oe, {name!r})\n", root=root)


@MODES
def test_ommx_listing_unlinks_the_wal_and_our_next_commit_reopens(
    ours3: OursOnOmmx3, registry_root: Path, mode: str
) -> None:
    """The issue's reproduction: OMMX's last close unlinks the -wal under our connections.

    Before §4a, ``b`` went into the unlinked WAL (invisible to everyone) and this
    process's exit checkpointed that orphan over ``d``, committed meanwhile by
    another process: a fresh process did not list ``d``. First proven on a plain
    connection. With the keepers' locks (``ofd``) OMMX's close cannot unlink at all:
    no descriptor on a deleted file at any point. The fallback reopens at our next
    call, so only after OMMX's call is such a descriptor held.
    """
    _commit_elsewhere(ours3, registry_root, "example.com/shared/a:v1")
    script = _prelude(mode) + textwrap.dedent(
        """
        import json, sys
        import ommx.experiment as oe, ommx_experiment as ox
        hazard = hazard_to_a_plain_connection(os.path.join(os.environ["OMMX_LOCAL_REGISTRY_ROOT"], "index.sqlite3"))
        commit(ox, "example.com/shared/b:v1")
        oe.list_experiments()                      # OMMX's last connection closes
        after_ommx = deleted_index_fds()
        commit(ox, "example.com/shared/c:v1")
        after_ours = deleted_index_fds()
        seen = sorted(e.image_name for e in oe.list_experiments())
        after_ommx += deleted_index_fds()
        print(json.dumps({"hazard": hazard, "after_ommx": after_ommx, "after_ours": after_ours, "ommx_sees": seen}),
              flush=True)
        sys.stdin.readline()                       # another process commits d meanwhile
        ox.list_experiments()
        print(json.dumps({"at_exit": deleted_index_fds()}), flush=True)
        """
    )
    proc = subprocess.Popen(
        [str(ours3.python), "-c", script], env=ours3.env(registry_root), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    first = proc.stdout.readline()
    assert first, proc.communicate(timeout=120)[1]
    report = json.loads(first)
    assert "index.sqlite3-wal (deleted)" in report["hazard"]  # the hazard happens to a plain connection
    if mode == "ofd":
        assert report["after_ommx"] == []
    else:
        assert "index.sqlite3-wal (deleted)" in report["after_ommx"]
    assert report["after_ours"] == []
    assert report["ommx_sees"] == _names("a", "b", "c")
    _commit_elsewhere(ours3, registry_root, "example.com/shared/d:v1")
    out, err = proc.communicate("\n", timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"at_exit": []}
    _assert_root(ours3, registry_root, _names("a", "b", "c", "d"))


@MODES
def test_our_close_never_unlinks_the_wal_ommx_is_using(
    ours3: OursOnOmmx3, registry_root: Path, tmp_path: Path, mode: str
) -> None:
    """OMMX's long-lived connection stays on the -wal when we close every connection of ours.

    Before §4a our last close checkpointed and unlinked the WAL under OMMX's
    connection, and OMMX's next commit ``y`` vanished. First proven with a plain
    connection's close on another root.
    """
    hazard = PROC + textwrap.dedent(
        """
        import json, sqlite3
        import ommx.experiment as oe
        commit(oe, "example.com/shared/x:v1")      # OMMX keeps its default-registry connection open
        plain = sqlite3.connect(os.path.join(os.environ["OMMX_LOCAL_REGISTRY_ROOT"], "index.sqlite3"))
        plain.execute("SELECT count(*) FROM refs").fetchone()
        plain.close()                              # the only connection of its library: checkpoint + unlink
        print(json.dumps(deleted_index_fds()))
        """
    )
    assert "index.sqlite3-wal (deleted)" in ours3.run_json(hazard, root=tmp_path / "scratch")
    script = _prelude(mode) + textwrap.dedent(
        """
        import json
        import ommx.experiment as oe, ommx_experiment as ox
        from ommx_experiment.engine.registry import LocalRegistry
        commit(oe, "example.com/shared/x:v1")      # OMMX keeps its default-registry connection open
        ox.Experiment.load("example.com/shared/x:v1")
        LocalRegistry.default().close()            # our only connection to the file
        after_read = deleted_index_fds()
        commit(oe, "example.com/shared/y:v1")
        commit(ox, "example.com/shared/ours:v1")   # the journal's connection too
        LocalRegistry.default().close()
        after_commit = deleted_index_fds()
        commit(oe, "example.com/shared/z:v1")
        print(json.dumps({"after_read": after_read, "after_commit": after_commit, "end": deleted_index_fds()}))
        """
    )
    assert ours3.run_json(script, root=registry_root) == {"after_read": [], "after_commit": [], "end": []}
    _assert_root(ours3, registry_root, _names("ours", "x", "y", "z"))


@MODES
def test_locks_dropped_by_ommx_are_taken_back_by_our_next_operation(
    ours3: OursOnOmmx3, registry_root: Path, mode: str
) -> None:
    """OMMX's close of its file descriptor drops the process's POSIX locks, our SQLite's included.

    Without a SHARED lock of ours, another process closing the database last takes
    EXCLUSIVE, checkpoints and unlinks the -wal under our open connections. With
    the keepers' open file description locks (``ofd``) the lock never goes away;
    the fallback takes it back at our next operation.
    """
    script = _prelude(mode) + textwrap.dedent(
        """
        import json, subprocess, sys
        import ommx.experiment as oe, ommx_experiment as ox
        commit(ox, "example.com/shared/a:v1")
        db = ox.LocalRegistry.default().db.path
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
             "c.execute('SELECT count(*) FROM refs').fetchone(); print('open', flush=True); sys.stdin.readline()",
             str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        holder.stdout.readline()
        def shared_held():
            return SHARED in held_locks(db) or SHARED in ofd_locks(db)
        before = SHARED in held_locks(db)
        oe.list_experiments()                      # not the last process: no unlink, but POSIX locks are gone
        dropped = SHARED not in held_locks(db)
        kept = shared_held()
        ox.list_experiments()
        retaken = shared_held()
        holder.communicate("\\n")                   # its close would unlink the -wal if we held no lock
        after_holder = deleted_index_fds()
        commit(ox, "example.com/shared/b:v1")
        print(json.dumps({"before": before, "dropped": dropped, "kept": kept, "retaken": retaken,
                          "after_holder": after_holder, "after_commit": deleted_index_fds()}))
        """
    )
    report = ours3.run_json(script, root=registry_root)
    assert report == {
        "before": True, "dropped": True, "kept": mode == "ofd", "retaken": True,
        "after_holder": [], "after_commit": [],
    }
    _assert_root(ours3, registry_root, _names("a", "b"))


@MODES
def test_after_our_close_ommx_connection_keeps_a_lock(ours3: OursOnOmmx3, registry_root: Path, mode: str) -> None:
    """Our ``close()`` drops the POSIX locks of OMMX's long-lived connection (closing our descriptors).

    Then a last close in another process unlinks the -wal under OMMX's connection
    (the fallback shows it). With ``ofd`` the keepers' locks stay parked while OMMX
    has the file open, so that close cannot unlink; our next open takes new ones and
    releases the parked ones.
    """
    script = _prelude(mode) + textwrap.dedent(
        """
        import json, subprocess, sys
        import ommx.experiment as oe, ommx_experiment as ox
        from ommx_experiment.engine.registry import LocalRegistry
        commit(oe, "example.com/shared/x:v1")      # OMMX keeps its default-registry connection open
        commit(ox, "example.com/shared/ours:v1")
        db = str(LocalRegistry.default().db.path)
        LocalRegistry.default().close()
        report = {"posix_dropped": SHARED not in held_locks(db), "parked": SHARED in ofd_locks(db)}
        subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                        "c.execute('SELECT count(*) FROM refs').fetchone(); c.close()", db], check=True)
        report["after_other_close"] = deleted_index_fds()
        if not report["after_other_close"]:
            commit(oe, "example.com/shared/y:v1")
            ox.list_experiments()                  # reopens: new keepers, the parked ones released
            report["ofd_after_reopen"] = ofd_locks(db)
        print(json.dumps(report))
        """
    )
    report = ours3.run_json(script, root=registry_root)
    if mode == "fallback":
        assert report["posix_dropped"] is True and report["parked"] is False
        assert "index.sqlite3-wal (deleted)" in report["after_other_close"]  # the hazard: OMMX's -wal unlinked
        return
    assert report == {
        "posix_dropped": True, "parked": True, "after_other_close": [], "ofd_after_reopen": [SHARED_RANGE],
    }
    _assert_root(ours3, registry_root, _names("ours", "x", "y"))
