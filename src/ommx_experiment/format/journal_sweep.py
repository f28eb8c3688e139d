"""Run rows a commit left behind, and its WAL checkpoint: done after the commit returned, in a helper thread.

A commit of :data:`SWEEP_LATER_RUNS` runs or more publishes its artifact, then drops its
journal session in one transaction (tombstone, session row, writers, attachments) but
leaves the session's run rows: a 10,000-run session's rows cover ~1,600 pages, and
deleting them was the largest write of the commit. Rows of a session that no longer exists are *orphans*: no reader sees
them (every read goes through the session row), GC counts the blobs they name as roots
(:mod:`~ommx_experiment.format.journal_roots`), and :func:`drop_orphan_runs` deletes them
all, whoever left them. It runs in a daemon thread started when the committing writer
is released; interpreter exit waits for it; a process killed first leaves the orphans
to the next sweep (any later commit). With OMMX 3's SQLite loaded in this process the
sweep runs at once, in the caller's thread (no write of ours while OMMX may be in one).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import TYPE_CHECKING

from ..engine import index_db

if TYPE_CHECKING:
    from ..engine.registry import LocalRegistry

__all__ = ["SWEEP_LATER_RUNS", "drop_orphan_runs", "sweep_orphan_runs_later", "wait_for_sweeps"]

log = logging.getLogger(__name__)

#: From this many runs a commit leaves its run rows (and its WAL checkpoint) to the helper thread;
#: a smaller session's rows go in the commit's own cleanup transaction, and no thread starts.
SWEEP_LATER_RUNS = 256
_ORPHAN_RUNS = "DELETE FROM oxe_journal_runs WHERE session_id NOT IN (SELECT session_id FROM oxe_journal_sessions)"
#: How long interpreter exit waits for a running sweep (it is one short transaction).
EXIT_WAIT_S = 30.0

_threads: list[threading.Thread] = []
_guard = threading.Lock()
_exit_hook_registered = False


def drop_orphan_runs(registry: LocalRegistry) -> int:
    """Delete every run row whose session is gone (one journal transaction); the number deleted.

    The WAL is checkpointed passively first (the commit deferred that:
    ``Database.checkpoint_later``): the deletion then reuses the WAL from its start,
    so the file does not grow, as when the commit's ref write checkpointed it.
    """
    registry.db.checkpoint_passive()
    with registry.db.journal_write("journal: drop the run rows of committed sessions") as conn:
        return int(conn.execute(_ORPHAN_RUNS).rowcount)


def sweep_orphan_runs_later(registry: LocalRegistry) -> None:
    """:func:`drop_orphan_runs` in a daemon thread (at once, here, when OMMX 3's SQLite is loaded)."""
    if index_db.other_sqlite_loaded():
        _quietly(registry)
        return
    thread = threading.Thread(target=_quietly, args=(registry,), name="oxe-journal-sweep", daemon=True)
    with _guard:
        _threads[:] = [t for t in _threads if t.is_alive()]
        _threads.append(thread)
        _register_exit_hook()
    thread.start()


def wait_for_sweeps(timeout: float | None = None) -> None:
    """Wait for the sweeps this process started (interpreter exit calls it)."""
    with _guard:
        threads = list(_threads)
    for thread in threads:
        thread.join(timeout)


def _quietly(registry: LocalRegistry) -> None:
    try:
        drop_orphan_runs(registry)
    except Exception as exc:  # the rows stay orphans: invisible, and the next sweep deletes them
        log.warning("Run rows of committed experiments in %s not deleted yet: %s", registry.root, exc)


def _register_exit_hook() -> None:
    global _exit_hook_registered
    if not _exit_hook_registered:  # registered after index_db's own hooks: runs before them
        atexit.register(wait_for_sweeps, EXIT_WAIT_S)
        _exit_hook_registered = True


def _forget_threads() -> None:
    _threads.clear()  # a forked child has none of its parent's threads


os.register_at_fork(after_in_child=_forget_threads)
