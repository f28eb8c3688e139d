"""OpenTelemetry traces of Runs: capture, OTLP protobuf encoding, and a readable view (§2.9).

Capture design
--------------
Spans that user or adapter code creates through the *global* OpenTelemetry API
(``opentelemetry.trace.get_tracer(...)``) only reach a processor attached to the
global ``TracerProvider``. So, like ``ommx.tracing``, we install a collector once
per process:

* if the global provider is an SDK ``TracerProvider`` (the user configured one),
  our :class:`_Collector` is added to it as one more span processor, leaving the
  user's exporters untouched;
* if it is the default ``ProxyTracerProvider``, we install a plain SDK provider
  as the global one (OpenTelemetry allows that once per process) and attach the
  collector to it;
* any other provider: :class:`TraceUnavailableError`.

The collector keeps nothing by default. :class:`RunCapture` starts the ``Run``
span (tracer ``ommx.experiment``, attribute ``ommx.run.id``) in a *fresh*
context, so it gets its own trace id, and registers that trace id with the
collector; every span ending with that trace id (adapter spans, ``Solve`` spans,
anything the body emits in this thread's context) is kept until the capture
ends. Spans of other traces are dropped at once, so a long-lived process does
not accumulate unrelated spans.

The stored bytes are OpenTelemetry's own OTLP encoder output
(``encode_spans(spans).SerializeToString()``, an ``ExportTraceServiceRequest``).

The ``opentelemetry`` packages are optional (``pip install 'ommx-experiment[trace]'``);
every import here is lazy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import media_types as mt
from ..engine.oci import Descriptor
from ..errors import OmmxExperimentError
from .reason import lifecycle_reason

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from ..engine.blobstore import BlobStore
    from .recorder import RunRecorder

__all__ = [
    "TRACER_SCOPE",
    "RunCapture",
    "SolveSpan",
    "SpanRecord",
    "TraceResult",
    "TraceUnavailableError",
    "load_trace",
    "render_html",
    "render_text_tree",
    "require_trace_support",
    "store_run_trace",
    "store_trace_bytes",
    "to_chrome_trace",
]

TRACER_SCOPE = "ommx.experiment"
INSTALL_HINT = "pip install 'ommx-experiment[trace]'"


class TraceUnavailableError(OmmxExperimentError, ImportError):
    """``store_trace=True`` without the optional OpenTelemetry packages (or with a foreign provider)."""


def require_trace_support() -> None:
    """Raise :class:`TraceUnavailableError` unless the OpenTelemetry SDK and OTLP encoder import."""
    try:
        import opentelemetry.exporter.otlp.proto.common.trace_encoder
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        raise TraceUnavailableError(
            f"store_trace=True needs the OpenTelemetry SDK and OTLP encoder ({exc}); install them with `{INSTALL_HINT}`"
        ) from exc


# --- the process-wide collector -------------------------------------------------------------------


class _Collector:
    """Keeps only the spans whose trace id has an active capture (see the module docs).

    Wrapped into an SDK ``SpanProcessor`` subclass by :func:`_processor`, so the
    SDK import stays lazy.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: dict[int, list[Any]] = {}

    def collect(self, span: Any) -> None:
        ctx = span.context
        if ctx is None:
            return
        with self._lock:
            bucket = self._spans.get(ctx.trace_id)
            if bucket is not None:
                bucket.append(span)

    def begin(self, trace_id: int) -> None:
        with self._lock:
            self._spans.setdefault(trace_id, [])

    def end(self, trace_id: int) -> list[Any]:
        with self._lock:
            return self._spans.pop(trace_id, [])

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()


def _processor(collector: _Collector) -> Any:
    from opentelemetry.sdk.trace import SpanProcessor

    class _CollectingProcessor(SpanProcessor):
        def on_end(self, span: Any) -> None:
            collector.collect(span)

        def shutdown(self) -> None:
            collector.clear()

    return _CollectingProcessor()


_COLLECTOR: list[_Collector] = []
_INSTALL_LOCK = threading.Lock()


def _collector() -> _Collector:
    """Install (once) and return the collector on the global SDK provider."""
    with _INSTALL_LOCK:
        if _COLLECTOR:
            return _COLLECTOR[0]
        require_trace_support()
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            trace.set_tracer_provider(TracerProvider())  # ignored (with a warning) if one was set already
            provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            raise TraceUnavailableError(
                f"store_trace=True needs an OpenTelemetry SDK TracerProvider, but a {type(provider).__name__} is "
                "installed globally and cannot be replaced; install opentelemetry.sdk.trace.TracerProvider yourself"
            )
        collector = _Collector()
        provider.add_span_processor(_processor(collector))
        _COLLECTOR.append(collector)
        return collector


# --- capturing a Run ------------------------------------------------------------------------------


class RunCapture:
    """The ``Run`` root span of one traced Run and the spans collected under its trace id.

    :meth:`start` opens the span (made current in this thread) and starts
    collecting; :meth:`finish` closes it and returns the OTLP protobuf bytes of
    every span collected. ``finish`` closes the span even when the block raised
    (OpenTelemetry records the exception and sets status ERROR).
    """

    def __init__(self, cm: Any, span: Any, trace_id: int, collector: _Collector) -> None:
        self._cm = cm
        self._span = span
        self._trace_id = trace_id
        self._collector = collector
        self._closed = False

    @classmethod
    def start(cls, run_id: int) -> RunCapture:
        """Open span ``Run`` (tracer ``ommx.experiment``, attribute ``ommx.run.id``) in a fresh trace."""
        collector = _collector()
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        cm = trace.get_tracer(TRACER_SCOPE).start_as_current_span("Run", context=otel_context.Context())
        span = cm.__enter__()
        trace_id = span.get_span_context().trace_id
        collector.begin(trace_id)
        try:  # as OMMX: through the current span; a failure closes the partial span cleanly
            trace.get_current_span().set_attribute("ommx.run.id", run_id)
        except BaseException:
            try:
                cm.__exit__(None, None, None)
            finally:
                collector.end(trace_id)
            raise
        return cls(cm, span, trace_id, collector)

    def close_span(self, exc: BaseException | None = None) -> None:
        """End the ``Run`` span (once); the exception, if any, is recorded on it."""
        if self._closed:
            return
        self._closed = True
        if exc is None:
            self._cm.__exit__(None, None, None)
        else:
            self._cm.__exit__(type(exc), exc, exc.__traceback__)

    def finish(self, exc: BaseException | None = None) -> bytes:
        """Close the span and return the OTLP ``ExportTraceServiceRequest`` bytes of the collected spans."""
        try:
            self.close_span(exc)
        finally:
            spans = self._collector.end(self._trace_id)
        return encode_otlp(spans)

    def abandon(self) -> None:
        """Stop collecting without encoding (the span is closed if still open)."""
        try:
            self.close_span(None)
        finally:
            self._collector.end(self._trace_id)


def encode_otlp(spans: list[Any]) -> bytes:
    """OTLP protobuf bytes of finished SDK spans (OpenTelemetry's own encoder)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return bytes(encode_spans(spans).SerializeToString())


def store_trace_bytes(blobs: BlobStore, data: bytes) -> Descriptor:
    """Store a trace payload; its layer descriptor (annotations ``{}``)."""
    stored = blobs.put_bytes(data)
    return Descriptor(mt.TRACE_OTLP_PROTOBUF, stored.digest, stored.size)


def store_run_trace(run: RunRecorder, capture: RunCapture, exc: BaseException | None = None) -> None:
    """Close ``capture`` and attach its OTLP bytes to ``run`` as the Run's one trace layer."""
    data = capture.finish(exc)
    run._set_trace(store_trace_bytes(run._attachment_blobs(), data))


# --- the Solve span of an OpenSolve ------------------------------------------------------------------


class SolveSpan:
    """The ``Solve`` span of an OpenSolve and the trace part of its ``terminal_state``.

    OMMX 3's calls, each asked anew: ``trace.get_tracer("ommx.experiment")
    .start_as_current_span("Solve")`` entered; ``trace.get_current_span()`` for
    the attributes ``ommx.solve.id`` and ``adapter`` and for the error status
    ``Status(StatusCode.ERROR, reason)``; the context manager's ``__exit__`` gets
    the body's exception (OpenTelemetry then records it).
    """

    def __init__(self) -> None:
        self.state = "not_started"
        self._cm: Any = None
        self._trace: Any = None
        self.context: dict[str, Any] = {"state": "not_set"}
        self.error: dict[str, Any] = {"state": "not_marked"}
        self.close_error: str | None = None

    def start(self) -> None:
        try:
            from opentelemetry import trace
        except ImportError:
            return
        cm = trace.get_tracer(TRACER_SCOPE).start_as_current_span("Solve")
        cm.__enter__()
        self._cm, self._trace = cm, trace
        self.state = "active"

    def set_context(self, solve_id: int, adapter: str) -> None:
        self.context = {"state": "not_set", "solve_id": solve_id, "adapter": adapter}
        if self._cm is None:
            return
        try:
            span = self._trace.get_current_span()
            span.set_attribute("ommx.solve.id", solve_id)
            span.set_attribute("adapter", adapter)
            self.context["state"] = "set"
        except Exception as exc:
            self.context.update(state="set_failed", error=str(exc))

    def mark_error(self, exc: BaseException) -> None:
        if self._cm is None:
            return
        reason = lifecycle_reason(exc)
        try:
            trace = self._trace
            trace.get_current_span().set_status(trace.Status(trace.StatusCode.ERROR, reason))
            self.error = {"state": "marked", "reason": reason}
        except Exception as mark_exc:
            self.error = {"state": "mark_failed", "reason": reason, "error": str(mark_exc)}

    def close(self, exc: BaseException | None = None) -> None:
        """Exit the span's context manager, with ``exc`` (the body's exception) if any."""
        if self._cm is None:
            return
        cm, self._cm = self._cm, None
        try:
            if exc is None:
                cm.__exit__(None, None, None)
            else:
                cm.__exit__(type(exc), exc, exc.__traceback__)
            self.state = "closed"
        except Exception as close_exc:
            self.state, self.close_error = "close_failed", str(close_exc)

    def terminal(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "context": {"solve_context": dict(self.context), "error": dict(self.error)}}
        if self.close_error is not None:
            out["close_error"] = self.close_error
        return out


# --- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span of a stored trace. Ids are integers (0 = none); times are Unix nanoseconds."""

    name: str
    trace_id: int
    span_id: int
    parent_span_id: int | None
    start_unix_nano: int
    end_unix_nano: int
    attributes: Mapping[str, Any] = field(default_factory=dict)
    status: str = "unset"
    status_message: str = ""
    scope: str | None = None

    @property
    def duration_ms(self) -> float:
        if not self.start_unix_nano or not self.end_unix_nano:
            return 0.0
        return (self.end_unix_nano - self.start_unix_nano) / 1_000_000.0


class TraceResult:
    """A stored OTLP trace: the decoded ``ExportTraceServiceRequest`` and views of its spans.

    API-compatible with ``ommx.tracing.TraceResult`` (``request``, ``spans`` as
    OTLP protobuf spans, ``from_otlp_protobuf``, ``otlp_protobuf``, ``repr`` = the
    text tree), plus :attr:`records` (plain :class:`SpanRecord` values) and
    :meth:`render_text_tree`.
    """

    def __init__(self, request: Any, payload: bytes | None = None) -> None:
        self.request = request
        self._payload = payload

    @classmethod
    def from_otlp_protobuf(cls, payload: bytes) -> TraceResult:
        """Parse OTLP protobuf bytes (``ExportTraceServiceRequest``)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request = ExportTraceServiceRequest()
        request.ParseFromString(payload)
        return cls(request, bytes(payload))

    def otlp_protobuf(self) -> bytes:
        """The payload bytes (as stored when this object was loaded)."""
        if self._payload is not None:
            return self._payload
        return bytes(self.request.SerializeToString())

    @property
    def spans(self) -> list[Any]:
        """Flattened OTLP protobuf spans (as ``ommx.tracing.TraceResult.spans``)."""
        return [span for span, _ in self._proto_spans()]

    @property
    def records(self) -> list[SpanRecord]:
        """Every span as a :class:`SpanRecord`, in stored order."""
        return [_record(span, scope) for span, scope in self._proto_spans()]

    def _proto_spans(self) -> Iterator[tuple[Any, str | None]]:
        for resource_spans in self.request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                scope = scope_spans.scope.name or None
                for span in scope_spans.spans:
                    yield span, scope

    def render_text_tree(self) -> str:
        return render_text_tree(self.records)

    def __repr__(self) -> str:
        return self.render_text_tree()

    def _repr_html_(self) -> str:
        """Notebook HTML: the text tree and a Chrome Trace JSON download link (OMMX's ``render_html``)."""
        return render_html(self.records)

    def to_chrome_trace(self) -> dict[str, Any]:
        """The spans in Chrome Trace Event Format (as ``ommx.tracing.to_chrome_trace``)."""
        return to_chrome_trace(self.records)


def load_trace(payload: bytes) -> Any:
    """The trace object for a stored payload: ``ommx.tracing.TraceResult`` when installed, else ours."""
    try:
        from ommx.tracing import TraceResult as OmmxTraceResult  # type: ignore[import-not-found]
    except ImportError:
        return TraceResult.from_otlp_protobuf(payload)
    return OmmxTraceResult.from_otlp_protobuf(payload)


_STATUS = {0: "unset", 1: "ok", 2: "error"}


def _record(span: Any, scope: str | None) -> SpanRecord:
    return SpanRecord(
        name=span.name,
        trace_id=_int_id(span.trace_id) or 0,
        span_id=_int_id(span.span_id) or 0,
        parent_span_id=_int_id(span.parent_span_id),
        start_unix_nano=span.start_time_unix_nano,
        end_unix_nano=span.end_time_unix_nano,
        attributes=_attributes(span.attributes),
        status=_STATUS.get(span.status.code, "unset"),
        status_message=span.status.message,
        scope=scope,
    )


def _int_id(raw: bytes) -> int | None:
    return int.from_bytes(raw, "big") if raw else None


def _attributes(kvs: Any) -> dict[str, Any]:
    return {str(kv.key): _any_value(kv.value) for kv in kvs}


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return bytes(value.bytes_value)
    return None if kind is None else getattr(value, kind)


# --- text tree (the same layout as ommx.tracing.render_text_tree) --------------------------------------

_HIDDEN_ATTRIBUTES = frozenset({"busy_ns", "idle_ns", "target", "thread.id"})


def _format_duration(ms: float) -> str:
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    if ms >= 1:
        return f"{ms:.2f} ms"
    return f"{ms * 1000:.1f} µs"


def _label(span: SpanRecord) -> str:
    scope = f" {{scope={span.scope}}}" if span.scope else ""
    error = " [ERROR]" if span.status == "error" else ""
    pairs = [f"{k}={v!r}" for k, v in span.attributes.items() if k not in _HIDDEN_ATTRIBUTES and not k.startswith("code.")]
    attrs = f" [{', '.join(pairs)}]" if pairs else ""
    return f"{span.name} ({_format_duration(span.duration_ms)}){scope}{error}{attrs}"


def render_text_tree(spans: list[SpanRecord]) -> str:
    """An ASCII tree of ``spans``: parent → children, siblings by start time, orphans as roots."""
    if not spans:
        return "(no spans)"
    ids = {s.span_id for s in spans}
    children: dict[int | None, list[SpanRecord]] = {}
    for s in spans:
        parent = s.parent_span_id if s.parent_span_id in ids else None
        children.setdefault(parent, []).append(s)
    lines: list[str] = []

    def walk(span: SpanRecord, prefix: str, last: bool) -> None:
        lines.append(f"{prefix}{'└── ' if last else '├── '}{_label(span)}")
        kids = sorted(children.get(span.span_id, []), key=lambda k: k.start_unix_nano)
        for i, kid in enumerate(kids):
            walk(kid, prefix + ("    " if last else "│   "), i == len(kids) - 1)

    roots = sorted(children.get(None, []), key=lambda k: k.start_unix_nano)
    for i, root in enumerate(roots):
        walk(root, "", i == len(roots) - 1)
    return "\n".join(lines)


# --- notebook HTML and Chrome Trace JSON (the same output as ommx.tracing's render_html) ----------------


def to_chrome_trace(spans: list[SpanRecord]) -> dict[str, Any]:
    """Complete-duration events (``ph: "X"``, µs) sorted by start, longest first; attributes as ``args``."""
    events: list[dict[str, Any]] = []
    for span in spans:
        if not span.start_unix_nano or not span.end_unix_nano:
            continue
        args = {k: _json_attribute(v) for k, v in span.attributes.items()}
        if span.scope is not None:
            args["otel.scope.name"] = span.scope
        events.append({
            "name": span.name, "cat": span.scope or "ommx", "ph": "X", "ts": span.start_unix_nano // 1_000,
            "dur": max((span.end_unix_nano - span.start_unix_nano) // 1_000, 1), "pid": 1, "tid": 1, "args": args,
        })
    events.sort(key=lambda e: (e["ts"], -e["dur"]))
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def render_html(spans: list[SpanRecord], *, download_filename: str = "ommx_trace.json") -> str:
    """The text tree in ``<pre>`` and a ``data:`` link to the Chrome Trace JSON."""
    import base64
    import html
    import json

    tree = html.escape(render_text_tree(spans))
    payload = json.dumps(to_chrome_trace(spans))
    data_url = "data:application/json;base64," + base64.b64encode(payload.encode("utf-8")).decode("ascii")
    return (
        '<div class="ommx-trace">'
        f"<pre>{tree}</pre>"
        f'<p><a href="{data_url}" download="{html.escape(download_filename, quote=True)}">'
        f"Download Chrome Trace JSON ({len(payload) / 1024:.1f} KB)"
        "</a> — open in Perfetto, speedscope, or <code>chrome://tracing</code>.</p>"
        "</div>"
    )


def _json_attribute(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_json_attribute(v) for v in value]
    return str(value)
