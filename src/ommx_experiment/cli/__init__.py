"""``ommx-experiment``: the command line, a thin shell over the public API.

Each command parses its arguments, opens the registry (``--root`` or the
default), calls one library function and prints the result: rich tables on a
terminal, space-separated columns otherwise, JSON with ``--json``. Errors are
one line on stderr, ``error: <message>``, with exit status 2 for usage errors
and 1 for failures; warnings are one ``warning: <message>`` line each.

Commands live in one module per group (``artifacts``, ``listing``, ``upkeep``,
``delegated``), plumbing in ``common``; ``command_run`` wraps any command as one
Run (``run``/``commit``) and ``demo`` is ``make demo``. Heavy modules are
imported inside the commands, so ``--help`` imports no pandas, pyarrow or ommx.

May import: every layer below (lifecycle, edges, format, engine) and the public
package ``ommx_experiment``. Nothing imports the CLI.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import OmmxExperimentError
from . import analysis, artifacts, common, completion, delegated, listing, upkeep

__all__ = ["build_parser", "main", "subcommands"]

EXIT_INTERRUPTED = 130
# Our error tree, the builtins it mirrors (what OMMX-compatible code raises), and a missing
# optional dependency: one line each. Anything else is a bug and keeps its traceback.
_FAILURES = (OmmxExperimentError, common.CliFailure, RuntimeError, ValueError, KeyError, OSError, ImportError)

_DESCRIPTION = """\
Record, list and maintain optimisation experiments stored as OCI artifacts
(byte-compatible with OMMX 3) in the Local Registry."""

_EPILOG = """\
examples:
  ommx-experiment list
  ommx-experiment show example.com/team/sweep:v1
  ommx-experiment params example.com/team/sweep:v1 --format csv
  ommx-experiment run example.com/team/sweep:v1 --param seed=1 -- python solve.py
  ommx-experiment gc --delete

Every command accepts --root PATH; `ommx-experiment COMMAND --help` shows an example."""


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and the ``run``/``commit`` sub-parsers (dispatched on raw argv)."""
    from .. import __version__

    parser = common.CliParser(
        prog=common.PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--root", metavar="PATH", type=Path, default=None, help="Local Registry root (any command)")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command", required=True)
    root, js = common.root_parent(), common.json_parent()
    listing.register(sub, root, js)
    analysis.register(sub, root, js)
    artifacts.register(sub, root, js)
    upkeep.register(sub, root, js)
    raw = delegated.register(sub, root, js)
    completion.register(sub, root, js).set_defaults(top_parser=parser)
    return parser, raw


def subcommands(parser: argparse.ArgumentParser | None = None) -> list[str]:
    """Every sub-command name, in ``--help`` order."""
    parser = parser or build_parser()[0]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def _split_global(argv: list[str]) -> tuple[Path | None, int]:
    """Top-level ``--root`` given before the command word, and the command word's index."""
    root, i = None, 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
        if argv[i] == "--root" and i + 1 < len(argv):
            root, i = Path(argv[i + 1]), i + 2
        elif argv[i].startswith("--root="):
            root, i = Path(argv[i].partition("=")[2]), i + 1
        else:
            return root, len(argv)  # --help, --version, a typo: argparse answers
    return root, i


def _dispatch(argv: list[str]) -> int:
    parser, raw = build_parser()
    root, i = _split_global(argv)
    if i < len(argv) and argv[i] in delegated.DELEGATED:
        if root is not None:
            common.use_root(argparse.Namespace(root=root))
        return delegated.run_delegated(argv[i], argv[i + 1 :], raw[argv[i]])
    args = parser.parse_args(argv)
    return int(args.func(args))


def _one_line(exc: BaseException) -> str:
    message = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return " ".join(lines) or type(exc).__name__


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    sys.stderr.write(f"warning: {_one_line(Exception(str(message)))}\n")


@contextmanager
def _plain_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        yield


def _broken_pipe() -> int:
    # The reader went away (`| head`): silence the final flush instead of a traceback.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return common.EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ommx-experiment`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    with _plain_warnings():
        try:
            return _dispatch(args)
        except SystemExit as exc:  # argparse: --help, --version, usage errors
            return exc.code if isinstance(exc.code, int) else common.EXIT_USAGE
        except common.UsageError as exc:
            sys.stderr.write(f"error: {_one_line(exc)}\n")
            return common.EXIT_USAGE
        except KeyboardInterrupt:
            sys.stderr.write("error: interrupted\n")
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            return _broken_pipe()
        except _FAILURES as exc:
            sys.stderr.write(f"error: {_one_line(exc)}\n")
            return common.EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
