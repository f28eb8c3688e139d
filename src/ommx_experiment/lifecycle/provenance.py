"""Provenance recorded at commit: when, with what, where (the ``provenance.json`` layer).

On by default; off for one experiment with ``Experiment.set_provenance(False)``
or for the process with ``OMMX_EXPERIMENT_PROVENANCE=0``. An artifact without it
is otherwise identical, and deterministic for the same calls (no clock, no host).

Fields (all optional for readers; absent when unknown):

``created_at``        commit time, RFC 3339 UTC (µs)
``python``            ``platform.python_version()`` and the implementation
``platform``          ``platform.platform()``
``host``              ``socket.gethostname()``
``packages``          ``{distribution: version}``: ``ommx``, ``ommx-experiment``, each
                      adapter's distribution and the installed distributions it requires
                      (the solvers: ``highspy``, ``openjij``, ...)
``adapters``          adapter classes used by the runs (``module.qualname``)
``git``               ``{"commit", "branch", "root"}`` of the working directory's
                      repository, read from ``.git`` without running git (cheap)
``argv``              ``sys.argv`` of the committing process
"""

from __future__ import annotations

import functools
import os
import platform
import re
import socket
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ENV_SWITCH = "OMMX_EXPERIMENT_PROVENANCE"


def enabled_by_environment() -> bool:
    """False when ``OMMX_EXPERIMENT_PROVENANCE`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


@functools.lru_cache(maxsize=256)
def _version(distribution: str) -> str | None:
    found = _dist_info_version(distribution)
    if found is not None:
        return found
    import importlib.metadata as md  # ~85 ms to import (email, zipfile, csv): only when the scan finds nothing

    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def _platform_text() -> str:
    """``platform.platform()`` without its processor field on Linux, where that runs ``uname -p``
    in a subprocess (~10 ms, most of a small commit); ``uname -p`` adds nothing there but "unknown"
    or a repeat of the machine."""
    helper = getattr(platform, "_platform", None)
    if sys.platform != "linux" or helper is None:
        return platform.platform()
    uname = os.uname()
    libc, version = platform.libc_ver()
    return str(helper(uname.sysname, uname.release, uname.machine, "with", libc + version))


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _dist_info_version(distribution: str) -> str | None:
    """``Version:`` of the first ``<name>-<version>.dist-info`` on ``sys.path``, as ``importlib.metadata`` finds it."""
    wanted = _normalise(distribution)
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if not name.endswith(".dist-info") or _normalise(name.partition("-")[0]) != wanted:
                continue
            try:
                with open(os.path.join(entry or ".", name, "METADATA"), encoding="utf-8") as fh:
                    for line in fh:
                        if line.startswith("Version:"):
                            return line.partition(":")[2].strip()
                        if not line.strip():  # end of the headers
                            break
            except OSError:
                pass
            return None
    return None


@functools.lru_cache(maxsize=64)
def _adapter_packages(module: str) -> tuple[tuple[str, str], ...]:
    """``(distribution, version)`` of the adapter's distribution and the installed ones it requires."""
    import importlib.metadata as md
    import re

    top = module.split(".", 1)[0]
    dists = md.packages_distributions().get(top, [])
    found: dict[str, str] = {}
    for dist in dists:
        version = _version(dist)
        if version is None:
            continue
        found[dist] = version
        for requirement in md.requires(dist) or []:
            if ";" in requirement:  # extras / markers: optional, skip
                continue
            name = re.split(r"[\s<>=!~\[(]", requirement, maxsplit=1)[0]
            dep = _version(name)
            if dep is not None and not name.lower().startswith("ommx"):
                found[name] = dep
    return tuple(sorted(found.items()))


def git_state(start: Path) -> dict[str, str] | None:
    """``{"commit", "branch", "root"}`` of the repository holding ``start``, read from ``.git``; None outside one.

    Where the repository is (the walk up from ``start``) is remembered per folder for the
    process; its ``HEAD`` and branch are read at every call (they move between commits).
    """
    found = _git_dir(str(start))
    return None if found is None else _read_head(*found)


@functools.lru_cache(maxsize=16)
def _git_dir(start_text: str) -> tuple[str, str, str] | None:
    """``(git dir, work tree root, common dir)`` of the repository holding ``start_text``, or None.

    The common dir is where a linked worktree's branches are (its ``commondir`` file), else the git dir.
    """
    start = Path(start_text)
    for folder in (start, *start.parents):
        dot_git = folder / ".git"
        if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
            if not text.startswith("gitdir:"):
                return None
            git_dir = (folder / text.partition(":")[2].strip()).resolve()
        elif dot_git.is_dir():
            git_dir = dot_git
        else:
            continue
        common = git_dir
        commondir = git_dir / "commondir"
        try:
            if commondir.is_file():
                common = (git_dir / commondir.read_text(encoding="utf-8").strip()).resolve()
        except OSError:
            pass
        return str(git_dir), str(folder), str(common)
    return None


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _read_head(git_dir: str, root: str, common: str) -> dict[str, str] | None:
    try:
        head = _read_text(os.path.join(git_dir, "HEAD")).strip()
    except OSError:
        return None
    out = {"root": root}
    if not head.startswith("ref:"):
        out["commit"] = head
        return out
    ref = head.partition(":")[2].strip()
    out["branch"] = ref.removeprefix("refs/heads/")
    for base in (git_dir, common):
        try:
            out["commit"] = _read_text(os.path.join(base, ref)).strip()
            return out
        except OSError:
            pass
    try:
        for line in _read_text(os.path.join(common, "packed-refs")).splitlines():
            sha, _, name = line.partition(" ")
            if name == ref:
                out["commit"] = sha
                break
    except OSError:
        pass
    return out  # an unborn branch: no commit yet


def collect(adapters: Iterable[str] = ()) -> dict[str, Any]:
    """The provenance record of a commit made now by this process."""
    used = sorted(set(adapters))
    packages: dict[str, str] = {}
    for dist in ("ommx-experiment", "ommx"):
        version = _version(dist)
        if version is not None:
            packages[dist] = version
    for adapter in used:
        packages.update(_adapter_packages(adapter))
    record: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": _platform_text(),
        "host": socket.gethostname(),
        "packages": packages,
        "adapters": used,
        "argv": list(sys.argv),
    }
    try:
        git = git_state(Path.cwd())
    except OSError:
        git = None
    if git:
        record["git"] = git
    return record
