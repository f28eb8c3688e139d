"""Run OUR package (``ommx_experiment`` from this checkout's ``src/``) on the OMMX 3 side venv.

The project venv has ommx 2.9.3, which writes v1 payloads and cannot decode v2. Users
with ommx 3 installed take the v2 path (``to_v2_bytes``/``from_v2_bytes``); these
helpers exercise it in a subprocess of ``.venv-ommx3``, where ``make bootstrap``
installs our runtime deps (and our package, ``--no-deps -e .``). ``PYTHONPATH`` points
at this checkout's ``src`` so the code under test is always the working tree.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from helpers.ommx3 import Ommx3Driver

_PROBE = """
import importlib.metadata as m, json
import ommx, ommx_experiment
print(json.dumps({"ommx": m.version("ommx"), "ours": ommx_experiment.__file__}))
"""


@dataclass(frozen=True, slots=True)
class OursOnOmmx3(Ommx3Driver):
    """An :class:`Ommx3Driver` whose scripts also see ``PYTHONPATH=<src>``."""

    src: Path
    label: ClassVar[str] = "script (ours on OMMX 3)"
    default_timeout: ClassVar[float] = 180

    def env(self, root: Path) -> dict[str, str]:
        """The side venv's environment (see :meth:`Ommx3Driver.env`) plus ``PYTHONPATH=src``."""
        env = Ommx3Driver.env(self, root)
        env["PYTHONPATH"] = str(self.src)
        return env

    def problem(self, root: Path) -> str | None:
        """Why this runtime cannot run our package on ommx 3 (None when it can)."""
        proc = self.run(_PROBE, root=root, timeout=120, check=False)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["no stderr"]
            return f"ommx_experiment does not import in {self.python} ({tail[0]}); run `make bootstrap`"
        found = json.loads(proc.stdout.strip().splitlines()[-1])
        if not found["ommx"].startswith("3."):
            return f"{self.python} has ommx {found['ommx']}, expected 3.x"
        if not Path(found["ours"]).resolve().is_relative_to(self.src.resolve()):
            return f"{self.python} imports ommx_experiment from {found['ours']}, not from {self.src}"
        return None

    def run_both(self, script: str, workdir: Path) -> dict[str, Any]:
        """Run ``script`` with ``L`` = ``ommx.experiment`` and with ``L`` = ``ommx_experiment``, each on a fresh root.

        The script sees ``LIB`` (``"ommx"`` or ``"ours"``) and ``L``; it prints one JSON
        document on its last line. Returns ``{"ommx": ..., "ours": ...}``: the same
        calls through OMMX 3 and through us, to compare.
        """
        out = {}
        for lib, module in (("ommx", "ommx.experiment"), ("ours", "ommx_experiment")):
            prelude = f"LIB = {lib!r}\nimport importlib\nL = importlib.import_module({module!r})\n"
            out[lib] = self.run_json(prelude + textwrap.dedent(script), root=workdir / lib / "registry")
        return out
