"""Progress lines: one per push or pull (blobs and bytes done of the total), one per sweep.

A transfer line appears only when stderr is a terminal, the caller did not ask
for ``quiet``, and the transfer has been running for :data:`SHOW_AFTER` seconds (a
quick transfer stays silent); workers report from any thread. A sweep bar (tasks
done of total) appears whenever stderr is a terminal. ``rich`` is imported only
when a line is actually drawn.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

SHOW_AFTER = 1.0  # seconds

Advance = Callable[[int], None]


def _noop(_: int) -> None:
    return None


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class TransferProgress:
    """Counts blobs and bytes of one transfer (thread-safe); draws the line once it is due."""

    def __init__(self, verb: str, blobs: int, total_bytes: int, *, enabled: bool, stream: TextIO | None = None) -> None:
        self.verb = verb
        self.blobs = blobs
        self.total_bytes = total_bytes
        self.done_blobs = 0
        self.done_bytes = 0
        self._enabled = enabled
        self._stream = stream
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more bytes moved (called from worker threads, per chunk)."""
        with self._lock:
            self.done_bytes += nbytes
            self._refresh()

    def blob_done(self) -> None:
        with self._lock:
            self.done_blobs += 1
            self._refresh()

    def _refresh(self) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            if time.monotonic() - self._started < SHOW_AFTER:
                return
            self._open()
        self._bar.update(self._task, completed=self.done_bytes, description=self._description())

    def _description(self) -> str:
        return f"{self.verb} {self.done_blobs}/{self.blobs} blobs"

    def _open(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        console = Console(file=sys.stderr if self._stream is None else self._stream)
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(self._description(), total=self.total_bytes, completed=self.done_bytes)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.stop()
                self._bar = None

    @property
    def shown(self) -> bool:
        return self._bar is not None


@contextmanager
def transfer_progress(
    verb: str, blobs: int, total_bytes: int, *, quiet: bool, stream: TextIO | None = None
) -> Iterator[TransferProgress]:
    """A :class:`TransferProgress` for one push or pull, closed (line removed) at the end."""
    progress = TransferProgress(verb, blobs, total_bytes, enabled=not quiet and is_terminal(stream), stream=stream)
    try:
        yield progress
    finally:
        progress.close()


@contextmanager
def task_progress(description: str, total: int, *, stream: TextIO | None = None) -> Iterator[Advance]:
    """Yield ``advance(ntasks)``; draws a rich bar (done/total, elapsed, remaining) on a terminal stderr."""
    stream = sys.stderr if stream is None else stream
    if total <= 0 or not is_terminal(stream):
        yield _noop
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=stream), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
