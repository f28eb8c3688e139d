"""Shared pieces of the CLI: options, the registry root, argument types, output.

Everything heavy (rich, pandas, the registry) is imported inside functions so
``ommx-experiment --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

PROG = "ommx-experiment"
EXIT_FAILURE = 1
EXIT_USAGE = 2

Command = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad command-line input detected after parsing (exit status 2)."""


class CliFailure(Exception):
    """A command failed for a reason the CLI itself detected (exit status 1)."""


class CliParser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``error: <message> (see '<prog> --help')``, exit 2."""

    def error(self, message: str) -> NoReturn:
        hint = did_you_mean(message)
        sys.stderr.write(f"error: {message}{hint} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def did_you_mean(message: str) -> str:
    """``"; did you mean 'show'?"`` for argparse's ``invalid choice: 'shwo' (choose from ...)``, else ``""``."""
    import difflib
    import re

    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if found is None:
        return ""
    choices = re.findall(r"'([^']*)'", found.group(2)) or [c.strip() for c in found.group(2).split(",")]
    close = difflib.get_close_matches(found.group(1), choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


# --- shared options (argparse "parents") --------------------------------------------------------


def root_parent() -> argparse.ArgumentParser:
    """``--root PATH`` for every command (SUPPRESS: never overrides a top-level ``--root``)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--root",
        metavar="PATH",
        type=Path,
        default=argparse.SUPPRESS,
        help="Local Registry root to use instead of the default ($OMMX_LOCAL_REGISTRY_ROOT or ~/.local/share/ommx)",
    )
    return parent


def json_parent() -> argparse.ArgumentParser:
    """``--json`` for commands whose output a script would want."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    return parent


def add_command(
    subparsers: Any,
    name: str,
    func: Command,
    *,
    summary: str,
    example: str,
    parents: Sequence[argparse.ArgumentParser],
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A sub-parser whose ``--help`` ends with ``example`` (one command per line)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=summary,
        description=description or summary,
        epilog="example:\n" + "\n".join(f"  {line}" for line in example.strip().splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(parents),
    )
    parser.set_defaults(func=func)
    return parser


def add_name(parser: argparse.ArgumentParser, help: str = "image name") -> None:
    """The positional ``NAME`` argument (an image name, validated by :func:`image_name`)."""
    parser.add_argument("name", metavar="NAME", type=image_name, help=help)


# --- argument types -------------------------------------------------------------------------------


def image_name(text: str) -> str:
    """argparse type: a canonical image name (an invalid one is a usage error)."""
    from ..engine.names import ImageName
    from ..errors import InvalidInputError

    try:
        return str(ImageName.parse(text))
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration(text: str) -> str:
    """argparse type: ``30s``/``15m``/``24h``/``7d``, checked here, passed on as text."""
    from ..engine.durations import parse_duration_seconds
    from ..errors import InvalidInputError

    try:
        parse_duration_seconds(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def digest(text: str) -> str:
    """argparse type: ``sha256:<64 lowercase hex>``."""
    from ..engine.digest import is_valid_digest

    if not is_valid_digest(text):
        raise argparse.ArgumentTypeError(f"invalid manifest digest {text!r}: expected sha256:<64 lowercase hex>")
    return text


# --- the registry root ------------------------------------------------------------------------------


def root_arg(args: argparse.Namespace) -> Path | None:
    """The ``--root`` given (absolute), or None for the default registry."""
    root = getattr(args, "root", None)
    return None if root is None else Path(root).expanduser().absolute()


def use_root(args: argparse.Namespace) -> None:
    """Make ``--root`` the process default registry (for Experiment/Artifact calls).

    The CLI process is fresh, so this is the first resolution; in-process callers
    whose default is already that same root are accepted too.
    """
    root = root_arg(args)
    if root is None:
        return
    from ..engine.root import get_local_registry_root, set_local_registry_root
    from ..errors import RootAlreadySetError

    try:
        set_local_registry_root(root)
    except RootAlreadySetError:
        if get_local_registry_root() != root:
            raise


def open_registry(args: argparse.Namespace) -> Any:
    """The LocalRegistry of ``--root`` (or the default one)."""
    from ..engine.registry import LocalRegistry

    root = root_arg(args)
    return LocalRegistry.default() if root is None else LocalRegistry.at(root)


def preflight(args: argparse.Namespace) -> None:
    """Open the registry and check its index once per command (``PRAGMA quick_check``).

    A lost index fails here (``RegistryIndexLostError``: exit 1, naming the file and
    ``recover``); a corrupt one is reported as a warning (reads go on where SQLite
    can; every write fails with ``RegistryCorruptError``).
    """
    from ..errors import RegistryCorruptError

    registry = open_registry(args)
    try:
        registry.db.quick_check()
        if registry.db.is_poisoned():
            raise RegistryCorruptError(f"{registry.db.path} is marked corrupt ({registry.db.corrupt_marker})")
    except RegistryCorruptError as exc:
        sys.stderr.write(f"warning: {exc}; writes are stopped. Run `{PROG} recover --root {registry.root}`\n")


def require_local(args: argparse.Namespace, name: str) -> str:
    """The manifest digest of ``name`` in the registry; a clear error if it is not there.

    A name held only as an unsealed draft (the checkpoint journal of ``run``, or an
    OMMX-format checkpoint) says so and how to commit or restore it; anything
    else suggests pulling it, and names a similar local experiment if there is one.
    """
    from ..errors import RefNotFoundError

    registry = open_registry(args)
    found = registry.resolve(name)
    if found is None:
        draft = _draft_message(registry, name)
        if draft is not None:
            raise RefNotFoundError(draft)
        hint = _similar_name(registry, name)
        raise RefNotFoundError(
            f"{name} is not in the Local Registry at {registry.root} ({hint}pull it first: {PROG} pull '{name}')"
        )
    return str(found)


def _draft_message(registry: Any, name: str) -> str | None:
    from ..edges.catalog import list_experiment_checkpoints

    listed = list_experiment_checkpoints(name, root=registry.root, include_journal=True)  # restore's pick per name
    drafts = [r for r in listed if r.requested_image_name == name]
    if not drafts:
        return None
    draft = drafts[0]
    return (
        f"{name} is an unsealed {draft.status} experiment ({draft.run_count} runs), not committed yet: "
        f"commit it with `{PROG} commit {shell_quote(name)}`, or resume it in Python with "
        f"Experiment.restore_from_checkpoint({name!r})"
    )


def _similar_name(registry: Any, name: str) -> str:
    import difflib

    names = [str(r.image_name) for r in registry.list_refs() if ".ommx.local/" not in str(r.image_name)]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.9)
    return f"did you mean '{close[0]}'? Otherwise " if close else ""


# --- output -----------------------------------------------------------------------------------------


def console() -> Console:
    """A rich console on the current stdout; plain, unwrapped text when it is not a terminal."""
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(file=sys.stdout, highlight=False, soft_wrap=not tty, width=None if tty else 100_000)


def table(*columns: str, right: Sequence[str] = (), wide: Sequence[str] = ()) -> Table:
    """A rich table: boxed on a terminal, space-separated columns with a header otherwise.

    ``wide`` columns (names, digests) fold on a narrow terminal, never truncated: a
    name cut with "…" cannot be copied. The other columns are kept on one line.
    """
    from rich import box
    from rich.table import Table

    plain = not sys.stdout.isatty()
    out = Table(box=None if plain else box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        justify: Literal["right", "left"] = "right" if column in right else "left"
        out.add_column(column, justify=justify, no_wrap=plain or column not in wide, overflow="fold")
    return out


def when(timestamp: str) -> str:
    """An RFC 3339 ``updated_at`` as ``YYYY-MM-DDTHH:MM:SSZ`` for tables: one token, UTC (unparseable: as is)."""
    from datetime import UTC, datetime

    try:
        return datetime.fromisoformat(timestamp).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return timestamp


def text(value: object) -> Any:
    """A table cell shown verbatim (no rich markup interpretation)."""
    from rich.text import Text

    return Text("" if value is None else str(value))


def emit_json(value: Any) -> None:
    sys.stdout.write(dumps_strict(value) + "\n")


def dumps_strict(value: Any) -> str:
    """Strict JSON (RFC 8259) for every ``--json`` / ``--format json`` output.

    NaN and ±Infinity (Python floats, NumPy scalars) and pandas' missing values
    are written as ``null``, as JavaScript's ``JSON.stringify`` does: ``NaN`` is not
    JSON and strict parsers (Node, Perl, Go) reject it. Use ``--format csv`` or
    Parquet to keep them. Anything else JSON cannot hold is written as its ``str``.
    """
    return json.dumps(_finite(value), indent=2, ensure_ascii=False, allow_nan=False, default=str)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if obj is None or isinstance(obj, (str, int)):
        return obj
    module = type(obj).__module__ or ""
    if module.startswith("numpy") and hasattr(obj, "item"):
        return _finite(obj.item())
    if module.startswith("pandas") and type(obj).__name__ in ("NAType", "NaTType"):
        return None
    return obj


def label(name: str, value: object) -> str:
    """``ommx``-style status line: a right-aligned 12-character label, a space, the text."""
    return f"{name:>12} {value}"


def shell_quote(value: str) -> str:
    """Single-quoted for POSIX shells (as ``ommx rm`` prints its rollback line)."""
    return "'" + value.replace("'", "'\\''") + "'"


def rollback_command(args: argparse.Namespace, name: str, manifest_digest: str) -> str:
    """The copy-paste command that undoes removing ``name``."""
    line = f"{PROG} restore-ref {shell_quote(name)} {shell_quote(manifest_digest)}"
    root = root_arg(args)
    return line if root is None else f"{line} --root {shell_quote(str(root))}"


def human_size(n: int) -> str:
    from ..edges.maintenance import human_size as fmt

    return str(fmt(n))
