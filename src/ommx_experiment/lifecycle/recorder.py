"""The explicit interface between an open Run and the modules that record into it.

``solve`` (adapter calls) and ``tracing`` (the Run's trace layer) record into an
open :class:`~ommx_experiment.lifecycle.run.Run` through :class:`RunRecorder`
only, and a Run reaches its Experiment through :class:`RunOwner` only. Both are
structural (``typing.Protocol``): ``Run`` and ``Experiment`` satisfy them
without importing this module's users, so ``run`` may import ``solve`` and
``tracing`` while neither imports ``run``.

The members keep their leading underscore: they are not part of the public,
OMMX-compatible surface of ``Run`` and ``Experiment``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..engine.blobstore import BlobStore
    from ..engine.oci import Descriptor
    from ..format.content import SolveContent
    from .session import Session


class RunRecorder(Protocol):
    """What ``solve`` and ``tracing`` may read from and record into an open Run."""

    _run_id: int
    _solves: list[SolveContent]
    _samplings: list[SolveContent]

    def _attachment_blobs(self) -> BlobStore:
        """The CAS that holds this run's blobs."""
        ...

    def _check_writable(self) -> None:
        """Raise ``LifecycleError`` unless the run (and its Experiment) accept new records."""
        ...

    def _check_not_closed(self) -> None:
        """Raise ``LifecycleError`` once the run is finished."""
        ...

    def _record_solve(self, solve: SolveContent) -> None:
        """Append a finished Solve record (under the session lock)."""
        ...

    def _record_sampling(self, sampling: SolveContent) -> None:
        """Append a finished Sampling record (under the session lock)."""
        ...

    def _set_trace(self, trace: Descriptor) -> None:
        """Set the run's one trace layer; a second one raises ``LifecycleError``."""
        ...


class RunOwner(Protocol):
    """What a Run needs from the Experiment that allocated it."""

    def _session_or_raise(self) -> Session:
        """The unsealed session, or ``LifecycleError`` when there is none."""
        ...

    def _check_unsealed(self) -> None:
        """Raise ``LifecycleError`` unless the Experiment is still unsealed."""
        ...
