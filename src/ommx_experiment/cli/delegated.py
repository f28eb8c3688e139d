"""Commands implemented elsewhere: ``run`` and ``commit`` (:mod:`..command_run`) and ``demo``."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import common as c

RUN_EXAMPLE = "ommx-experiment run example.com/team/sweep:v1 --param seed=1 --watch out -- python solve.py --seed 1"
COMMIT_EXAMPLE = "ommx-experiment commit example.com/team/sweep:v1"
DELEGATED = frozenset({"run", "commit"})


def split_root(argv: Sequence[str]) -> tuple[Path | None, list[str]]:
    """Take ``--root P`` / ``--root=P`` out of ``argv`` before the first ``--`` (the wrapped command's)."""
    root: Path | None = None
    rest: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg == "--root":
            if i + 1 >= len(args):
                raise c.UsageError("argument --root: expected one argument")
            root, i = Path(args[i + 1]), i + 2
            continue
        if arg.startswith("--root="):
            root = Path(arg.partition("=")[2])
        else:
            rest.append(arg)
        i += 1
    return root, rest


def run_delegated(command: str, argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    """``run``/``commit``: the raw argument list goes to :mod:`..command_run` (our ``--help`` first)."""
    if argv[:1] in (["-h"], ["--help"]):
        parser.print_help()
        return 0
    root, rest = split_root(argv)
    if root is not None:
        c.use_root(argparse.Namespace(root=root))
    from . import command_run

    main = command_run.main_run if command == "run" else command_run.main_commit
    return int(main(rest))


def cmd_demo(args: argparse.Namespace) -> int:
    c.use_root(args)
    try:
        demo = importlib.import_module("ommx_experiment.cli.demo")
    except ModuleNotFoundError as exc:
        if exc.name != "ommx_experiment.cli.demo":
            raise
        raise c.CliFailure("the demo is not available: module ommx_experiment.cli.demo is missing from this install") from None
    code = demo.main([])
    return int(code or 0)


def register(sub: Any, root: argparse.ArgumentParser, js: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Add ``run``/``commit``/``demo``; returns the run/commit parsers (for their ``--help``)."""
    run = c.add_command(
        sub, "run", _unreachable, parents=[root],
        summary="run a command as one Run of an experiment (parameters, stdout/stderr, result, watched files)",
        description="Wrap COMMAND as one Run of experiment NAME: --param KEY=VALUE values become run "
        "parameters, stdout/stderr and the exit status are recorded, files completed in --watch DIR are "
        "attached. Without --commit the experiment stays open (checkpointed) for further runs.",
        example=RUN_EXAMPLE,
    )
    run.add_argument("argv", nargs=argparse.REMAINDER,
                     metavar="NAME [--param KEY=VALUE ...] [--watch DIR] [--resume] [--commit] -- COMMAND [ARGS...]")
    commit = c.add_command(
        sub, "commit", _unreachable, parents=[root],
        summary="commit an experiment built by `run` invocations; prints its name and manifest digest",
        example=COMMIT_EXAMPLE,
    )
    commit.add_argument("argv", nargs=argparse.REMAINDER, metavar="NAME")
    c.add_command(
        sub, "demo", cmd_demo, parents=[root],
        summary="run the end-to-end demo: a knapsack capacity sweep solved with HiGHS, committed and listed",
        example="ommx-experiment demo --root /tmp/ommx-demo",
    )
    return {"run": run, "commit": commit}


def _unreachable(args: argparse.Namespace) -> int:
    # run/commit are dispatched on the raw argv before argparse sees them.
    raise AssertionError("run/commit are dispatched before parsing")
