"""Engines for ``Experiment.sweep``: anything that offers ``concurrent.futures.Executor.submit``.

* ``concurrent.futures.ProcessPoolExecutor`` (or any ``Executor``): used as is.
* ``dask.distributed``: a ``Client`` is turned into ``client.get_executor()``.
* Ray: :class:`RayExecutor`, a thin ``Executor`` over Ray tasks (Ray has none of its own).

Dask and Ray are optional (``pip install 'ommx-experiment[sweep]'``); a missing one
is an :class:`~ommx_experiment.errors.ExtraNotInstalledError` naming that extra.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
from typing import TYPE_CHECKING, Any

from ..errors import ExtraNotInstalledError, InvalidArgumentTypeError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

__all__ = ["RayExecutor", "as_executor", "require_extra"]

EXTRA = "sweep"


def require_extra(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`ExtraNotInstalledError` naming the ``sweep`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExtraNotInstalledError(
            f"{feature} needs the `{module}` package ({exc}); install it with `pip install 'ommx-experiment[{EXTRA}]'`"
        ) from exc


def as_executor(executor: object) -> cf.Executor:
    """``executor`` as a ``concurrent.futures.Executor`` (a Dask ``Client`` gives its ``get_executor()``)."""
    if isinstance(executor, cf.Executor):
        return executor
    get_executor = getattr(executor, "get_executor", None)
    if callable(get_executor):  # dask.distributed.Client
        wrapped = get_executor()
        if isinstance(wrapped, cf.Executor):
            return wrapped
    raise InvalidArgumentTypeError(
        f"executor must be a concurrent.futures.Executor (ProcessPoolExecutor, a Dask client's get_executor(), "
        f"RayExecutor) or a dask.distributed.Client, got {type(executor).__name__}"
    )


class RayExecutor(cf.Executor):
    """Ray tasks behind the ``concurrent.futures.Executor`` interface.

    ``RayExecutor(**options)``: each :meth:`submit` is one Ray task,
    ``ray.remote(fn).options(**options).remote(*args, **kwargs)``, and returns
    that task's ``ObjectRef.future()``. ``options`` are Ray's task options
    (``num_cpus``, ``max_retries``, ``memory``, ...). Connect first with
    ``ray.init(...)``; otherwise Ray starts a local instance at the first submit,
    as it always does. :meth:`shutdown` leaves Ray running (it is the caller's).
    """

    def __init__(self, **options: Any) -> None:
        self._ray = require_extra("ray", "RayExecutor")
        self._options = options
        self._remotes: dict[Callable[..., Any], Any] = {}
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        remote = self._remotes.get(fn)
        if remote is None:
            remote = self._ray.remote(fn)
            if self._options:
                remote = remote.options(**self._options)
            self._remotes[fn] = remote
        future: cf.Future[Any] = remote.remote(*args, **kwargs).future()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        self._remotes.clear()
