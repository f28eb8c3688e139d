"""The HTML report (``Experiment.report(path)``, ``report(prefix, path)``) and notebook cards (``_repr_html_``).

One self-contained file: inline CSS, a few lines of inline JavaScript (click a
column header to sort the run table), inline SVG charts from :mod:`.svg`; no
network access when opened. Sections: summary (status counts, durations,
solves), one chart of objective (or duration, when nothing was solved) against
each numeric parameter, one chart of solve status by each parameter with few
distinct values, the run table, fork lineage, provenance.

Structure that tests (and scripts) may rely on: ``<table id="runs">`` has one
``<tbody>`` row per run; each chart is a ``<figure class="plot objective-plot">``
or ``<figure class="plot status-plot">`` with ``data-parameter`` naming the
parameter.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..format import run_meta as rm
from . import svg

if TYPE_CHECKING:
    import pandas as pd

MAX_TABLE_ROWS = 5000
MAX_CATEGORIES = 30

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1240px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px} code{font-size:12px}
table{border-collapse:collapse;font-size:12px} th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}
th{background:#f5f5f5;cursor:pointer;position:sticky;top:0} td.num{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:12px} figure.plot{margin:0;border:1px solid #ddd;padding:4px}
.cards{display:flex;gap:12px;flex-wrap:wrap} .card{border:1px solid #ddd;border-radius:6px;padding:8px 14px}
.card b{font-size:20px;display:block} .finished{color:#2ca02c} .failed{color:#d62728} .interrupted{color:#ff7f0e}
.scroll{max-height:600px;overflow:auto}
"""

_SORT_JS = """
document.querySelectorAll("table.sortable th").forEach(function(th, col){
  th.addEventListener("click", function(){
    var table = th.closest("table"), body = table.tBodies[0];
    var asc = th.dataset.order !== "asc"; th.dataset.order = asc ? "asc" : "desc";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
"""


@dataclass
class ReportData:
    """Everything a report shows, gathered from one experiment or a selection of them."""

    title: str
    runs: pd.DataFrame  # columns: [image_name], run_id, metadata, parameters
    solves: pd.DataFrame  # solves.parquet columns (+ image_name), parameters joined
    params: list[str]
    experiments: list[dict[str, Any]] = field(default_factory=list)
    lineage: list[tuple[str, str]] = field(default_factory=list)  # (name or "?", digest), newest first
    provenance: Mapping[str, Any] | None = None
    series_column: str | None = None  # image_name for cross-experiment reports


# --- formatting --------------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or value is pd.NA or value is pd.NaT


def fmt(value: Any) -> str:
    """A cell for display: floats to 6 significant digits, timestamps to seconds, missing as empty."""
    if _missing(value):
        return ""
    if hasattr(value, "item") and not hasattr(value, "isoformat"):
        value = value.item()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    if hasattr(value, "isoformat"):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _sort_key(value: Any) -> str:
    if _missing(value):
        return ""
    if hasattr(value, "timestamp"):
        return repr(value.timestamp())
    if isinstance(value, bool) or (hasattr(value, "dtype") and str(getattr(value, "dtype", "")) == "bool"):
        return str(int(bool(value)))
    return str(value.item() if hasattr(value, "item") else value)


def _numeric(frame: pd.DataFrame, column: str) -> bool:
    import pandas as pd

    dtype = frame[column].dtype
    return bool(pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype))


# --- gathering ----------------------------------------------------------------------------------------


def _lineage(registry: Any, subject: Any) -> list[tuple[str, str]]:
    from ..engine.oci import Manifest
    from .registry_views import parent_name

    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    while subject is not None and subject.digest not in seen and len(out) < 32:
        seen.add(subject.digest)
        out.append((parent_name(registry, subject.digest) or "(no local name)", subject.digest))
        try:
            subject = Manifest.parse(registry.blobs.get(subject.digest)).subject
        except Exception:  # noqa: BLE001 - a parent that is not stored locally ends the chain
            break
    return out


def _experiment_data(exp: Any) -> ReportData:
    from .analysis import provenance as read_provenance

    runs = exp.runs_df()
    n_meta = len(rm.RUN_META_COLUMNS)
    params = [str(c) for c in runs.columns[n_meta:]]
    runs = runs.reset_index(names=rm.displaced("run_id", set(params)))
    sealed = exp._sealed
    data = ReportData(exp.image_name, runs, exp.solves_df(), params)
    if sealed is not None:
        data.lineage = _lineage(sealed.registry, sealed.manifest.subject)
        data.provenance = read_provenance(sealed)
        data.experiments = [{
            "image_name": exp.image_name, "manifest_digest": sealed.manifest_digest, "status": sealed.status,
            "lifecycle_reason": sealed.reason,
        }]
    else:
        data.experiments = [{"image_name": exp.image_name, "manifest_digest": None, "status": "unsealed"}]
    return data


def _registry_data(prefix: str | None, root: Any, annotations: Mapping[str, str] | None) -> ReportData:
    from .registry_views import experiments_frame, runs_df, select, solves_df

    selected = select(prefix, annotations=annotations, root=root)
    runs = runs_df(prefix, annotations=annotations, root=root)
    solves = solves_df(prefix, annotations=annotations, root=root)
    n_front = 3 + len(rm.RUN_META_COLUMNS)  # image_name, manifest_digest, run_id, metadata
    params = [str(c) for c in runs.columns[n_front:]]
    frame = experiments_frame(selected)
    experiments = [{k: (None if _missing(v) else v) for k, v in row.items()} for row in frame.to_dict("records")]
    data = ReportData(f"experiments {prefix or '(all)'}", runs, solves, params, experiments)
    data.series_column = runs.columns[0] if len(runs.columns) else None
    return data


# --- sections --------------------------------------------------------------------------------------


def _status_column(frame: pd.DataFrame, params: Sequence[str]) -> str:
    return rm.displaced("status", set(params))


def _summary(data: ReportData) -> str:
    runs = data.runs
    status_col = _status_column(runs, data.params)
    counts = runs[status_col].value_counts().to_dict() if len(runs) else {}
    duration_col = rm.displaced("duration_s", set(data.params))
    durations = [float(v) for v in runs[duration_col] if not _missing(v)] if len(runs) else []
    cards = [f'<div class="card"><b>{len(runs)}</b>runs</div>']
    for status in ("finished", "failed", "interrupted"):
        if counts.get(status):
            cards.append(f'<div class="card {status}"><b>{counts[status]}</b>{status}</div>')
    n_calls = len(data.solves)
    solve_status = rm.displaced("status", set(data.params))
    feasible_col = rm.displaced("feasible", set(data.params))
    if n_calls:
        feasible = int(data.solves[feasible_col].fillna(False).astype(bool).sum())
        failed = int((data.solves[solve_status] != "finished").sum())
        cards.append(f'<div class="card"><b>{n_calls}</b>solves &amp; samplings</div>')
        cards.append(f'<div class="card"><b>{feasible}</b>feasible results</div>')
        if failed:
            cards.append(f'<div class="card failed"><b>{failed}</b>failed solves</div>')
    if durations:
        cards.append(
            f'<div class="card"><b>{statistics.median(durations):.3g} s</b>median run '
            f'(min {min(durations):.3g} s, max {max(durations):.3g} s, total {sum(durations):.3g} s)</div>'
        )
    else:
        cards.append('<div class="card"><b>–</b>no run timing recorded</div>')
    return '<h2>Summary</h2><div class="cards">' + "".join(cards) + "</div>"


def _experiments_table(data: ReportData) -> str:
    if len(data.experiments) <= 1 and data.series_column is None:
        return ""
    columns = ["image_name", "status", "runs", "solves", "samplings", "created_at", "parent_name", "manifest_digest"]
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    rows = []
    for exp in data.experiments:
        cells = "".join(f'<td data-v="{escape(_sort_key(exp.get(c)))}">{escape(fmt(exp.get(c)))}</td>' for c in columns)
        rows.append(f"<tr>{cells}</tr>")
    return (
        '<h2>Experiments</h2><div class="scroll"><table id="experiments" class="sortable">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _run_table(data: ReportData) -> str:
    frame = data.runs
    columns = [str(c) for c in frame.columns]
    numeric = {c for c in columns if _numeric(frame, c)}
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    rows = []
    for record in frame.head(MAX_TABLE_ROWS).itertuples(index=False, name=None):
        cells = []
        for column, value in zip(columns, record, strict=True):
            css = ' class="num"' if column in numeric else ""
            shown = fmt(value)
            if column == "manifest_digest" and len(shown) > 19:
                css += f' title="{escape(shown)}"'
                shown = shown[:19] + "…"
            cells.append(f'<td{css} data-v="{escape(_sort_key(value))}">{escape(shown)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="meta">first {MAX_TABLE_ROWS} of {len(frame)} runs</p>' if len(frame) > MAX_TABLE_ROWS else ""
    return (
        f'<h2>Runs</h2><p class="meta">Click a column header to sort.</p>{note}<div class="scroll">'
        f'<table id="runs" class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
    )


def _points(data: ReportData, param: str) -> tuple[list[tuple[float, float, str]], str]:
    """Chart points for ``param``: objectives of finished calls, or run durations when nothing has one."""
    import pandas as pd

    solves = data.solves
    objective = rm.displaced("objective", set(data.params))
    series_col = data.series_column
    if len(solves) and solves[objective].notna().any():
        kind = rm.displaced("kind", set(data.params))
        adapter = rm.displaced("adapter", set(data.params))
        rows = solves[solves[objective].notna() & solves[param].notna()]
        points = []
        for _, row in rows.iterrows():
            label = str(row[series_col]) if series_col else f"{str(row[adapter]).rsplit('.', 1)[-1]} ({row[kind]})"
            points.append((float(row[param]), float(row[objective]), label))
        return points, "objective"
    duration = rm.displaced("duration_s", set(data.params))
    runs = data.runs
    rows = runs[runs[duration].notna() & runs[param].notna()] if len(runs) else runs
    label_of = (lambda r: str(r[series_col])) if series_col else (lambda r: "runs")
    return [(float(r[param]), float(r[duration]), label_of(r)) for _, r in rows.iterrows() if not pd.isna(r[param])], (
        "duration (s)"
    )


def _objective_plots(data: ReportData) -> str:
    figures = []
    for param in data.params:
        if param not in data.runs.columns or not _numeric(data.runs, param):
            continue
        points, y_label = _points(data, param)
        chart = svg.scatter(points, title=f"{y_label} vs {param}", x_label=param, y_label=y_label)
        figures.append(f'<figure class="plot objective-plot" data-parameter="{escape(param)}">{chart}</figure>')
    if not figures:
        return '<h2>Objective by parameter</h2><p class="meta">No numeric parameters.</p>'
    return '<h2>Objective by parameter</h2><div class="plots">' + "".join(figures) + "</div>"


def _status_plots(data: ReportData) -> str:
    figures = []
    source = data.solves if len(data.solves) else data.runs
    what = "solves" if len(data.solves) else "runs"
    status = rm.displaced("status", set(data.params))
    feasible = rm.displaced("feasible", set(data.params))
    for param in data.params:
        if param not in source.columns:
            continue
        values = source[param]
        distinct = sorted({v for v in values if not _missing(v)}, key=lambda v: (isinstance(v, str), v))
        if not distinct or len(distinct) > MAX_CATEGORIES:
            continue
        labels = [fmt(v) for v in distinct]
        outcome = []
        for _, row in source.iterrows():
            state = str(row[status])
            if what == "solves" and state == "finished" and not _missing(row[feasible]) and not bool(row[feasible]):
                state = "infeasible"
            outcome.append(state)
        keys: list[str] = [k for k in ("finished", "infeasible", "failed", "interrupted") if k in outcome]
        counts: dict[str, list[int]] = {k: [0] * len(distinct) for k in keys}
        position = {fmt(v): i for i, v in enumerate(distinct)}
        for value, state in zip(values, outcome, strict=True):
            if not _missing(value):
                counts[state][position[fmt(value)]] += 1
        chart = svg.stacked_bars(labels, counts, title=f"{what} by {param}", x_label=param, y_label=what)
        figures.append(f'<figure class="plot status-plot" data-parameter="{escape(param)}">{chart}</figure>')
    if not figures:
        return ""
    return '<h2>Status by parameter</h2><div class="plots">' + "".join(figures) + "</div>"


def _lineage_section(data: ReportData) -> str:
    if not data.experiments or data.series_column is not None:
        return ""
    head = data.experiments[0]
    items = [f"<li><b>{escape(head['image_name'])}</b> <code>{escape(str(head.get('manifest_digest') or ''))}</code></li>"]
    items += [f"<li>{escape(name)} <code>{escape(digest)}</code></li>" for name, digest in data.lineage]
    text = "forked from" if data.lineage else "no parent (not a fork)"
    return f'<h2>Lineage</h2><p class="meta">{text}</p><ol>' + "".join(items) + "</ol>"


def _provenance_section(data: ReportData) -> str:
    if data.series_column is not None:
        return ""
    record = data.provenance
    if not record:
        return '<h2>Provenance</h2><p class="meta">None recorded (written by OMMX, unsealed, or switched off).</p>'
    rows = []
    for key in sorted(record):
        value = record[key]
        if isinstance(value, Mapping):
            value = ", ".join(f"{k} {v}" for k, v in sorted(value.items()))
        elif isinstance(value, list):
            value = " ".join(str(v) for v in value)
        rows.append(f"<tr><th>{escape(key)}</th><td>{escape(str(value))}</td></tr>")
    return '<h2>Provenance</h2><table id="provenance">' + "".join(rows) + "</table>"


def render(data: ReportData) -> str:
    """The whole HTML document."""
    head = data.experiments[0] if len(data.experiments) == 1 else {}
    meta = []
    if head.get("manifest_digest"):
        meta.append(f"digest <code>{escape(head['manifest_digest'])}</code>")
    if head.get("status"):
        reason = f" ({head['lifecycle_reason']})" if head.get("lifecycle_reason") else ""
        meta.append(f"status <b>{escape(str(head['status']) + reason)}</b>")
    if data.lineage:
        meta.append(f"forked from <b>{escape(data.lineage[0][0])}</b>")
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{escape(data.title)} · ommx-experiment report</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(data.title)}</h1><p class=\"meta\">{' · '.join(meta)}</p>",
        _summary(data),
        _experiments_table(data),
        _objective_plots(data),
        _status_plots(data),
        _run_table(data),
        _lineage_section(data),
        _provenance_section(data),
        '<p class="meta">Written by ommx-experiment.</p>',
        f"<script>{_SORT_JS}</script></body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _write(path: Path, html: str) -> Path:
    from ..engine.atomic import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, html.encode("utf-8"))
    return path


def experiment_report(exp: Any, path: Path) -> Path:
    """Write the report of one experiment (sealed or unsealed) to ``path``."""
    return _write(path, render(_experiment_data(exp)))


def report(
    prefix: str | None,
    path: str | Path,
    *,
    annotations: Mapping[str, str] | None = None,
    root: str | Path | None = None,
) -> Path:
    """Write a cross-experiment report of every committed experiment whose name starts with ``prefix``."""
    return _write(Path(path), render(_registry_data(prefix, root, annotations)))


# --- notebook cards -------------------------------------------------------------------------------------


def _card(title: str, rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th style='text-align:left'>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<div><b>{escape(title)}</b><table>{body}</table></div>"


def experiment_card(exp: Any) -> str:
    """``Experiment._repr_html_``: name, state, digest, run counts by status, solves, parameters, parent."""
    sealed = exp._sealed
    state = "unsealed" if sealed is None else str(sealed.status)
    runs = exp.runs
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    solves = sum(len(r.solves) + len(r.samplings) for r in runs)
    rows = [("state", escape(state))]
    if sealed is not None:
        rows.append(("digest", f"<code>{escape(sealed.manifest_digest)}</code>"))
        if sealed.reason:
            rows.append(("reason", escape(sealed.reason)))
        subject = sealed.manifest.subject
        if subject is not None:
            from .registry_views import parent_name

            rows.append(("parent", escape(parent_name(sealed.registry, subject.digest) or subject.digest)))
    rows.append(("runs", escape(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "0")))
    rows.append(("solves & samplings", str(solves)))
    try:
        params = [str(c) for c in exp.run_parameters_df().columns]
    except Exception:  # noqa: BLE001 - a card never fails to render
        params = []
    rows.append(("parameters", escape(", ".join(params) or "none")))
    return _card(f"Experiment {exp.image_name}", rows)


def run_card(run: Any) -> str:
    """``SealedRun._repr_html_``: id, status, reason, attachments, and one row per Solve/Sampling."""
    rows = [("status", escape(run.status))]
    if run.lifecycle_reason:
        rows.append(("reason", escape(run.lifecycle_reason)))
    rows.append(("attachments", escape(", ".join(run.attachment_names) or "none")))
    content = run._content
    for kind, calls in (("solve", content.solves), ("sampling", content.samplings)):
        for call in sorted(calls, key=lambda c: c.call_id):
            rows.append((f"{kind} {call.call_id}", escape(f"{call.status} · {call.adapter.rsplit('.', 1)[-1]}")))
    return _card(f"Run {run.run_id}", rows)


def trace_card(trace: Any) -> str:
    """``TraceResult._repr_html_``: the span tree as preformatted text, with span count and total time."""
    records = list(getattr(trace, "records", []))
    total = 0.0
    if records:
        starts = [r.start_unix_nano for r in records if getattr(r, "start_unix_nano", 0)]
        ends = [r.end_unix_nano for r in records if getattr(r, "end_unix_nano", 0)]
        if starts and ends:
            total = (max(ends) - min(starts)) / 1e9
    tree = trace.render_text_tree() if hasattr(trace, "render_text_tree") else repr(trace)
    title = f"Trace: {len(records)} spans" + (f", {total:.3g} s" if total and math.isfinite(total) else "")
    return f"<div><b>{escape(title)}</b><pre>{escape(str(tree))}</pre></div>"
