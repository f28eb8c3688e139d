"""The HTML report in a real browser: headless Chromium (Debian's ``chromium``) renders it.

Checks the DOM Chromium builds (after running the page's script): one table row per
run, one objective chart per numeric parameter with one point per solved result, and
a screenshot that is not blank.
"""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import unavailable
from ommx_highs_adapter import OMMXHighsAdapter

from ommx_experiment import Experiment
from ommx_experiment.cli.demo import knapsack

CAPACITIES = (10, 20, 30, 40)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        unavailable("`chromium` not found on PATH (Debian package chromium; run `make bootstrap`)")
    return found


def _headless(binary: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


class _Rendered(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.open: list[tuple[str, dict[str, str | None]]] = []
        self.run_rows = 0
        self.figures: dict[str, int] = {}  # objective-plot parameter -> points inside it

    def _inside(self, tag: str, **attrs: str) -> dict[str, str | None] | None:
        for name, a in reversed(self.open):
            if name == tag and all(a.get(k) == v for k, v in attrs.items()):
                return a
        return None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and self._inside("tbody") is not None and self._inside("table", id="runs") is not None:
            self.run_rows += 1
        if tag == "figure" and "objective-plot" in (a.get("class") or ""):
            self.figures[a.get("data-parameter") or ""] = 0
        if tag == "circle" and "point" in (a.get("class") or ""):
            figure = self._inside("figure")
            if figure is not None and "objective-plot" in (figure.get("class") or ""):
                self.figures[figure.get("data-parameter") or ""] += 1
        if tag not in ("meta", "br", "rect", "line", "path", "circle"):
            self.open.append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i][0] == tag:
                del self.open[i:]
                break


@pytest.fixture
def report_file(registry_root: Path, tmp_path: Path) -> Path:
    with Experiment("example.com/browser/knapsack:v1") as exp:
        for seed, capacity in enumerate(CAPACITIES):
            with exp.run() as run:
                run.log_parameter("capacity", capacity)
                run.log_parameter("seed", seed)
                run.log_parameter("solver", "highs")
                run.log_solve(OMMXHighsAdapter, knapsack(capacity))
    return exp.report(tmp_path / "report.html")


def test_chromium_renders_the_report(report_file: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    proc = _headless(chromium, tmp_path, "--dump-dom", report_file.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = _Rendered()
    dom.feed(proc.stdout)
    assert dom.run_rows == len(CAPACITIES)
    assert dom.figures == {"capacity": len(CAPACITIES), "seed": len(CAPACITIES)}


def test_chromium_screenshot_is_not_blank(report_file: Path, tmp_path: Path) -> None:
    from PIL import Image

    chromium = _chromium()
    shot = tmp_path / "report.png"
    proc = _headless(chromium, tmp_path, "--window-size=1200,1400", f"--screenshot={shot}", report_file.as_uri())
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1200, 1400)
        colours = rgb.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20  # text, charts and status colours, not one flat fill
    counts = sorted(colours or [], reverse=True)
    if counts:
        background = counts[0][0] / (1200 * 1400)
        assert background < 0.97  # something is drawn on the page
        drawn = {c for _, c in counts}
        assert (44, 160, 44) in drawn or any(abs(r - 31) + abs(g - 119) + abs(b - 180) < 30 for r, g, b in drawn)
