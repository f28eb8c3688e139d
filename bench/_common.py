"""Helpers shared by the ``bench_*.py`` benchmarks.

Every measurement of "ours" against "ommx3" runs in a fresh process, so imports and
caches of one implementation never flatter the other, and peak RSS is the child's own
(measured by GNU time, see ``run_measured``).

A benchmark module exposes ``run() -> list[dict]``; each row has ``benchmark``,
``case``, ``impl`` and metric columns (``seconds``, ``MB/s``, ``runs/s``, ``ms``,
``peak_rss_MB``, ``disk_MB``) plus an optional free-form ``note``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
_CHUNK = 8 * MiB


def _venv_python(env_var: str, venv: str) -> Path:
    configured = os.environ.get(env_var)
    return Path(configured) if configured else REPO_ROOT / venv / "bin" / "python"


#: Interpreter with ommx-experiment installed (the project venv; this interpreter in a
#: checkout without one, e.g. a worktree). Children always import ``REPO_ROOT/src``.
OURS_PYTHON = _venv_python("OURS_PYTHON", ".venv")
if not OURS_PYTHON.exists() and "OURS_PYTHON" not in os.environ:
    import sys as _sys

    OURS_PYTHON = Path(_sys.executable)
SRC = REPO_ROOT / "src"
_COMPILED = False


def _compile_sources() -> None:
    """Byte-compile ``src`` once, so a fresh process imports ours from .pyc files as it
    imports OMMX's installed package (a child with PYTHONDONTWRITEBYTECODE would otherwise
    recompile every module on every start)."""
    global _COMPILED
    if not _COMPILED:
        import compileall

        compileall.compile_dir(str(SRC), quiet=1)
        _COMPILED = True
#: Interpreter with ommx==3.0.0b7 (the side venv).
OMMX3_PYTHON = _venv_python("OMMX3_PYTHON", ".venv-ommx3")


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """A finished child process: wall time, its own peak RSS, exit code and output."""

    seconds: float
    peak_rss_bytes: int
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class PythonResult:
    """What a ``run_python`` snippet printed as JSON on its last line, plus its cost."""

    data: Any
    seconds: float
    peak_rss_bytes: int


GNU_TIME = Path("/usr/bin/time")


def run_measured(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcessResult:
    """Run ``cmd`` to completion; time it and read its own peak RSS.

    Linux keeps the parent's RSS high-water mark across fork+exec, so ``wait4`` on a
    child of this (large) Python process reports at least our own peak. GNU time is a
    tiny process that forks the command itself, so its ``%M`` is the command's alone;
    without it we fall back to ``wait4`` (an upper bound). Output goes to temporary
    files rather than pipes, so the child can never block on a full pipe.
    """
    argv = [os.fspath(c) for c in cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as rss:
        if GNU_TIME.exists():
            argv = [str(GNU_TIME), "-f", "%M", "-o", rss.name, *argv]
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen from waiting again
        peak_kib = _gnu_time_kib(Path(rss.name)) if GNU_TIME.exists() else usage.ru_maxrss
        out.seek(0)
        err.seek(0)
        return ProcessResult(
            seconds=seconds,
            peak_rss_bytes=peak_kib * 1024,
            returncode=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def _gnu_time_kib(path: Path) -> int:
    # GNU time prefixes "Command exited with non-zero status N" lines; %M is the last line.
    lines = path.read_text().split()
    return int(lines[-1]) if lines and lines[-1].isdigit() else 0


def _vm_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _measure_callable(fn: Callable[[], object]) -> tuple[float, int]:
    # Run in a forked child so the peak is this call's, not the harness's high-water
    # mark so far: clear_refs resets VmHWM to the current RSS. The child's RSS still
    # includes the pages it shares with the harness.
    read_fd, write_fd = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_fd)
            Path("/proc/self/clear_refs").write_text("5")
            fn()
            os.write(write_fd, str(_vm_kib("VmHWM")).encode())
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        report = reader.read()
    _, status, _ = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"measured callable {fn!r} failed in its forked child (see traceback above)")
    return seconds, int(report) * 1024


def measure(target: Sequence[str | os.PathLike[str]] | Callable[[], object]) -> tuple[float, int]:
    """``(seconds, peak_rss_bytes)`` of a command (argv list) or a callable.

    A command must exit 0 (``RuntimeError`` with its stderr otherwise). A callable runs
    in a forked child; its return value is discarded.
    """
    if callable(target):
        return _measure_callable(target)
    result = run_measured(target)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark command {list(map(str, target))} exited {result.returncode}: {result.stderr}")
    return result.seconds, result.peak_rss_bytes


def run_python(
    code: str,
    *,
    python: Path = OURS_PYTHON,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> PythonResult:
    """Run ``code`` with ``python`` in a fresh process; parse the JSON on its last stdout line.

    ``env`` entries are added to (not substituted for) the current environment.
    ``RuntimeError`` with the child's stderr when it fails or prints no JSON.
    """
    if not Path(python).exists():
        raise RuntimeError(f"interpreter {python} does not exist; run `make bootstrap`")
    _compile_sources()
    child_env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")
    }
    child_env["PYTHONPATH"] = str(SRC)  # ours from this checkout; OMMX's side venv ignores it unless asked
    child_env.update(env or {})
    result = run_measured([python, "-c", code], env=child_env, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark snippet under {python} exited {result.returncode}:\n{result.stderr}")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    try:
        data = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"benchmark snippet under {python} printed no JSON last line: {lines[-1]!r}") from exc
    return PythonResult(data=data, seconds=result.seconds, peak_rss_bytes=result.peak_rss_bytes)


def make_file(path: Path, size_bytes: int) -> Path:
    """Write ``size_bytes`` of incompressible random bytes to ``path`` (8 MiB chunks)."""
    with open(path, "wb") as f:
        remaining = size_bytes
        while remaining > 0:
            n = min(_CHUNK, remaining)
            f.write(os.urandom(n))
            remaining -= n
    return path


def fmt_mb(nbytes: float) -> float:
    """Bytes as MiB, rounded to 0.1 (what the ``*_MB`` columns hold)."""
    return round(nbytes / MiB, 1)


def mb_per_s(nbytes: float, seconds: float) -> float:
    """Throughput in MiB/s, rounded to 0.1."""
    return round(nbytes / MiB / seconds, 1) if seconds > 0 else float("inf")


def throughput_row(
    benchmark: str, case: str, impl: str, seconds: float, rss: int, nbytes: float, **extra: object
) -> dict[str, object]:
    """One result row of a throughput benchmark: seconds, MB/s over ``nbytes``, peak RSS, then ``extra`` columns."""
    return {
        "benchmark": benchmark,
        "case": case,
        "impl": impl,
        "seconds": round(seconds, 3),
        "MB/s": mb_per_s(nbytes, seconds),
        "peak_rss_MB": fmt_mb(rss),
        **extra,
    }


def disk_usage(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (a file or a folder tree)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@contextmanager
def scratch_dir(prefix: str = "ommx-bench-") -> Iterator[Path]:
    """A temporary folder on the same disk as /tmp, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


def python_or_none(python: Path) -> Path | None:
    """``python`` if it exists, else ``None`` (a benchmark then emits a row with a note)."""
    return python if python.exists() else None


__all__ = [
    "MiB",
    "OMMX3_PYTHON",
    "OURS_PYTHON",
    "PythonResult",
    "ProcessResult",
    "GNU_TIME",
    "REPO_ROOT",
    "disk_usage",
    "fmt_mb",
    "make_file",
    "mb_per_s",
    "measure",
    "python_or_none",
    "run_measured",
    "run_python",
    "throughput_row",
    "scratch_dir",
]
