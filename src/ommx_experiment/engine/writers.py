"""Writer liveness: which processes still write to an unsealed experiment, without pids.

Every process that writes to a shared unsealed experiment is a *writer* with a
random id. It holds an exclusive ``flock`` on ``<root>/.oxe-writers/<id>.lock``
for as long as it lives; the kernel drops the lock when the process dies, however
it dies (SIGKILL included). So "is writer W alive?" is answered by trying to take
W's lock without blocking: whoever gets it knows W is dead and may recover what
W left behind (its open-run log, ``<id>.log`` beside the lock), then remove both.

Pids are recorded only to name processes in error messages: a pid can be reused,
a lock cannot outlive its holder. ``flock`` locks belong to an open file
description, so a second descriptor in the same process sees its own live writer
as alive too.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

from ..errors import RegistryError

WRITERS_DIR = ".oxe-writers"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WriterIdentity:
    """Who a writer is, for messages: id, pid and host name."""

    writer_id: str
    pid: int
    host: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"

    @classmethod
    def new(cls) -> WriterIdentity:
        return cls(uuid.uuid4().hex, os.getpid(), socket.gethostname())


def writers_dir(root: Path) -> Path:
    return root / WRITERS_DIR


def lock_path(root: Path, writer_id: str) -> Path:
    return writers_dir(root) / f"{writer_id}.lock"


def log_path(root: Path, writer_id: str) -> Path:
    return writers_dir(root) / f"{writer_id}.log"


class WriterLock:
    """The lock a live writer holds on ``<root>/.oxe-writers/<id>.lock`` until :meth:`release`."""

    def __init__(self, root: Path, identity: WriterIdentity) -> None:
        self.root = root
        self.identity = identity
        folder = writers_dir(root)
        try:
            folder.mkdir(exist_ok=True)
            self._fd = os.open(lock_path(root, identity.writer_id), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise RegistryError(f"Failed to create the writer lock in {folder}: {exc}") from exc
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self, *, remove: bool, later: bool = False) -> None:
        """Give the lock up; with ``remove``, delete the lock and log files first (a clean exit).

        ``later`` (with ``remove``): a helper thread deletes them and then gives the lock up,
        off the caller's path (two unlinks cost a small experiment ~0.2-0.5 ms on a busy disk);
        until then the writer is alive to everyone, as before its release. Interpreter exit
        waits for it (:func:`wait_for_releases`); a process killed first leaves both files
        behind, with no journal row naming the writer (it exited cleanly otherwise).
        """
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        paths = (
            (os.fspath(log_path(self.root, self.identity.writer_id)), os.fspath(lock_path(self.root, self.identity.writer_id)))
            if remove
            else ()
        )
        if later and paths:
            _release_pool().submit(_remove_and_close, paths, fd, quiet=True)
            return
        _remove_and_close(paths, fd)


def _remove_and_close(paths: tuple[str, ...], fd: int, *, quiet: bool = False) -> None:
    """Delete ``paths`` (missing ones are fine), then close ``fd``, the writer's lock."""
    try:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    except OSError as exc:
        if not quiet:
            raise
        log.warning("Writer files %s not removed: %s", ", ".join(paths), exc)
    finally:
        os.close(fd)


_pool: ThreadPoolExecutor | None = None
_pool_guard = threading.Lock()


def _release_pool() -> ThreadPoolExecutor:
    """One long-lived helper thread for deferred releases (interpreter exit runs what is queued)."""
    global _pool
    with _pool_guard:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(1, thread_name_prefix="oxe-writer-release")
        return _pool


def wait_for_releases() -> None:
    """Wait until every deferred release of this process is done."""
    with _pool_guard:
        pool = _pool
    if pool is not None:
        pool.submit(lambda: None).result()


def _forget_release_pool() -> None:
    global _pool
    _pool = None  # a forked child has none of its parent's threads (nor its queued releases)


os.register_at_fork(after_in_child=_forget_release_pool)


@contextlib.contextmanager
def claim_if_dead(root: Path, writer_id: str) -> Iterator[bool]:
    """Yield True, holding the dead writer's lock, when ``writer_id`` is not alive; else yield False.

    A writer whose lock file is gone is dead (it exited cleanly or was recovered).
    """
    path = lock_path(root, writer_id)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def is_alive(root: Path, writer_id: str) -> bool:
    """True while the writer's process holds its lock."""
    with claim_if_dead(root, writer_id) as dead:
        return not dead


def remove_files(root: Path, writer_id: str) -> None:
    """Delete a dead writer's log and lock (call while holding its lock via :func:`claim_if_dead`)."""
    for path in (log_path(root, writer_id), lock_path(root, writer_id)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
