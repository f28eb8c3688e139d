"""``Experiment.sweep``: one Run per parameter dict, computed on any executor, recorded by the driver.

The *driver* is the process that calls ``sweep``; it owns the Experiment and is
its only writer. Each parameter dict becomes one task, ``fn(recorder, params)``,
run on the executor's workers with a
:class:`~ommx_experiment.lifecycle.sweep_task.SweepRecorder`; the task returns a
:class:`~ommx_experiment.lifecycle.sweep_task.TaskResult` (descriptors, plus
inline payloads when the worker cannot see the registry root), and the driver
records it as one closed Run. Results are recorded in batches, one journal
write each (``Session.record_closed_runs``): a result waits at most
:data:`FLUSH_SECONDS` for others, so the driver's cost per run falls as the
workers get ahead of it. A sweep never needs several processes writing one
experiment.

Exactly once: every task carries a key ``<sweep token>-<index>``; the driver
records the first result for a key and drops any later one (an engine that ran
a task again after a worker died). A future that fails in the engine (a worker
that died for good, a result that could not be sent) is recorded as a ``failed``
run with the engine's error as its reason, like a task that raised.

Resume (``resume=True``): a dict is skipped when a ``finished`` run of the
experiment carries the same parameters (:func:`~ommx_experiment.lifecycle.sweep_params.param_key`:
canonical JSON of the dict; a run may carry more parameters than the dict names).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..edges.progress import task_progress
from ..errors import (
    InvalidArgumentTypeError,
    LifecycleError,
    ParameterTypeError,
    RegistryError,
)
from ..format.codec import FAILED, FINISHED, INTERRUPTED
from ..format.content import AttachmentContent, RunContent
from ..format.run_params import FLOAT64, INT64, value_type
from .reason import lifecycle_reason
from .session import failure_outcome, failure_status
from .sweep_engines import as_executor
from .sweep_params import check_parameters, match_finished
from .sweep_task import TaskResult, TaskSpec, as_param, execute, run_task

if TYPE_CHECKING:
    import concurrent.futures as cf
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path

    from ..engine.blobstore import BlobStore
    from ..format.run_params import ParamValue
    from .sweep_task import SweepRecorder

__all__ = ["SweepSummary", "sweep"]

log = logging.getLogger(__name__)

WINDOW = 1024  # tasks submitted and not yet recorded: bounds driver memory for huge sweeps
BATCH = 256  # at most this many results per journal write
FLUSH_SECONDS = 0.2  # a result waits at most this long for others to share its journal write
_TYPE_RACE_RETRIES = 3


@dataclass(frozen=True, slots=True)
class SweepSummary:
    """What ``Experiment.sweep`` did.

    ``finished``/``failed``/``interrupted``: runs recorded by this call, by status.
    ``skipped``: dicts that already had a finished run (``resume=True``).
    ``run_ids``: for each parameter dict, in the order given, the run recorded
    for it now or, when skipped, the finished run that matched it.
    """

    finished: int
    failed: int
    interrupted: int
    skipped: int
    run_ids: tuple[int, ...]
    seconds: float

    def __repr__(self) -> str:
        return (
            f"SweepSummary(finished={self.finished}, failed={self.failed}, interrupted={self.interrupted}, "
            f"skipped={self.skipped}, seconds={self.seconds:.3f})"
        )


def sweep(
    experiment: Any,
    fn: Callable[[SweepRecorder, dict[str, ParamValue]], Any],
    parameters: Iterable[Mapping[str, Any]],
    *,
    executor: object = None,
    resume: bool = False,
) -> SweepSummary:
    """Run ``fn(recorder, params)`` once per dict and record each as one Run; see ``Experiment.sweep``."""
    started = time.perf_counter()
    session = experiment._session_or_raise()
    if session.store_trace:
        raise LifecycleError("Experiment.sweep does not capture traces on workers; use an Experiment without store_trace=True")
    if not callable(fn):
        raise InvalidArgumentTypeError(f"fn must be callable as fn(recorder, params), got {type(fn).__name__}")
    engine = None if executor is None else as_executor(executor)
    dicts = check_parameters(parameters, session.check_param)
    run_ids: list[int | None] = [None] * len(dicts)
    if resume:
        for index, run_id in match_finished(experiment, dicts).items():
            run_ids[index] = run_id
    skipped = sum(run_id is not None for run_id in run_ids)
    pending = [i for i, run_id in enumerate(run_ids) if run_id is None]
    blobs = session.registry.blobs
    driver = _Driver(experiment, blobs, secrets.token_hex(6), dicts)
    name = str(session.requested)
    with task_progress(f"sweep {name}", len(pending)) as advance:
        if engine is None:
            _run_here(driver, fn, pending, run_ids, advance)
        else:
            _run_on(engine, driver, fn, pending, run_ids, advance)
    counts = driver.counts
    assert all(run_id is not None for run_id in run_ids)
    return SweepSummary(
        counts[FINISHED], counts[FAILED], counts[INTERRUPTED], skipped,
        tuple(r for r in run_ids if r is not None), time.perf_counter() - started,
    )


# --- running ---------------------------------------------------------------------------------------


def _run_here(driver: _Driver, fn: Any, pending: list[int], run_ids: list[int | None], advance: Any) -> None:
    """No executor: each task runs in this thread, writing straight into the CAS."""
    batch = _Batch(driver, run_ids, advance)
    for index in pending:
        result, error = execute(fn, driver.spec(index, pins=None), blobs=driver.blobs)
        batch.add(index, result)
        if error is not None and not isinstance(error, Exception):
            batch.flush()
            raise error  # KeyboardInterrupt / SystemExit in this process: recorded, then the sweep stops
        if batch.due():
            batch.flush()
    batch.flush()


def _run_on(engine: cf.Executor, driver: _Driver, fn: Any, pending: list[int], run_ids: list[int | None], advance: Any) -> None:
    """Submit at most :data:`WINDOW` tasks ahead; record results in batches as they arrive."""
    pins = str(driver.blobs.pins_dir())
    done: queue.SimpleQueue[cf.Future[TaskResult]] = queue.SimpleQueue()
    inflight: dict[cf.Future[TaskResult], int] = {}
    todo = iter(pending)
    batch = _Batch(driver, run_ids, advance)
    try:
        while True:
            while len(inflight) < WINDOW and (index := next(todo, None)) is not None:
                future = engine.submit(run_task, fn, driver.spec(index, pins=pins))
                inflight[future] = index
                future.add_done_callback(done.put)
            if not inflight:
                break
            arrived: list[cf.Future[TaskResult]] = []
            with contextlib.suppress(queue.Empty):
                arrived.append(done.get(timeout=batch.wait()))  # a timeout keeps Ctrl-C responsive
                while True:
                    arrived.append(done.get_nowait())
            for future in arrived:
                index = inflight.pop(future)
                batch.add(index, _outcome(future, driver.spec(index, pins=pins)))
            if batch.due() or not inflight:
                batch.flush()
        batch.flush()
    except BaseException:
        for future in inflight:
            future.cancel()
        batch.flush_quietly()  # tasks that finished are worth keeping
        raise
    finally:
        driver.drop_pins(pins)


class _Batch:
    """Results waiting for one journal write: written when :data:`FLUSH_SECONDS` have passed
    since the first arrived, when :data:`BATCH` are waiting, or when nothing else can arrive."""

    def __init__(self, driver: _Driver, run_ids: list[int | None], advance: Any) -> None:
        self.driver = driver
        self.run_ids = run_ids
        self.advance = advance
        self.indices: list[int] = []
        self.results: list[TaskResult] = []
        self.since = 0.0

    def add(self, index: int, result: TaskResult) -> None:
        if not self.results:
            self.since = time.monotonic()
        self.indices.append(index)
        self.results.append(result)

    def due(self) -> bool:
        return bool(self.results) and (len(self.results) >= BATCH or time.monotonic() - self.since >= FLUSH_SECONDS)

    def wait(self) -> float:
        """How long to wait for more results before this batch is due."""
        if not self.results:
            return 0.5
        return max(0.0, FLUSH_SECONDS - (time.monotonic() - self.since))

    def flush(self) -> None:
        if not self.results:
            return
        # Taken out first: a flush that raised (perhaps after its journal write) is never retried,
        # so no result can be recorded twice.
        indices, results = self.indices, self.results
        self.indices, self.results = [], []
        for index, run_id in zip(indices, self.driver.record(results), strict=True):
            self.run_ids[index] = run_id
        self.advance(len(results))

    def flush_quietly(self) -> None:
        waiting = len(self.results)
        try:
            self.flush()
        except Exception as exc:  # the error that stopped the sweep matters more
            log.warning("sweep: %d finished task(s) not recorded: %s", waiting, exc)


def _outcome(future: cf.Future[TaskResult], spec: TaskSpec) -> TaskResult:
    """The task's result, or a ``failed`` result carrying the engine's error."""
    try:
        result = future.result()
    except BaseException as exc:  # the engine failed the task (worker died for good, cancelled, unpicklable)
        status = failure_status(type(exc))
        return TaskResult(spec.key, spec.index, status, lifecycle_reason(exc), dict(spec.params))
    if not isinstance(result, TaskResult):
        reason = f"LifecycleError: the executor returned {type(result).__name__}, not a sweep task result"
        return TaskResult(spec.key, spec.index, FAILED, reason, dict(spec.params))
    return result


# --- recording -----------------------------------------------------------------------------------------


class _Driver:
    """Records task results into the experiment, once per task key, a batch per journal write."""

    def __init__(self, experiment: Any, blobs: BlobStore, token: str, dicts: list[dict[str, ParamValue]]) -> None:
        self.experiment = experiment
        self.blobs = blobs
        self.token = token
        self.dicts = dicts
        self.root = str(os.path.abspath(blobs.root))
        self.host = socket.gethostname()
        self.recorded: dict[str, int] = {}
        self.counts: dict[str, int] = {FINISHED: 0, FAILED: 0, INTERRUPTED: 0}

    def spec(self, index: int, *, pins: str | None) -> TaskSpec:
        return TaskSpec(f"{self.token}-{index}", index, self.dicts[index], self.root, pins, self.host)

    def record(self, results: Sequence[TaskResult]) -> list[int]:
        """Record ``results`` as closed runs with one journal write; the run id of each.

        A key recorded before (by this call or an earlier one) is not recorded again:
        its run id is the first one's.
        """
        fresh: dict[str, TaskResult] = {}
        for result in results:
            if result.key in self.recorded or result.key in fresh:
                log.info("sweep task %s delivered again (worker %s): recorded once", result.key, result.worker)
                _unlink(result.pin)
            else:
                fresh[result.key] = self._with_payloads(result)
        if fresh:
            batch = list(fresh.values())
            for (run, _), result in zip(self._write(batch), batch, strict=True):
                _unlink(result.pin)  # the journal row (or this process's lease) protects the blobs from here on
                self.recorded[result.key] = run.run_id
                self.counts[run.status] = self.counts.get(run.status, 0) + 1
        return [self.recorded[result.key] for result in results]

    def _write(self, results: list[TaskResult]) -> list[tuple[RunContent, dict[str, ParamValue]]]:
        """One journal write for the batch; retried when another writer changed a column type meanwhile."""
        session = self.experiment._session_or_raise()
        for attempt in range(_TYPE_RACE_RETRIES):
            try:  # runs come back in the order of ``results``
                return session.record_closed_runs(len(results), _builder(results, _Columns(session)))
            except ParameterTypeError:
                if attempt == _TYPE_RACE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _with_payloads(self, result: TaskResult) -> TaskResult:
        """Store inline payloads in the CAS; lease and check the blobs a worker stored.

        A blob that cannot be stored or is missing makes the run ``failed`` (with
        that error as reason) and drops what it logged.
        """
        seen: set[str] = set()
        try:
            for desc in result.descriptors():
                if desc.digest in seen:
                    continue
                seen.add(desc.digest)
                data = result.inline.get(desc.digest)
                if data is not None:
                    self.blobs.put_bytes(data, expected_digest=desc.digest)
                else:
                    self.blobs.adopt(desc.digest, desc.size)
        except (RegistryError, OSError) as exc:
            return dataclasses.replace(
                result, status=FAILED, reason=lifecycle_reason(exc), attachments=(), solves=(), samplings=(), inline={}
            )
        return result

    def drop_pins(self, pins: str) -> None:
        """Remove pin files of this sweep that no recorded result named (attempts lost with a worker)."""
        prefix = f"{self.token}-"
        with contextlib.suppress(OSError), os.scandir(pins) as entries:
            for entry in entries:
                if entry.name.startswith(prefix):
                    _unlink(entry.path)


class _Columns:
    """Column types for one batch: those every writer's closed runs established, then the batch's own."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.kinds: dict[str, str] = {}

    def check(self, name: str, value: ParamValue) -> None:
        """``ParameterTypeError`` when ``value`` cannot join column ``name``; else the column takes it."""
        self.session.check_param(name, value)
        kind, known = value_type(value), self.kinds.get(name)
        if known is not None and known != kind and {known, kind} != {INT64, FLOAT64}:
            raise ParameterTypeError(name, known, kind, value)
        self.kinds[name] = FLOAT64 if {known, kind} == {INT64, FLOAT64} else kind


def _builder(results: list[TaskResult], columns: _Columns) -> Callable[[int], tuple[RunContent, dict[str, ParamValue]]]:
    pending = iter(results)
    return lambda run_id: closed_run(run_id, next(pending), columns.check)


def closed_run(
    run_id: int, result: TaskResult, check: Callable[[str, ParamValue], None]
) -> tuple[RunContent, dict[str, ParamValue]]:
    """The closed Run that records ``result`` under ``run_id``, and its parameters.

    Each parameter is checked as ``Run.log_parameter`` checks it (``check``: the
    column types); a value refused is left out and turns a ``finished`` task into
    a ``failed`` run with that error as reason.
    """
    status, reason = result.status, result.reason
    params: dict[str, ParamValue] = {}
    for name, raw in result.params.items():
        try:
            if not isinstance(name, str):
                raise InvalidArgumentTypeError(f"argument 'name': expected str, got {type(name).__name__}")
            value = as_param(raw)
            check(name, value)
        except (TypeError, ValueError, OverflowError) as exc:
            if status == FINISHED:
                status, reason = failure_outcome(type(exc), exc)
            continue
        params[name] = value
    attachments = AttachmentContent(
        {a.name: a.descriptor for a in result.attachments},
        {a.name: a.filename for a in result.attachments if a.filename is not None},
    )
    content = RunContent(
        run_id, status, None if status == FINISHED else reason, attachments, None, result.solves, result.samplings,
        started_ns=result.started_ns, finished_ns=result.finished_ns,  # the task's, on its worker's clock
    )
    return content, params


def _unlink(path: str | Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
