"""The open-run log: records survive the writer's death, torn or stale bytes are never read as records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from ommx_experiment.format import run_log
from ommx_experiment.format.run_log import RunLog, open_runs, read_log, read_records

REPO = Path(__file__).resolve().parents[2]


def test_open_runs_are_what_was_opened_and_not_closed(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "w.log")
    log.append((run_log.OPEN, 0, 10))
    log.append((run_log.PARAM, 0, "seed", 1))
    log.append((run_log.OPEN, 1, 11))
    log.append((run_log.PARAM, 1, "seed", 2))
    log.append((run_log.PARAM, 1, "seed", 3))  # the last value wins
    log.append((run_log.ATTACHMENT, 1, "a", {"digest": "sha256:" + "0" * 64}, "a.txt"))
    log.append((run_log.CLOSED, 0))
    log.append((run_log.OPEN, 2, 12))
    log.append((run_log.DROPPED, 2))
    runs = read_log(tmp_path / "w.log")
    assert list(runs) == [1]
    assert runs[1].params == {"seed": 3} and runs[1].started_ns == 11
    assert runs[1].attachments["a"][1] == "a.txt"
    log.close()
    log.append((run_log.OPEN, 3, 13))  # after close: a no-op, never a crash
    assert list(read_log(tmp_path / "w.log")) == [1]


def test_reset_forgets_everything_and_old_bytes_are_not_read_back(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "w.log")
    for i in range(50):
        log.append((run_log.OPEN, i, i))
    log.reset()
    log.append((run_log.OPEN, 99, 1))
    assert list(read_log(tmp_path / "w.log")) == [99]


def test_a_torn_record_ends_the_log(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "w.log")
    log.append((run_log.OPEN, 0, 1))
    log.append((run_log.PARAM, 0, "x", 1.5))
    log.close()
    data = bytearray((tmp_path / "w.log").read_bytes())
    records = read_records(bytes(data))
    assert len(records) == 2
    second = run_log.HEADER + 8 + len(__import__("marshal").dumps((run_log.OPEN, 0, 1)))
    data[second + 9] ^= 0xFF  # damage the second record's payload: its CRC no longer matches
    assert read_records(bytes(data)) == [(run_log.OPEN, 0, 1)]
    assert read_records(b"not a log") == []


def test_the_log_grows_past_its_first_megabyte(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "w.log")
    big = "x" * 4000
    for i in range(400):  # ~1.6 MB of records
        log.append((run_log.PARAM, 0, f"p{i}", big))
    log.append((run_log.OPEN, 7, 1))
    assert (tmp_path / "w.log").stat().st_size >= 2 * 1024 * 1024
    assert open_runs(read_records((tmp_path / "w.log").read_bytes())).keys() == {7}


@pytest.mark.parametrize("atomic_write", [True, False], ids=["mmap-write", "locked"])
def test_threads_appending_at_once_lose_and_tear_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, atomic_write: bool
) -> None:
    monkeypatch.setattr(run_log, "_WRITE_IS_ATOMIC", atomic_write)  # False: a free-threaded build's path
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    try:
        log = RunLog(tmp_path / "w.log")
        pad = "x" * 20  # 4 x 20,000 records of ~50 B: the log grows past its first megabyte meanwhile

        def write(thread: int) -> None:
            for i in range(20000):
                log.append((run_log.PARAM, thread, f"p{i}", pad))

        threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    records = read_records((tmp_path / "w.log").read_bytes())
    assert len(records) == 4 * 20000
    for thread in range(4):  # each thread's records, all of them, in its order
        assert [r[2] for r in records if r[1] == thread] == [f"p{i}" for i in range(20000)]
    assert (tmp_path / "w.log").stat().st_size > 2**20


def test_records_survive_sigkill_of_the_writer(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal
        from ommx_experiment.format import run_log
        log = run_log.RunLog({str(tmp_path / "w.log")!r})
        log.append((run_log.OPEN, 5, 1))
        log.append((run_log.PARAM, 5, "seed", 42))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    runs = read_log(tmp_path / "w.log")
    assert runs[5].params == {"seed": 42}


def test_a_log_tail_follows_appends_resets_and_growth_as_a_full_read_does(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    log = RunLog(path)
    tail = run_log.LogTail(path)

    def same() -> None:
        tail.refresh()
        open_now, pending_now = run_log.read_log_state(path)
        assert set(tail.state.open) == set(open_now) and set(tail.state.pending) == set(pending_now)
        assert {k: v.closed for k, v in tail.state.pending.items()} == {k: v.closed for k, v in pending_now.items()}

    same()
    log.append((run_log.OPEN, 0, 10))
    log.append((run_log.PARAM, 0, "seed", 1))
    same()
    before = tail.version()
    log.append((run_log.PENDING, 0, "finished", None, 20))
    same()
    assert tail.version() != before and list(tail.state.pending) == [0]
    unchanged = tail.version()
    same()
    assert tail.version() == unchanged  # nothing new: nothing parsed again
    log.reset()  # the batch was written: the log starts over
    same()
    assert tail.state.pending == {} and tail.version() != unchanged
    log.append((run_log.OPEN, 1, 30))  # the same bytes count as before the reset, other content
    log.append((run_log.PARAM, 1, "seed", 2))
    log.append((run_log.PENDING, 1, "failed", "boom", 40))
    same()
    assert tail.state.pending[1].closed == ("failed", "boom", 40)
    for i in range(2, 3000):  # past the first mapping: the file grows, the tail maps it again
        log.append((run_log.OPEN, i, i))
        log.append((run_log.PARAM, i, "pad", "x" * 400))
        log.append((run_log.PENDING, i, "finished", None, i))
    same()
    assert len(tail.state.pending) == 2999
    log.close()
    tail.close()
    missing = run_log.LogTail(tmp_path / "gone.log")
    missing.refresh()
    assert missing.state.pending == {} and missing.state.open == {}
