"""Progress bars for long blob transfers and for sweeps.

A transfer bar is shown only for blobs of at least :data:`MIN_BYTES` when stderr
is a terminal and the caller did not ask for ``quiet``; a sweep bar (tasks done
of total) whenever stderr is a terminal. Otherwise every call is a no-op.
``rich`` is imported only when a bar is actually drawn.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

MIN_BYTES = 8 << 20

Advance = Callable[[int], None]


def _noop(_: int) -> None:
    return None


def wants_bar(total: int, *, quiet: bool, stream: TextIO | None = None) -> bool:
    """Whether a transfer of ``total`` bytes gets a bar (TTY, not quiet, ≥ 8 MiB)."""
    stream = sys.stderr if stream is None else stream
    if quiet or total < MIN_BYTES:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@contextmanager
def transfer_progress(description: str, total: int, *, quiet: bool, stream: TextIO | None = None) -> Iterator[Advance]:
    """Yield ``advance(nbytes)``; draws a rich bar on stderr when :func:`wants_bar` says so."""
    if not wants_bar(total, quiet=quiet, stream=stream):
        yield _noop
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(file=sys.stderr if stream is None else stream)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@contextmanager
def task_progress(description: str, total: int, *, stream: TextIO | None = None) -> Iterator[Advance]:
    """Yield ``advance(ntasks)``; draws a rich bar (done/total, elapsed, remaining) on a terminal stderr."""
    stream = sys.stderr if stream is None else stream
    if total <= 0 or not _isatty(stream):
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
