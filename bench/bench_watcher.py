"""The folder watcher (issue 6): latency and throughput of attaching completed files to a Run.

Cases (each backend/case in a fresh process, ``ours`` = ``ommx_experiment.edges.watcher``):

- ``latency 200 files``: write one 4 KiB file (open, write, close), wait until it is
  attached, repeat 200 times. ``ms`` is the median time from ``close()`` returning to the
  watcher's ``on_attached`` callback, ``p95_ms`` the 95th percentile. Both for
  ``inotify`` and for ``polling`` (``poll_interval=0.1``: polling latency is dominated
  by the interval).
- ``1000 small files``: 1,000 files of 4 KiB written as fast as possible; ``files/s`` is
  1,000 over the time from the first ``open`` to the last attachment (including
  ``stop()``, which drains and rescans).
- ``one 500 MiB file``: written in 8 MiB chunks (held open; the watcher must wait), then
  closed; ``seconds`` from close to attached, ``MB/s`` = 500 MiB over it. The
  ``put_file floor`` row is ``BlobStore.put_file`` on the same file: the watcher streams
  into the same store, so it can approach but not beat it.

The writer runs in the same process as the watcher (a thread-free loop), files live in a
scratch folder on the same disk as the registry, and every blob is fsynced by the store.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import OURS_PYTHON, REPO_ROOT, MiB, mb_per_s, run_python, scratch_dir

SRC = str(REPO_ROOT / "src")

_PRELUDE = """
import json, os, statistics, sys, threading, time
from pathlib import Path
sys.path.insert(0, {src!r})
os.environ["OMMX_LOCAL_REGISTRY_ROOT"] = {root!r}
from ommx_experiment.lifecycle.experiment import Experiment
from ommx_experiment.edges.watcher import watch
folder = Path({folder!r}); folder.mkdir(parents=True, exist_ok=True)
run = Experiment("bench-watch:1").run()
done = {{}}
cond = threading.Condition()
def on_attached(record):
    with cond:
        done[record.path] = time.perf_counter()
        cond.notify_all()
def wait_for(n, timeout=120):
    with cond:
        cond.wait_for(lambda: len(done) >= n, timeout=timeout)
"""

_LATENCY = _PRELUDE + """
w = watch(run, folder, force_polling={polling}, poll_interval=0.1)
w.on_attached = on_attached
w.start()
lat = []
payload = os.urandom(4096)
for i in range(200):
    p = folder / f"f{{i:04d}}.bin"
    with open(p, "wb") as fh:
        fh.write(payload + i.to_bytes(4, "big"))
    t = time.perf_counter()
    wait_for(i + 1)
    lat.append((done[p.name] - t) * 1000)
w.stop()
lat.sort()
print(json.dumps({{"median": statistics.median(lat), "p95": lat[int(0.95 * len(lat)) - 1], "backend": w.backend}}))
"""

_MANY = _PRELUDE + """
w = watch(run, folder)
w.on_attached = on_attached
w.start()
t0 = time.perf_counter()
for i in range(1000):
    with open(folder / f"f{{i:04d}}.bin", "wb") as fh:
        fh.write(os.urandom(4096))
t_written = time.perf_counter()
wait_for(1000)
t_live = time.perf_counter()
w.stop()
t_stop = time.perf_counter()
print(json.dumps({{"write_s": t_written - t0, "live_s": t_live - t0, "total_s": t_stop - t0, "n": len(w.attached)}}))
"""

_BIG = _PRELUDE + """
w = watch(run, folder)
w.on_attached = on_attached
w.start()
chunk = os.urandom(8 * 1024 * 1024)
with open(folder / "big.bin", "wb") as fh:
    for _ in range({size} // len(chunk)):
        fh.write(chunk)
t_close = time.perf_counter()
wait_for(1)
t_att = time.perf_counter()
w.stop()
from ommx_experiment.engine.blobstore import BlobStore
from ommx_experiment.engine.registry import LocalRegistry
floor_store = BlobStore(Path({root!r}) / "floor")
t0 = time.perf_counter()
floor_store.put_file(folder / "big.bin")
t_floor = time.perf_counter() - t0
print(json.dumps({{"attach_s": t_att - t_close, "floor_s": t_floor, "n": len(w.attached)}}))
"""

BIG = 500 * MiB


def _snippet(template: str, tmp: Path, **extra: object) -> str:
    return template.format(src=SRC, root=str(tmp / "registry"), folder=str(tmp / "watched"), **extra)


def _python() -> Path:
    return OURS_PYTHON if OURS_PYTHON.exists() else Path(sys.executable)


def run() -> list[dict[str, object]]:
    """Latency (inotify, polling), 1,000 small files, one 500 MiB file."""
    rows: list[dict[str, object]] = []
    for backend, polling in (("inotify", False), ("polling", True)):
        with scratch_dir() as tmp:
            data = run_python(_snippet(_LATENCY, tmp, polling=polling), python=_python()).data
        rows.append({
            "benchmark": "watcher", "case": f"latency 200 files ({backend})", "impl": "ours",
            "ms": round(data["median"], 2), "p95_ms": round(data["p95"], 2), "note": f"backend={data['backend']}",
        })
    with scratch_dir() as tmp:
        data = run_python(_snippet(_MANY, tmp), python=_python()).data
    rows.append({
        "benchmark": "watcher", "case": "1000 small files (4 KiB)", "impl": "ours",
        "seconds": round(data["total_s"], 3), "files/s": round(1000 / data["total_s"], 1),
        "note": f"live {data['live_s']:.3f}s, writes {data['write_s']:.3f}s, attached {data['n']}",
    })
    with scratch_dir() as tmp:
        data = run_python(_snippet(_BIG, tmp, size=BIG), python=_python()).data
    rows.append({
        "benchmark": "watcher", "case": "one 500 MiB file", "impl": "ours",
        "seconds": round(data["attach_s"], 3), "MB/s": mb_per_s(BIG, data["attach_s"]), "note": "close -> attached",
    })
    rows.append({
        "benchmark": "watcher", "case": "one 500 MiB file", "impl": "put_file floor",
        "seconds": round(data["floor_s"], 3), "MB/s": mb_per_s(BIG, data["floor_s"]),
    })
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
