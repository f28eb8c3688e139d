from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import subprocess
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ommx_experiment import media_types as mt
from ommx_experiment.engine.digest import sha256_digest
from ommx_experiment.engine.oci import Descriptor, Manifest
from ommx_experiment.errors import InvalidArtifactError, InvalidInputError
from ommx_experiment.format import run_params as rp
from ommx_experiment.format.codec import (
    CHECKPOINT_STATUSES,
    SEALED_STATUSES,
    AttachmentTable,
    ExperimentConfig,
    RunRecord,
    SamplingRecord,
    SolveRecord,
    validate_experiment,
)
from ommx_experiment.format.content import (
    AttachmentContent,
    ExperimentContent,
    RunContent,
    SolveContent,
    build_experiment,
    content_from_artifact,
)

# §2.3 verified example (committed experiment).
VERIFIED_CONFIG = (
    '{"status":"finished","attachments":{"entries":{"dataset":0,"raw":1}},"runs":[{"run_id":0,"status":"finished",'
    '"attachments":{"entries":{"cfg":2}},"solves":[{"solve_id":0,"status":"finished","input":3,"output":4,"adapter":'
    '"__main__.MyAdapter","adapter_options":"{\\"time_limit\\": 1.5}","diagnostics":5},{"solve_id":1,"status":"failed",'
    '"input":6,"adapter":"__main__.MyAdapter","adapter_options":"{\\"fail\\": true}"}],"samplings":[]},{"run_id":1,'
    '"status":"finished","attachments":{"entries":{}},"solves":[],"samplings":[]},{"run_id":2,"status":"failed",'
    '"outcome":{"reason":"ValueError: bad thing happened"},"attachments":{"entries":{}},"solves":[],"samplings":[]}],'
    '"run_parameters":7}'
).encode()


def desc(media_type: str, payload: str, annotations: dict[str, str] | None = None) -> Descriptor:
    return Descriptor.for_blob(media_type, payload.encode(), annotations)


RUN_PARAMS = Descriptor.for_blob(mt.RUN_PARAMETERS, bytes.fromhex("81a7636f6c756d6e7380"))
INSTANCE = desc(mt.V2_INSTANCE, "instance", {"org.ommx.v1.instance.variables": "2"})


def verified_content() -> ExperimentContent:
    return ExperimentContent(
        attachments=AttachmentContent({"raw": desc(mt.OCTET_STREAM, "raw"), "dataset": desc(mt.JSON, "[]")}),
        runs=(
            RunContent(2, "failed", "ValueError: bad thing happened"),
            RunContent(1),
            RunContent(
                0,
                attachments=AttachmentContent({"cfg": desc(mt.JSON, "{}")}),
                solves=(
                    SolveContent(1, "failed", INSTANCE, None, "__main__.MyAdapter", '{"fail": true}'),
                    SolveContent(
                        0,
                        "finished",
                        INSTANCE,
                        desc(mt.V2_SOLUTION, "solution"),
                        "__main__.MyAdapter",
                        '{"time_limit": 1.5}',
                        desc(mt.DIAGNOSTICS, "diag"),
                    ),
                ),
            ),
        ),
        run_parameters=RUN_PARAMS,
    )


def manifest_for(layers: tuple[Descriptor, ...], config: ExperimentConfig) -> Manifest:
    config_desc = Descriptor.for_blob(mt.EXPERIMENT_CONFIG, config.to_bytes())
    return Manifest(mt.EXPERIMENT_ARTIFACT_TYPE, config_desc, layers)


# --- serialisation ---------------------------------------------------------------------------------


def test_verified_config_round_trips_byte_identically() -> None:
    config = ExperimentConfig.parse(VERIFIED_CONFIG)
    assert config.to_bytes() == VERIFIED_CONFIG
    assert config.runs[2].reason == "ValueError: bad thing happened"
    assert config.runs[0].solves[0] == SolveRecord(0, "finished", 3, 4, "__main__.MyAdapter", '{"time_limit": 1.5}', 5)
    assert (config.solve_count, config.sampling_count) == (2, 0)


def test_build_experiment_reproduces_verified_config_and_layer_order() -> None:
    layers, config = build_experiment(verified_content(), status="finished")
    assert config.to_bytes() == VERIFIED_CONFIG
    # no de-duplication: the same Instance is layer 3 and layer 6
    assert layers[3] == layers[6] == INSTANCE
    assert [layer.media_type for layer in layers] == [
        mt.JSON, mt.OCTET_STREAM, mt.JSON, mt.V2_INSTANCE, mt.V2_SOLUTION, mt.DIAGNOSTICS, mt.V2_INSTANCE,
        mt.RUN_PARAMETERS,
    ]  # fmt: skip
    validate_experiment(manifest_for(layers, config), config, allowed_statuses=SEALED_STATUSES)


def test_trace_and_samplings_order_and_extra_layers_go_last() -> None:
    trace = desc(mt.TRACE_OTLP_PROTOBUF, "trace")
    sample_set = desc(mt.V2_SAMPLE_SET, "samples")
    parquet = desc(mt.PARQUET, "pq", {mt.TITLE_ANNOTATION: mt.PARQUET_RUN_PARAMS_TITLE})
    run = RunContent(
        5,
        attachments=AttachmentContent({"b": desc(mt.JSON, "1"), "a": desc(mt.JSON, "2")}, {"a": "a.json"}),
        trace=trace,
        solves=(SolveContent(0, "finished", INSTANCE, desc(mt.V2_SOLUTION, "s"), ""),),
        samplings=(
            SolveContent(1, "finished", INSTANCE, sample_set, "m.S"),
            SolveContent(0, "interrupted", INSTANCE, None, "m.S", diagnostics=desc(mt.DIAGNOSTICS, "d")),
        ),
    )
    content = ExperimentContent(AttachmentContent(), (run,), RUN_PARAMS, (parquet,))
    layers, config = build_experiment(content, status="draft", requested_image_name="example.com/a/b:v1")
    assert layers == (
        run.attachments.descriptors["a"], run.attachments.descriptors["b"], trace, INSTANCE,
        run.solves[0].output, INSTANCE, run.samplings[1].diagnostics, INSTANCE, sample_set, RUN_PARAMS, parquet,
    )  # fmt: skip
    assert config.run_parameters == 9
    obj = json.loads(config.to_bytes())
    assert list(obj) == ["status", "requested_image_name", "attachments", "runs", "run_parameters"]
    assert obj["runs"][0] == {
        "run_id": 5,
        "status": "finished",
        "attachments": {"entries": {"a": 0, "b": 1}, "filenames": {"a": "a.json"}},
        "trace": 2,
        "solves": [{"solve_id": 0, "status": "finished", "input": 3, "output": 4, "adapter": "", "adapter_options": "{}"}],
        "samplings": [{"sampling_id": 0, "status": "interrupted", "input": 5, "adapter": "m.S",
                       "adapter_options": "{}", "diagnostics": 6},
                      {"sampling_id": 1, "status": "finished", "input": 7, "output": 8, "adapter": "m.S",
                       "adapter_options": "{}"}],
    }  # fmt: skip
    manifest = manifest_for(layers, config)
    validate_experiment(manifest, config, allowed_statuses=CHECKPOINT_STATUSES)
    back = content_from_artifact(manifest, config)
    assert back.extra_layers == (parquet,)
    assert build_experiment(back, status="draft", requested_image_name="example.com/a/b:v1") == (layers, config)


def test_content_from_artifact_is_inverse_of_build() -> None:
    layers, config = build_experiment(verified_content(), status="finished")
    content = content_from_artifact(manifest_for(layers, config), config)
    assert [r.run_id for r in content.runs] == [0, 1, 2]
    assert content.extra_layers == ()
    assert build_experiment(content, status="finished") == (layers, config)


def test_content_from_artifact_rejects_out_of_range_refs() -> None:
    layers, config = build_experiment(verified_content(), status="finished")
    with pytest.raises(InvalidArtifactError, match="run 0 solve 1 input refers to layer 6, but the manifest has 6"):
        content_from_artifact(manifest_for(layers[:6], config), config)


def test_build_rejects_inconsistent_content() -> None:
    bad_filenames = ExperimentContent(AttachmentContent({}, {"x": "x.bin"}), (), RUN_PARAMS)
    with pytest.raises(InvalidInputError, match="unknown attachments"):
        build_experiment(bad_filenames, status="finished")
    with pytest.raises(InvalidInputError, match="duplicate run id 1"):
        build_experiment(ExperimentContent(AttachmentContent(), (RunContent(1), RunContent(1)), RUN_PARAMS), status="finished")
    with pytest.raises(InvalidInputError, match="Unknown experiment status"):
        build_experiment(verified_content(), status="sealed")


def test_reason_is_written_only_for_failed_and_interrupted() -> None:
    table = AttachmentTable()
    failed = ExperimentConfig("interrupted", "KeyboardInterrupt", "a/b:c", table, (), 0)
    assert failed.to_bytes().startswith(b'{"status":"interrupted","outcome":{"reason":"KeyboardInterrupt"},')
    assert b"outcome" not in ExperimentConfig("failed", None, None, table, (), 0).to_bytes()
    assert b"outcome" not in ExperimentConfig("draft", "ignored", None, table, (), 0).to_bytes()
    assert "outcome" not in RunRecord(0, "finished", "ignored").to_obj()
    assert RunRecord(0, "failed", "x").to_obj()["outcome"] == {"reason": "x"}


def test_non_ascii_is_written_raw() -> None:
    config = ExperimentConfig("failed", "ValueError: é\n", None, AttachmentTable({"データ": 0}, {"データ": "ü.bin"}), (), 1)
    data = config.to_bytes()
    assert "データ".encode() in data and b"\\n" in data and b"\\u" not in data
    assert ExperimentConfig.parse(data) == config


_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=8)
_ref = st.integers(min_value=0, max_value=2**32 - 1)
_opt_ref = st.none() | _ref
_tables = st.builds(AttachmentTable, st.dictionaries(_text, _ref, max_size=3))
_calls = dict(status=st.sampled_from(["finished", "failed", "interrupted"]), input=_ref, output=_opt_ref,
              adapter=_text, adapter_options=_text, diagnostics=_opt_ref)  # fmt: skip
_runs = st.builds(
    RunRecord,
    run_id=st.integers(min_value=0, max_value=2**64 - 1),
    status=st.sampled_from(["finished", "failed", "interrupted"]),
    reason=st.none() | _text,
    attachments=_tables,
    trace=_opt_ref,
    solves=st.lists(st.builds(SolveRecord, solve_id=st.integers(0, 2**64 - 1), **_calls), max_size=2).map(tuple),
    samplings=st.lists(st.builds(SamplingRecord, sampling_id=st.integers(0, 9), **_calls), max_size=2).map(tuple),
)


@given(
    st.builds(
        ExperimentConfig,
        status=st.sampled_from(["finished", "draft", "failed", "interrupted"]),
        reason=st.none() | _text,
        requested_image_name=st.none() | _text,
        attachments=_tables,
        runs=st.lists(_runs, max_size=3).map(tuple),
        run_parameters=_ref,
    )
)
def test_config_round_trip_property(config: ExperimentConfig) -> None:
    data = config.to_bytes()
    parsed = ExperimentConfig.parse(data)
    assert parsed.to_bytes() == data
    assert sorted(r.run_id for r in parsed.runs) == [r.run_id for r in parsed.runs]


_plain_runs = st.builds(
    RunRecord,
    run_id=st.integers(min_value=0, max_value=2**64 - 1),
    status=st.sampled_from(["finished", "failed", "interrupted"]),
    reason=st.none() | _text,
)


@given(
    st.builds(
        ExperimentConfig,
        status=st.sampled_from(["finished", "draft", "failed", "interrupted"]),
        reason=st.none() | _text,
        requested_image_name=st.none() | _text,
        attachments=_tables,
        runs=st.lists(_plain_runs | _runs, max_size=4, unique_by=lambda r: r.run_id).map(tuple),
        run_parameters=_ref,
    )
)
def test_config_bytes_of_params_only_runs_are_json_dumps_of_the_object(config: ExperimentConfig) -> None:
    """``to_bytes`` formats params-only runs directly (a sweep's commit); the bytes are json.dumps's exactly."""
    expected = json.dumps(config.to_obj(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert config.to_bytes() == expected


_attachment_only_runs = st.builds(
    RunRecord,
    run_id=st.integers(min_value=0, max_value=2**64 - 1),
    status=st.sampled_from(["finished", "failed", "interrupted"]),
    reason=st.none() | _text,
    attachments=st.dictionaries(_text, _ref, min_size=1, max_size=3).flatmap(
        lambda entries: st.builds(
            AttachmentTable, st.just(entries), st.dictionaries(st.sampled_from(sorted(entries)), _text, max_size=2)
        )
    ),
)


@given(st.lists(_attachment_only_runs, min_size=1, max_size=4, unique_by=lambda r: r.run_id).map(tuple))
def test_config_bytes_of_attachment_only_runs_are_json_dumps_of_the_object(runs: tuple[RunRecord, ...]) -> None:
    """Runs holding only attachments (names, refs, filenames) are formatted without json.dumps per run;
    the bytes are json.dumps's exactly, and they parse back to the same records."""
    config = ExperimentConfig("finished", None, None, AttachmentTable(), runs, 0)
    expected = json.dumps(config.to_obj(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert config.to_bytes() == expected
    assert ExperimentConfig.parse(expected).to_bytes() == expected


# --- tolerant parsing -------------------------------------------------------------------------------------


def test_reader_defaults_and_unknown_fields() -> None:
    data = json.dumps(
        {
            "x-top": {"keep": [1, 2]},
            "run_parameters": 0,
            "status": "finished",
            "attachments": {"entries": {}, "x-table": 1},
            "runs": [
                {
                    "run_id": 3,
                    "attachments": {"entries": {}},
                    "x-run": True,
                    "solves": [{"solve_id": 0, "input": 1, "output": 2, "adapter": "a", "x-solve": None}],
                    "trace": None,
                    "outcome": None,
                }
            ],
        }
    ).encode()
    config = ExperimentConfig.parse(data)
    assert config.extra == {"x-top": {"keep": [1, 2]}}
    run = config.runs[0]
    assert (run.status, run.reason, run.trace, run.samplings) == ("finished", None, None, ())
    assert run.solves[0] == SolveRecord(0, "finished", 1, 2, "a", "{}", None)
    assert b"x-" not in config.to_bytes()  # extension fields are not re-serialised
    hash(config)  # extra (unhashable JSON) is excluded from the hash


def test_duplicate_map_keys_and_unknown_fields_are_tolerated() -> None:
    # OMMX 3.0.0b7 (serde): map keys last-wins, repeated unknown fields ignored, repeated struct fields rejected.
    data = VERIFIED_CONFIG.replace(b'"raw":1', b'"raw":0,"raw":1').replace(b'"run_parameters":7', b'"run_parameters":7,"x":1,"x":2')
    config = ExperimentConfig.parse(data)
    assert config.attachments.entries == {"dataset": 0, "raw": 1}
    assert config.extra == {"x": 2}
    assert config.to_bytes() == VERIFIED_CONFIG


def test_outcome_without_reason_and_requested_name() -> None:
    data = b'{"status":"failed","outcome":{},"requested_image_name":"a/b:c","attachments":{"entries":{}},"runs":[],"run_parameters":0}'
    config = ExperimentConfig.parse(data)
    assert (config.status, config.reason, config.requested_image_name) == ("failed", None, "a/b:c")


def _config_with(**changes: object) -> bytes:
    obj = json.loads(VERIFIED_CONFIG)
    for path, value in changes.items():
        target = obj
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"[]", "expected an object"),
        (b"{", "not valid JSON"),
        (_config_with(status="sealed"), "unknown status 'sealed'"),
        (_config_with(status=KeyError), "missing required field `status`"),
        (_config_with(attachments=KeyError), "missing required field `attachments`"),
        (_config_with(attachments__entries=KeyError), "missing required field `entries`"),
        (_config_with(runs=KeyError), "missing required field `runs`"),
        (_config_with(run_parameters=KeyError), "missing required field `run_parameters`"),
        (_config_with(run_parameters=-1), "run_parameters: expected an integer"),
        (_config_with(run_parameters=1.0), "run_parameters: expected an integer"),
        (_config_with(run_parameters=True), "run_parameters: expected an integer"),
        (_config_with(run_parameters=2**32), "run_parameters: expected an integer"),
        (_config_with(outcome={"reason": "x"}), "outcome is not allowed for status finished"),
        (_config_with(outcome={"reason": 3}), "outcome is not allowed"),
        (_config_with(runs__2__outcome={"reason": 3}), r"runs\[2\].outcome.reason: expected a string"),
        (_config_with(runs__0__outcome={"reason": "x"}), r"runs\[0\].outcome is not allowed for status finished"),
        (_config_with(runs__0__status="draft"), r"runs\[0\].status: unknown status 'draft'"),
        (_config_with(runs__0__run_id=KeyError), r"runs\[0\]: missing required field `run_id`"),
        (_config_with(runs__0__solves__0__adapter=KeyError), r"runs\[0\].solves\[0\]: missing required field `adapter`"),
        (_config_with(runs__0__solves__0__adapter_options={}), r"adapter_options: expected a string"),
        (_config_with(runs__0__solves="x"), r"runs\[0\].solves: expected an array"),
        (_config_with(runs__0__attachments__filenames={"cfg": 1}), r"filenames\['cfg'\]: expected a string"),
        (_config_with(attachments__entries={"a": "0"}), r"entries\['a'\]: expected an integer"),
        (_config_with(requested_image_name=1), "requested_image_name: expected a string"),
        (VERIFIED_CONFIG.replace(b'"run_parameters":7', b'"run_parameters":7,"status":"draft"'), r"\(top level\): duplicate field `status`"),
        (VERIFIED_CONFIG.replace(b'"solve_id":1,', b'"solve_id":1,"input":6,'), r"runs\[0\].solves\[1\]: duplicate field `input`"),
        (VERIFIED_CONFIG.replace(b'"run_id":1,', b'"run_id":1,"run_id":1,'), r"runs\[1\]: duplicate field `run_id`"),
        (VERIFIED_CONFIG.replace(b'{"entries":{"cfg":2}}', b'{"entries":{"cfg":2},"entries":{}}'), "duplicate field `entries`"),
    ],
)
def test_parse_rejects(data: bytes, match: str) -> None:
    with pytest.raises(InvalidArtifactError, match=match):
        ExperimentConfig.parse(data)


# --- validation (§5) --------------------------------------------------------------------------------------


def _valid() -> tuple[Manifest, ExperimentConfig]:
    layers, config = build_experiment(verified_content(), status="finished")
    return manifest_for(layers, config), config


def _with_layer(manifest: Manifest, index: int, new: Descriptor) -> Manifest:
    layers = list(manifest.layers)
    layers[index] = new
    return Manifest(manifest.artifact_type, manifest.config, tuple(layers))


def _with_run0(config: ExperimentConfig, **changes: object) -> ExperimentConfig:
    run0 = config.runs[0]
    fields = {f: getattr(run0, f) for f in RunRecord.__dataclass_fields__}
    fields.update(changes)
    return ExperimentConfig(config.status, config.reason, None, config.attachments, (RunRecord(**fields), *config.runs[1:]), config.run_parameters)  # type: ignore[arg-type]


def test_validate_accepts_v1_payload_types() -> None:
    manifest, config = _valid()
    manifest = _with_layer(manifest, 3, desc(mt.V1_INSTANCE, "v1"))
    manifest = _with_layer(manifest, 4, desc(mt.V1_SOLUTION, "v1"))
    validate_experiment(manifest, config)


def test_validate_artifact_type_and_config_media_type() -> None:
    manifest, config = _valid()
    generic = Manifest(mt.GENERIC_ARTIFACT_TYPE, manifest.config, manifest.layers)
    with pytest.raises(InvalidArtifactError, match="Experiment artifact type is application/org.ommx.v1.artifact, expected application/org.ommx.v1.experiment"):
        validate_experiment(generic, config)
    wrong_config = Manifest(manifest.artifact_type, Descriptor(mt.OCI_EMPTY_CONFIG, mt.OCI_EMPTY_CONFIG_DIGEST, 2), manifest.layers)
    with pytest.raises(InvalidArtifactError, match="config media type"):
        validate_experiment(wrong_config, config)


def test_validate_status_message_matches_ommx() -> None:
    manifest, config = _valid()
    draft = ExperimentConfig("draft", None, None, config.attachments, config.runs, config.run_parameters)
    with pytest.raises(InvalidArtifactError, match="^Experiment config status is draft, expected finished or failed or interrupted$"):
        validate_experiment(manifest, draft, allowed_statuses=SEALED_STATUSES)
    with pytest.raises(InvalidArtifactError, match="status is finished, expected draft or failed or interrupted"):
        validate_experiment(manifest, config, allowed_statuses=CHECKPOINT_STATUSES)


def test_validate_layer_ref_range() -> None:
    manifest, config = _valid()
    bad = ExperimentConfig("finished", None, None, AttachmentTable({"dataset": 8}), config.runs, 7)
    with pytest.raises(InvalidArtifactError, match="experiment attachment 'dataset' refers to layer 8, but the manifest has 8 layers"):
        validate_experiment(manifest, bad)


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (desc("application/json+zstd", "z", {mt.COMPRESSION_ANNOTATION: "gzip"}), "unsupported compression annotation 'gzip'"),
        (desc("application/json", "z", {mt.COMPRESSION_ANNOTATION: "zstd"}), "does not end with"),
        (desc("+zstd", "z", {mt.COMPRESSION_ANNOTATION: "zstd"}), "non-empty prefix"),
    ],
)
def test_validate_compression_rule(layer: Descriptor, match: str) -> None:
    manifest, config = _valid()
    with pytest.raises(InvalidArtifactError, match=match):
        validate_experiment(_with_layer(manifest, 0, layer), config)


def test_validate_compressed_attachment_ok() -> None:
    manifest, config = _valid()
    layer = desc("application/json+zstd", "z", {mt.COMPRESSION_ANNOTATION: "zstd"})
    validate_experiment(_with_layer(manifest, 0, layer), config)
    validate_experiment(_with_layer(manifest, 0, desc("application/x+zstd", "z")), config)  # logical +zstd


@pytest.mark.parametrize("filename", ["", ".", "..", "a/b", "a\\b"])
def test_validate_filenames_must_be_basenames(filename: str) -> None:
    manifest, config = _valid()
    bad = _with_run0(config, attachments=AttachmentTable({"cfg": 2}, {"cfg": filename}))
    with pytest.raises(InvalidArtifactError, match="run 0 attachment 'cfg' has invalid export filename"):
        validate_experiment(manifest, bad)


def test_validate_filenames_need_entries() -> None:
    manifest, config = _valid()
    bad = _with_run0(config, attachments=AttachmentTable({"cfg": 2}, {"other": "x.bin"}))
    with pytest.raises(InvalidArtifactError, match="filename entry 'other' has no attachment"):
        validate_experiment(manifest, bad)


def _solve0(config: ExperimentConfig, **changes: object) -> ExperimentConfig:
    solve = config.runs[0].solves[0]
    fields = {f: getattr(solve, f) for f in SolveRecord.__dataclass_fields__}
    fields.update(changes)
    return _with_run0(config, solves=(SolveRecord(**fields), *config.runs[0].solves[1:]))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"input": 0}, "run 0 solve 0 input layer has media type application/json, expected"),
        ({"output": None}, "run 0 solve 0 is finished but has no output"),
        ({"status": "failed"}, "run 0 solve 0 is failed but has an output"),
        ({"output": 3}, "run 0 solve 0 output layer has media type application/org.ommx.v2.instance"),
        ({"diagnostics": 2}, "run 0 solve 0 diagnostics layer has media type application/json, expected application/org.ommx.diagnostic"),
        ({"solve_id": 1}, "run 0 has duplicate solve id 1"),
    ],
)
def test_validate_solves(change: dict[str, object], match: str) -> None:
    manifest, config = _valid()
    with pytest.raises(InvalidArtifactError, match=match):
        validate_experiment(manifest, _solve0(config, **change))


def test_validate_sampling_output_must_be_sample_set() -> None:
    manifest, config = _valid()
    sampling = SamplingRecord(0, "finished", 3, 4, "a")  # layer 4 is a Solution
    with pytest.raises(InvalidArtifactError, match="run 0 sampling 0 output layer has media type application/org.ommx.v2.solution"):
        validate_experiment(manifest, _with_run0(config, samplings=(sampling,)))


def test_validate_trace_media_type() -> None:
    manifest, config = _valid()
    with pytest.raises(InvalidArtifactError, match="run 0 trace layer has media type application/json"):
        validate_experiment(manifest, _with_run0(config, trace=2))


def test_validate_unique_run_ids_and_run_parameter_layer() -> None:
    manifest, config = _valid()
    dup = ExperimentConfig("finished", None, None, config.attachments, (*config.runs, RunRecord(1)), 7)
    with pytest.raises(InvalidArtifactError, match="duplicate run id 1"):
        validate_experiment(manifest, dup)
    wrong = ExperimentConfig("finished", None, None, config.attachments, config.runs, 0)
    with pytest.raises(InvalidArtifactError, match="run parameters layer has media type application/json"):
        validate_experiment(manifest, wrong)


# --- OMMX 3 interop -----------------------------------------------------------------------------------------


def _ommx3_python() -> pathlib.Path | None:
    candidates = [os.environ.get("OMMX3_PYTHON", "/work/main/.venv-ommx3/bin/python"), "/tmp/venv-ommx3/bin/python"]
    for candidate in candidates:
        path = pathlib.Path(candidate)
        if path.exists():
            probe = subprocess.run([str(path), "-c", "import ommx.experiment"], capture_output=True, check=False)
            if probe.returncode == 0:
                return path
    return None


OMMX3_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from ommx.experiment import Experiment
    exp = Experiment("example.com/codec/interop:v1")
    exp.set_annotation("com.example.owner", "チーム")
    exp.log_json("config", {"b": 1, "a": "é"})
    exp.log_attachment("raw", "application/octet-stream", b"\\x00\\x01", compression="zstd")
    with exp.run() as run:
        run.log_parameter("flag", True)
        run.log_parameter("seed", 7)
        run.log_parameter("alpha", float("nan"))
        run.log_parameter("名前", "値")
        run.log_attachment("blob", "application/x-thing", b"abc")
    with exp.run() as run:
        run.log_parameter("seed", 2.5)
        run.log_parameter("", -(2**63))
    with exp.run():
        pass
    try:
        with exp.run() as run:
            run.log_parameter("flag", False)
            raise ValueError("boom\\n  here")
    except ValueError:
        pass
    df = exp.run_parameters_df()
    exp.commit()
    print(json.dumps({
        "index": [int(i) for i in df.index], "index_name": df.index.name, "index_dtype": str(df.index.dtype),
        "columns": list(df.columns), "dtypes": [str(t) for t in df.dtypes],
        "cells": [[None if v is None or str(v) == "<NA>" else repr(v) for v in row] for row in df.astype(object).itertuples(index=False)],
    }))
    """
)


@pytest.mark.ommx3
def test_ommx3_artifact_parses_and_reserialises_identically(tmp_path: pathlib.Path) -> None:
    python = _ommx3_python()
    if python is None:
        pytest.skip("OMMX 3 side venv not available")
    env = {**os.environ, "OMMX_LOCAL_REGISTRY_ROOT": str(tmp_path)}
    proc = subprocess.run([str(python), "-c", OMMX3_SCRIPT], env=env, capture_output=True, text=True, check=True, timeout=300)
    frame_info = json.loads(proc.stdout.strip().splitlines()[-1])

    with sqlite3.connect(tmp_path / "index.sqlite3") as con:
        rows = con.execute("SELECT name, reference, manifest_digest FROM refs").fetchall()
    assert [(n, r) for n, r, _ in rows] == [("example.com/codec/interop", "v1")]

    def blob(digest: str) -> bytes:
        data = (tmp_path / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
        assert sha256_digest(data) == digest
        return data

    manifest_bytes = blob(rows[0][2])
    manifest = Manifest.parse(manifest_bytes)
    assert manifest.to_bytes() == manifest_bytes
    config_bytes = blob(manifest.config.digest)
    config = ExperimentConfig.parse(config_bytes)
    assert config.to_bytes() == config_bytes
    validate_experiment(manifest, config, allowed_statuses=SEALED_STATUSES)
    assert config.runs[3].reason == "ValueError: boom here"

    content = content_from_artifact(manifest, config)
    assert build_experiment(content, status=config.status) == (manifest.layers, config)
    rebuilt = Manifest(manifest.artifact_type, manifest.config, manifest.layers, None, manifest.annotations)
    assert rebuilt.to_bytes() == manifest_bytes

    params_bytes = blob(manifest.layers[config.run_parameters].digest)
    run_ids = [run.run_id for run in config.runs]
    table = rp.decode_msgpack(params_bytes, run_ids)
    assert rp.table_to_msgpack(table) == params_bytes
    original = {0: {"flag": True, "seed": 7, "alpha": float("nan"), "名前": "値"}, 1: {"seed": 2.5, "": -(2**63)}, 3: {"flag": False}}
    assert rp.encode_msgpack(original, run_ids) == params_bytes

    frame = rp.table_to_dataframe(table, run_ids)
    assert list(frame.index) == frame_info["index"]
    assert (frame.index.name, str(frame.index.dtype)) == (frame_info["index_name"], frame_info["index_dtype"])
    assert list(frame.columns) == frame_info["columns"]
    assert [str(t) for t in frame.dtypes] == frame_info["dtypes"]
    ours = [[None if v is None or str(v) == "<NA>" else repr(v) for v in row] for row in frame.astype(object).itertuples(index=False)]
    assert ours == frame_info["cells"]


# --- the fast parser agrees with the strict one ---------------------------------------------------------


def _strict(data: bytes) -> ExperimentConfig:
    from ommx_experiment.engine.oci import load_json_bounded
    from ommx_experiment.format import codec

    obj = load_json_bounded(data, what="experiment config", max_bytes=codec.MAX_CONFIG_BYTES,
                            object_pairs_hook=codec._remember_duplicates)  # fmt: skip
    return codec._config_from_obj(obj)


_MUTATIONS = [
    (b'"entries":{', b'"entries":{"dup":1,"dup":2,'),
    (b'"run_id":', b'"run_id":0,"run_id":'),
    (b'"status":', b'"x-field":[[["deep"]]],"status":'),
    (b'"runs":[', b'"runs":[["status","finished"],'),
    (b'"attachments":{', b'"attachments":{"entries":{},'),
    (b'"input":', b'"input":true,"x":'),
    (b":0", b":0.0"),
    (b":1", b":-1"),
    (b'"finished"', b'"fin\\u0069shed"'),
    (b'"finished"', b"null"),
    (b'{"entries":{}}', b'{"entries":[]}'),
    (b'"adapter":', b'"adapter":null,"y":'),
    (b"[]", b"{}"),
]


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        ExperimentConfig,
        status=st.sampled_from(["finished", "draft", "failed", "interrupted"]),
        reason=st.none() | _text,
        requested_image_name=st.none() | _text,
        attachments=_tables,
        runs=st.lists(_runs, max_size=3).map(tuple),
        run_parameters=_ref,
    ),
    st.lists(st.sampled_from(_MUTATIONS), max_size=2),
)
def test_fast_parser_accepts_only_what_the_strict_parser_reads_the_same(
    config: ExperimentConfig, mutations: list[tuple[bytes, bytes]]
) -> None:
    """On configs as written (always the fast path) and mutated ones, the fast path either
    declines or returns exactly the strict parser's config."""
    from ommx_experiment.format import codec

    data = config.to_bytes()
    for old, new in mutations:
        data = data.replace(old, new, 1)
    fast = codec._parse_plain(data)
    if not mutations and b"\\u" not in data:  # control characters are written as \u escapes
        assert fast is not None
    try:
        strict = _strict(data)
    except InvalidArtifactError:
        assert fast is None
        return
    if fast is not None:
        assert fast == strict and fast.to_bytes() == strict.to_bytes() and fast.extra == strict.extra


def test_fast_parser_takes_ommx_and_our_configs() -> None:
    from ommx_experiment.format import codec

    assert codec._parse_plain(VERIFIED_CONFIG) == _strict(VERIFIED_CONFIG)


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        ExperimentConfig,
        status=st.sampled_from(["finished", "failed", "interrupted"]),
        reason=st.none() | _text,
        requested_image_name=st.none() | _text,
        attachments=_tables,
        runs=st.lists(_runs, max_size=4).map(tuple),
        run_parameters=_ref,
    )
)
def test_config_bytes_are_the_compact_json_of_to_obj(config: ExperimentConfig) -> None:
    """``to_bytes`` formats bare runs from a template: the bytes stay ``to_obj()`` as compact JSON."""
    reference = json.dumps(config.to_obj(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert config.to_bytes() == reference


def test_fast_parser_reencodes_dict_decoded_configs() -> None:
    """The dict-decoded first try accepts only configs that re-encode to their own bytes: a duplicate
    key, a reordered field or extra whitespace goes to the pairs path (or the strict parser), never
    silently merged."""
    from ommx_experiment.format import codec

    bare = b'{"run_id":1,"status":"finished","attachments":{"entries":{}},"solves":[],"samplings":[]}'
    data = b'{"status":"finished","attachments":{"entries":{}},"runs":[' + bare + b'],"run_parameters":0}'
    config = codec._parse_plain(data)
    assert config is not None and config.runs == (RunRecord(1),) and config.to_bytes() == data
    assert config.runs[0].attachments is codec.EMPTY_TABLE
    duplicated = data.replace(b'"run_id":1,', b'"run_id":2,"run_id":1,')
    assert codec._parse_plain(duplicated) is None
    spaced = data.replace(b'"run_id":1', b'"run_id" : 1')
    assert codec._parse_plain(spaced) == config  # not canonical, still plain: the pairs path
    failed = codec._parse_plain(data.replace(b'"run_id":1,"status":"finished"', b'"run_id":1,"status":"failed"'))
    assert failed is not None and failed.runs[0].status == "failed"


def test_fast_parser_layout_guess_falls_back_on_runs_that_are_not_bare() -> None:
    """Runs read by pattern are only a guess: a config mixing bare runs with a run holding an
    attachment, or naming `"runs":[` inside a string, is still read exactly as the strict parser does."""
    from ommx_experiment.format import codec

    mixed = ExperimentConfig(
        "finished", None, 'a,"runs":[b', AttachmentTable({',"runs":[': 0}),
        (RunRecord(0), RunRecord(1, attachments=AttachmentTable({"x": 1})), RunRecord(2, "failed", "boom")), 2,
    )
    data = mixed.to_bytes()
    assert codec._parse_plain(data) == _strict(data) == mixed
    bare = ExperimentConfig("finished", None, None, AttachmentTable(), tuple(RunRecord(i) for i in range(3)), 0)
    assert codec._plain_by_layout(bare.to_bytes().decode()) == bare


def test_fast_parser_layout_guess_reads_runs_with_attachments_only() -> None:
    """Runs holding only attachment entries (every run of a typical experiment) are read by pattern too;
    anything the pattern cannot read exactly (an escaped name, a filename, a ref over u32) is
    declined by the guess and read by the other paths as the strict parser reads it."""
    from ommx_experiment.format import codec

    runs = tuple(RunRecord(i, attachments=AttachmentTable({"cfg": 2 * i, "log,x:y": 2 * i + 1})) for i in range(3))
    config = ExperimentConfig("finished", None, "a/b:c", AttachmentTable(), (*runs, RunRecord(3)), 6)
    data = config.to_bytes()
    assert codec._plain_by_layout(data.decode()) == config == codec._parse_plain(data) == _strict(data)
    escaped = ExperimentConfig("finished", None, None, AttachmentTable(), (RunRecord(0, attachments=AttachmentTable({'q"': 0})),), 1)
    with_filename = RunRecord(0, attachments=AttachmentTable({"a": 0}, {"a": "a.json"}))
    named = ExperimentConfig("finished", None, None, AttachmentTable(), (with_filename,), 1)
    for other in (escaped, named):
        other_bytes = other.to_bytes()
        assert codec._plain_by_layout(other_bytes.decode()).to_bytes() != other_bytes  # the guess misses it
        assert codec._parse_plain(other_bytes) == _strict(other_bytes) == other
    huge = data.replace(b'"cfg":0', b'"cfg":4294967296')
    with pytest.raises(codec._Decline):
        codec._plain_by_layout(huge.decode())
    with pytest.raises(InvalidArtifactError):
        _strict(huge)
    assert codec._parse_plain(huge) is None
