"""Adapter calls recorded in a Run: ``log_solve``, ``log_sample``, ``open_solve`` and the read views (§1.6, §1.7, §1.9).

A *call record* (:class:`~ommx_experiment.format.content.SolveContent`) holds the
caller's input Instance, the output (only when ``finished``), the adapter's
``module.qualname``, the keyword options as the JSON string OMMX stores
(``json.dumps(kwargs)`` with Python's defaults) and the optional diagnostics
layer. Solves and Samplings have separate 0-based id counters per Run.

Typed payloads are stored exactly like typed attachments
(:func:`~ommx_experiment.format.payload.encode_typed`: v2 bytes and media types
where the installed ``ommx`` has ``to_v2_bytes``, else v1).

The module-level functions take the :class:`~ommx_experiment.lifecycle.run.Run` as first
argument; ``Run.log_solve`` / ``log_sample`` / ``open_solve`` delegate here.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from ..engine.oci import Descriptor, FrozenMap
from ..errors import InvalidArgumentTypeError, InvalidArtifactError, InvalidInputError, LifecycleError
from ..format.codec import FINISHED
from ..format.content import SolveContent
from ..format.payload import decode_typed, decompress, encode_typed, logical_media_type, ommx_type
from . import diagnostics as dg
from .session import failure_status
from .tracing import SolveSpan

if TYPE_CHECKING:
    from types import TracebackType

    from ..engine.blobstore import BlobStore
    from .recorder import RunRecorder

log = logging.getLogger(__name__)

__all__ = ["OpenSolve", "Sampling", "Solve", "log_sample", "log_solve", "open_solve"]


@dataclass(frozen=True, slots=True)
class _Kind:
    """What differs between a solve and a sampling."""

    who: str  # "Run.log_solve"
    base: str  # the required ommx.adapter base class
    method: str  # the classmethod called
    output_type: str  # ommx class name of the result
    output_kind: str  # attachments kind of the result
    sampling: bool


SOLVE = _Kind("Run.log_solve", "SolverAdapter", "solve", "Solution", "solution", False)
SAMPLE = _Kind("Run.log_sample", "SamplerAdapter", "sample", "SampleSet", "sample_set", True)
OPEN = _Kind("Run.open_solve", "SolverAdapter", "decode", "Solution", "solution", False)


# --- validation and small helpers --------------------------------------------------------------


def check_adapter(adapter: object, kind: _Kind) -> None:
    """TypeError unless ``adapter`` is a class deriving from ``ommx.adapter.<kind.base>``."""
    import ommx.adapter

    base = getattr(ommx.adapter, kind.base)
    if not (isinstance(adapter, type) and issubclass(adapter, base)):
        raise InvalidArgumentTypeError(f"adapter must be a subclass of ommx.adapter.{kind.base}")


def adapter_name(adapter: type) -> str:
    """``module.qualname`` of the adapter class, as OMMX records it."""
    return f"{adapter.__module__}.{adapter.__qualname__}"


def options_json(options: dict[str, Any]) -> str:
    """``json.dumps(options)`` with Python's defaults (``"{}"`` when empty); ValueError if not serialisable."""
    try:
        return json.dumps(options)
    except TypeError as exc:
        raise InvalidInputError(f"SolverAdapter kwargs must be JSON-serializable: {exc}") from exc


def _check_no_diagnostics(kwargs: dict[str, Any], kind: _Kind) -> None:
    if "diagnostics" not in kwargs:
        return
    message = f"{kind.who} owns the `diagnostics` adapter option"
    if kind is OPEN:
        message += "; pass `store_diagnostics=True` and use `solve.diagnostics` inside the context"
    else:
        message += "; pass `store_diagnostics=True` to store adapter diagnostics"
    raise InvalidInputError(message)


@dataclass(frozen=True, slots=True)
class _Input:
    """The caller's instance as stored, and a private copy for the adapter."""

    descriptor: Descriptor
    copy: Any


def _store_typed(blobs: BlobStore, kind: str, obj: Any) -> tuple[Descriptor, bytes]:
    media_type, data, annotations = encode_typed(kind, obj)
    stored = blobs.put_bytes(data)
    return Descriptor(media_type, stored.digest, stored.size, FrozenMap(annotations)), data


def _store_input(run: RunRecorder, instance: Any) -> _Input:
    desc, data = _store_typed(run._attachment_blobs(), "instance", instance)
    # The adapter works on its own copy decoded from the bytes we stored: the
    # record keeps the caller's object untouched whatever the adapter does.
    return _Input(desc, decode_typed("instance", desc.media_type, data, desc.annotations))


def _record(run: RunRecorder, sampling: bool, content: SolveContent) -> None:
    run._check_not_closed()
    if sampling:
        run._record_sampling(content)
    else:
        run._record_solve(content)


# Per-Run id counters, kept beside the Run (the Run only stores finished records):
# open_solve reserves its id at enter, before earlier-started calls have recorded.
_COUNTERS: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()
_COUNTER_LOCK = threading.Lock()


def _next_id(run: RunRecorder, sampling: bool) -> int:
    with _COUNTER_LOCK:
        counters = _COUNTERS.setdefault(run, [len(run._solves), len(run._samplings)])
        slot = 1 if sampling else 0
        call_id = counters[slot]
        counters[slot] += 1
        return call_id


# --- log_solve / log_sample ------------------------------------------------------------------------


def log_solve(run: RunRecorder, adapter: type, instance: Any, /, *, store_diagnostics: bool = False, **kwargs: Any) -> Any:
    """Solve ``instance`` with ``adapter.solve`` and record a Solve; return the ``Solution``.

    ``adapter`` must subclass ``ommx.adapter.SolverAdapter`` (TypeError); kwargs
    must be JSON-serialisable (ValueError, raised before the adapter runs, no id
    consumed) and must not contain ``diagnostics`` (ValueError). The adapter
    receives a copy of ``instance`` and ``kwargs``, plus ``diagnostics=<sink>``
    only when ``store_diagnostics``. When the adapter raises (or returns
    something that is not a ``Solution``), a ``failed`` Solve (``interrupted`` for
    KeyboardInterrupt) without output is recorded and the same exception object
    propagates.
    """
    return _log_call(run, SOLVE, adapter, instance, store_diagnostics, kwargs)


def log_sample(run: RunRecorder, adapter: type, instance: Any, /, *, store_diagnostics: bool = False, **kwargs: Any) -> Any:
    """As :func:`log_solve` for an ``ommx.adapter.SamplerAdapter``: ``adapter.sample``, a Sampling, a ``SampleSet``.

    A call that returned a SampleSet is ``finished`` even if no sample is feasible.
    """
    return _log_call(run, SAMPLE, adapter, instance, store_diagnostics, kwargs)


def _log_call(run: RunRecorder, kind: _Kind, adapter: type, instance: Any, store_diags: bool, kwargs: dict[str, Any]) -> Any:
    run._check_writable()
    check_adapter(adapter, kind)
    _check_no_diagnostics(kwargs, kind)
    options = options_json(kwargs)
    name = adapter_name(adapter)
    stored = _store_input(run, instance)
    collector = dg.new_collector() if store_diags else None
    call_kwargs = copy.deepcopy(kwargs)
    if collector is not None:
        call_kwargs["diagnostics"] = collector
    where = f"run {run._run_id} {kind.who}"
    try:
        result = getattr(adapter, kind.method)(stored.copy, **call_kwargs)
        if not isinstance(result, ommx_type(kind.output_type)):
            raise InvalidArgumentTypeError(f"adapter.{kind.method}(...) must return ommx.{kind.output_type}")
        output, _ = _store_typed(run._attachment_blobs(), kind.output_kind, result)
    except BaseException as exc:
        _record_failure(run, kind, stored.descriptor, name, options, collector, exc, where)
        if collector is not None and isinstance(exc, TypeError) and "'diagnostics'" in str(exc):
            exc.add_note(_NEEDS_OMMX3_ADAPTER.format(adapter=name, method=kind.method))
        raise
    diagnostics, _ = dg.store_diagnostics(run._attachment_blobs(), collector, where)
    call_id = _next_id(run, kind.sampling)
    _record(run, kind.sampling, SolveContent(call_id, FINISHED, stored.descriptor, output, name, options, diagnostics))
    return result


# Added to the adapter's own TypeError (a note: the exception, and so the Run's failure reason, stay OMMX's).
_NEEDS_OMMX3_ADAPTER = (
    "store_diagnostics=True passes diagnostics=<collector> to {adapter}.{method}(), which does not accept it: "
    "adapter diagnostics need an adapter written for ommx 3 (an ommx 3 adapter package on the ommx 3 runtime). "
    "Drop store_diagnostics=True to use this adapter."
)


def _record_failure(
    run: RunRecorder, kind: _Kind, input_desc: Descriptor, name: str, options: str, collector: Any, exc: BaseException, where: str
) -> None:
    """Best-effort record of a failed/interrupted call (errors are logged, never raised)."""
    try:
        diagnostics, _ = dg.store_diagnostics(run._attachment_blobs(), collector, where)
        call_id = _next_id(run, kind.sampling)
        status = failure_status(type(exc))
        _record(run, kind.sampling, SolveContent(call_id, status, input_desc, None, name, options, diagnostics))
    except Exception as record_exc:
        log.warning("%s: the failed call could not be recorded: %s", where, record_exc)


# --- open_solve --------------------------------------------------------------------------------------


def open_solve(run: RunRecorder, adapter: type, instance: Any, /, *, store_diagnostics: bool = False, **kwargs: Any) -> OpenSolve:
    """A manual solve scope (§1.6): ``with run.open_solve(Adapter, instance, **kw) as solve: ...``.

    Validates like :func:`log_solve` (``diagnostics`` in kwargs is a ValueError
    naming ``store_diagnostics=True``) and copies the instance and kwargs.
    Nothing is reserved until the context is entered.
    """
    run._check_writable()
    check_adapter(adapter, OPEN)
    _check_no_diagnostics(kwargs, OPEN)
    options_json(kwargs)
    return OpenSolve(run, adapter, _store_input(run, instance), copy.deepcopy(kwargs), store_diagnostics)


_NOT_ENTERED = "OpenSolve context has not been entered"
_CLOSED = "OpenSolve has already been closed"
_MISSING_DECODE = "OpenSolve.decode(...) must be called before leaving the context"


class OpenSolve:
    """A manual solve scope of a Run (§1.6), created by ``Run.open_solve``.

    On enter: span ``Solve`` (tracer ``ommx.experiment``) starts, the next solve
    id is reserved, the adapter is constructed as ``adapter(instance_copy,
    **kwargs)`` (a failing constructor records a ``failed`` Solve and re-raises).
    Inside: :attr:`solver_input`, :attr:`adapter`, :attr:`diagnostics`,
    :meth:`decode`, :meth:`log_adapter_option`. On exit: a decoded candidate is
    recorded as ``finished`` (its state at exit time) even if the body raised
    afterwards; otherwise the Solve is ``failed``/``interrupted``, and leaving
    without a decode and without an exception raises RuntimeError.
    """

    def __init__(self, run: RunRecorder, adapter: type, stored: _Input, options: dict[str, Any], store_diags: bool) -> None:
        self._run = run
        self._adapter_cls = adapter
        self._name = adapter_name(adapter)
        self._input = stored
        self._options = options
        self._collector = dg.new_collector() if store_diags else None
        self._diag_state = "prepared" if store_diags else "disabled"
        self._state = "open"
        self._solve_id: int | None = None
        self._adapter: Any = None
        self._candidate: Any = None
        self._span = SolveSpan()
        self._terminal: dict[str, Any] | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        if self._solve_id is None:
            return f"OpenSolve(adapter='{self._name}', state='{self._state}')"
        outcome = f", outcome='{self._terminal['outcome']}'" if self._terminal is not None else ""
        return f"OpenSolve(adapter='{self._name}', solve_id={self._solve_id}, state='{self._state}'{outcome})"

    # --- accessors -------------------------------------------------------------------------------

    def _check_active(self) -> None:
        if self._state == "open":
            raise LifecycleError(_NOT_ENTERED)
        if self._state == "closed":
            raise LifecycleError(_CLOSED)

    @property
    def solve_id(self) -> int:
        """The reserved solve id (RuntimeError before enter)."""
        if self._solve_id is None:
            raise LifecycleError(_NOT_ENTERED)
        return self._solve_id

    @property
    def solver_input(self) -> Any:
        """``adapter.solver_input`` of the constructed adapter."""
        self._check_active()
        return self._adapter.solver_input

    @property
    def adapter(self) -> Any:
        """The constructed adapter instance."""
        self._check_active()
        return self._adapter

    @property
    def diagnostics(self) -> Any:
        """The diagnostics sink, or None when ``store_diagnostics`` is off."""
        self._check_active()
        return self._collector

    @property
    def terminal_state(self) -> dict[str, Any] | None:
        """How the scope ended (None until closed); see the module docs of §1.6 for the keys."""
        return copy.deepcopy(self._terminal)

    # --- inside the scope ------------------------------------------------------------------------

    def decode(self, data: Any) -> Any:
        """``adapter.decode(data)``; the result (an ``ommx.Solution``) becomes the output candidate.

        A failing decode (or a non-Solution result: TypeError) clears an earlier candidate.
        """
        self._check_active()
        self._candidate = None
        result = self._adapter.decode(data)
        if not isinstance(result, ommx_type("Solution")):
            raise InvalidArgumentTypeError("adapter.decode(...) must return ommx.Solution")
        self._candidate = result
        return result

    def log_adapter_option(self, name: str, value: Any) -> None:
        """Add or override one stored adapter option (rolled back with ValueError if not JSON-serialisable)."""
        if self._state == "closed":
            raise LifecycleError(_CLOSED)
        if not isinstance(name, str):
            raise InvalidArgumentTypeError(f"argument 'name': expected str, got {type(name).__name__}")
        merged = {**self._options, name: value}
        options_json(merged)
        self._options = merged

    # --- context manager -------------------------------------------------------------------------

    def __enter__(self) -> OpenSolve:
        with self._lock:
            if self._state == "closed":
                raise LifecycleError(_CLOSED)
            if self._state != "open":
                raise LifecycleError("OpenSolve context has already been entered")
            self._run._check_writable()
            self._span.start()
            self._solve_id = _next_id(self._run, sampling=False)
            self._span.set_context(self._solve_id, self._name)
            self._state = "active"
            if self._collector is not None:
                self._diag_state = "collecting"
        try:
            self._adapter = self._adapter_cls(self._input.copy, **copy.deepcopy(self._options))
        except BaseException as exc:
            self._finish(exc, construction_failed=True)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> Literal[False]:
        if self._state == "open":
            raise LifecycleError(_NOT_ENTERED)
        if self._state == "closed":
            return False
        body_exc = exc_value if exc_value is not None else (exc_type() if exc_type is not None else None)
        error = self._finish(body_exc, construction_failed=False)
        if error is not None and body_exc is None:
            raise error
        return False

    def _finish(self, body_exc: BaseException | None, *, construction_failed: bool) -> BaseException | None:
        """Record the Solve, close the span, fill ``terminal_state``; the exit error to raise, if any."""
        self._state = "finalizing"
        candidate = None if construction_failed else self._candidate
        exit_error: BaseException | None = None
        if candidate is not None:
            status, outcome = FINISHED, "finished"
        elif body_exc is not None:
            status = failure_status(type(body_exc))
            outcome = "adapter_construction_failed" if construction_failed else status
        else:
            status, outcome = failure_status(None), "missing_decode"
            exit_error = LifecycleError(_MISSING_DECODE)
        diag_outcome, record_error = self._record(status, candidate)
        if record_error is not None:
            outcome = "recording_failed"
            exit_error = exit_error or record_error
        failure = body_exc if body_exc is not None else exit_error
        if failure is not None:
            self._span.mark_error(failure)
        # As OMMX: the span's __exit__ sees the body's exception, not a construction failure's.
        self._span.close(None if construction_failed else body_exc)
        self._diag_state = "finalized"  # also without store_diagnostics: "disabled" is only the state before close
        self._terminal = {
            "solve_id": self._solve_id,
            "outcome": outcome,
            "trace": self._span.terminal(),
            "diagnostics": {"state": self._diag_state, "outcome": diag_outcome},
        }
        self._state = "closed"
        return exit_error

    def _record(self, status: str, candidate: Any) -> tuple[dict[str, str], BaseException | None]:
        run = self._run
        where = f"run {run._run_id} Run.open_solve"
        assert self._solve_id is not None
        try:
            run._check_not_closed()
            output = None if candidate is None else _store_typed(run._attachment_blobs(), "solution", candidate)[0]
        except Exception as exc:
            log.warning("%s: solve %s not recorded: %s", where, self._solve_id, exc)
            return {"state": "record_failed_before_pack"}, exc  # nothing was packed: no "pack" key (OMMX)
        diagnostics, pack = dg.store_diagnostics(run._attachment_blobs(), self._collector, where)
        content = SolveContent(
            self._solve_id, status, self._input.descriptor, output, self._name, options_json(self._options), diagnostics
        )
        try:
            _record(run, False, content)
        except Exception as exc:
            log.warning("%s: solve %s not recorded: %s", where, self._solve_id, exc)
            return {"state": "record_failed", "pack": pack}, exc
        return {"state": "stored", "pack": pack}, None

# --- read views -------------------------------------------------------------------------------------


class _CallView:
    """Read-only view of one stored call record (decoded lazily, on every access)."""

    _label = "Solve"
    _id_name = "solve_id"
    _output_kind = "solution"

    def __init__(self, blobs: BlobStore, call: SolveContent, keepalive: Any = None) -> None:
        self._blobs = blobs
        self._call = call
        self._keepalive = keepalive  # a temp-registry holder: keeps the directory alive

    @property
    def status(self) -> str:
        """``finished``, ``failed`` or ``interrupted``."""
        return self._call.status

    @property
    def input(self) -> Any:
        """The caller's ``Instance`` (decoded on each access)."""
        return self._typed(self._call.input, "instance", "input")

    @property
    def output(self) -> Any:
        """The result (``Solution`` / ``SampleSet``), or None unless ``finished``."""
        if self._call.output is None:
            return None
        return self._typed(self._call.output, self._output_kind, "output")

    @property
    def adapter(self) -> str:
        """The adapter class as ``module.qualname``."""
        return self._call.adapter

    @property
    def adapter_options(self) -> dict[str, Any]:
        """``json.loads`` of the stored options string (a JSON object)."""
        value = json.loads(self._call.adapter_options)
        if not isinstance(value, dict):
            raise InvalidArtifactError(f"{self._where()}: adapter_options is not a JSON object: {self._call.adapter_options!r}")
        return value

    @property
    def diagnostics(self) -> list[Any]:
        """The stored diagnostics reports (``[]`` when none were stored)."""
        desc = self._call.diagnostics
        if desc is None:
            return []
        return dg.unpack_diagnostics(self._blobs.get(desc.digest), self._where())

    def _typed(self, desc: Descriptor, kind: str, what: str) -> Any:
        media_type = logical_media_type(desc)
        data = decompress(desc, self._blobs.get(desc.digest))
        try:
            return decode_typed(kind, media_type, data, desc.annotations)
        except LifecycleError as exc:
            raise LifecycleError(f"{self._where()} {what} ({desc.digest}): {exc}") from exc

    def _where(self) -> str:
        return f"{self._label} {self._call.call_id}"

    def __repr__(self) -> str:
        return f"{self._label}({self._id_name}={self._call.call_id}, status='{self._call.status}')"


class Solve(_CallView):
    """A recorded solve: ``solve_id``, ``status``, ``input``, ``output`` (``Solution``), ``adapter``, ..."""

    @property
    def solve_id(self) -> int:
        return self._call.call_id


class Sampling(_CallView):
    """A recorded sampling: ``sampling_id``, ``status``, ``input``, ``output`` (``SampleSet``), ``adapter``, ..."""

    _label = "Sampling"
    _id_name = "sampling_id"
    _output_kind = "sample_set"

    @property
    def sampling_id(self) -> int:
        return self._call.call_id


class AdapterCalls:
    """``log_solve``, ``log_sample`` and ``open_solve`` for a :class:`~.recorder.RunRecorder` (Run, SweepRecorder)."""

    def log_solve(self, adapter: type, instance: Any, /, *, store_diagnostics: bool = False, **kwargs: Any) -> Any:
        """Solve with ``adapter.solve`` and record a Solve; see :func:`ommx_experiment.lifecycle.solve.log_solve`."""
        return log_solve(cast("RunRecorder", self), adapter, instance, store_diagnostics=store_diagnostics, **kwargs)

    def log_sample(self, adapter: type, instance: Any, /, *, store_diagnostics: bool = False, **kwargs: Any) -> Any:
        """Sample with ``adapter.sample`` and record a Sampling; see :func:`ommx_experiment.lifecycle.solve.log_sample`."""
        return log_sample(cast("RunRecorder", self), adapter, instance, store_diagnostics=store_diagnostics, **kwargs)

    def open_solve(self, adapter: type, instance: Any, /, *, store_diagnostics: bool = False, **kwargs: Any) -> Any:
        """A manual solve scope (``OpenSolve``); see :func:`ommx_experiment.lifecycle.solve.open_solve`."""
        return open_solve(cast("RunRecorder", self), adapter, instance, store_diagnostics=store_diagnostics, **kwargs)
