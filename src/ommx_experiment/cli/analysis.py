"""Seeing a study: ``sql``, ``diff``, ``report``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import common as c

SQL_FORMATS = ("table", "csv", "json")


def cmd_sql(args: argparse.Namespace) -> int:
    from ..lifecycle.registry_views import sql

    frame = sql(args.query, root=c.root_arg(args))
    fmt = "json" if args.json else args.format
    if fmt == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif fmt == "json":
        sys.stdout.write(frame.to_json(orient="records", date_format="iso", force_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write(render_frame(frame, limit=args.limit))
    return 0


def render_frame(frame: Any, *, limit: int | None = None, index: bool = False) -> str:
    """A DataFrame as a rich table (floats rounded for display), at most ``limit`` rows."""
    from ..lifecycle.report import fmt

    shown = frame if limit is None else frame.head(limit)
    columns = ([str(shown.index.name or "")] if index else []) + [str(col) for col in shown.columns]
    out = c.table(*columns, wide=columns)
    for idx, row in zip(shown.index, shown.itertuples(index=False, name=None), strict=True):
        cells = ([fmt(idx)] if index else []) + [fmt(v) for v in row]
        out.add_row(*(c.text(v) for v in cells))
    console = c.console()
    with console.capture() as captured:
        console.print(out)
    text = captured.get()
    if limit is not None and len(frame) > limit:
        text += f"({len(frame) - limit} more rows; --limit N to show more)\n"
    return text


def cmd_diff(args: argparse.Namespace) -> int:
    from ..lifecycle.diff import diff

    c.use_root(args)
    for name in (args.a, args.b):
        c.require_local(args, name)
    result = diff(args.a, args.b)
    if args.json:
        c.emit_json(result.to_dict())
    else:
        sys.stdout.write(str(result) + "\n")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..lifecycle.report import report

    c.use_root(args)
    output = args.output or Path(f"{_slug(args.name)}.html")
    registry = c.open_registry(args)
    if not args.prefix and registry.resolve(args.name) is not None:
        from ..lifecycle.experiment import Experiment

        path = Experiment.load(args.name).report(output)
    else:
        if not args.prefix:
            c.require_local(args, args.name)
        path = report(args.name, output, root=c.root_arg(args))
    sys.stdout.write(c.label("Report", str(path)) + "\n")
    return 0


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("_") or "report"


def register(sub: Any, root: argparse.ArgumentParser, js: argparse.ArgumentParser) -> None:
    p = c.add_command(
        sub, "sql", cmd_sql, parents=[root, js],
        summary="run a DuckDB query over views `experiments`, `runs` and `solves` of the whole registry",
        description="Run a DuckDB SQL query over three views of every committed experiment in the Local "
        "Registry: experiments (one row each: name, digest, status, counts, parent, created_at), runs (one "
        "row per run: image_name, manifest_digest, run_id, status, lifecycle_reason, started_at, finished_at, "
        "duration_s, solves, samplings, parameters) and solves (one row per Solve/Sampling: objective, "
        "feasible, sense, ...). Needs DuckDB: pip install 'ommx-experiment[analysis]'.",
        example='ommx-experiment sql "SELECT image_name, status, count(*) FROM runs GROUP BY ALL"\n'
        "ommx-experiment sql \"SELECT capacity, max(objective) FROM solves JOIN runs USING (image_name, run_id) "
        'GROUP BY 1" --format csv',
    )
    p.add_argument("query", metavar="QUERY", help="SQL (DuckDB dialect)")
    p.add_argument("--format", choices=SQL_FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N rows (table format)")

    p = c.add_command(
        sub, "diff", cmd_diff, parents=[root, js],
        summary="runs added, removed and changed (parameters, status, objective) between two experiments",
        example="ommx-experiment diff example.com/team/sweep:v1 example.com/team/sweep:v2",
    )
    p.add_argument("a", metavar="A", type=c.image_name, help="first experiment (e.g. the parent)")
    p.add_argument("b", metavar="B", type=c.image_name, help="second experiment (e.g. the fork)")

    p = c.add_command(
        sub, "report", cmd_report, parents=[root],
        summary="write a self-contained HTML report (summary, plots, run table, lineage, provenance)",
        example="ommx-experiment report example.com/team/sweep:v1 -o report.html\n"
        "ommx-experiment report example.com/team/ --prefix -o team.html",
    )
    p.add_argument("name", metavar="NAME", help="experiment image name (or a name prefix with --prefix)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="HTML file to write (default: NAME.html)")
    p.add_argument("--prefix", action="store_true", help="one report over every experiment whose name starts with NAME")
