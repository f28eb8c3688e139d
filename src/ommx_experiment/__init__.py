"""ommx-experiment: record optimisation experiments as OCI artifacts, byte-compatible with OMMX 3.

``from ommx_experiment import Experiment`` is a drop-in for
``from ommx.experiment import Experiment``. Heavy modules (pandas, pyarrow,
ommx) are imported lazily: importing this package only reads this file.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing's flag without importing typing (and re: ~30 ms of a bare import)
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

# public name -> defining module (relative to this package)
_EXPORTS: dict[str, str] = {
    # errors
    "OmmxExperimentError": "errors",
    "ExtraNotInstalledError": "errors",
    "RemoteArtifactError": "errors",
    "RemoteArtifactNotFoundError": "errors",
    "RemoteArtifactAuthenticationError": "errors",
    "RemoteArtifactAuthorizationError": "errors",
    "RemoteArtifactTransportError": "errors",
    "InvalidRemoteArtifactError": "errors",
    # registry
    "set_local_registry_root": "engine.root",
    "get_local_registry_root": "engine.root",
    "LocalRegistry": "engine.registry",
    "ImageName": "engine.names",
    "Descriptor": "engine.oci",
    "Artifact": "lifecycle.artifact",
    "ArtifactDraft": "lifecycle.artifact",
    # experiments
    "Experiment": "lifecycle.experiment",
    "AutosavePolicy": "lifecycle.autosave",
    "Run": "lifecycle.run",
    "SealedRun": "lifecycle.run",
    "OpenSolve": "lifecycle.solve",
    "Solve": "lifecycle.solve",
    "Sampling": "lifecycle.solve",
    "SweepRecorder": "lifecycle.sweep_task",
    "SweepSummary": "lifecycle.sweep",
    "RayExecutor": "lifecycle.sweep_engines",
    # catalog and maintenance
    "ExperimentRef": "edges.catalog",
    "ExperimentCheckpointRef": "edges.catalog",
    "ArtifactRef": "edges.catalog",
    "list_experiments": "edges.catalog",
    "list_experiment_checkpoints": "edges.catalog",
    "list_artifacts": "edges.catalog",
    "get_images": "edges.catalog",
    "experiments_df": "edges.catalog",
    # analysis across a registry
    "runs_df": "lifecycle.registry_views",
    "solves_df": "lifecycle.registry_views",
    "sql": "lifecycle.registry_views",
    "duckdb_connection": "lifecycle.registry_views",
    "diff": "lifecycle.diff",
    "ExperimentDiff": "lifecycle.diff",
    "report": "lifecycle.report",
    "gc": "edges.maintenance",
    "GcReport": "edges.maintenance",
    "prune_anonymous": "edges.maintenance",
    "PruneAnonymousReport": "edges.maintenance",
    "remove_image": "edges.maintenance",
    "restore_image": "edges.maintenance",
    "size": "edges.maintenance",
    "recover": "edges.recovery",
    "RecoveryReport": "edges.recovery",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ommx_experiment' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover
    from .engine.registry import LocalRegistry as LocalRegistry
    from .engine.root import get_local_registry_root as get_local_registry_root
    from .engine.root import set_local_registry_root as set_local_registry_root
    from .errors import OmmxExperimentError as OmmxExperimentError
