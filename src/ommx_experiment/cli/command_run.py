"""``ommx-experiment run`` and ``ommx-experiment commit``: wrap any command as one Run (issue 6).

Entry points for the CLI (``cli.py`` delegates the raw argument list, without
the sub-command word)::

    main_run(argv: Sequence[str]) -> int
        argv = NAME [--param KEY=VALUE ...] [--watch DIR] [--resume] [--commit] -- COMMAND [ARGS...]
    main_commit(argv: Sequence[str]) -> int
        argv = NAME

Both parse ``argv`` themselves (no argparse), print errors to stderr and return
the process exit status. ``python -m ommx_experiment.cli.command_run run|commit ...``
calls them too.

Behaviour of ``run``
--------------------
* **Opening NAME.** Every invocation joins the shared unsealed experiment NAME
  (:meth:`Experiment.join`), creating it when none exists, so chained *and
  concurrent* invocations (``xargs -P``, GNU parallel, Slurm array jobs on one
  machine) build one sweep with unique run ids. ``--resume`` *requires* a draft
  (exit 2 when there is none). A NAME that is already committed (and has no
  draft) is refused with exit 2.
* **One Run** records: the ``--param`` values as run parameters, typed
  (``true``/``false`` → bool, int64 → int, float → float, else str; ``KEY=`` gives
  the empty string) and checked against the column types the experiment's closed
  runs established (a mismatch is an error, exit 1, before the command starts); the
  wrapper's own attachments, under the prefix ``ommx-experiment/`` so they never take
  a name from the command's files: ``ommx-experiment/command`` (JSON: ``argv``,
  ``cwd``, ``watch``), ``ommx-experiment/result`` (JSON: ``exit_code``, ``signal``,
  ``wall_time_s``, ``started_at``, ``finished_at``), ``ommx-experiment/stdout.txt``
  and ``ommx-experiment/stderr.txt`` (``text/plain``; streamed to files while the
  child runs and teed to our stdout/stderr); and every completed file the command
  writes into DIR under its path relative to DIR (a :mod:`watcher` on the Run; DIR
  must exist). Exit code and wall time are kept out of the parameter table so it
  holds only the sweep's inputs. On exit, one line on stderr names the run id, its
  status and every attachment recorded.
* **Status.** ``finished`` on exit code 0; ``failed`` otherwise, with reason
  ``CommandFailed: exit code N`` (or ``... killed by signal SIGX``);
  ``interrupted`` when we receive SIGINT/SIGTERM/SIGHUP: the signal is forwarded
  to the child's process group, we wait for it, record the Run, and exit
  ``128 + signal`` (130 for Ctrl-C). The child runs in its own process group so a
  terminal Ctrl-C reaches it exactly once (through us); its stdin is inherited
  unless it is a terminal (then ``/dev/null``: a background process group must
  not read the tty).
* **Exit status** of ``run``: the child's exit code (``128 + N`` if a signal
  killed it), 127 if it could not be started, 2 for usage errors.
* Without ``--commit`` the experiment is **not** committed: the Run close is
  journaled and the process exits leaving it resumable. ``--commit`` commits and
  prints the image name and manifest digest, as ``commit NAME`` does.
* Invocations for the same NAME may run at the same time: each is one writer of
  the shared journal. A killed invocation leaves its Run open; the next join,
  restore or commit of NAME records it as ``interrupted``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ..errors import InvalidInputError, LifecycleError, OmmxExperimentError

__all__ = [
    "CommandFailed",
    "CommandInterrupted",
    "CommandNotStarted",
    "CommitResult",
    "RunOptions",
    "RunOutcome",
    "commit_experiment",
    "main_commit",
    "main_run",
    "open_experiment",
    "parse_param",
    "parse_run_args",
    "parse_value",
    "run_command",
]

RUN_USAGE = "usage: ommx-experiment run NAME [--param KEY=VALUE ...] [--watch DIR] [--resume] [--commit] -- COMMAND [ARGS...]"
COMMIT_USAGE = "usage: ommx-experiment commit NAME"
EXIT_USAGE = 2
EXIT_NOT_STARTED = 127
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TEXT = "text/plain"
INT64 = (-(2**63), 2**63 - 1)
WRAPPER_PREFIX = "ommx-experiment/"
COMMAND_NAME, RESULT_NAME = WRAPPER_PREFIX + "command", WRAPPER_PREFIX + "result"
STDOUT_NAME, STDERR_NAME = WRAPPER_PREFIX + "stdout.txt", WRAPPER_PREFIX + "stderr.txt"
RESERVED_NAMES = (COMMAND_NAME, RESULT_NAME, STDOUT_NAME, STDERR_NAME)


class UsageError(InvalidInputError):
    """Bad command-line arguments for ``run`` / ``commit``."""


class CommandFailed(Exception):
    """Raised inside the Run scope when the command exits non-zero (gives the Run's reason)."""


class CommandNotStarted(CommandFailed):
    """The command could not be executed (exit status 127)."""


class CommandInterrupted(KeyboardInterrupt):
    """Raised inside the Run scope when we were signalled (the Run becomes ``interrupted``)."""


# --- arguments -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Parsed ``run`` arguments."""

    name: str
    command: tuple[str, ...]
    params: tuple[tuple[str, bool | int | float | str], ...] = ()
    watch: Path | None = None
    resume: bool = False
    commit: bool = False


def parse_value(text: str) -> bool | int | float | str:
    """``true``/``false`` (any case) → bool; int64 literal → int; float literal → float; else str."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        number = int(text)
    except ValueError:
        pass
    else:
        if INT64[0] <= number <= INT64[1]:
            return number
        return text
    try:
        value = float(text)
    except ValueError:
        return text
    return value if text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity") else text


def parse_param(text: str) -> tuple[str, bool | int | float | str]:
    """``KEY=VALUE`` → ``(KEY, typed VALUE)``; the key must be non-empty."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--param expects KEY=VALUE, got {text!r}")
    return key, parse_value(value)


def parse_run_args(argv: Sequence[str]) -> RunOptions:
    """Parse ``NAME [options] -- COMMAND...`` (options may also come as ``--opt=value``)."""
    args = list(argv)
    name: str | None = None
    params: dict[str, bool | int | float | str] = {}
    watch: Path | None = None
    resume = commit = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        opt, eq, inline = arg.partition("=")
        if opt in ("--param", "--watch"):
            if not eq:
                i += 1
                if i >= len(args):
                    raise UsageError(f"{opt} needs a value")
                inline = args[i]
            if opt == "--param":
                key, value = parse_param(inline)
                params[key] = value
            else:
                watch = Path(inline)
        elif arg == "--resume":
            resume = True
        elif arg == "--commit":
            commit = True
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg}")
        elif name is None:
            name = arg
        else:
            break  # the command starts here (no `--`)
        i += 1
    if name is None:
        raise UsageError("missing experiment NAME")
    command = tuple(args[i:])
    if not command:
        raise UsageError("missing COMMAND (after `--`)")
    return RunOptions(name, command, tuple(params.items()), watch, resume, commit)


# --- experiment ---------------------------------------------------------------------------------------------


def has_checkpoint(name: str) -> bool:
    """True if NAME has a journal or an OMMX checkpoint slot in the default Local Registry."""
    from ..engine.names import ImageName
    from ..engine.registry import LocalRegistry
    from ..format.journal import checkpoint_updated_at, read_journal

    registry = LocalRegistry.default()
    image = ImageName.parse(name)
    return read_journal(registry, image) is not None or checkpoint_updated_at(registry, image) is not None


def open_experiment(name: str, *, resume: bool) -> Any:
    """The shared unsealed Experiment NAME, joined (created when none exists; see module doc)."""
    from ..engine.names import ImageName
    from ..lifecycle.experiment import Experiment

    if resume and not has_checkpoint(name):
        raise LifecycleError(f"--resume: no checkpoint of experiment {ImageName.parse(name)} to resume")
    return Experiment.join(name)


@dataclass(frozen=True, slots=True)
class CommitResult:
    image_name: str
    manifest_digest: str


def commit_experiment(name: str) -> CommitResult:
    """Restore NAME from its checkpoint and commit it."""
    from ..lifecycle.experiment import Experiment

    artifact = Experiment.restore_from_checkpoint(name).commit()
    return CommitResult(str(artifact.image_name), str(artifact.manifest_digest))


# --- the child process ---------------------------------------------------------------------------------------


@dataclass
class _Tee:
    """Copy a child pipe to a file and to one of our streams, on a thread."""

    source: IO[bytes]
    path: Path
    sink: IO[bytes] | None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._pump, name=f"oxe-tee:{self.path.name}", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        fd = self.source.fileno()
        with open(self.path, "wb") as out:
            while chunk := os.read(fd, 65536):
                out.write(chunk)
                out.flush()
                if self.sink is not None:
                    try:
                        self.sink.write(chunk)
                        self.sink.flush()
                    except (OSError, ValueError):  # our terminal went away: keep recording
                        self.sink = None

    def join(self) -> None:
        self.thread.join()
        self.source.close()


class _SignalForwarder:
    """While installed, SIGINT/SIGTERM/SIGHUP go to the child's process group (and are remembered)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.child_pgid: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _SignalForwarder:
        if threading.current_thread() is threading.main_thread():
            for sig in FORWARDED_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = self.received or signum
        if self.child_pgid is not None:
            try:
                os.killpg(self.child_pgid, signum)
            except ProcessLookupError:
                pass


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What ``run_command`` recorded."""

    run_id: int
    exit_code: int
    status: str
    wall_time_s: float
    signal_received: int | None = None
    committed: CommitResult | None = None
    attachments: tuple[str, ...] = ()

    @property
    def process_exit_status(self) -> int:
        if self.signal_received is not None:
            return 128 + self.signal_received
        return self.exit_code


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _child_stdin() -> Any:
    try:
        return subprocess.DEVNULL if sys.stdin is None or os.isatty(sys.stdin.fileno()) else None
    except (OSError, ValueError):
        return subprocess.DEVNULL


def _exit_code(returncode: int) -> tuple[int, str | None]:
    if returncode >= 0:
        return returncode, None
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return 128 - returncode, name


def _sink(stream: Any, tee: bool) -> IO[bytes] | None:
    return getattr(stream, "buffer", None) if tee else None


def run_command(options: RunOptions, *, tee: bool = True, experiment: Any = None) -> RunOutcome:
    """Run ``options.command`` as one Run of experiment ``options.name`` (see module doc).

    ``experiment`` (optional) is an already opened unsealed Experiment to use
    instead of :func:`open_experiment`. A :class:`~ommx_experiment.errors.WatcherError`
    is raised after the Run was recorded as ``failed`` with everything else attached.
    """
    if experiment is None:
        experiment = open_experiment(options.name, resume=options.resume)
    run = experiment.run()
    run_id = run.run_id
    for key, value in options.params:  # before the command starts: a type mismatch is an error, nothing runs
        run.log_parameter(key, value)
    outcome: dict[str, Any] = {}
    try:
        with run:
            _record_run(run, options, tee, outcome)
    except (CommandFailed, CommandInterrupted):
        pass  # recorded as the Run's status; the process exit status reports it
    committed = None
    if options.commit:
        artifact = experiment.commit()
        committed = CommitResult(str(artifact.image_name), str(artifact.manifest_digest))
    recorded = next((r for r in experiment.runs if r.run_id == run_id), None)
    status = recorded.status if recorded is not None else "unknown"
    names = tuple(recorded.attachment_names) if recorded is not None else ()
    return RunOutcome(
        run_id, outcome["exit_code"], status, outcome["wall_time_s"], outcome.get("signal_received"), committed, names
    )


def _record_run(run: Any, options: RunOptions, tee: bool, outcome: dict[str, Any]) -> None:
    watch_dir = options.watch.resolve() if options.watch is not None else None
    run.log_json(COMMAND_NAME, {"argv": list(options.command), "cwd": os.getcwd(), "watch": str(watch_dir) if watch_dir else None})
    watcher_error: BaseException | None = None
    with tempfile.TemporaryDirectory(prefix="oxe-run-") as tmp:
        out_path, err_path = Path(tmp) / "stdout.txt", Path(tmp) / "stderr.txt"
        watcher = None
        if watch_dir is not None:
            from ..edges.watcher import watch

            watcher = watch(run, watch_dir, existing=False, reserved_names=RESERVED_NAMES)
            watcher.start()
        try:
            result, start_error = _spawn_and_wait(options.command, out_path, err_path, tee, outcome)
        finally:
            if watcher is not None:
                try:
                    watcher.stop()
                except Exception as exc:  # record everything else first, then fail the Run with it
                    watcher_error = exc
        run.log_file(STDOUT_NAME, out_path, TEXT, filename="stdout.txt")
        run.log_file(STDERR_NAME, err_path, TEXT, filename="stderr.txt")
    run.log_json(RESULT_NAME, result)
    if outcome.get("signal_received") is not None:
        name = signal.Signals(outcome["signal_received"]).name
        raise CommandInterrupted(f"{name} forwarded to the command; exit code {result['exit_code']}")
    if start_error is not None:
        raise CommandNotStarted(f"{options.command[0]!r}: {start_error}") from start_error
    if watcher_error is not None:
        raise watcher_error
    if result["exit_code"] != 0:
        detail = f"killed by signal {result['signal']}" if result["signal"] else f"exit code {result['exit_code']}"
        raise CommandFailed(detail)


def _spawn_and_wait(
    command: Sequence[str], out_path: Path, err_path: Path, tee: bool, outcome: dict[str, Any]
) -> tuple[dict[str, Any], BaseException | None]:
    started_at, t0 = _now(), time.monotonic()
    start_error: BaseException | None = None
    with _SignalForwarder() as forwarder:
        try:
            child = subprocess.Popen(
                list(command), stdin=_child_stdin(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0
            )
        except OSError as exc:
            start_error = exc
            out_path.write_bytes(b"")
            message = f"ommx-experiment run: cannot start {command[0]!r}: {exc}\n"
            err_path.write_bytes(message.encode())
            sys.stderr.write(message)
            returncode = EXIT_NOT_STARTED
        else:
            forwarder.child_pgid = child.pid
            if forwarder.received is not None:  # signalled while spawning
                os.killpg(child.pid, forwarder.received)
            assert child.stdout is not None and child.stderr is not None
            tees = [_Tee(child.stdout, out_path, _sink(sys.stdout, tee)), _Tee(child.stderr, err_path, _sink(sys.stderr, tee))]
            returncode = child.wait()
            for t in tees:
                t.join()
        wall = time.monotonic() - t0
        exit_code, signal_name = _exit_code(returncode)
        outcome.update(exit_code=exit_code, wall_time_s=wall, signal_received=forwarder.received)
    result = {
        "exit_code": exit_code,
        "signal": signal_name,
        "wall_time_s": wall,
        "started_at": started_at,
        "finished_at": _now(),
    }
    return result, start_error


# --- entry points ---------------------------------------------------------------------------------------------


def _error(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")


def main_run(argv: Sequence[str]) -> int:
    """``ommx-experiment run ...`` (argv without the word ``run``); returns the exit status."""
    try:
        options = parse_run_args(argv)
    except UsageError as exc:
        _error(str(exc))
        sys.stderr.write(RUN_USAGE + "\n")
        return EXIT_USAGE
    if options.watch is not None and not options.watch.is_dir():
        _error(f"--watch {options.watch}: no such directory (create it first; files the command completes there are attached)")
        return EXIT_USAGE
    try:
        experiment = open_experiment(options.name, resume=options.resume)
    except OmmxExperimentError as exc:
        _error(str(exc))
        return EXIT_USAGE
    try:
        outcome = run_command(options, experiment=experiment)
    except OmmxExperimentError as exc:
        _error(str(exc))
        return 1
    _print_recorded(options.name, outcome)
    if outcome.committed is not None:
        _print_commit(outcome.committed)
    return outcome.process_exit_status


def _print_recorded(name: str, outcome: RunOutcome) -> None:
    """One line on stderr (stdout is the command's): run id, status, attachments."""
    files = ", ".join(outcome.attachments) or "none"
    sys.stderr.write(f"ommx-experiment: run {outcome.run_id} of {name}: {outcome.status}; attached: {files}\n")
    sys.stderr.flush()


def _print_commit(result: CommitResult) -> None:
    sys.stdout.write(f"{result.image_name}\n{result.manifest_digest}\n")
    sys.stdout.flush()


def main_commit(argv: Sequence[str]) -> int:
    """``ommx-experiment commit NAME``: prints the image name and the manifest digest."""
    args = list(argv)
    if len(args) != 1 or args[0].startswith("-"):
        sys.stderr.write(COMMIT_USAGE + "\n")
        return EXIT_USAGE
    try:
        result = commit_experiment(args[0])
    except LifecycleError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except OmmxExperimentError as exc:
        _error(str(exc))
        return 1
    _print_commit(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ommx_experiment.cli.command_run run|commit ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "run":
        return main_run(args[1:])
    if args and args[0] == "commit":
        return main_commit(args[1:])
    sys.stderr.write(RUN_USAGE + "\n" + COMMIT_USAGE + "\n")
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
