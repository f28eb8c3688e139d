"""Run traces (§2.9): capture with the OpenTelemetry SDK, OTLP protobuf layer, readable view."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ommx.adapter import SolverAdapter
from ommx.v1 import Instance, Solution
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from lifecycle.test_solve import Scripted, knapsack

from ommx_experiment import Experiment, LocalRegistry
from ommx_experiment.engine.oci import Manifest
from ommx_experiment.lifecycle.tracing import SpanRecord, TraceResult, load_trace, render_text_tree

NAME = "example.com/team/traced:v1"
REPO = Path(__file__).resolve().parents[2]


class Traced(SolverAdapter):
    """Emits spans through the global OpenTelemetry API, as the OMMX 3 adapters do."""

    _tracer = trace.get_tracer("test.adapter")

    def __init__(self, ommx_instance: Instance) -> None:
        self.instance = ommx_instance

    @classmethod
    def solve(cls, ommx_instance: Instance, **kwargs: Any) -> Solution:
        with cls._tracer.start_as_current_span("solve") as span:
            span.set_attribute("adapter", f"{cls.__module__}.{cls.__qualname__}")
            with cls._tracer.start_as_current_span("convert"):
                pass
            return ommx_instance.evaluate({v.id: 0.0 for v in ommx_instance.decision_variables})

    @property
    def solver_input(self) -> Any:
        return None

    def decode(self, data: Any) -> Solution:
        return self.instance.evaluate(data)


def _by_name(records: list[SpanRecord]) -> dict[str, SpanRecord]:
    return {r.name: r for r in records}


def test_run_span_and_adapter_span_are_stored() -> None:
    exp = Experiment(NAME, store_trace=True)
    with exp.run() as run:
        run.log_parameter("p", 1)
        run.log_solve(Traced, knapsack())
    stored = exp.runs[0].trace
    assert isinstance(stored, TraceResult)
    spans = _by_name(stored.records)
    assert set(spans) == {"Run", "solve", "convert"}
    root, solve, convert = spans["Run"], spans["solve"], spans["convert"]
    assert root.parent_span_id is None and root.scope == "ommx.experiment" and root.attributes == {"ommx.run.id": 0}
    assert solve.parent_span_id == root.span_id and convert.parent_span_id == solve.span_id
    assert solve.attributes["adapter"].endswith(".Traced") and solve.scope == "test.adapter"
    assert len({s.trace_id for s in stored.records}) == 1
    assert root.start_unix_nano <= solve.start_unix_nano <= solve.end_unix_nano <= root.end_unix_nano
    tree = repr(stored)
    assert tree.splitlines()[0].startswith("└── Run (") and "{scope=ommx.experiment}" in tree
    assert "[ommx.run.id=0]" in tree and "    └── solve (" in tree and "        └── convert (" in tree


def test_open_solve_span_and_missing_decode_error() -> None:
    exp = Experiment(NAME, store_trace=True)
    with exp.run() as run:
        with run.open_solve(Scripted, knapsack()) as solve:
            solve.decode({})
        with pytest.raises(RuntimeError, match="OpenSolve.decode"):
            with run.open_solve(Scripted, knapsack()):
                pass
    records = exp.runs[0].trace.records
    root = next(r for r in records if r.name == "Run")
    solves = sorted((r for r in records if r.name == "Solve"), key=lambda r: r.start_unix_nano)
    assert [s.parent_span_id for s in solves] == [root.span_id, root.span_id]
    assert [s.attributes["ommx.solve.id"] for s in solves] == [0, 1]
    assert all(type(s.attributes["ommx.solve.id"]) is int for s in solves)
    assert solves[0].attributes["adapter"] == f"{Scripted.__module__}.Scripted"
    assert (solves[0].status, solves[1].status) == ("unset", "error")
    assert "OpenSolve.decode" in solves[1].status_message
    assert "[ERROR]" in repr(exp.runs[0].trace)


def test_default_stores_no_trace_and_spans_outside_runs_are_ignored() -> None:
    plain = Experiment("example.com/team/plain:v1")
    with plain.run() as run:
        run.log_solve(Traced, knapsack())
    assert plain.runs[0].trace is None
    traced = Experiment(NAME, store_trace=True)
    Traced.solve(knapsack())  # outside any Run: not captured
    with traced.run() as run:
        pass
    with traced.run() as run:
        run.log_solve(Traced, knapsack())
    first, second = traced.runs
    assert [r.name for r in first.trace.records] == ["Run"]
    assert sorted(r.name for r in second.trace.records) == ["Run", "convert", "solve"]
    assert first.trace.records[0].trace_id != second.trace.records[0].trace_id
    assert _by_name(second.trace.records)["Run"].attributes == {"ommx.run.id": 1}


def test_failed_run_stores_trace_with_error_status() -> None:
    exp = Experiment(NAME, store_trace=True)
    with pytest.raises(ValueError, match="boom"):
        with exp.run() as run:
            run.log_solve(Traced, knapsack())
            raise ValueError("boom")
    sealed = exp.runs[0]
    assert sealed.status == "failed"
    root = _by_name(sealed.trace.records)["Run"]
    assert root.status == "error"


def test_store_trace_requires_the_context_manager() -> None:
    Scripted.calls.clear()
    exp = Experiment(NAME, store_trace=True)
    run = exp.run()
    with pytest.raises(RuntimeError, match="store_trace=True requires using Run"):
        run.log_solve(Scripted, knapsack())
    with pytest.raises(RuntimeError, match="store_trace=True requires using Run"):
        run.open_solve(Scripted, knapsack())
    assert Scripted.calls == []


def test_trace_layer_format_and_fresh_process_bytes(registry_root: Path) -> None:
    exp = Experiment(NAME, store_trace=True)
    with exp.run() as run:
        run.log_solve(Traced, knapsack())
    exp.commit()
    registry = LocalRegistry.at(registry_root)
    manifest = Manifest.parse(registry.blobs.get(registry.resolve(NAME)))
    config = json.loads(registry.blobs.get(manifest.config.digest))
    layer = manifest.layers[config["runs"][0]["trace"]]
    assert config["runs"][0]["trace"] == 0  # run attachments (none), then the trace, then the solve
    assert layer.media_type == "application/org.ommx.trace.otlp+protobuf" and dict(layer.annotations) == {}
    payload = registry.blobs.get(layer.digest)
    request = ExportTraceServiceRequest()
    request.ParseFromString(payload)
    assert request.SerializeToString() == payload
    assert exp.runs[0].trace.otlp_protobuf() == payload
    script = (
        "import sys; from ommx_experiment import Experiment\n"
        f"sys.stdout.write(Experiment.load({NAME!r}).runs[0].trace.otlp_protobuf().hex())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert bytes.fromhex(proc.stdout.strip()) == payload


def test_render_text_tree_layout() -> None:
    records = [
        SpanRecord("Run", 1, 10, None, 1_000, 2_000_001_000, {"ommx.run.id": 3}, scope="ommx.experiment"),
        SpanRecord("b", 1, 12, 10, 1_500, 1_501_500, {"thread.id": 1, "code.lineno": 3}),
        SpanRecord("a", 1, 11, 10, 2_000, 2_500, {"k": "v"}, status="error"),
        SpanRecord("orphan", 1, 13, 99, 50, 60),
    ]
    assert render_text_tree(records).splitlines() == [
        "├── orphan (0.0 µs)",
        "└── Run (2.00 s) {scope=ommx.experiment} [ommx.run.id=3]",
        "    ├── b (1.50 ms)",
        "    └── a (0.5 µs) [ERROR] [k='v']",
    ]
    assert render_text_tree([]) == "(no spans)"


def test_load_trace_of_sdk_spans_round_trips() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ommx_experiment.lifecycle.tracing import encode_otlp

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("unit")
    with tracer.start_as_current_span("outer") as outer:
        outer.set_attribute("xs", [1, 2])
        with tracer.start_as_current_span("inner") as inner:
            inner.set_attribute("f", 1.5)
    payload = encode_otlp(list(exporter.get_finished_spans()))
    result = load_trace(payload)
    spans = _by_name(result.records)
    assert spans["outer"].attributes == {"xs": [1, 2]} and spans["inner"].attributes == {"f": 1.5}
    assert spans["inner"].parent_span_id == spans["outer"].span_id
    assert [s.name for s in result.spans] == [r.name for r in result.records]
    assert result.otlp_protobuf() == payload


def test_store_trace_without_opentelemetry_is_a_clear_error(tmp_path: Path) -> None:
    script = """
import sys
for name in ("opentelemetry", "opentelemetry.sdk", "opentelemetry.sdk.trace"):
    sys.modules[name] = None
from ommx_experiment import Experiment
from ommx_experiment.lifecycle.tracing import TraceUnavailableError
try:
    Experiment("example.com/team/no-otel:v1", store_trace=True)  # fails at construction
except TraceUnavailableError as exc:
    assert isinstance(exc, ImportError)
    print("ERROR:", exc)
plain = Experiment("example.com/team/no-otel-plain:v1")
with plain.run():
    pass
print("plain ok", len(plain.runs))
"""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMMX_LOCAL_REGISTRY_ROOT=str(tmp_path / "reg"))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ERROR: store_trace=True needs the OpenTelemetry SDK" in proc.stdout
    assert "pip install 'ommx-experiment[trace]'" in proc.stdout
    assert "plain ok 1" in proc.stdout
