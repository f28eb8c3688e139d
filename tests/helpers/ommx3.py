"""Run Python snippets under the OMMX 3 side venv (``.venv-ommx3``).

OMMX 3 (``ommx==3.0.0b7``) cannot live in the project venv next to OMMX 2, so
interop tests drive it in a subprocess: write with one implementation, read with
the other, both pointed at the same Local Registry root.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

#: Longer scripts go through a file: Linux refuses a single argument over 128 KiB (MAX_ARG_STRLEN).
_MAX_ARG_BYTES = 96 * 1024

#: Environment variables that would leak this interpreter's packages into the child.
_LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")


@dataclass(frozen=True, slots=True)
class Ommx3Driver:
    """Runs scripts with the side venv's interpreter ``python``."""

    python: Path
    #: How failure messages name the script's runtime; subclasses override.
    label: ClassVar[str] = "OMMX 3 script"
    #: Default timeout (seconds) of :meth:`run` and :meth:`run_json`.
    default_timeout: ClassVar[float] = 120

    def env(self, root: Path) -> dict[str, str]:
        """The child environment: ours minus import-path overrides, plus ``OMMX_LOCAL_REGISTRY_ROOT=root``."""
        env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
        env["OMMX_LOCAL_REGISTRY_ROOT"] = str(root)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def run(
        self, script: str, *, root: Path, timeout: float | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``script`` (dedented) with OMMX 3 against the registry at ``root``.

        Returns the completed process with text ``stdout``/``stderr``. With ``check``
        (the default) a non-zero exit raises ``AssertionError`` showing the script's
        stderr, so a failing interop step reads like a failed assertion.
        """
        cwd = root.parent if root.parent.is_dir() else None
        code = textwrap.dedent(script)
        with tempfile.TemporaryDirectory() as scratch:
            if len(code.encode()) > _MAX_ARG_BYTES:  # one argv string may not exceed 128 KiB (E2BIG)
                path = Path(scratch) / "script.py"
                path.write_text(code, encoding="utf-8")
                argv = [str(self.python), str(path)]
            else:
                argv = [str(self.python), "-c", code]
            proc = subprocess.run(
                argv,
                env=self.env(root),
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=self.default_timeout if timeout is None else timeout,
                stdin=subprocess.DEVNULL,
            )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{self.label} failed with exit code {proc.returncode} (root={root}).\n"
                f"--- stderr ---\n{proc.stderr}\n--- stdout ---\n{proc.stdout}"
            )
        return proc

    def run_json(self, script: str, *, root: Path, timeout: float | None = None) -> Any:
        """Run ``script`` and parse the JSON document it prints on its last non-empty stdout line."""
        proc = self.run(script, root=root, timeout=timeout)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if not lines:
            raise AssertionError(f"{self.label} printed nothing; expected JSON.\n--- stderr ---\n{proc.stderr}")
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError as exc:
            raise AssertionError(
                f"last stdout line of the {self.label} is not JSON ({exc}): {lines[-1]!r}"
            ) from exc

    def version(self) -> str:
        """The installed ``ommx`` distribution version in the side venv."""
        proc = subprocess.run(
            [str(self.python), "-c", "import importlib.metadata as m; print(m.version('ommx'))"],
            env={k: v for k, v in os.environ.items() if k not in _LEAKY_ENV},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return proc.stdout.strip()
