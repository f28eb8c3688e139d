"""Temporary Local Registries for ``Experiment.with_temp_local_registry``.

A :class:`TempRegistryHolder` owns a fresh directory and the
:class:`~ommx_experiment.engine.registry.LocalRegistry` opened on it. Every object
derived from it (Experiment, Artifact, SealedRun, ...) keeps a strong reference
to the holder; when the last one is gone, ``weakref.finalize`` closes the
registry and removes the directory.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

from .registry import LocalRegistry


def _cleanup(registry: LocalRegistry, path: Path) -> None:
    try:
        registry.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)


class TempRegistryHolder:
    """Owner of one temporary registry directory; deleted when this object dies."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="ommx-experiment-registry-"))
        self.registry = LocalRegistry(self.path)
        self._finalizer = weakref.finalize(self, _cleanup, self.registry, self.path)

    @property
    def alive(self) -> bool:
        return self._finalizer.alive

    def __repr__(self) -> str:
        return f"TempRegistryHolder(path={str(self.path)!r})"
