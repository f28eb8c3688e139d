"""OMMX-compatible advisory locks.

OMMX 3 takes an exclusive BSD ``flock(2)`` on two files and nothing else
(registry-sharing.md §3); POSIX ``lockf``/``fcntl`` record locks do *not*
interoperate with it. Both lock files are created lazily, empty, and are never
deleted or replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

BLOB_LOCK = Path("blobs") / ".lock"
GC_EXCLUSION_LOCK = Path(".gc-exclusion.lock")


@contextlib.contextmanager
def flock_exclusive(path: Path) -> Iterator[None]:
    """Hold ``flock(path, LOCK_EX)`` for the duration of the block.

    Each call opens its own file description, so the lock also excludes other
    threads of this process.
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
