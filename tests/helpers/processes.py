"""Real processes and real faults shared by the lifecycle and reliability tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED_WORKER = REPO / "tests" / "workers" / "shared_worker.py"


class Writer:
    """One ``shared_worker.py`` process in command mode (JSON commands on stdin, one answer line each)."""

    def __init__(self, root: Path) -> None:
        env = dict(os.environ, OMMX_LOCAL_REGISTRY_ROOT=str(root), PYTHONPATH=str(REPO / "src"))
        self.proc = subprocess.Popen(
            [sys.executable, str(SHARED_WORKER)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def ask(self, *cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(list(cmd)) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"writer died answering {cmd}"
        return json.loads(line)  # type: ignore[no-any-return]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def exit(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write('["exit"]\n')
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (created) for the block; skipped without root."""
    from conftest import unavailable

    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        unavailable(f"cannot mount a tmpfs (needs root): {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
