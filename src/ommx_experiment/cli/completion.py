"""``ommx-experiment completion bash|zsh|fish``: shell completion generated from the argparse parser.

bash and zsh scripts come from `shtab <https://github.com/iterative/shtab>`_ (the
optional extra ``ommx-experiment[completion]``); fish, which shtab does not
cover, from a few lines here: sub-commands with their summaries, then each
sub-command's long options.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import common as c

SHELLS = ("bash", "zsh", "fish")
COMPLETION_EXTRA = "ommx-experiment[completion]"


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise AssertionError("the CLI parser has no sub-commands")


def fish_script(parser: argparse.ArgumentParser) -> str:
    """A fish completion script: sub-commands (with their help) and each one's long options."""
    prog = parser.prog
    sub = _subparsers(parser)
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    lines = [f"complete -c {prog} -f"]
    for name, child in sub.choices.items():
        summary = helps.get(name, "").replace("'", "\\'")
        lines.append(f"complete -c {prog} -n '__fish_use_subcommand' -a {name} -d '{summary[:80]}'")
        for action in child._actions:
            for option in action.option_strings:
                if option.startswith("--"):
                    text = (action.help or "").replace("'", "\\'")[:80]
                    needs = " -r" if action.nargs != 0 else ""
                    lines.append(
                        f"complete -c {prog} -n '__fish_seen_subcommand_from {name}' -l {option[2:]}{needs} -d '{text}'"
                    )
    return "\n".join(lines) + "\n"


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    if shell == "fish":
        return fish_script(parser)
    try:
        import shtab
    except ModuleNotFoundError as exc:
        if exc.name != "shtab":
            raise
        raise ImportError(f"shtab is not installed; install it with: pip install '{COMPLETION_EXTRA}'") from None
    return str(shtab.complete(parser, shell=shell))


def cmd_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(script(args.shell, args.top_parser))  # set by cli.build_parser (no import cycle)
    return 0


def register(sub: Any, root: argparse.ArgumentParser, js: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``completion``; the caller sets ``top_parser`` on it (the parser to describe)."""
    p = c.add_command(
        sub, "completion", cmd_completion, parents=[root],
        summary="print a shell completion script (bash, zsh, fish)",
        description="Print a completion script for SHELL. bash: add `eval \"$(ommx-experiment completion bash)\"` "
        "to ~/.bashrc; zsh: write it to a file named _ommx-experiment on your $fpath; fish: write it to "
        "~/.config/fish/completions/ommx-experiment.fish. bash and zsh need shtab "
        f"(pip install '{COMPLETION_EXTRA}').",
        example="ommx-experiment completion bash > ~/.local/share/bash-completion/completions/ommx-experiment\n"
        "ommx-experiment completion fish > ~/.config/fish/completions/ommx-experiment.fish",
    )
    p.add_argument("shell", metavar="SHELL", choices=SHELLS, help="bash, zsh or fish")
    return p
