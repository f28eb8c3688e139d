"""The worker side of ``Experiment.sweep``: what a task logs into and what it sends back.

A task is ``fn(recorder, params)`` run on an engine's worker (a process pool, a
Dask worker, a Ray worker, or the driver itself). The :class:`SweepRecorder` has
the logging methods of :class:`~ommx_experiment.lifecycle.run.Run` (parameters,
attachments, typed OMMX objects, codecs, files, ``log_solve``/``log_sample``/
``open_solve`` with real adapters) and keeps *descriptors*, never an open Run:
the driver owns the Experiment and records the returned :class:`TaskResult` as
one Run. Nothing here writes to the experiment's journal or refs.

Where payloads travel (spec/experiment.md, "Parallel sweeps"):

* **Through the shared registry** when the worker sees the driver's pins folder
  (same host, or the root on a shared filesystem): blobs are written straight
  into the CAS, streamed with bounded memory, and leased into a pin file of that
  folder (:class:`~ommx_experiment.engine.blobstore.PinFile`) so that our GC keeps
  them until the driver has recorded the run. Only descriptors travel back.
* **Through the engine** otherwise: payloads are kept in memory
  (:class:`InlineBlobs`) and travel back inside the pickled result; the driver
  stores them.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from ..engine.blobstore import PIN_SUFFIX, BlobStore, PinFile, StoredBlob
from ..engine.digest import sha256_digest
from ..errors import BlobNotFoundError, InvalidArgumentTypeError, LifecycleError
from ..format.codec import FINISHED
from ..format.run_params import normalise_param
from .attachments import AttachmentWriter
from .session import failure_outcome
from .solve import AdapterCalls

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from ..engine.oci import Descriptor
    from ..format.content import SolveContent
    from ..format.run_params import ParamValue

__all__ = ["InlineBlobs", "SweepRecorder", "TaskResult", "TaskSpec", "as_param", "execute", "run_task"]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task as the driver submits it.

    ``key`` identifies the task across engine retries (``<sweep token>-<index>``);
    ``pins`` is the driver's pins folder, or None when payloads must travel inline;
    ``host`` the driver's host name (a worker elsewhere fsyncs its pin lines).
    """

    key: str
    index: int
    params: Mapping[str, ParamValue]
    root: str
    pins: str | None
    host: str = ""


@dataclass(frozen=True, slots=True)
class AttachmentRecord:
    """One attachment a task logged: name, stored descriptor, export filename (``log_file``)."""

    name: str
    descriptor: Descriptor
    filename: str | None = None


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What a task sends back: how it ended, what it logged (descriptors), and inline payloads.

    ``inline`` maps a digest to its bytes for payloads that travel through the
    engine; ``pin`` is the pin file that protects the others until the driver
    has recorded them (None when nothing was written to the shared registry).
    """

    key: str
    index: int
    status: str
    reason: str | None
    params: Mapping[str, ParamValue]
    attachments: tuple[AttachmentRecord, ...] = ()
    solves: tuple[SolveContent, ...] = ()
    samplings: tuple[SolveContent, ...] = ()
    inline: Mapping[str, bytes] = field(default_factory=dict)
    pin: str | None = None
    worker: str = ""
    seconds: float = 0.0
    started_ns: int | None = None
    finished_ns: int | None = None

    def descriptors(self) -> list[Descriptor]:
        """Every blob the recorded run will reference."""
        out = [a.descriptor for a in self.attachments]
        for call in (*self.solves, *self.samplings):
            out.append(call.input)
            out.extend(d for d in (call.output, call.diagnostics) if d is not None)
        return out


class InlineBlobs:
    """An in-memory stand-in for the CAS: what a worker that cannot see the root stores.

    Offers the ``put_*`` methods the recorder and the solve module use; every
    payload is held as bytes until it travels back in the :class:`TaskResult`.
    """

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def put_bytes(self, data: bytes, *, expected_digest: str | None = None) -> StoredBlob:
        digest = sha256_digest(data)
        if expected_digest is not None and digest != expected_digest:
            from ..errors import DigestMismatchError

            raise DigestMismatchError(f"Blob from bytes hashes to {digest}, expected {expected_digest}")
        self.data[digest] = bytes(data)
        return StoredBlob(digest, len(data))

    def put_file(self, path: Path, *, expected_digest: str | None = None) -> StoredBlob:
        return self.put_bytes(Path(path).read_bytes(), expected_digest=expected_digest)

    def put_stream(self, fh: BinaryIO, *, expected_digest: str | None = None, source: str = "stream") -> StoredBlob:
        return self.put_bytes(fh.read(), expected_digest=expected_digest)

    def put_chunks(self, chunks: Iterable[bytes], *, expected_digest: str | None = None, source: str = "stream") -> StoredBlob:
        return self.put_bytes(b"".join(chunks), expected_digest=expected_digest)

    def get(self, digest: str) -> bytes:
        try:
            return self.data[digest]
        except KeyError:
            raise BlobNotFoundError(f"Failed to read blob {digest}: not stored by this task") from None

    def exists(self, digest: str) -> bool:
        return digest in self.data

    def size(self, digest: str) -> int:
        return len(self.get(digest))


class SweepRecorder(AdapterCalls, AttachmentWriter):
    """The Run-like recorder handed to ``fn(recorder, params)`` by ``Experiment.sweep``.

    Same logging methods as :class:`~ommx_experiment.lifecycle.run.Run`. It starts
    with the task's parameter dict logged; ``log_parameter`` adds to it or
    overwrites (as on a Run). The run id is allocated by the driver when it
    records the result, so there is no ``run_id``; :attr:`task_index` is the
    position of ``params`` in the sweep's parameter list.
    """

    _attachment_owner = "Run"

    def __init__(self, spec: TaskSpec, blobs: BlobStore | InlineBlobs) -> None:
        self._spec = spec
        self._blobs = blobs
        self._run_id = spec.index  # only names the task in solve warnings
        self._params: dict[str, ParamValue] = dict(spec.params)
        self._attachments: dict[str, AttachmentRecord] = {}
        self._solves: list[SolveContent] = []
        self._samplings: list[SolveContent] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"SweepRecorder(task_index={self._spec.index})"

    @property
    def task_index(self) -> int:
        """Position of this task's parameter dict in the sweep's parameter list."""
        return self._spec.index

    @property
    def params(self) -> dict[str, ParamValue]:
        """The parameters logged so far (the task's dict, then ``log_parameter`` calls)."""
        return dict(self._params)

    # --- Run's logging surface --------------------------------------------------------------

    def log_parameter(self, name: str, value: bool | int | float | str) -> None:
        """Record one parameter (bool, int64, float or str); the same name again overwrites."""
        value = as_param(value)
        if type(name) is not str:
            raise InvalidArgumentTypeError(f"argument 'name': expected str, got {type(name).__name__}")
        self._check_writable()
        self._params[name] = value

    # --- AttachmentWriter and RunRecorder hooks ------------------------------------------------

    def _attachment_blobs(self) -> BlobStore:
        return cast("BlobStore", self._blobs)  # InlineBlobs offers the put_* subset the writers use

    def _check_not_closed(self) -> None:
        if self._closed:
            raise LifecycleError("Run has already been finished")

    def _check_writable(self) -> None:
        self._check_not_closed()

    def _reserve_attachment(self, name: str) -> None:
        if name in self._attachments:
            raise LifecycleError(f"Attachment `{name}` already exists")

    def _add_attachment(self, name: str, desc: Descriptor, filename: str | None = None) -> None:
        self._check_writable()
        self._reserve_attachment(name)
        self._attachments[name] = AttachmentRecord(name, desc, filename)

    def _record_solve(self, solve: SolveContent) -> None:
        self._solves.append(solve)

    def _record_sampling(self, sampling: SolveContent) -> None:
        self._samplings.append(sampling)

    def _set_trace(self, trace: Descriptor) -> None:
        raise LifecycleError("Experiment.sweep does not record traces")

    # --- result -----------------------------------------------------------------------------

    def _result(self, status: str, reason: str | None, pin: str | None, started_ns: int, seconds: float) -> TaskResult:
        self._closed = True
        inline = dict(self._blobs.data) if isinstance(self._blobs, InlineBlobs) else {}
        return TaskResult(
            key=self._spec.key,
            index=self._spec.index,
            status=status,
            reason=reason,
            params=dict(self._params),
            attachments=tuple(self._attachments.values()),
            solves=tuple(self._solves),
            samplings=tuple(self._samplings),
            inline=inline,
            pin=pin,
            worker=f"{socket.gethostname()}:{os.getpid()}",
            seconds=seconds,
            started_ns=started_ns,
            finished_ns=time.time_ns(),
        )


def as_param(value: object) -> ParamValue:
    """A parameter value as stored: bool/int/float/str (subclasses and numpy scalars as Python values)."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    return normalise_param(value)


def run_task(fn: Callable[[SweepRecorder, dict[str, ParamValue]], Any], spec: TaskSpec) -> TaskResult:
    """The function an engine runs for one task (module level, so every engine can import it).

    Never raises for what ``fn`` does: its exception becomes the result's status
    and reason, as a ``with run:`` block would record it.
    """
    return execute(fn, spec)[0]


def execute(
    fn: Callable[[SweepRecorder, dict[str, ParamValue]], Any], spec: TaskSpec, blobs: BlobStore | None = None
) -> tuple[TaskResult, BaseException | None]:
    """Run ``fn`` with a fresh recorder; the result and the exception ``fn`` raised, if any.

    ``blobs``: the driver's own CAS (an in-process sweep); else chosen from the spec.
    """
    started, started_ns = time.perf_counter(), time.time_ns()
    store, pin = _blob_store(spec) if blobs is None else (blobs, None)
    recorder = SweepRecorder(spec, store)
    status, reason, error = FINISHED, None, None
    try:
        fn(recorder, dict(spec.params))
    except BaseException as exc:  # recorded like a `with run:` body; the driver decides what propagates
        status, reason = failure_outcome(type(exc), exc)
        error = exc
    finally:
        if pin is not None:
            pin.close()
    pin_path = str(pin.path) if pin is not None and pin.digests else None
    return recorder._result(status, reason, pin_path, started_ns, time.perf_counter() - started), error


def _blob_store(spec: TaskSpec) -> tuple[BlobStore | InlineBlobs, PinFile | None]:
    """The shared CAS with a pin file in the driver's pins folder, if this worker sees it; else inline."""
    if spec.pins is not None and os.path.isdir(spec.pins):
        remote = spec.host != socket.gethostname()
        pin = PinFile(Path(spec.pins) / f"{spec.key}-{secrets.token_hex(4)}{PIN_SUFFIX}", sync=remote)
        return BlobStore(Path(spec.root), pin=pin), pin
    return InlineBlobs(), None
