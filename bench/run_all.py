"""Run the benchmarks in ``bench/bench_*.py`` and print one table.

Usage::

    python bench/run_all.py                  # every benchmark
    python bench/run_all.py blob_put baseline  # only bench_blob_put.py and bench_baseline.py
    python bench/run_all.py --json out.json  # also write the rows as JSON

Each module exposes ``run() -> list[dict]``. A module that raises contributes an
``ERROR`` row and makes the exit code 1; the other benchmarks still run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
KEY_COLUMNS = ("benchmark", "case", "impl")
METRIC_ORDER = ("seconds", "MB/s", "runs/s", "ms", "peak_rss_MB", "disk_MB")

Row = dict[str, Any]


def discover(names: list[str]) -> list[Path]:
    """The ``bench_*.py`` files, sorted; only those named (with or without ``bench_``) if ``names``."""
    found = sorted(BENCH_DIR.glob("bench_*.py"))
    if not names:
        return found
    wanted = {n.removesuffix(".py").removeprefix("bench_") for n in names}
    selected = [p for p in found if p.stem.removeprefix("bench_") in wanted]
    unknown = wanted - {p.stem.removeprefix("bench_") for p in selected}
    if unknown:
        available = ", ".join(p.stem.removeprefix("bench_") for p in found)
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; available: {available}")
    return selected


def load(path: Path) -> ModuleType:
    """Import a benchmark module from its file (``bench/`` is on ``sys.path`` for ``_common``)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load benchmark module {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def run_one(path: Path) -> tuple[list[Row], bool]:
    """Rows of one benchmark, and whether it succeeded."""
    name = path.stem.removeprefix("bench_")
    print(f"running {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        rows = list(load(path).run())
    except Exception as exc:  # one broken benchmark must not hide the others
        traceback.print_exc()
        return [{"benchmark": name, "case": "-", "impl": "-", "note": f"ERROR: {type(exc).__name__}: {exc}"}], False
    print(f"  {name}: {len(rows)} row(s) in {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
    return rows, True


def columns(rows: list[Row]) -> list[str]:
    """Key columns, known metrics in a fixed order, other metrics as first seen, ``note`` last."""
    seen: list[str] = []
    for row in rows:
        seen.extend(k for k in row if k not in seen)
    metrics = [c for c in METRIC_ORDER if c in seen]
    extra = [c for c in seen if c not in KEY_COLUMNS and c not in METRIC_ORDER and c != "note"]
    return [*KEY_COLUMNS, *metrics, *extra, *(["note"] if "note" in seen else [])]


def fmt(value: Any) -> str:
    """A cell: floats with three significant-ish digits, missing values blank."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def print_table(rows: list[Row]) -> None:
    """Print all rows as one rich table; notes become numbered footnotes so the table stays narrow."""
    from rich.console import Console
    from rich.table import Table

    cols = [c for c in columns(rows) if c != "note"]
    notes = [str(row["note"]) for row in rows if row.get("note")]
    table = Table(title="ommx-experiment benchmarks")
    for col in cols:
        numeric = col not in KEY_COLUMNS
        table.add_column(col, justify="right" if numeric else "left", no_wrap=True)
    if notes:
        table.add_column("note", justify="right", no_wrap=True)
    footnotes: list[str] = []
    for row in rows:
        cells = [fmt(row.get(col)) for col in cols]
        if notes:
            if row.get("note"):
                footnotes.append(str(row["note"]))
                cells.append(f"[{len(footnotes)}]")
            else:
                cells.append("")
        table.add_row(*cells)
    console = Console()
    if not console.is_terminal:  # piped or under make: do not squeeze into 80 columns
        console = Console(width=320)
    console.print(table)
    for number, note in enumerate(footnotes, 1):
        console.print(f"[{number}] {note}", markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="benchmark names (file stem with or without bench_)")
    parser.add_argument("--json", type=Path, help="also write all rows to this JSON file")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(BENCH_DIR))
    all_rows: list[Row] = []
    ok = True
    for path in discover(args.names):
        rows, succeeded = run_one(path)
        all_rows.extend(rows)
        ok = ok and succeeded
    if args.json:
        args.json.write_text(json.dumps(all_rows, indent=2))
    print_table(all_rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
