"""Runs: the mutable :class:`Run` handle and the read-only :class:`SealedRun` view (§1.5, §1.7).

A Run is allocated by ``Experiment.run()`` (its id is taken then and never
reused), optionally entered as a context manager, and closed exactly once
(``finish()`` or context exit) with status ``finished``, ``failed`` or
``interrupted``. Closing hands the run to the session, which journals it. A Run
garbage-collected while open is *abandoned*: its data is dropped and the
session's open-run counter released.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Literal, cast

from ..engine.digest import sha256_digest
from ..engine.oci import Descriptor, FrozenMap
from ..engine.text import check_parameter_text
from ..errors import InvalidArtifactError, LifecycleError, ParameterTypeError
from ..format import run_log
from ..format.codec import FINISHED
from ..format.content import EMPTY_ATTACHMENTS, AttachmentContent, RunContent, SolveContent, run_content
from ..format.journal import PARAM_KIND, call_to_obj
from ..format.run_params import normalise_param
from .attachments import AttachmentReader, AttachmentWriter
from .session import failure_outcome
from .solve import AdapterCalls

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import TracebackType

    from ..engine.blobstore import BlobStore
    from ..engine.oci import Manifest
    from ..format.codec import RunRecord
    from ..format.run_params import ParamValue
    from .recorder import RunOwner

log = logging.getLogger(__name__)

_OPEN, _ENTERED, _CLOSED = "open", "entered", "closed"
_TRACER_SCOPE = "ommx.experiment"


_PROVIDER_ENV: list[bool] = []


def _otel_trace() -> Any:
    """``opentelemetry.trace`` when a Run span could be observed, else None.

    Observed means: the module is imported (so a tracer provider, an
    instrumentation or a patch of its functions may be in place), or
    ``OTEL_PYTHON_TRACER_PROVIDER`` names a provider to load. Otherwise no one
    can see the calls, and skipping them saves ~25 µs per Run.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is not None:
        return trace
    if not _PROVIDER_ENV:
        _PROVIDER_ENV.append("OTEL_PYTHON_TRACER_PROVIDER" in os.environ)  # read once, like OpenTelemetry
    if not _PROVIDER_ENV[0]:
        return None
    try:
        from opentelemetry import trace as imported
    except ImportError:
        return None
    return imported


def _start_span(run_id: int) -> Any:
    """The ``Run`` span's context manager, entered, with OMMX 3's exact calls; or None.

    ``trace.get_tracer("ommx.experiment").start_as_current_span("Run")``, entered,
    then ``trace.get_current_span().set_attribute("ommx.run.id", run_id)``,
    asked anew on every enter as OMMX does. When setting the attribute fails
    the partial span is closed and the error propagates (the Run stays
    enterable). None when no one could observe the span (:func:`_otel_trace`).
    """
    trace = _otel_trace()
    if trace is None:
        return None
    span = trace.get_tracer(_TRACER_SCOPE).start_as_current_span("Run")
    span.__enter__()
    try:
        trace.get_current_span().set_attribute("ommx.run.id", run_id)
    except BaseException:
        span.__exit__(None, None, None)
        raise
    return span


_EXACT = (bool, int, float, str)
INLINE_MAX_BYTES = 64 * 1024
"""A Run attachment (in memory) up to this size is carried inline until its close's batch stores it."""
_NO_ATTACHMENTS = EMPTY_ATTACHMENTS  # shared by every run without attachments (immutable; fast paths test identity)
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


class Run(AdapterCalls, AttachmentWriter):
    """One run of an unsealed Experiment. Created by :meth:`Experiment.run`."""

    _attachment_owner = "Run"

    def __init__(self, experiment: RunOwner, run_id: int) -> None:
        self._experiment = experiment
        self._session = experiment._session_or_raise()
        self._run_id = run_id
        self._state = _OPEN
        self._params: dict[str, ParamValue] = {}
        self._attachments: dict[str, Descriptor] = {}
        self._inline: dict[str, bytes] = {}  # digest -> bytes of small attachments, stored with the close's batch
        self._filenames: dict[str, str] = {}
        self._solves: list[SolveContent] = []
        self._samplings: list[SolveContent] = []
        self._trace: Descriptor | None = None
        self._span: Any = None
        self._capture: Any = None  # tracing.RunCapture while a store_trace Run is entered
        self._journal = self._session.journal  # open-run log and column types (format.journal)
        self._started_ns = self._journal.opened_ns or time.time_ns()  # as logged with the run id (Experiment.run)
        self._columns_seen = self._journal.columns  # replaced (never mutated) when column types change
        self._unmatched = False  # some parameter did not match an established column type exactly
        self._log_append = self._journal.log_append()
        self._session.track_run(self, run_id)  # abandoned if dropped unclosed

    def __repr__(self) -> str:
        if self._state == _CLOSED:
            return "Run(finished=True)"
        return f"Run(run_id={self._run_id})"

    @property
    def run_id(self) -> int:
        """This run's id (0-based, allocated by ``Experiment.run()``)."""
        self._check_not_closed()
        return self._run_id

    # --- state checks ---------------------------------------------------------------------

    def _check_not_closed(self) -> None:
        if self._state == _CLOSED:
            raise LifecycleError("Run has already been finished")

    def _check_writable(self) -> None:
        self._check_not_closed()
        self._experiment._check_unsealed()
        if self._session.store_trace and self._state != _ENTERED:
            raise LifecycleError("store_trace=True requires using Run as a context manager")

    # --- parameters -------------------------------------------------------------------------

    def log_parameter(self, name: str, value: bool | int | float | str) -> None:
        """Record one parameter (bool, int64, float or str); the same name again overwrites."""
        kind = type(value)
        if kind not in _EXACT or (kind is int and not _I64_MIN <= value <= _I64_MAX):  # type: ignore[operator]
            value = normalise_param(value)  # subclasses, errors
        if type(name) is not str:
            from ..errors import InvalidArgumentTypeError

            raise InvalidArgumentTypeError(f"argument 'name': expected str, got {type(name).__name__}")
        if not name.isascii() or (type(value) is str and not value.isascii()):
            check_parameter_text(name, value)  # lone surrogates are rejected when logged, as OMMX 3 does
        # Hot path (a sweep logs ~10 per run): the full check only when it may fail.
        # session.writable is cleared whenever the Experiment leaves the unsealed state.
        if self._state is not _ENTERED or not self._session.writable:
            self._check_writable()
        if self._journal.columns.get(name) != PARAM_KIND[type(value)]:
            self._unmatched = True
            self._session.check_param(name, value)  # ParameterTypeError: the run stays usable
        self._params[name] = value
        self._log_append(("p", self._run_id, name, value))  # run_log.PARAM: survives a kill from here on

    # --- attachments (AttachmentWriter hooks) ----------------------------------------------------

    def _attachment_blobs(self) -> BlobStore:
        return self._session.registry.blobs

    def _reserve_attachment(self, name: str) -> None:
        with self._session.lock:
            if name in self._attachments:
                raise LifecycleError(f"Attachment `{name}` already exists")

    def _add_attachment(self, name: str, desc: Descriptor, filename: str | None = None, inline: bytes | None = None) -> None:
        with self._session.lock:
            self._check_writable()
            self._reserve_attachment(name)
            self._attachments[name] = desc
            if filename is not None:
                self._filenames[name] = filename
            if inline is None:
                self._journal.log_open((run_log.ATTACHMENT, self._run_id, name, desc.to_dict(), filename))
            else:
                self._inline[desc.digest] = inline
                self._journal.log_open((run_log.ATTACHMENT, self._run_id, name, desc.to_dict(), filename, inline))

    def _store(self, name: str, media_type: str, data: bytes, annotations: Mapping[str, str], filename: str | None = None) -> None:
        """A small in-memory attachment is kept *inline* (spec/experiment.md, "Inline attachments"):
        its bytes go to the open-run log (a memory copy, surviving SIGKILL) and reach the blob
        store with the batch that writes the run's row, pinned in the same step. Larger ones are stored now."""
        if len(data) > INLINE_MAX_BYTES:
            super()._store(name, media_type, data, annotations, filename)
            return
        self._reserve_attachment(name)
        desc = Descriptor(media_type, sha256_digest(data), len(data), FrozenMap(annotations))
        self._add_attachment(name, desc, filename, bytes(data))

    # --- hooks for solves/samplings/traces (solve.py, tracing.py) ------------------------------

    def _record_solve(self, solve: SolveContent) -> None:
        with self._session.lock:
            self._solves.append(solve)
            self._journal.log_open((run_log.SOLVE, self._run_id, call_to_obj(solve)))

    def _record_sampling(self, sampling: SolveContent) -> None:
        with self._session.lock:
            self._samplings.append(sampling)
            self._journal.log_open((run_log.SAMPLING, self._run_id, call_to_obj(sampling)))

    def _set_trace(self, trace: Descriptor) -> None:
        with self._session.lock:
            if self._trace is not None:
                raise LifecycleError(f"Run {self._run_id} already has a trace")
            self._trace = trace
            self._journal.log_open((run_log.TRACE, self._run_id, trace.to_dict()))

    # --- closing -------------------------------------------------------------------------------

    def finish(self) -> None:
        """Close the run as ``finished`` (only outside an active ``with`` block)."""
        self._check_not_closed()
        if self._state == _ENTERED:
            raise LifecycleError(
                "Run context is active; finish() is performed automatically on normal Run context-manager exit"
            )
        if self._session.store_trace:
            raise LifecycleError(
                "store_trace=True requires using Run as a context manager; use `with experiment.run() as run:`"
            )
        self._close(FINISHED, None)

    def _close(self, status: str, reason: str | None) -> None:
        """Record the run. ``ParameterTypeError`` leaves it open (fix the value, close again);
        any other failure closes the handle and says where the run's data was kept."""
        with self._session.lock:
            if self._state == _CLOSED:
                return
            attachments = (
                AttachmentContent(self._attachments, self._filenames) if self._attachments else _NO_ATTACHMENTS
            )
            if self._trace is None and not self._solves and not self._samplings and not self._inline:
                content = RunContent.bare(
                    self._run_id, status, reason, self._started_ns, time.time_ns(), attachments=attachments
                )
            else:
                content = RunContent(
                    run_id=self._run_id,
                    status=status,
                    reason=reason,
                    attachments=attachments,
                    trace=self._trace,
                    solves=tuple(self._solves),
                    samplings=tuple(self._samplings),
                    started_ns=self._started_ns,
                    finished_ns=time.time_ns(),
                    inline=self._inline or None,
                )
            try:
                # every parameter matched the column types, which have not changed since: no new column
                checked = not self._unmatched and self._journal.columns is self._columns_seen
                self._session.close_run(content, self._params, columns_checked=checked)
            except ParameterTypeError:
                raise
            except BaseException:
                self._mark_closed()
                raise
            self._mark_closed()

    def _mark_closed(self) -> None:
        self._state = _CLOSED
        self._session.untrack_run(self._run_id)

    # --- context manager -------------------------------------------------------------------------

    def __enter__(self) -> Run:
        self._check_not_closed()
        if self._state == _ENTERED:
            raise LifecycleError("Run context has already been entered")
        if self._session.store_trace:
            from .tracing import RunCapture

            self._capture = RunCapture.start(self._run_id)  # TraceUnavailableError without opentelemetry
        else:
            self._span = _start_span(self._run_id)
        self._state = _ENTERED
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> Literal[False]:
        if self._state == _CLOSED:
            return False
        if self._state != _ENTERED:
            raise LifecycleError("Run context has not been entered")
        span, self._span = self._span, None
        capture, self._capture = self._capture, None
        if exc_type is None:
            if span is not None:
                try:
                    span.__exit__(None, None, None)
                except BaseException:  # as OMMX: the Run stays entered, its span open; commit refuses
                    self._span = span
                    raise
            if capture is not None:
                self._store_trace(capture)
            self._state = _OPEN
            self._close(FINISHED, None)
            return False
        if span is not None:
            with contextlib.suppress(Exception):
                span.__exit__(exc_type, exc_value, traceback)
        if capture is not None:
            self._store_trace_best_effort(capture, exc_value)
        status, reason = failure_outcome(exc_type, exc_value)
        try:
            self._close(status, reason)
        except Exception as exc:  # the body's exception wins; the failed close is told on it, not only logged
            log.warning("Run %s could not be recorded as %s: %s", self._run_id, status, exc)
            _note(exc_value, f"Run {self._run_id} could not be recorded as {status}: {type(exc).__name__}: {exc}")
        return False

    def _store_trace(self, capture: Any) -> None:
        """Normal exit: a failure closing the span keeps the Run entered; a failure storing abandons it."""
        from .tracing import store_run_trace

        try:
            capture.close_span()
        except BaseException:
            self._capture = capture
            raise
        try:
            store_run_trace(self, capture)
        except BaseException:
            self._state = _CLOSED
            self._session.abandon_run(self._run_id)  # released, not recorded
            raise

    def _store_trace_best_effort(self, capture: Any, exc: BaseException | None) -> None:
        from .tracing import store_run_trace

        try:
            store_run_trace(self, capture, exc)
        except Exception as store_exc:
            log.warning("Run %s: trace not stored: %s", self._run_id, store_exc)
            _note(exc, f"Run {self._run_id}: trace not stored: {type(store_exc).__name__}: {store_exc}")


def _note(exc: BaseException | None, text: str) -> None:
    """Add ``text`` to the traceback of the exception that is propagating (PEP 678)."""
    if exc is not None:
        exc.add_note(text)


class SealedRuns:
    """What the ``SealedRun`` views of one experiment share: the blob store, the temp-registry
    holder and, for lazy views of a stored artifact, its manifest (one per ``.runs`` call)."""

    __slots__ = ("blobs", "keepalive", "manifest", "manifest_digest")

    def __init__(
        self, blobs: BlobStore, keepalive: Any = None, manifest: Manifest | None = None, manifest_digest: str = ""
    ) -> None:
        self.blobs = blobs
        self.keepalive = keepalive  # temp-registry holder: keeps the directory alive
        self.manifest = manifest
        self.manifest_digest = manifest_digest

    def views(self, records: Iterable[RunRecord]) -> list[SealedRun]:
        """One lazy view per config record, in the given order (``manifest`` required)."""
        return self._views(records, lazy=True)

    def content_views(self, contents: Iterable[RunContent]) -> list[SealedRun]:
        """One view per decoded run (an unsealed experiment's closed runs), in the given order."""
        return self._views(contents, lazy=False)

    def _views(self, items: Iterable[Any], *, lazy: bool) -> list[SealedRun]:
        new = SealedRun.__new__
        views: list[SealedRun] = []
        append = views.append
        for item in items:  # ~0.3 µs a view: three slots, no __init__ call, no instance dict
            view = new(SealedRun)
            view._source = self
            view._record, view._resolved = (item, None) if lazy else (None, item)
            append(view)
        return views


class SealedRun(AttachmentReader):
    """A read-only view of a closed run (in a sealed or unsealed Experiment).

    A view of a stored artifact (``Experiment.runs`` of a sealed Experiment) holds only
    the run's config record: ``run_id``, ``status`` and ``lifecycle_reason`` come from it,
    and its LayerRefs are mapped to descriptors on the first access that needs them.
    """

    __slots__ = ("__weakref__", "_record", "_resolved", "_source")

    def __init__(self, blobs: BlobStore, content: RunContent, keepalive: Any = None) -> None:
        self._source = SealedRuns(blobs, keepalive)
        self._record: RunRecord | None = None
        self._resolved: RunContent | None = content

    @property
    def _content(self) -> RunContent:
        content = self._resolved
        if content is None:
            source, record = self._source, self._record
            assert source.manifest is not None and record is not None
            try:
                content = run_content(source.manifest, record)
            except InvalidArtifactError as exc:
                raise InvalidArtifactError(
                    f"Experiment artifact {source.manifest_digest}, run {record.run_id}: {exc}"
                ) from None
            self._resolved = content
        return content

    def _attachment_view(self) -> tuple[BlobStore, Mapping[str, Descriptor], Mapping[str, str]]:
        content = self._content
        blobs = self._source.blobs
        if content.inline:  # a deferred close: its small attachments are not in the store yet
            from ..engine.blobstore import InlineBlobs

            blobs = cast("BlobStore", InlineBlobs(blobs, content.inline))
        return blobs, content.attachments.descriptors, content.attachments.filenames

    @property
    def run_id(self) -> int:
        record = self._record
        return record.run_id if record is not None else self._content.run_id

    @property
    def status(self) -> str:
        """How the Run scope closed: ``finished``, ``failed`` or ``interrupted``."""
        record = self._record
        return record.status if record is not None else self._content.status

    @property
    def lifecycle_reason(self) -> str | None:
        record = self._record
        status, reason = (record.status, record.reason) if record is not None else (self._content.status, self._content.reason)
        return reason if status != FINISHED else None

    @property
    def attachment_names(self) -> list[str]:
        return self._content.attachments.sorted_names()

    @property
    def trace(self) -> Any:
        """The stored OTLP trace (``ommx.tracing.TraceResult`` if installed, else ``tracing.TraceResult``), or None."""
        if self._content.trace is None:
            return None
        from .tracing import load_trace

        return load_trace(self._source.blobs.get(self._content.trace.digest))

    @property
    def solves(self) -> list[Any]:
        return self._calls("solves")

    @property
    def samplings(self) -> list[Any]:
        return self._calls("samplings")

    def _calls(self, kind: str) -> list[Any]:
        calls = sorted(getattr(self._content, kind), key=lambda c: c.call_id)
        if not calls:
            return []
        from . import solve  # issue 4: Solve / Sampling views

        view = solve.Solve if kind == "solves" else solve.Sampling
        return [view(self._source.blobs, call, self._source.keepalive) for call in calls]

    def _repr_html_(self) -> str:
        from .report import run_card

        return run_card(self)

    def __repr__(self) -> str:
        c = self._content
        return (
            f"SealedRun(run_id={c.run_id}, status='{c.status}', attachments={len(c.attachments.descriptors)}, "
            f"solves={len(c.solves)}, samplings={len(c.samplings)})"
        )

