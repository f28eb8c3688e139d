"""The one audited helper for durable, atomic file publication.

Every write that publishes something goes through this module:

1. write into a temp file *in the destination folder* (same filesystem, so the
   final step is a rename/link, never a copy);
2. ``fsync`` the temp file;
3. ``rename`` (replace semantics) or ``link`` (no-clobber semantics) it into place;
4. ``fsync`` the folder, so the new directory entry survives a power loss
   (the blob store batches this step: one folder fsync covers every blob
   linked since the last one, and runs before any ref that reaches them).

A temp file is removed on *any* exit that does not publish it, including
``KeyboardInterrupt``. A process killed with SIGKILL can leave a temp file
behind, never a partial file under a final name; :func:`is_temp_name` lets
cleanup code recognise ours.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".oxe-"
TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()
PUBLIC_FILE_MODE = 0o666 & ~UMASK


_TEMP_RE = re.compile(
    r"\.oxe-(?P<stem>[A-Za-z_-]*?)(?P<pid>\d+)(?:-(?P<token>[0-9a-f]{12}))?-[0-9a-f]{12}\.tmp"
)


def temp_name(stem: str = "", *, owner: str | None = None) -> str:
    """A dot-prefixed, non-digest name for a temp file owned by this process.

    ``owner`` (12 lowercase hex: this process's lease token, see
    ``blobstore._Leases``) makes the name tell whether its writer is alive
    without trusting the pid, which the system may reuse.
    """
    middle = "" if owner is None else f"-{owner}"
    # Unique, not secret (files are created O_EXCL): the random module, reseeded after fork, not
    # os.urandom, whose system call lets go of the GIL, and a busy batch helper thread then holds
    # the caller up for ~0.1 ms per name.
    return f"{TEMP_PREFIX}{stem}{os.getpid()}{middle}-{random.getrandbits(48):012x}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temp file name produced by :func:`temp_name`."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def temp_owner(name: str) -> tuple[int, str | None] | None:
    """``(pid, owner token or None)`` of one of our temp names, or None if it does not parse."""
    match = _TEMP_RE.fullmatch(name)
    if match is None:
        return None
    return int(match["pid"]), match["token"]


def temp_owner_pid(name: str) -> int | None:
    """The pid embedded in one of our temp names, or None if it does not parse."""
    owner = temp_owner(name)
    return None if owner is None else owner[0]


def fsync_dir(path: Path) -> None:
    """``fsync`` a directory so that renames/links inside it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def temp_file(
    folder: Path, *, stem: str = "", mode: int = 0o600, owner: str | None = None
) -> Iterator[tuple[Path, BinaryIO]]:
    """Create a temp file in ``folder``; yield ``(path, handle)``; always remove it.

    The caller publishes it with :func:`publish_replace` or :func:`publish_noclobber`
    *inside* the ``with`` block (after which the temp path is simply unlinked:
    with ``link`` the data lives on under the final name; with ``rename`` the
    temp name is already gone).
    """
    path = folder / temp_name(stem, owner=owner)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    handle = os.fdopen(fd, "wb")
    try:
        yield path, handle
    finally:
        try:
            handle.close()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def sync_file(handle: BinaryIO) -> None:
    """Flush Python buffers and ``fsync`` the file."""
    handle.flush()
    os.fsync(handle.fileno())


def publish_replace(tmp: Path, final: Path, *, mode: int | None = PUBLIC_FILE_MODE) -> None:
    """Atomically move a synced temp file onto ``final`` (replacing it), then fsync the folder."""
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def publish_noclobber(
    tmp: Path | str, final: Path | str, *, mode: int | None = PUBLIC_FILE_MODE, sync_dir: bool = True
) -> bool:
    """Make a synced temp file appear as ``final`` unless ``final`` exists.

    Returns True if this call created ``final``, False if it already existed
    (its content is then untouched). Uses ``link`` so an existing file is never
    clobbered, then fsyncs the folder. The temp name stays and is removed by
    :func:`temp_file`.

    ``sync_dir=False`` leaves the folder fsync to the caller, who must do it
    before anything durable depends on the new name (the blob store batches
    it: one folder fsync before each ref write, see ``BlobStore.sync_links``).
    """
    if mode is not None:
        os.chmod(tmp, mode)
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    if sync_dir:
        fsync_dir(Path(final).parent)
    return True


def atomic_write_bytes(final: Path, data: bytes, *, mode: int | None = PUBLIC_FILE_MODE) -> None:
    """Durably replace ``final`` with ``data``: readers see the old or the new file, never a mix."""
    with temp_file(final.parent, stem="w") as (tmp, handle):
        handle.write(data)
        sync_file(handle)
        publish_replace(tmp, final, mode=mode)


def create_new_bytes(final: Path, data: bytes, *, mode: int | None = PUBLIC_FILE_MODE) -> None:
    """Durably create ``final`` with ``data``; ``FileExistsError`` if it exists."""
    with temp_file(final.parent, stem="n") as (tmp, handle):
        handle.write(data)
        sync_file(handle)
        if not publish_noclobber(tmp, final, mode=mode):
            raise FileExistsError(f"refusing to overwrite existing file {final}")
