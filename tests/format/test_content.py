"""format.content: the fast copies of RunContent agree with the dataclass' own."""

from __future__ import annotations

import dataclasses

from ommx_experiment.engine.oci import Descriptor
from ommx_experiment.format.content import _RUN_FIELDS, AttachmentContent, RunContent, SolveContent

D = "sha256:" + "1" * 64


def test_timed_is_dataclasses_replace_of_the_times() -> None:
    assert {f.name for f in dataclasses.fields(RunContent)} == {*_RUN_FIELDS, "started_ns", "finished_ns"}
    desc = Descriptor("application/json", D, 3)
    call = SolveContent(0, "finished", desc, None, "a")
    run = RunContent(7, "failed", "r", AttachmentContent({"x": desc}, {"x": "x.json"}), desc, (call,), (call,), 1, 2, {D: b"abc"})
    timed = run.timed(5, 6)
    expected = dataclasses.replace(run, started_ns=5, finished_ns=6)
    assert [getattr(timed, f.name) for f in dataclasses.fields(RunContent)] == [
        getattr(expected, f.name) for f in dataclasses.fields(RunContent)
    ]


def test_attachment_content_of_takes_the_dict_over_and_equals_the_constructed_one() -> None:
    desc = Descriptor("application/json", D, 3)
    owned = {"x": desc}
    fast = AttachmentContent.of(owned, {"x": "x.json"})
    assert fast == AttachmentContent({"x": desc}, {"x": "x.json"}) and fast.inline is None
    assert fast.descriptors.shared_dict() is owned  # type: ignore[attr-defined]


def test_an_attachment_ref_out_of_range_is_named() -> None:
    import pytest

    from ommx_experiment import media_types as mt
    from ommx_experiment.engine.oci import Manifest
    from ommx_experiment.errors import InvalidArtifactError
    from ommx_experiment.format.codec import AttachmentTable, ExperimentConfig, RunRecord
    from ommx_experiment.format.content import content_from_artifact

    desc = Descriptor("application/json", D, 3)
    manifest = Manifest(mt.EXPERIMENT_ARTIFACT_TYPE, desc, (desc, desc))
    run = RunRecord(4, "finished", None, AttachmentTable({"a": 0, "b": 7, "c": 9}))
    config = ExperimentConfig("finished", None, None, AttachmentTable({"x": 1}), (run,), 0)
    with pytest.raises(InvalidArtifactError, match=r"^Experiment run 4 attachment 'b' refers to layer 7, but the manifest has 2 layers$"):
        content_from_artifact(manifest, config)
    runs = (RunRecord(4, "finished", None, AttachmentTable({"a": 0})),)
    ok = ExperimentConfig("finished", None, None, AttachmentTable({"x": 1}), runs, 0)
    content = content_from_artifact(manifest, ok)
    assert content.runs[0].attachments.descriptors == {"a": desc} and content.extra_layers == ()
