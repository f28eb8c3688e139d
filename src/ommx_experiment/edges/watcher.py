"""The folder watcher: attach every completed file written into a folder (issue 6).

``watch(target, folder)`` returns a :class:`Watcher` for an unsealed Experiment or
an open Run. It is a context manager and also has ``start()``/``stop()``::

    with experiment.watch("out/"):          # == watcher.watch(experiment, "out/")
        subprocess.run(["solver", "--out", "out/"])

Contract
--------
* **Names.** The attachment name is the file's POSIX path relative to ``folder``
  (``a/b/c.txt``); the media type is sniffed from the content as ``log_file`` does, else
  guessed from the extension (``.json``, ``.csv``, ``.txt``, ...);
  the stored export filename is the base name.
* **Completed files only.** A file is attached when it was closed after writing
  (inotify ``IN_CLOSE_WRITE``) or moved into the folder, or, on the polling backend,
  when it is seen created/modified. Before every attachment the watcher asks the
  kernel whether *any* process still has the file open for writing (a probe with a
  Linux read lease, ``F_SETLEASE``: refused while a writer exists) and retries
  later if so. The content is streamed into the blob store while hashing; the
  file's ``(inode, size, mtime_ns)`` must be identical before, during (``fstat``)
  and after the read, otherwise the stored copy is discarded and the file retried.
  Where leases are unavailable (other OS, NFS, a file owned by another user
  without ``CAP_LEASE``) a file is attached on a closed/moved event, or after its
  signature stayed unchanged for ``settle`` seconds.
* **Skipped.** Hidden paths (any component starting with ``.``), ``*.tmp``,
  ``*.part``, ``*~``, anything matching an ``ignore`` glob, and anything not matching
  a ``pattern`` glob (when given). A glob without ``/`` matches the base name, one
  with ``/`` the whole relative path (``fnmatch``: ``*`` also crosses ``/``).
  **Symlinks are never attached nor followed** (files or directories), so nothing
  outside ``folder`` is read; only regular files are attached.
* **Versions.** The same path completed again with different content is attached
  as ``name.1``, ``name.2``, … with a logging warning; content identical to any
  version already attached for that path (same sha256) is not attached again.
  A name already taken in the target (or reserved) is skipped to the next suffix;
  for an Experiment, an existing attachment with the same name and digest counts
  as already attached (re-watching a folder after ``restore_from_checkpoint``).
* **Existing files.** With ``existing=True`` (default) files present at ``start()``
  are attached too; with ``existing=False`` their current state is the baseline
  and only later changes are attached.
* **Stop.** ``stop()`` stops the observer, drains the queued events, then rescans
  the whole folder (watchdog misses ``IN_CLOSE_WRITE`` for files written right
  after ``mkdir -p``) and attaches what is missing. A file still open for writing
  at that point is retried for up to ``stop_timeout`` seconds, then left out with a
  warning (it is not complete).
* **Backends.** inotify (``watchdog.observers.Observer``) by default; if creating
  or starting it fails with ``OSError`` (no inotify, ``ENOSPC`` watch limit,
  ``EMFILE`` instance limit) the watcher falls back to ``PollingObserver``.
  ``force_polling=True`` selects polling directly.
* **Threads and errors.** Observer callbacks only enqueue; one background thread
  does all reads and attachments (the target's session lock makes this safe
  against logging from the user's thread). Exceptions in that thread are
  collected and raised from ``stop()`` / context exit as :class:`WatcherError`
  chained to the first one. If the ``with`` body itself raised, the body's
  exception propagates and the watcher errors are logged and added as a note.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import itertools
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import LifecycleError, WatcherError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Attached", "Watcher", "watch"]

log = logging.getLogger(__name__)

DEFAULT_SKIP = ("*.tmp", "*.part", "*~")
SNIFF_BYTES = 8192
MAX_SUFFIX = 100_000


# --- value types ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signature:
    """What identifies one state of a file: a change to any field means "rewritten"."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Signature:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class Attached:
    """One attachment made by the watcher."""

    name: str
    path: str  # POSIX path relative to the folder
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True, slots=True)
class PathFilter:
    """Which relative paths are watched (see the module docstring)."""

    pattern: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()

    def accepts(self, rel: str) -> bool:
        parts = rel.split("/")
        if any(p.startswith(".") or p == "" for p in parts):
            return False
        base = parts[-1]
        if any(fnmatch.fnmatchcase(base, g) for g in DEFAULT_SKIP):
            return False
        if any(_glob_match(rel, base, g) for g in self.ignore):
            return False
        return not self.pattern or any(_glob_match(rel, base, g) for g in self.pattern)

    def accepts_dir(self, rel: str) -> bool:
        return not any(p.startswith(".") for p in rel.split("/"))


def _glob_match(rel: str, base: str, glob: str) -> bool:
    return fnmatch.fnmatchcase(rel if "/" in glob else base, glob)


def _globs(value: str | Iterable[str] | None, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else tuple(value)
    for item in items:
        if not isinstance(item, str) or not item:
            from ..errors import InvalidInputError

            raise InvalidInputError(f"watch {what} globs must be non-empty strings, got {item!r}")
    return items


# --- kernel helpers ------------------------------------------------------------------------------------


def open_for_writing(path: str) -> bool | None:
    """True if some process has ``path`` open for writing; None when the kernel cannot say.

    Uses a Linux read lease as a probe: ``F_SETLEASE(F_RDLCK)`` fails with EAGAIN
    while any writer exists. The lease is released at once; no owner is set with
    ``F_SETOWN``, so a concurrent opener never signals us.
    """
    setlease = getattr(fcntl, "F_SETLEASE", None)
    if setlease is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, setlease, fcntl.F_RDLCK)
    except OSError as exc:
        return True if exc.errno in (errno.EAGAIN, errno.EBUSY) else None
    else:
        fcntl.fcntl(fd, setlease, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


# --- the event handler (runs on watchdog's thread: enqueue only) ------------------------------------------

# work items: (kind, path); kinds below
_COMPLETE, _SEEN, _DIR, _SCAN, _STOP = "complete", "seen", "dir", "scan", "stop"


def _make_handler(push: Callable[[str, str], None]) -> Any:
    from watchdog.events import (
        DirCreatedEvent,
        DirMovedEvent,
        FileClosedEvent,
        FileCreatedEvent,
        FileModifiedEvent,
        FileMovedEvent,
        FileSystemEventHandler,
    )

    class _Handler(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            if isinstance(event, FileClosedEvent):
                push(_COMPLETE, os.fsdecode(event.src_path))
            elif isinstance(event, FileMovedEvent):
                push(_COMPLETE, os.fsdecode(event.dest_path))
            elif isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
                push(_SEEN, os.fsdecode(event.src_path))
            elif isinstance(event, DirMovedEvent):
                push(_DIR, os.fsdecode(event.dest_path))
            elif isinstance(event, DirCreatedEvent):
                push(_DIR, os.fsdecode(event.src_path))

    return _Handler()


def _inotify_event_filter() -> list[type]:
    from watchdog.events import DirCreatedEvent, DirMovedEvent, FileClosedEvent, FileCreatedEvent, FileMovedEvent

    # No FileModifiedEvent: one per write(2) would flood the queue for big files.
    return [FileClosedEvent, FileMovedEvent, FileCreatedEvent, DirCreatedEvent, DirMovedEvent]


# --- the watcher ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    """A file seen but not yet attached: retried until complete."""

    path: str
    complete_hint: bool
    signature: Signature | None = None
    stable_since: float = 0.0
    due: float = 0.0


@dataclass(slots=True)
class _PathState:
    digests: list[str] = field(default_factory=list)
    signature: Signature | None = None  # last state attached (or baseline)


_Attempt = str  # "attached" | "unchanged" | "skipped" | "busy" | "gone"


class Watcher:
    """Attach completed files under ``folder`` to ``target`` (an unsealed Experiment or open Run).

    Not started on construction: use ``with`` or :meth:`start` / :meth:`stop`.
    ``observer_factory`` (tests) replaces ``watchdog.observers.Observer``.
    ``reserved_names`` are treated as taken (e.g. names the caller logs later).
    """

    def __init__(
        self,
        target: Any,
        folder: str | os.PathLike[str],
        *,
        pattern: str | Iterable[str] | None = None,
        ignore: str | Iterable[str] | None = None,
        existing: bool = True,
        force_polling: bool = False,
        poll_interval: float = 0.25,
        settle: float = 1.0,
        stop_timeout: float = 5.0,
        observer_factory: Callable[[], Any] | None = None,
        reserved_names: Collection[str] = (),
    ) -> None:
        from ..errors import InvalidInputError

        self._target = target
        self._folder = Path(os.fspath(folder))
        self._root = os.path.realpath(self._folder)
        if not os.path.isdir(self._root):
            raise InvalidInputError(f"Watch folder `{self._folder}` is not a directory")
        self._root_fd: int | None = None  # held while running: a removed/replaced folder is reported on stop
        self._filter = PathFilter(_globs(pattern, "pattern"), _globs(ignore, "ignore"))
        self._existing = bool(existing)
        self._force_polling = bool(force_polling)
        self._poll_interval = float(poll_interval)
        self._settle = float(settle)
        self._stop_timeout = float(stop_timeout)
        self._observer_factory = observer_factory
        self._reserved = frozenset(reserved_names)
        self._queue: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._pending: dict[str, _Pending] = {}
        self._paths: dict[str, _PathState] = {}
        self._attached: list[Attached] = []
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._observer: Any = None
        self._thread: threading.Thread | None = None
        self._backend: str | None = None
        self._state = "new"
        self.on_attached: Callable[[Attached], None] | None = None  # benchmarks/tests: called on the worker thread

    # --- public -------------------------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        return self._folder

    @property
    def backend(self) -> str | None:
        """``"inotify"`` or ``"polling"`` once started."""
        return self._backend

    @property
    def attached(self) -> list[Attached]:
        """Attachments made so far, in order."""
        with self._lock:
            return list(self._attached)

    def start(self) -> Watcher:
        """Start watching. Only once.

        ``existing=False``: the baseline is taken before the observer starts, so any
        change after ``start()`` returns is attached. ``existing=True``: existing files
        are scanned by the background thread after the observer started.
        """
        if self._state != "new":
            raise LifecycleError(f"Watcher of `{self._folder}` was already started")
        self._root_fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._state = "running"
        try:
            if not self._existing:  # synchronously, before any event: later changes differ from it
                for file in self._walk(self._root):
                    self._record_baseline(file)
            self._observer, self._backend = self._start_observer()
            if self._existing:
                self._queue.put((_SCAN, ""))
            self._thread = threading.Thread(target=self._work, name=f"oxe-watch:{self._folder}", daemon=True)
            self._thread.start()
        except BaseException:
            self._abort_start()
            raise
        return self

    def stop(self) -> list[Attached]:
        """Stop, drain, rescan, attach what is missing; raise :class:`WatcherError` on collected errors."""
        if self._state != "running":
            if self._state == "new":
                raise LifecycleError(f"Watcher of `{self._folder}` was never started")
            return self.attached
        self._state = "stopped"
        try:
            self._observer.stop()
            self._observer.join()
        finally:
            self._queue.put((_STOP, ""))
            assert self._thread is not None
            self._thread.join()
        self._raise_errors()
        return self.attached

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]:
        if exc_value is None:
            self.stop()
            return False
        try:
            self.stop()
        except WatcherError as err:  # the body's exception wins; ours is logged and noted
            log.error("%s (while handling %s)", err, type(exc_value).__name__)
            exc_value.add_note(f"ommx-experiment folder watcher: {err}")
        return False

    def _abort_start(self) -> None:
        """Undo a failed :meth:`start`: stop the observer if it runs, close the folder fd."""
        self._state = "stopped"
        observer, self._observer = self._observer, None
        if observer is not None:
            try:
                observer.stop()
            except Exception:  # best effort: the start error is the one to report
                pass
        fd, self._root_fd = self._root_fd, None
        if fd is not None:
            os.close(fd)

    # --- observer ---------------------------------------------------------------------------------------

    def _push(self, kind: str, path: str) -> None:
        self._queue.put((kind, path))

    def _start_observer(self) -> tuple[Any, str]:
        handler = _make_handler(self._push)
        if not self._force_polling:
            observer = None
            try:
                if self._observer_factory is not None:
                    observer = self._observer_factory()
                else:
                    from watchdog.observers import Observer

                    observer = Observer()
                observer.schedule(handler, self._root, recursive=True, event_filter=_inotify_event_filter())
                observer.start()
                return observer, "inotify"
            except OSError as exc:
                log.warning("inotify unavailable for %s (%s); falling back to polling", self._folder, exc)
                _discard_observer(observer)
        from watchdog.observers.polling import PollingObserverVFS

        # lstat: the default os.stat makes the snapshot descend into symlinked directories
        # (outside the folder; two links to `.` make the walk exponential).
        observer = PollingObserverVFS(os.lstat, os.scandir, polling_interval=self._poll_interval)
        observer.schedule(handler, self._root, recursive=True)
        observer.start()
        return observer, "polling"

    # --- worker thread --------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                kind, path = self._queue.get(timeout=self._next_wait())
            except queue.Empty:
                kind, path = "", ""
            if kind == _STOP:
                break
            self._guard(self._handle, kind, path)
            self._guard(self._retry_due, False)
        self._guard(self._finish)

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            log.error("Folder watcher of %s: %s", self._folder, exc, exc_info=True)
            with self._lock:
                self._errors.append(exc)

    def _next_wait(self) -> float:
        if not self._pending:
            return self._poll_interval * 4
        due = min(p.due for p in self._pending.values())
        return max(0.0, min(self._poll_interval, due - time.monotonic()))

    def _handle(self, kind: str, path: str) -> None:
        if kind == _COMPLETE:
            self._consider(path, complete_hint=True)
        elif kind == _SEEN:
            self._consider(path, complete_hint=False)
        elif kind == _DIR:
            # Files written right after mkdir may never get their closed event.
            for file in self._walk(path):
                self._consider(file, complete_hint=False)
        elif kind == _SCAN:
            for file in self._walk(self._root):
                self._consider(file, complete_hint=False)

    def _finish(self) -> None:
        while True:  # drain what the observer delivered before it stopped
            try:
                kind, path = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind != _STOP:
                self._guard(self._handle, kind, path)
        self._guard(self._check_root)
        for file in self._walk(self._root):
            self._guard(self._consider, file, True)
        deadline = time.monotonic() + self._stop_timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(min(0.05, self._poll_interval))
            self._retry_due(True)
        for pending in self._pending.values():
            log.warning(
                "Folder watcher of %s: `%s` is still being written; not attached", self._folder, pending.path
            )
        self._pending.clear()

    def _retry_due(self, final: bool) -> None:
        now = time.monotonic()
        for path, pending in list(self._pending.items()):
            if final or pending.due <= now:
                self._guard(self._consider, path, pending.complete_hint or final)

    # --- one file ---------------------------------------------------------------------------------------------

    def _check_root(self) -> None:
        # The open fd pins the inode (no reuse); a removed directory has st_nlink 0.
        fd, self._root_fd = self._root_fd, None
        if fd is None:
            return
        try:
            held = os.fstat(fd)
            try:
                now: os.stat_result | None = os.stat(self._root)
            except OSError:
                now = None
        finally:
            os.close(fd)
        if held.st_nlink == 0 or now is None or (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            raise WatcherError(
                f"Watched folder {self._folder} was removed or replaced during the watch; "
                f"files written after that are not attached"
            )

    def _under_symlink(self, rel: str) -> bool:
        """True if a directory between the folder and ``rel`` is a symlink (or not a directory)."""
        parent = self._root
        for part in rel.split("/")[:-1]:
            parent = os.path.join(parent, part)
            try:
                if not stat.S_ISDIR(os.lstat(parent).st_mode):
                    return True
            except OSError:
                return True
        return False

    def _rel(self, path: str) -> str | None:
        rel = os.path.relpath(path, self._root)
        if rel.startswith("..") or os.path.isabs(rel) or rel == ".":
            return None
        return rel.replace(os.sep, "/")

    def _walk(self, top: str) -> Iterator[str]:
        rel_top = self._rel(top) if top != self._root else ""
        if rel_top is None or (rel_top and not self._filter.accepts_dir(rel_top)):
            return
        try:
            if os.path.islink(top):
                return
        except OSError:
            return
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not os.path.islink(os.path.join(dirpath, d)))
            for name in sorted(filenames):
                yield os.path.join(dirpath, name)

    def _record_baseline(self, path: str) -> None:
        rel = self._rel(path)
        if rel is None:
            return
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISREG(st.st_mode):
            self._paths.setdefault(rel, _PathState()).signature = Signature.of(st)

    def _consider(self, path: str, complete_hint: bool) -> None:
        outcome = self._attempt(path, complete_hint)
        if outcome != "busy":
            self._pending.pop(path, None)
            return
        pending = self._pending.get(path)
        if pending is None:
            pending = self._pending[path] = _Pending(path, complete_hint)
        pending.complete_hint = pending.complete_hint or complete_hint
        pending.due = time.monotonic() + self._poll_interval

    def _attempt(self, path: str, complete_hint: bool) -> _Attempt:
        rel = self._rel(path)
        if rel is None or not self._filter.accepts(rel) or self._under_symlink(rel):
            return "skipped"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return "gone"
        if not stat.S_ISREG(st.st_mode):  # symlinks, fifos, sockets: never read
            return "skipped"
        sig = Signature.of(st)
        state = self._paths.setdefault(rel, _PathState())
        if sig == state.signature:
            return "unchanged"
        if not self._looks_complete(path, sig, complete_hint):
            return "busy"
        stored = self._store_if_stable(path, sig)
        if stored is None:
            return "busy"
        digest, size, media_type = stored
        state.signature = sig
        if digest in state.digests or self._target_has(rel, digest):
            if digest not in state.digests:
                state.digests.append(digest)
            return "unchanged"
        self._attach(rel, state, digest, size, media_type)
        return "attached"

    def _looks_complete(self, path: str, sig: Signature, complete_hint: bool) -> bool:
        writing = open_for_writing(path)
        if writing is not None:
            return not writing
        if complete_hint:
            return True
        pending = self._pending.get(path)
        now = time.monotonic()
        if pending is None or pending.signature != sig:
            if pending is not None:
                pending.signature, pending.stable_since = sig, now
            return False
        return now - pending.stable_since >= self._settle

    def _store_if_stable(self, path: str, before: Signature) -> tuple[str, int, str] | None:
        """Stream the file into the blob store; None if it changed while being read."""
        from ..engine.blobstore import fd_chunks
        from ..format.payload import guess_media_type

        try:
            fd = _open_beneath(self._root, os.path.relpath(path, self._root))
        except (FileNotFoundError, OSError) as exc:
            if isinstance(exc, FileNotFoundError) or exc.errno in (errno.ELOOP, errno.ENOTDIR):
                return None
            raise
        with os.fdopen(fd, "rb", buffering=0) as fh:
            opened = os.fstat(fh.fileno())
            if not stat.S_ISREG(opened.st_mode) or Signature.of(opened) != before:
                return None
            head = fh.read(SNIFF_BYTES) or b""
            stored = self._target._attachment_blobs().put_chunks(
                itertools.chain((head,), fd_chunks(fh.fileno())), source=path
            )
            after_fd = Signature.of(os.fstat(fh.fileno()))
        try:
            after_path = Signature.of(os.lstat(path))
        except FileNotFoundError:
            return None
        if after_fd != before or after_path != before or stored.size != before.size:
            return None  # the stored copy stays unreferenced; GC reclaims it
        return stored.digest, stored.size, guess_media_type(path, head)

    def _target_has(self, name: str, digest: str) -> bool:
        view = getattr(self._target, "_attachment_view", None)
        if view is None:
            return False
        desc = view()[1].get(name)
        return desc is not None and desc.digest == digest

    def _attach(self, rel: str, state: _PathState, digest: str, size: int, media_type: str) -> None:
        from ..engine.oci import Descriptor

        target = self._target
        target._check_writable()
        version = len(state.digests)
        name = self._free_name(rel, version)
        target._add_attachment(name, Descriptor(media_type, digest, size), rel.rsplit("/", 1)[-1])
        state.digests.append(digest)
        if version:
            log.warning(
                "Folder watcher of %s: `%s` was completed again with different content (%s); attached as `%s`",
                self._folder, rel, digest, name,
            )
        record = Attached(name, rel, digest, size, media_type)
        with self._lock:
            self._attached.append(record)
        if self.on_attached is not None:
            self.on_attached(record)

    def _free_name(self, rel: str, version: int) -> str:
        for k in range(version, MAX_SUFFIX):
            name = rel if k == 0 else f"{rel}.{k}"
            if name in self._reserved:
                continue
            try:
                self._target._reserve_attachment(name)
            except LifecycleError:
                continue
            return name
        raise WatcherError(f"No free attachment name for `{rel}` in the watched folder {self._folder}")

    def _raise_errors(self) -> None:
        with self._lock:
            errors = list(self._errors)
        if not errors:
            return
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise WatcherError(
            f"Folder watcher of {self._folder} failed: {type(first).__name__}: {first}{more}"
        ) from first


def _open_beneath(root: str, rel: str) -> int:
    """Open ``root/rel`` for reading without following a symlink in any component
    (a directory swapped for a link after the checks fails with ELOOP/ENOTDIR)."""
    parts = rel.split(os.sep)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def _discard_observer(observer: Any) -> None:
    if observer is None:
        return
    try:
        observer.unschedule_all()
    except Exception:  # best effort: it never started properly
        pass


def watch(
    target: Any,
    folder: str | os.PathLike[str],
    *,
    pattern: str | Iterable[str] | None = None,
    ignore: str | Iterable[str] | None = None,
    existing: bool = True,
    **options: Any,
) -> Watcher:
    """A (not yet started) :class:`Watcher` attaching completed files under ``folder`` to ``target``.

    ``target`` is an unsealed ``Experiment`` or an open ``Run``. Extra keyword
    ``options`` go to :class:`Watcher` (``force_polling``, ``poll_interval``,
    ``settle``, ``stop_timeout``, ``observer_factory``, ``reserved_names``).
    """
    return Watcher(target, folder, pattern=pattern, ignore=ignore, existing=existing, **options)
