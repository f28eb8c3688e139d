"""Read-only views: ``list``, ``show``, ``params``, ``checkpoints``, ``size``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import common as c

PARAM_FORMATS = ("table", "csv", "json", "parquet")


# --- list -----------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    from ..edges.catalog import list_experiments
    from ..edges.maintenance import size

    root = c.root_arg(args)
    rows = [(ref, size(ref.image_name, root=root)) for ref in list_experiments(args.prefix, root=root)]
    if args.json:
        c.emit_json([_experiment_json(ref, n) for ref, n in rows])
        return 0
    out = c.table(
        "NAME", "STATUS", "RUNS", "SOLVES", "SAMPLINGS", "UPDATED", "SIZE",
        right=("RUNS", "SOLVES", "SAMPLINGS", "SIZE"), wide=("NAME",),
    )
    for ref, n in rows:
        out.add_row(
            c.text(ref.image_name), ref.status, str(ref.run_count), str(ref.solve_count), str(ref.sampling_count),
            c.when(ref.updated_at), c.human_size(n),
        )
    c.console().print(out)
    return 0


def _experiment_json(ref: Any, n: int) -> dict[str, Any]:
    return {
        "image_name": ref.image_name,
        "status": ref.status,
        "runs": ref.run_count,
        "solves": ref.solve_count,
        "samplings": ref.sampling_count,
        "updated_at": ref.updated_at,
        "size": n,
        "manifest_digest": ref.manifest_digest,
        "annotations": dict(ref.annotations),
    }


# --- show -----------------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    from ..lifecycle.experiment import Experiment

    c.use_root(args)
    c.require_local(args, args.name)
    exp = Experiment.load(args.name)
    summary = _summary(exp)
    if args.json:
        c.emit_json(summary)
    else:
        _print_summary(summary, exp.runs_df(), args)
    return 0


def _summary(exp: Any) -> dict[str, Any]:
    from ..lifecycle.registry_views import parent_name

    artifact = exp.artifact
    config = json.loads(artifact.get_blob(artifact.config))
    calls = {int(run["run_id"]): run for run in config.get("runs", [])}
    params = _params_by_run(exp.run_parameters_df())
    timing = _timing(exp.runs_df())
    runs = [
        _run_summary(run, params.get(run.run_id, {}), calls.get(run.run_id, {}), timing.get(run.run_id, {}))
        for run in exp.runs
    ]
    subject = artifact.subject
    parent = None
    if subject is not None:
        parent = {"manifest_digest": subject.digest, "image_name": parent_name(artifact.registry, subject.digest)}
    return {
        "image_name": exp.image_name,
        "manifest_digest": artifact.manifest_digest,
        "status": exp.status,
        "lifecycle_reason": exp.lifecycle_reason,
        "parent": parent,
        "annotations": exp.annotations,
        "attachments": exp.attachment_names,
        "solves": sum(len(run["solves"]) for run in runs),
        "samplings": sum(len(run["samplings"]) for run in runs),
        "provenance": exp.provenance,
        "runs": runs,
    }


def _timing(frame: Any) -> dict[int, dict[str, Any]]:
    names = ("started_at", "finished_at", "duration_s")
    out: dict[int, dict[str, Any]] = {}
    for run_id, row in zip(frame.index, frame.iloc[:, 2:5].itertuples(index=False, name=None), strict=True):
        out[int(run_id)] = {
            name: (None if _missing(v) or v != v else (v.isoformat() if hasattr(v, "isoformat") else float(v)))
            for name, v in zip(names, row, strict=True)
        }
    return out


def _params_by_run(df: Any) -> dict[int, dict[str, Any]]:
    """``{run_id: {name: value}}`` without missing cells, values as Python scalars."""
    return {
        int(run_id): {str(k): _scalar(v) for k, v in row.items() if not _missing(v)}
        for run_id, row in df.iterrows()
    }


def _scalar(value: Any) -> Any:
    """A numpy/pandas scalar as the Python bool/int/float/str it holds."""
    return value.item() if hasattr(value, "item") else value


def _run_summary(run: Any, params: dict[str, Any], config: dict[str, Any], timing: dict[str, Any]) -> dict[str, Any]:
    def calls(kind: str, key: str) -> list[dict[str, Any]]:
        return [
            {"id": call.get(key), "status": call.get("status", "finished"), "adapter": call.get("adapter")}
            for call in config.get(kind, [])
        ]

    return {
        "run_id": run.run_id,
        "status": run.status,
        "lifecycle_reason": run.lifecycle_reason,
        **timing,
        "parameters": params,
        "attachments": run.attachment_names,
        "solves": calls("solves", "solve_id"),
        "samplings": calls("samplings", "sampling_id"),
    }


def _print_summary(summary: dict[str, Any], runs: Any, args: argparse.Namespace) -> None:
    console = c.console()
    write = sys.stdout.write
    write(c.label("Experiment", summary["image_name"]) + "\n")
    write(c.label("Digest", summary["manifest_digest"]) + "\n")
    status = summary["status"]
    if summary["lifecycle_reason"]:
        status = f"{status} ({summary['lifecycle_reason']})"
    write(c.label("Status", status) + "\n")
    parent = summary["parent"]
    if parent is not None:
        write(c.label("Parent", f"{parent['image_name'] or '(no local name)'} {parent['manifest_digest']}") + "\n")
    lines = [f"{key} = {value}" for key, value in sorted(summary["annotations"].items())] or ["none"]
    write(c.label("Annotations", lines[0]) + "\n")
    for line in lines[1:]:
        write(c.label("", line) + "\n")
    write(c.label("Attachments", ", ".join(summary["attachments"]) or "none") + "\n")
    for line in _provenance_lines(summary["provenance"]):
        write(line + "\n")
    write(c.label("Runs", len(summary["runs"])) + "\n")
    write(c.label("Solves", summary["solves"]) + "\n")
    write(c.label("Samplings", summary["samplings"]) + "\n")
    if summary["runs"]:
        from .analysis import render_frame

        frame = _select_runs(runs, args)
        write(render_frame(frame, limit=args.limit or None, index=True))
    calls = [(run["run_id"], kind, call) for run in summary["runs"] for kind in ("solves", "samplings") for call in run[kind]]
    if calls:
        shown = calls if not args.limit else calls[: args.limit]
        console.print(_solves_table(shown))
        if len(shown) < len(calls):
            write(f"({len(calls) - len(shown)} more solves/samplings; --limit N to show more)\n")


def _provenance_lines(record: dict[str, Any] | None) -> list[str]:
    if not record:
        return [c.label("Provenance", "none recorded")]
    out = [c.label("Created", record.get("created_at", "?"))]
    where = " ".join(str(record[k]) for k in ("host", "python") if record.get(k))
    if where:
        out.append(c.label("On", where))
    packages = record.get("packages") or {}
    if packages:
        out.append(c.label("Packages", ", ".join(f"{k} {v}" for k, v in sorted(packages.items()))))
    git = record.get("git") or {}
    if git.get("commit"):
        branch = f" ({git['branch']})" if git.get("branch") else ""
        out.append(c.label("Git", f"{git['commit']}{branch} in {git.get('root', '?')}"))
    return out


def _select_runs(frame: Any, args: argparse.Namespace) -> Any:
    """``--sort COLUMN`` (``--desc``, or ``--sort=-COLUMN``: descending) and ``--columns a,b`` applied to the runs frame."""
    if args.sort:
        key = args.sort.lstrip("-")
        if key not in frame.columns and key != "run_id":
            raise c.UsageError(f"--sort {key}: no such column; columns: run_id, {', '.join(map(str, frame.columns))}")
        descending = args.sort.startswith("-") or args.desc
        frame = frame.sort_index(ascending=not descending) if key == "run_id" else frame.sort_values(
            key, ascending=not descending, na_position="last", kind="stable"
        )
    if args.columns:
        wanted = [name.strip() for name in args.columns.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in frame.columns]
        if unknown:
            raise c.UsageError(f"--columns: no such column {', '.join(unknown)}; columns: {', '.join(map(str, frame.columns))}")
        frame = frame[wanted]
    return frame


def _solves_table(solves: list[tuple[int, str, dict[str, Any]]]) -> Any:
    out = c.table("RUN", "KIND", "ID", "STATUS", "ADAPTER", right=("RUN", "ID"), wide=("ADAPTER",))
    for run_id, kind, call in solves:
        out.add_row(str(run_id), kind[:-1], str(call["id"]), c.text(call["status"]), c.text(call["adapter"]))
    return out


# --- params ---------------------------------------------------------------------------------------


def cmd_params(args: argparse.Namespace) -> int:
    from ..lifecycle.experiment import Experiment

    if args.format == "parquet" and args.output is None:
        raise c.UsageError("--format parquet writes binary data: give --output FILE")
    c.use_root(args)
    c.require_local(args, args.name)
    exp = Experiment.load(args.name)
    if args.format == "parquet":
        _copy(exp.run_parameters_parquet, args.output)
        return 0
    rendered = _render_params(exp.run_parameters_df(), args.format)
    if args.output is not None:
        args.output.write_text(rendered, encoding="utf-8")
    else:
        sys.stdout.write(rendered)
    return 0


def _copy(source: Path, target: Path) -> None:
    import shutil

    shutil.copyfile(source, target)


def _render_params(df: Any, fmt: str) -> str:
    if fmt == "csv":
        return str(df.to_csv())
    if fmt == "json":
        records = [{"run_id": run_id, **params} for run_id, params in _params_by_run(df).items()]
        return json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    names = [str(col) for col in df.columns]
    out = c.table("run_id", *names, right=("run_id",), wide=names)
    for run_id, row in df.iterrows():
        out.add_row(str(run_id), *(c.text("" if _missing(v) else _scalar(v)) for v in row.tolist()))
    console = c.console()
    with console.capture() as captured:
        console.print(out)
    return captured.get()


def _missing(value: Any) -> bool:
    """A missing cell (``pd.NA``); a logged NaN float is a value, not a gap."""
    import pandas as pd

    return value is None or value is pd.NA


# --- checkpoints ------------------------------------------------------------------------------------


def cmd_checkpoints(args: argparse.Namespace) -> int:
    """OMMX's checkpoint listing plus our journal's drafts, each marked; ``RESTORE`` marks what restore uses.

    Rows: every OMMX-format checkpoint (``list_experiment_checkpoints()``, what
    OMMX lists too) and every journal draft ``restore_from_checkpoint`` would
    use (``include_journal=True``), with ``SOURCE`` ``checkpoint`` or ``journal``.
    """
    from ..edges.catalog import list_experiment_checkpoints

    root = c.root_arg(args)
    checkpoints = list_experiment_checkpoints(args.prefix, statuses=args.status, root=root)
    chosen = list_experiment_checkpoints(args.prefix, statuses=args.status, root=root, include_journal=True)
    restored = {(ref.requested_image_name, ref.from_journal, ref.checkpoint_image_name) for ref in chosen}
    refs = sorted([*checkpoints, *(ref for ref in chosen if ref.from_journal)],
                  key=lambda r: (r.requested_image_name, r.from_journal))
    if args.json:
        c.emit_json([_checkpoint_json(ref, _key(ref) in restored) for ref in refs])
        return 0
    # the checkpoint ref itself (long, internal) is in --json; restore uses the requested name
    out = c.table(
        "REQUESTED NAME", "SOURCE", "STATUS", "RUNS", "SOLVES", "UPDATED", "RESTORE",
        right=("RUNS", "SOLVES"), wide=("REQUESTED NAME",),
    )
    for ref in refs:
        out.add_row(
            c.text(ref.requested_image_name), _source(ref), ref.status, str(ref.run_count), str(ref.solve_count),
            c.when(ref.updated_at), "*" if _key(ref) in restored else "",
        )
    c.console().print(out)
    return 0


def _key(ref: Any) -> tuple[str, bool, str]:
    return (ref.requested_image_name, ref.from_journal, ref.checkpoint_image_name)


def _source(ref: Any) -> str:
    return "journal" if ref.from_journal else "checkpoint"


def _checkpoint_json(ref: Any, restore: bool) -> dict[str, Any]:
    return {
        "requested_image_name": ref.requested_image_name,
        "checkpoint_image_name": ref.checkpoint_image_name,
        "source": _source(ref),
        "restore": restore,
        "status": ref.status,
        "runs": ref.run_count,
        "solves": ref.solve_count,
        "samplings": ref.sampling_count,
        "updated_at": ref.updated_at,
        "manifest_digest": ref.manifest_digest,
    }


# --- size -----------------------------------------------------------------------------------------


def cmd_size(args: argparse.Namespace) -> int:
    from ..edges.maintenance import size

    root = c.root_arg(args)
    sizes = [(name, size(name, root=root)) for name in args.names]
    if args.json:
        c.emit_json([{"image_name": name, "size": n} for name, n in sizes])
        return 0
    for name, n in sizes:
        sys.stdout.write(c.label("Image", name) + "\n" + c.label("Size", f"{c.human_size(n)} ({n} bytes)") + "\n")
    return 0


# --- registration -------------------------------------------------------------------------------------


def register(sub: Any, root: argparse.ArgumentParser, js: argparse.ArgumentParser) -> None:
    p = c.add_command(
        sub, "list", cmd_list, parents=[root, js],
        summary="list committed experiments: name, status, runs, solves, updated, size",
        example="ommx-experiment list example.com/team/\nommx-experiment list --json",
    )
    p.add_argument("prefix", nargs="?", metavar="PREFIX", help="only names starting with this string")

    p = c.add_command(
        sub, "show", cmd_show, parents=[root, js],
        summary="summary of one experiment: status, parent, provenance, runs (timing, parameters), solves",
        example="ommx-experiment show example.com/team/sweep:v1\n"
        "ommx-experiment show example.com/team/sweep:v1 --sort duration_s --desc --columns status,duration_s,seed --limit 10",
    )
    c.add_name(p, "experiment image name")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="show at most N runs and N solves (0: all; default 50)")
    p.add_argument("--columns", metavar="A,B,...", help="run columns to show (metadata or parameter names)")
    p.add_argument("--sort", metavar="COLUMN", help="sort runs by COLUMN (ascending; with --desc descending)")
    p.add_argument("--desc", action="store_true", help="with --sort: descending")

    p = c.add_command(
        sub, "params", cmd_params, parents=[root],
        summary="the run-parameter table of an experiment (one row per run)",
        example="ommx-experiment params example.com/team/sweep:v1 --format csv\n"
        "ommx-experiment params example.com/team/sweep:v1 --format parquet --output params.parquet",
    )
    c.add_name(p, "experiment image name")
    p.add_argument("--format", choices=PARAM_FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--output", metavar="FILE", type=Path, help="write to FILE instead of stdout (required for parquet)")
    p.add_argument("--json", dest="format", action="store_const", const="json", help="same as --format json")

    p = c.add_command(
        sub, "checkpoints", cmd_checkpoints, parents=[root, js],
        summary="list experiment checkpoints (draft, failed, interrupted) that can be restored: OMMX-format "
        "checkpoints and our journal's drafts (SOURCE); RESTORE marks the one restore uses",
        example="ommx-experiment checkpoints --status failed",
    )
    p.add_argument("prefix", nargs="?", metavar="PREFIX", help="only requested names starting with this string")
    p.add_argument("--status", action="append", choices=("draft", "failed", "interrupted"), help="repeatable filter")

    p = c.add_command(
        sub, "size", cmd_size, parents=[root, js],
        summary="logical size of images: manifest + config + unique layers",
        example="ommx-experiment size example.com/team/sweep:v1 example.com/team/sweep:v2",
    )
    p.add_argument("names", nargs="+", metavar="NAME", type=c.image_name, help="image names")
