"""Run OUR package (``ommx_experiment`` from this checkout's ``src/``) on the OMMX 3 side venv.

The project venv has ommx 2.9.3, which writes v1 payloads and cannot decode v2. Users
with ommx 3 installed take the v2 path (``to_v2_bytes``/``from_v2_bytes``); these
helpers exercise it in a subprocess of ``.venv-ommx3``, where ``make bootstrap``
installs our runtime deps (and our package, ``--no-deps -e .``). ``PYTHONPATH`` points
at this checkout's ``src`` so the code under test is always the working tree.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.ommx3 import Ommx3Driver

_PROBE = """
import importlib.metadata as m, json
import ommx, ommx_experiment
print(json.dumps({"ommx": m.version("ommx"), "ours": ommx_experiment.__file__}))
"""


@dataclass(frozen=True, slots=True)
class OursOnOmmx3:
    """Runs scripts with the side venv's interpreter and ``PYTHONPATH=<src>``."""

    driver: Ommx3Driver
    src: Path

    def env(self, root: Path) -> dict[str, str]:
        """The side venv's environment (see :meth:`Ommx3Driver.env`) plus ``PYTHONPATH=src``."""
        env = self.driver.env(root)
        env["PYTHONPATH"] = str(self.src)
        return env

    def run(
        self, script: str, *, root: Path, timeout: float = 180, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``script`` (dedented) against the registry at ``root``; non-zero exit → AssertionError with stderr."""
        proc = subprocess.run(
            [str(self.driver.python), "-c", textwrap.dedent(script)],
            env=self.env(root),
            cwd=root.parent if root.parent.is_dir() else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"script (ours on OMMX 3) failed with exit code {proc.returncode} (root={root}).\n"
                f"--- stderr ---\n{proc.stderr}\n--- stdout ---\n{proc.stdout}"
            )
        return proc

    def run_json(self, script: str, *, root: Path, timeout: float = 180) -> Any:
        """Run ``script`` and parse the JSON document on its last non-empty stdout line."""
        proc = self.run(script, root=root, timeout=timeout)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if not lines:
            raise AssertionError(f"script printed nothing; expected JSON.\n--- stderr ---\n{proc.stderr}")
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError as exc:
            raise AssertionError(f"last stdout line is not JSON ({exc}): {lines[-1]!r}") from exc

    def problem(self, root: Path) -> str | None:
        """Why this runtime cannot run our package on ommx 3 (None when it can)."""
        proc = self.run(_PROBE, root=root, timeout=120, check=False)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["no stderr"]
            return f"ommx_experiment does not import in {self.driver.python} ({tail[0]}); run `make bootstrap`"
        found = json.loads(proc.stdout.strip().splitlines()[-1])
        if not found["ommx"].startswith("3."):
            return f"{self.driver.python} has ommx {found['ommx']}, expected 3.x"
        if not Path(found["ours"]).resolve().is_relative_to(self.src.resolve()):
            return f"{self.driver.python} imports ommx_experiment from {found['ours']}, not from {self.src}"
        return None
