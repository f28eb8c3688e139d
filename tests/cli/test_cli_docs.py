"""The CLI documents itself: help with an example for every command, every command in the README,
and ``--help`` cheap (no pandas/pyarrow/ommx imported)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ommx_experiment import cli

README = Path(__file__).resolve().parents[2] / "README.md"
HEAVY = ("pandas", "pyarrow", "ommx", "numpy", "msgpack", "zstandard", "rich", "requests")
EXPECTED = {
    "list", "show", "params", "inspect", "export", "import", "push", "pull", "rm", "restore-ref", "gc",
    "prune-anonymous", "size", "checkpoints", "sync", "demo", "run", "commit", "sql", "diff", "report", "completion",
}
SUBCOMMANDS = cli.subcommands()


def test_parser_has_exactly_the_issue_commands() -> None:
    assert set(SUBCOMMANDS) == EXPECTED


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_ends_with_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--root PATH" in out
    tail = out.rstrip().split("\nexample:\n", 1)
    assert len(tail) == 2, f"`{command} --help` has no example section:\n{out}"
    assert all(line.strip().startswith(f"ommx-experiment {command}") for line in tail[1].splitlines())


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    missing = [c for c in SUBCOMMANDS if not re.search(rf"^\s+{re.escape(c)}(\s|$)", out, re.M)]
    assert not missing


@pytest.mark.parametrize("flag", [[], ["--help"], ["gc", "--help"], ["run", "--help"], ["--version"]])
def test_help_imports_nothing_heavy(flag: list[str]) -> None:
    script = (
        "import json, sys\nfrom ommx_experiment import cli\ncode = cli.main(%r)\n"
        "print(json.dumps([code, sorted(m for m in %r if m in sys.modules)]))" % (flag, HEAVY)
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    code, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == []
    assert code == (2 if not flag else 0)


def test_every_subcommand_is_in_the_readme() -> None:
    """Each command must appear in README.md as ``ommx-experiment <command>``."""
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    missing = [c for c in SUBCOMMANDS if not re.search(rf"ommx-experiment {re.escape(c)}(?![\w-])", text)]
    assert not missing, (
        f"README.md does not document these subcommands as `ommx-experiment <command>`: {', '.join(missing)}"
    )
