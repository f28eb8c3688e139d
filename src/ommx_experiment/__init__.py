"""ommx-experiment: record optimisation experiments as OCI artifacts, byte-compatible with OMMX 3.

``from ommx_experiment import Experiment`` is a drop-in for
``from ommx.experiment import Experiment``. Heavy modules (pandas, pyarrow,
ommx) are imported lazily: importing this package only reads this file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> defining module (relative to this package)
_EXPORTS: dict[str, str] = {
    # errors
    "OmmxExperimentError": "errors",
    "RemoteArtifactError": "errors",
    "RemoteArtifactNotFoundError": "errors",
    "RemoteArtifactAuthenticationError": "errors",
    "RemoteArtifactAuthorizationError": "errors",
    "RemoteArtifactTransportError": "errors",
    "InvalidRemoteArtifactError": "errors",
    # registry
    "set_local_registry_root": "root",
    "get_local_registry_root": "root",
    "LocalRegistry": "registry",
    "ImageName": "names",
    "Descriptor": "oci",
    "Artifact": "artifact",
    "ArtifactDraft": "artifact",
    # experiments
    "Experiment": "experiment",
    "AutosavePolicy": "experiment",
    "Run": "run",
    "SealedRun": "run",
    "OpenSolve": "solve",
    "Solve": "solve",
    "Sampling": "solve",
    # catalog and maintenance
    "ExperimentRef": "catalog",
    "ExperimentCheckpointRef": "catalog",
    "ArtifactRef": "catalog",
    "list_experiments": "catalog",
    "list_experiment_checkpoints": "catalog",
    "list_artifacts": "catalog",
    "get_images": "catalog",
    "experiments_df": "catalog",
    "gc": "maintenance",
    "GcReport": "maintenance",
    "prune_anonymous": "maintenance",
    "PruneAnonymousReport": "maintenance",
    "remove_image": "maintenance",
    "restore_image": "maintenance",
    "size": "maintenance",
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
    from .errors import OmmxExperimentError as OmmxExperimentError
    from .registry import LocalRegistry as LocalRegistry
    from .root import get_local_registry_root as get_local_registry_root
    from .root import set_local_registry_root as set_local_registry_root
