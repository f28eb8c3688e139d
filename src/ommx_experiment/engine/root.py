"""Which directory is the Local Registry: the same resolution as OMMX 3.

1. :func:`set_local_registry_root` (once per process, before first use);
2. else the environment variable ``OMMX_LOCAL_REGISTRY_ROOT``;
3. else ``$XDG_DATA_HOME/ommx`` (default ``~/.local/share/ommx``).

The root is frozen the first time it is resolved, as in OMMX, so one process
never writes to two default registries by accident.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import RootAlreadySetError

ENV_ROOT = "OMMX_LOCAL_REGISTRY_ROOT"

_lock = threading.Lock()
_root: Path | None = None


def _default_root() -> Path:
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return (base / "ommx").absolute()


def set_local_registry_root(path: str | os.PathLike[str]) -> None:
    """Choose the process-wide default registry root.

    Raises :class:`RootAlreadySetError` (a RuntimeError) if the root was already
    set or already resolved by any use.
    """
    global _root
    with _lock:
        if _root is not None:
            raise RootAlreadySetError(f"Local registry root has already been set: {_root}")
        _root = Path(path).expanduser().absolute()


def get_local_registry_root() -> Path:
    """The process-wide default registry root (resolving and freezing it if needed)."""
    global _root
    with _lock:
        if _root is None:
            _root = _default_root()
        return _root


_reset_hooks: list[Callable[[], None]] = []


def on_reset(hook: Callable[[], None]) -> None:
    """Call ``hook`` from :func:`_reset_for_tests` (the registry cache registers itself here)."""
    _reset_hooks.append(hook)


def _reset_for_tests() -> None:
    """Forget the frozen root and every cached registry (test isolation only)."""
    global _root
    with _lock:
        _root = None
    for hook in _reset_hooks:
        hook()
