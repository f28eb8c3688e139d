"""Baseline: what the disk and sha256 cost on this machine, for a 256 MiB file.

``cp`` bounds any blob copy; ``sha256sum`` and a streaming ``hashlib`` loop bound any
hash-while-writing put. Registry benchmarks compare against these rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import OURS_PYTHON, MiB, disk_usage, fmt_mb, make_file, measure, run_python, scratch_dir, throughput_row

SIZE = 256 * MiB

_HASHLIB_SNIPPET = """
import hashlib, json
h = hashlib.sha256()
with open({path!r}, "rb") as f:
    while chunk := f.read(8 << 20):
        h.update(chunk)
print(json.dumps({{"digest": "sha256:" + h.hexdigest()}}))
"""


def _row(case: str, impl: str, seconds: float, rss: int, **extra: object) -> dict[str, object]:
    return throughput_row("baseline", case, impl, seconds, rss, SIZE, **extra)


def run() -> list[dict[str, object]]:
    """cp, sha256sum and Python hashlib over one 256 MiB random file."""
    rows = []
    with scratch_dir() as tmp:
        src = make_file(tmp / "src.bin", SIZE)
        dst = tmp / "dst.bin"
        seconds, rss = measure(["cp", src, dst])
        rows.append(_row("copy 256 MiB", "cp", seconds, rss, disk_MB=fmt_mb(disk_usage(dst))))
        seconds, rss = measure(["sha256sum", src])
        rows.append(_row("sha256 256 MiB", "sha256sum", seconds, rss))
        python = OURS_PYTHON if OURS_PYTHON.exists() else Path(sys.executable)
        result = run_python(_HASHLIB_SNIPPET.format(path=str(src)), python=python)
        note = f"fresh process incl. startup; {result.data['digest'][:19]}..."
        rows.append(_row("sha256 256 MiB", "python hashlib", result.seconds, result.peak_rss_bytes, note=note))
    return rows
