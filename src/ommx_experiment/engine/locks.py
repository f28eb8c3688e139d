"""OMMX-compatible advisory locks.

OMMX 3 takes an exclusive BSD ``flock(2)`` on two files and nothing else
(registry-sharing.md §3); POSIX ``lockf``/``fcntl`` record locks do *not*
interoperate with it. Both lock files are created lazily, empty, and are never
deleted or replaced.

``.gc-exclusion.lock`` is OMMX's boundary between a deleting GC (which holds it
``LOCK_EX`` for its whole mark and sweep) and the publication of an existing
closure. We take it, also ``LOCK_EX``, around every ref write that makes blobs
reachable (:func:`gc_exclusion`, the *publish window*): a deleting GC, ours or
OMMX's, then runs entirely before the window (and the window sees what it
deleted) or entirely after the ref committed (and the ref is one of its roots).
``LOCK_SH`` would let overlapping windows starve OMMX's GC, which waits with
no timeout: Linux grants a new shared lock while an exclusive waiter is queued.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

BLOB_LOCK = Path("blobs") / ".lock"
GC_EXCLUSION_LOCK = Path(".gc-exclusion.lock")

_HELD = threading.local()


@contextlib.contextmanager
def flock_exclusive(path: Path) -> Iterator[None]:
    """Hold ``flock(path, LOCK_EX)`` for the duration of the block.

    Each call opens its own file description, so the lock also excludes other
    threads of this process (and a nested call in the same thread deadlocks:
    use :func:`gc_exclusion` where nesting can happen).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _held() -> dict[str, int]:
    held: dict[str, int] | None = getattr(_HELD, "paths", None)
    if held is None or getattr(_HELD, "pid", None) != os.getpid():
        held = _HELD.paths = {}  # a forked child holds nothing of its parent's
        _HELD.pid = os.getpid()
    return held


@contextlib.contextmanager
def gc_exclusion(root: Path) -> Iterator[None]:
    """Hold ``<root>/.gc-exclusion.lock`` ``LOCK_EX``; re-entrant within one thread.

    A nested call in the thread that already holds it is a no-op (a second
    ``flock`` on another descriptor of the same file would wait for ourselves);
    other threads and processes wait, as for OMMX's own holder.
    """
    key = os.path.abspath(root / GC_EXCLUSION_LOCK)
    held = _held()
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    with flock_exclusive(Path(key)):
        held[key] = 1
        try:
            yield
        finally:
            del held[key]


def holds_gc_exclusion(root: Path) -> bool:
    """Whether this thread is inside :func:`gc_exclusion` for ``root``."""
    return bool(_held().get(os.path.abspath(root / GC_EXCLUSION_LOCK)))
