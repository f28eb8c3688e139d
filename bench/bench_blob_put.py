"""BlobStore.put_file on a 1 GiB file, against ``cp`` and ``sha256sum`` on the same file.

Cases (each in a fresh process, peak RSS is the child's own, see ``_common.run_measured``):

- ``copy 1 GiB`` / ``cp``: the floor for any blob copy;
- ``sha256 1 GiB`` / ``sha256sum``: the floor for hashing;
- ``put_file new blob`` / ``ours``: hash while writing a temp file, fsync, flock, link;
- ``put_file existing blob`` / ``ours``: the same file again; the store re-hashes the
  written temp copy, finds the blob present, verifies it under the lock and touches it.

The source file lives under ``bench/.work/`` (git-ignored) and is deleted afterwards.
``seconds`` includes interpreter start-up; ``put_s`` is the ``put_file`` call alone.
The file is in the page cache (1 GiB on a machine with more RAM), so this measures
CPU + write + fsync cost, not cold reads.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from _common import OURS_PYTHON, REPO_ROOT, MiB, make_file, mb_per_s, measure, run_python, throughput_row

SIZE = 1024 * MiB
WORK = REPO_ROOT / "bench" / ".work"

_PUT = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {src!r})
from ommx_experiment.engine.blobstore import BlobStore
store = BlobStore(Path({root!r}))
start = time.perf_counter()
blob = store.put_file(Path({path!r}))
print(json.dumps({{"digest": blob.digest, "size": blob.size, "put_s": time.perf_counter() - start}}))
"""


def _row(case: str, impl: str, seconds: float, rss: int, **extra: object) -> dict[str, object]:
    return throughput_row("blob_put", case, impl, seconds, rss, SIZE, **extra)


def run() -> list[dict[str, object]]:
    """cp, sha256sum, and our put_file (new blob, then existing blob) on one 1 GiB file."""
    python = OURS_PYTHON if OURS_PYTHON.exists() else Path(sys.executable)
    WORK.mkdir(parents=True, exist_ok=True)
    work = WORK / "blob_put"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    rows = []
    try:
        src = make_file(work / "src.bin", SIZE)
        seconds, rss = measure(["cp", src, work / "copy.bin"])
        (work / "copy.bin").unlink()
        rows.append(_row("copy 1 GiB", "cp", seconds, rss))
        seconds, rss = measure(["sha256sum", src])
        rows.append(_row("sha256 1 GiB", "sha256sum", seconds, rss))
        code = _PUT.format(src=str(REPO_ROOT / "src"), root=str(work / "root"), path=str(src))
        for case in ("put_file new blob", "put_file existing blob"):
            result = run_python(code, python=python)
            assert result.data["size"] == SIZE, result.data
            put_s = result.data["put_s"]
            rows.append(
                _row(
                    case, "ours", result.seconds, result.peak_rss_bytes,
                    put_s=round(put_s, 3), note=f"put_file alone {mb_per_s(SIZE, put_s)} MB/s",
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows
