"""Static SVG charts for the HTML report: a scatter plot and a stacked bar chart, no dependencies.

Small on purpose (no plotting library to install or import; the report must open
offline, and the output is deterministic text that tests can parse). Every chart
is one ``<svg>`` element with a ``<title>``; points and bars carry ``<title>``
tooltips with their values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

WIDTH, HEIGHT = 540, 300
_LEFT, _TOP, _BOTTOM = 64, 28, 52
_RIGHT = 16
LEGEND_WIDTH = 160  # extra right margin when a chart has a legend
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
STATUS_COLOURS = {"finished": "#2ca02c", "failed": "#d62728", "interrupted": "#ff7f0e", "infeasible": "#9467bd"}


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.6g}"


def ticks(low: float, high: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[low, high]``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high == low:
        return [low]
    raw = (high - low) / max(n - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    out: list[float] = []
    value = first
    while value <= high + step * 1e-9 and len(out) < 50:
        out.append(round(value, 12))
        value += step
    return out


def _frame(title: str, x_label: str, y_label: str, body: list[str], kind: str) -> str:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {kind}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" font-family="sans-serif" font-size="11">'
        f"<title>{escape(title)}</title>"
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>'
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{escape(title)}</text>'
        f'<text x="{(_LEFT + WIDTH - _RIGHT) / 2}" y="{HEIGHT - 8}" text-anchor="middle">{escape(x_label)}</text>'
        f'<text x="14" y="{(_TOP + HEIGHT - _BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(_TOP + HEIGHT - _BOTTOM) / 2})">{escape(y_label)}</text>'
    )
    return head + "".join(body) + "</svg>"


def _axes(right: int = _RIGHT) -> list[str]:
    x0, y0, x1, y1 = _LEFT, HEIGHT - _BOTTOM, WIDTH - right, _TOP
    return [f'<path d="M{x0},{y1} L{x0},{y0} L{x1},{y0}" stroke="#333" fill="none"/>']


def scatter(
    points: Sequence[tuple[float, float, str]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    series_order: Sequence[str] = (),
) -> str:
    """Points ``(x, y, series)``; one colour per series (legend when more than one)."""
    finite = [(x, y, s) for x, y, s in points if math.isfinite(x) and math.isfinite(y)]
    names = list(dict.fromkeys([*series_order, *(s for _, _, s in finite)]))
    right = _RIGHT + (LEGEND_WIDTH if len(names) > 1 else 0)
    body = _axes(right)
    if not finite:
        body.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="#777">no finite values</text>')
        return _frame(title, x_label, y_label, body, "scatter")
    xs, ys = [p[0] for p in finite], [p[1] for p in finite]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    pad_x = (x_hi - x_lo) * 0.05 or max(abs(x_lo) * 0.05, 0.5)
    pad_y = (y_hi - y_lo) * 0.05 or max(abs(y_lo) * 0.05, 0.5)
    x_lo, x_hi, y_lo, y_hi = x_lo - pad_x, x_hi + pad_x, y_lo - pad_y, y_hi + pad_y

    def px(x: float) -> float:
        return _LEFT + (x - x_lo) / (x_hi - x_lo) * (WIDTH - _LEFT - right)

    def py(y: float) -> float:
        return HEIGHT - _BOTTOM - (y - y_lo) / (y_hi - y_lo) * (HEIGHT - _BOTTOM - _TOP)

    for t in ticks(x_lo, x_hi):
        body.append(f'<line x1="{px(t):.1f}" y1="{HEIGHT - _BOTTOM}" x2="{px(t):.1f}" y2="{HEIGHT - _BOTTOM + 4}" stroke="#333"/>')
        body.append(f'<text x="{px(t):.1f}" y="{HEIGHT - _BOTTOM + 16}" text-anchor="middle">{_fmt(t)}</text>')
    for t in ticks(y_lo, y_hi):
        body.append(f'<line x1="{_LEFT - 4}" y1="{py(t):.1f}" x2="{WIDTH - right}" y2="{py(t):.1f}" stroke="#eee"/>')
        body.append(f'<text x="{_LEFT - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    for x, y, s in finite:
        tip = escape(f"{s + ': ' if len(names) > 1 else ''}{x_label}={_fmt(x)}, {y_label}={_fmt(y)}")
        body.append(
            f'<circle class="point" cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{colour[s]}" fill-opacity="0.75">'
            f"<title>{tip}</title></circle>"
        )
    if len(names) > 1:
        body += _legend(names, colour)
    return _frame(title, x_label, y_label, body, "scatter")


def _legend(names: Sequence[str], colour: Mapping[str, str]) -> list[str]:
    out = []
    x = WIDTH - LEGEND_WIDTH + 4
    for i, name in enumerate(names[:14]):
        y = _TOP + 10 + i * 15
        label = name if len(name) <= 30 else name[:29] + "…"
        out.append(f'<rect x="{x}" y="{y - 8}" width="9" height="9" fill="{colour[name]}"/>')
        out.append(f'<text x="{x + 13}" y="{y}">{escape(label)}<title>{escape(name)}</title></text>')
    return out


def stacked_bars(
    categories: Sequence[str], counts: Mapping[str, Sequence[int]], *, title: str, x_label: str, y_label: str = "runs"
) -> str:
    """One bar per category, stacked by key of ``counts`` (each a list aligned with ``categories``)."""
    right = _RIGHT + (LEGEND_WIDTH if counts else 0)
    body = _axes(right)
    totals = [sum(series[i] for series in counts.values()) for i in range(len(categories))]
    top = max(totals, default=0) or 1
    slot = (WIDTH - _LEFT - right) / max(len(categories), 1)
    bar = max(min(slot * 0.7, 60), 2)

    def py(v: float) -> float:
        return HEIGHT - _BOTTOM - v / top * (HEIGHT - _BOTTOM - _TOP)

    for t in ticks(0, top):
        if t == int(t):
            body.append(f'<line x1="{_LEFT - 4}" y1="{py(t):.1f}" x2="{WIDTH - right}" y2="{py(t):.1f}" stroke="#eee"/>')
            body.append(f'<text x="{_LEFT - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{int(t)}</text>')
    keys = list(counts)
    colour = {k: STATUS_COLOURS.get(k, PALETTE[i % len(PALETTE)]) for i, k in enumerate(keys)}
    for i, category in enumerate(categories):
        x = _LEFT + slot * i + (slot - bar) / 2
        base = 0
        for key in keys:
            n = counts[key][i]
            if not n:
                continue
            y0, y1 = py(base), py(base + n)
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{y1:.1f}" width="{bar:.1f}" height="{y0 - y1:.1f}" fill="{colour[key]}">'
                f"<title>{escape(f'{x_label}={category}: {n} {key}')}</title></rect>"
            )
            base += n
        if len(categories) <= 24:
            label = escape(category if len(category) <= 10 else category[:9] + "…")
            body.append(f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - _BOTTOM + 16}" text-anchor="middle">{label}</text>')
    if keys:
        body += _legend(keys, colour)
    return _frame(title, x_label, y_label, body, "bars")
