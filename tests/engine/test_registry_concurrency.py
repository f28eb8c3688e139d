"""Issue 2: several processes publish into one root while another reads index.json."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from ommx_experiment.engine import layout_view

WORKER = Path(__file__).resolve().parents[1] / "workers" / "registry_worker.py"
WRITERS = 4
PER_WRITER = 100


def _spawn(*args: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], stdout=open(log.with_suffix(".out"), "wb"), stderr=open(log, "wb")
    )


def test_parallel_publishers_and_a_reader(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    stop = tmp_path / "stop"
    # Create the root first so the reader has an index.json to parse from the start.
    init = subprocess.run([sys.executable, str(WORKER), "publish", str(root), "99", "0"], capture_output=True)
    assert init.returncode == 0, init.stderr.decode()
    reader = _spawn("read", str(root), str(stop), log=tmp_path / "reader.err")
    writers = [_spawn("publish", str(root), str(w), str(PER_WRITER), log=tmp_path / f"w{w}.err") for w in range(WRITERS)]
    try:
        codes = [w.wait(timeout=300) for w in writers]
    finally:
        stop.touch()
        reader.wait(timeout=60)
    stderrs = {p.name: p.read_text() for p in tmp_path.glob("*.err")}
    assert codes == [0] * WRITERS, stderrs
    assert reader.returncode == 0, stderrs["reader.err"]
    for name, text in stderrs.items():
        assert "database is locked" not in text, (name, text)
        assert "not refreshed" not in text, (name, text)  # the view was written after every write

    expected = {f"example.com/w{w}/r:{i}" for w in range(WRITERS) for i in range(PER_WRITER)}
    conn = sqlite3.connect(root / "index.sqlite3")
    rows = {f"{n}:{r}" for n, r in conn.execute("SELECT name, reference FROM refs")}
    assert rows == expected
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # No sync() here: the last writer's regeneration already covers every ref.
    assert set(layout_view.read_index(root)) == expected

    report = json.loads((tmp_path / "reader.out").read_text())
    assert report["reads"] > 0
    assert report["n_errors"] == 0, report["errors"]
